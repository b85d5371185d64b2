"""Stage 3: get each chunk's embedding from the embedding service, over HTTP.

:class:`EmbeddingClient` is the stage function: an object whose ``__call__`` is a coroutine
function, so the pipeline runs it on its ``async`` backend -- dozens of requests in flight on
one event loop, no thread per request. It does one request and leaves everything about
*when* and *how often* to the stage's pool:

* **rate limit**: the stage's ``rate_limit`` paces requests below the service's limit;
* **retries**: a ``429`` or a ``5xx`` raises :class:`ServiceUnavailable`, a lost connection
  or a timeout raises httpx's ``TransportError``; the stage's ``retries`` policy retries
  exactly those (:data:`RETRY_ON`), with backoff and jitter. Any other ``4xx`` means the request
  is wrong, and raises ``httpx.HTTPStatusError``, which no retry can fix;
* **deadline**: the stage's ``task_timeout`` is the deadline of each attempt, and the request
  uses what is left of it, ``workpool.current_task().remaining()``, as its timeout, so a
  slow answer fails as a clear ``httpx.ReadTimeout`` instead of being cut off mid-flight.

Outside a workpool task (a test, the ``query`` command) the request uses ``default_timeout``::

    client = EmbeddingClient("http://127.0.0.1:8765")
    embedded = asyncio.run(client(chunk))        # -> Embedded(chunk, vector)
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from functools import cache

import httpx

import workpool

from .chunks import Chunk

__all__ = ["RETRY_ON", "EmbeddingClient", "Embedded", "ServiceUnavailable", "embed_query"]


class ServiceUnavailable(Exception):
    """The service answered 429 (too many requests) or 5xx: worth trying again later."""


#: The failures a retry can cure (give them to the stage's ``Retry(on=...)``).
RETRY_ON: tuple[type[BaseException], ...] = (
    ServiceUnavailable,
    httpx.TransportError,  # refused or dropped connections, and timeouts
    workpool.TaskTimeout,  # the pool's own deadline, should it strike first
)


@dataclass(frozen=True)
class Embedded:
    """A chunk and its embedding (a unit vector)."""

    chunk: Chunk
    vector: tuple[float, ...]


@cache
def _tls() -> ssl.SSLContext:
    # Made once: building a certificate store costs milliseconds, a new client per request
    # (see EmbeddingClient.__call__) must not pay that each time.
    return ssl.create_default_context()


class EmbeddingClient:
    """Embeds one chunk per call through the service at ``url`` (see the module docstring)."""

    def __init__(self, url: str, *, default_timeout: float = 30.0) -> None:
        self.url = url.rstrip("/") + "/v1/embeddings"
        self.default_timeout = default_timeout

    def timeout(self) -> float:
        """Seconds this request may take: what is left of the running task's deadline, or
        ``default_timeout`` outside a task or in a task without one."""
        try:
            remaining = workpool.current_task().remaining()
        except workpool.WorkpoolError:
            return self.default_timeout  # called outside a pool
        return self.default_timeout if remaining is None else remaining

    async def __call__(self, chunk: Chunk) -> Embedded:
        """Embed ``chunk``. Raises :class:`ServiceUnavailable` on 429/5xx,
        ``httpx.TransportError`` when the service cannot be reached in time, and
        ``httpx.HTTPStatusError`` on any other error status."""
        # One client per request: an httpx.AsyncClient belongs to the event loop it first
        # ran on, and this object may be called from several (a test's, the pool's).
        async with httpx.AsyncClient(timeout=self.timeout(), verify=_tls()) as client:
            response = await client.post(self.url, json={"input": chunk.text})
        return Embedded(chunk, _vector(response))


def _vector(response: httpx.Response) -> tuple[float, ...]:
    return tuple(_vectors(response)[0])


def _vectors(response: httpx.Response) -> list[list[float]]:
    if response.status_code == 429 or response.status_code >= 500:
        hint = response.headers.get("Retry-After")
        after = f" (Retry-After: {hint} s)" if hint else ""
        raise ServiceUnavailable(
            f"embedding service answered {response.status_code} {response.reason_phrase}{after}"
        )
    response.raise_for_status()  # any other error: the request is wrong, never retried
    return [item["embedding"] for item in response.json()["data"]]


def embed_query(url: str, text: str, *, timeout: float = 30.0) -> tuple[float, ...]:
    """The embedding of a search query, from the service at ``url`` (a blocking call).

    Raises :class:`ServiceUnavailable` (429/5xx) or an httpx error, as the stage does.
    """
    response = httpx.post(url.rstrip("/") + "/v1/embeddings", json={"input": text}, timeout=timeout)
    return _vector(response)
