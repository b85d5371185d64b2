"""workpool for asyncio: fetch 200 pages from a flaky server, politely and on time.

Run it with ``python3 dev.py example async_fetch`` (or ``.venv/bin/python
examples/async_fetch.py``). Offline: it starts its own HTTP server on 127.0.0.1, which
answers slowly, sometimes fails with 503, and hangs on a few pages. The client is one
``AsyncPool`` on the program's event loop:

- ``workers=20``: at most 20 requests in flight, with no thread per request;
- ``rate_limit=RateLimit("200/s", burst=20)``: the server is not flooded;
- ``task_timeout=0.5``: a request past its deadline is cancelled and reported as
  ``TaskTimeout``; each request's own timeout is what is left of it (``current_task()``);
- ``retries=Retry(3, on=...)``: a 503 is tried again with backoff, a 404 is not;
- ``results()`` reads the URLs lazily (an async generator here) and yields one Result each.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import AsyncIterator
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx

from workpool import AsyncPool, RateLimit, Retry, current_task


class FlakyServer(BaseHTTPRequestHandler):
    """``/page/N``: every 7th page fails once with 503, every 50th hangs, 13 is missing."""

    failed_once: ClassVar[set[int]] = set()
    lock = threading.Lock()

    def do_GET(self) -> None:
        n = int(self.path.rsplit("/", 1)[-1])
        if n % 50 == 49:
            threading.Event().wait(5)  # a page that hangs: the client's deadline ends it
        with self.lock:
            first_time = n % 7 == 0 and n not in self.failed_once
            self.failed_once.add(n)
        status = 404 if n == 13 else 503 if first_time else 200
        body = f"page {n}".encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet


class Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default 5 would make connections wait in the kernel
    daemon_threads = True


class Unavailable(Exception):
    """The server said 503: worth another try."""


async def fetch(client: httpx.AsyncClient, url: str) -> str:
    """One page; the request's timeout is what is left of the task's deadline."""
    response = await client.get(url, timeout=current_task().remaining())
    if response.status_code == 503:
        raise Unavailable(url)
    response.raise_for_status()  # a 404 fails for good
    return response.text


async def urls(base: str, n: int) -> AsyncIterator[str]:
    for i in range(n):
        yield f"{base}/page/{i}"


async def main(n: int = 200) -> int:
    server = Server(("127.0.0.1", 0), FlakyServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    ok = failed = 0
    try:
        async with (
            httpx.AsyncClient() as client,
            AsyncPool(
                workers=20,
                rate_limit=RateLimit("200/s", burst=20),
                task_timeout=0.5,
                retries=Retry(3, backoff=0.05, on=(Unavailable, httpx.TransportError)),
            ) as pool,
        ):
            async for r in pool.results(partial(fetch, client), urls(base, n)):
                if r.ok:
                    ok += 1
                else:
                    failed += 1
                    print(f"{r.item}: {type(r.error).__name__} after {r.attempts} attempt(s)")
            print(f"{ok} pages fetched, {failed} failed; {pool.stats().retried} retries")
    finally:
        server.shutdown()
    return 0 if ok == n - 5 and failed == 5 else 1  # 13 missing, 4 hanging pages


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
