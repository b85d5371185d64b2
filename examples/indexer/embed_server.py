"""A local embedding service that stands in for an external embedding API.

Real embedding APIs are slow (hundreds of milliseconds a call), rate limited (they answer
``429 Too Many Requests`` when called too fast) and remote. This service is all of that, on
``127.0.0.1``, with no model and no network, so the indexer runs offline and its tests are
reproducible:

* **real HTTP**: the standard library's ``ThreadingHTTPServer``, one thread a request;
* **real latency**: each admitted request waits ``latency`` seconds before it answers;
* **a server-side rate limit**: a token bucket of ``rate`` requests a second with bursts of
  up to ``burst``; a request that finds it empty gets ``429`` at once, with ``Retry-After``;
* **a deterministic embedding**: :func:`embed_text`, a hashed bag of words -- each word adds
  +-1 to one of ``dim`` coordinates chosen by its hash, then the vector is scaled to length 1.
  Texts that share words get a high cosine similarity, which is all a demo search needs.

The API mimics the common ``/v1/embeddings`` shape::

    POST /v1/embeddings   {"input": "some text"}  or  {"input": ["text", ...]}
      200 {"data": [{"index": 0, "embedding": [0.01, ...]}], "dim": 256}
      429 {"error": "rate limit exceeded"}     (header Retry-After: seconds)
      400 {"error": "..."}                     (the body is not what the API takes)
    GET /stats            {"requests": 12, "served": 10, "throttled": 2, "bad": 0}

Use it as a context manager (it serves from a background thread)::

    with EmbeddingService(latency=0.3, rate=50) as service:
        print(service.url)          # http://127.0.0.1:<a free port>

or on its own: ``python -m examples.indexer serve --port 8765``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["DIM", "EmbeddingService", "TokenBucket", "embed_text"]

#: Length of every embedding vector.
DIM = 256

# Words that occur everywhere carry no meaning for a search; leaving them out keeps
# "the" from making every passage look alike.
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "this",
        "to",
        "was",
        "were",
        "will",
        "with",
    ]
)
_WORD = re.compile(r"\w+")


def embed_text(text: str, dim: int = DIM) -> list[float]:
    """The embedding of ``text``: a unit vector of ``dim`` floats (all zeros for no words).

    Deterministic across runs and machines (blake2b, not Python's salted ``hash``)::

        >>> v = embed_text("Backpressure bounds memory")
        >>> len(v), round(sum(x * x for x in v), 6)
        (256, 1.0)
    """
    vector = [0.0] * dim
    for word in _WORD.findall(text.lower()):
        if word in _STOPWORDS:
            continue
        h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
        # The top bit picks the sign, so unrelated words colliding on a coordinate cancel
        # out on average instead of adding up (the "hashing trick").
        vector[h % dim] += -1.0 if h >> 63 else 1.0
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm else vector


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; thread-safe, never blocks.

    ``take()`` returns 0.0 when it took a token, else the seconds until one is available.
    """

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"need rate > 0 and burst >= 1, got {rate=} {burst=}")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> float:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate


class EmbeddingService:
    """The embedding service on ``host:port`` (port 0: a free one, see :attr:`url`).

    ``latency`` seconds per admitted request; ``rate`` requests a second (bursts of ``burst``)
    before it answers 429. Start it with ``with`` or :meth:`start`; :meth:`stop` ends it.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency: float = 0.3,
        rate: float = 50.0,
        burst: int = 10,
        dim: int = DIM,
    ) -> None:
        if latency < 0:
            raise ValueError(f"latency must be >= 0 seconds, got {latency}")
        self.latency = latency
        self.dim = dim
        self.bucket = TokenBucket(rate, burst)
        self._counts = {"requests": 0, "served": 0, "throttled": 0, "bad": 0}
        self._counts_lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True  # a request in flight never keeps the program alive
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` of the running service."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> EmbeddingService:
        """Serve from a daemon thread; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, name="embedding-service", daemon=True
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve from the calling thread until :meth:`stop` (from another thread)."""
        self._server.serve_forever()

    def stop(self) -> None:
        """Stop serving and close the socket. Idempotent."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def stats(self) -> dict[str, int]:
        """Counts so far: ``requests`` = ``served`` + ``throttled`` + ``bad``."""
        with self._counts_lock:
            return dict(self._counts)

    def count(self, key: str) -> None:
        with self._counts_lock:
            self._counts[key] += 1

    def __enter__(self) -> EmbeddingService:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _handler_for(service: EmbeddingService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "LocalEmbeddings/1.0"

        def do_GET(self) -> None:
            if self.path == "/stats":
                self._reply(HTTPStatus.OK, service.stats())
            else:
                self._reply(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {self.path}"})

        def do_POST(self) -> None:
            service.count("requests")
            if self.path != "/v1/embeddings":
                service.count("bad")
                self._reply(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {self.path}"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            texts = _texts(self.rfile.read(length))
            if isinstance(texts, str):
                service.count("bad")
                self._reply(HTTPStatus.BAD_REQUEST, {"error": texts})
                return
            wait = service.bucket.take()
            if wait:
                service.count("throttled")
                retry_after = {"Retry-After": str(max(1, math.ceil(wait)))}
                self._reply(
                    HTTPStatus.TOO_MANY_REQUESTS, {"error": "rate limit exceeded"}, retry_after
                )
                return
            time.sleep(service.latency)  # the model "thinking": what makes the API slow
            data = [
                {"index": i, "embedding": embed_text(t, service.dim)} for i, t in enumerate(texts)
            ]
            service.count("served")
            self._reply(HTTPStatus.OK, {"data": data, "dim": service.dim})

        def _reply(
            self, status: HTTPStatus, body: Any, headers: dict[str, str] | None = None
        ) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            try:
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (its deadline passed): nobody to answer

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line a request on stderr would drown the indexer's own output

    return Handler


def _texts(body: bytes) -> list[str] | str:
    """The texts of a request body, or a message saying what is wrong with it."""
    try:
        request = json.loads(body)
    except ValueError:
        return "the body must be JSON: {'input': text or [texts]}"
    value = request.get("input") if isinstance(request, dict) else None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return value
    return "'input' must be a string or a list of strings"
