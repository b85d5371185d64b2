"""examples/indexer, stage 3: the local embedding service and the HTTP client of the stage."""

from __future__ import annotations

import asyncio
import json
import math
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

import workpool

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # examples/ is not an installed package

from examples.indexer.chunks import Chunk  # noqa: E402
from examples.indexer.embed_client import (  # noqa: E402
    RETRY_ON,
    EmbeddingClient,
    ServiceUnavailable,
    embed_query,
)
from examples.indexer.embed_server import (  # noqa: E402
    DIM,
    EmbeddingService,
    TokenBucket,
    embed_text,
)


def cosine(a: list[float] | tuple[float, ...], b: list[float] | tuple[float, ...]) -> float:
    return sum(x * y for x, y in zip(a, b))


def chunk(text: str, seq: int = 0) -> Chunk:
    return Chunk("doc.txt", "0" * 64, seq, text)


@pytest.fixture
def service() -> Iterator[EmbeddingService]:
    with EmbeddingService(latency=0.0, rate=1000.0, burst=1000) as s:
        yield s


# -- the embedding ---------------------------------------------------------------------------


def test_embeddings_are_deterministic_unit_vectors() -> None:
    v = embed_text("Backpressure bounds the memory of a pipeline")
    assert len(v) == DIM
    assert math.isclose(sum(x * x for x in v), 1.0)
    assert v == embed_text("backpressure BOUNDS the memory of a pipeline!")  # words, not case


def test_texts_that_share_words_are_closer_than_texts_that_do_not() -> None:
    query = embed_text("token bucket rate limit")
    near = embed_text("a token bucket enforces the rate limit of an API")
    far = embed_text("knead the bread dough until smooth")
    assert cosine(query, near) > 0.5 > cosine(query, far)


def test_a_text_without_words_embeds_as_zeros() -> None:
    assert embed_text("  the a of ... ") == [0.0] * DIM  # stop words only


# -- the token bucket ------------------------------------------------------------------------


def test_the_token_bucket_allows_a_burst_then_says_how_long_to_wait() -> None:
    bucket = TokenBucket(rate=1.0, burst=3)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = bucket.take()
    assert 0.0 < wait <= 1.0


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (1.0, 0)])
def test_the_token_bucket_refuses_a_rate_or_burst_that_admits_nothing(
    rate: float, burst: int
) -> None:
    with pytest.raises(ValueError, match="rate > 0 and burst >= 1"):
        TokenBucket(rate, burst)


# -- the service -----------------------------------------------------------------------------


def test_the_service_answers_embeddings_over_http(service: EmbeddingService) -> None:
    assert service.url.startswith("http://127.0.0.1:")
    reply = httpx.post(f"{service.url}/v1/embeddings", json={"input": ["one two", "three"]})
    assert reply.status_code == 200
    body = reply.json()
    assert body["dim"] == DIM
    assert [d["embedding"] for d in body["data"]] == [embed_text("one two"), embed_text("three")]
    assert service.stats() == {"requests": 1, "served": 1, "throttled": 0, "bad": 0}


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/v1/embeddings", b"not json", 400, "must be JSON"),
        ("/v1/embeddings", b'{"input": 3}', 400, "must be a string or a list of strings"),
        ("/v2/other", b"{}", 404, "no such endpoint"),
    ],
)
def test_the_service_refuses_bad_requests_with_a_reason(
    service: EmbeddingService, path: str, body: bytes, status: int, says: str
) -> None:
    reply = httpx.post(service.url + path, content=body)
    assert reply.status_code == status
    assert says in reply.json()["error"]
    assert service.stats()["bad"] == 1


def test_the_service_answers_429_when_called_faster_than_its_rate() -> None:
    with EmbeddingService(latency=0.0, rate=0.01, burst=2) as s:
        codes = [httpx.post(f"{s.url}/v1/embeddings", json={"input": "x"}) for _ in range(3)]
        assert [c.status_code for c in codes] == [200, 200, 429]
        assert int(codes[2].headers["Retry-After"]) >= 1
        assert s.stats() == {"requests": 3, "served": 2, "throttled": 1, "bad": 0}


def test_the_service_takes_its_latency_for_each_admitted_request() -> None:
    with EmbeddingService(latency=0.2, rate=1000.0) as s:
        started = time.monotonic()
        httpx.post(f"{s.url}/v1/embeddings", json={"input": "x"})
        assert time.monotonic() - started >= 0.2


# -- the client ------------------------------------------------------------------------------


def test_the_client_returns_the_chunk_with_its_vector(service: EmbeddingService) -> None:
    c = chunk("rate limits and retries")
    embedded = asyncio.run(EmbeddingClient(service.url)(c))
    assert embedded.chunk == c
    assert embedded.vector == tuple(embed_text(c.text))
    assert embed_query(service.url, c.text) == embedded.vector


def test_a_429_raises_an_error_that_the_stage_retries() -> None:
    with EmbeddingService(latency=0.0, rate=0.01, burst=1) as s:
        client = EmbeddingClient(s.url)
        asyncio.run(client(chunk("first")))
        with pytest.raises(
            ServiceUnavailable, match=r"429 Too Many Requests \(Retry-After: \d+ s\)"
        ):
            asyncio.run(client(chunk("second")))
    assert issubclass(ServiceUnavailable, RETRY_ON)


class Status500(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_5xx_raises_an_error_that_the_stage_retries() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Status500)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(ServiceUnavailable, match="503 Service Unavailable"):
            asyncio.run(EmbeddingClient(url)(chunk("x")))
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_any_other_4xx_is_not_retried(service: EmbeddingService) -> None:
    client = EmbeddingClient(service.url + "/wrong")  # the request can never succeed
    with pytest.raises(httpx.HTTPStatusError) as caught:
        asyncio.run(client(chunk("x")))
    assert caught.value.response.status_code == 404
    assert not isinstance(caught.value, RETRY_ON)


def test_outside_a_task_a_request_times_out_after_the_default_timeout() -> None:
    with EmbeddingService(latency=5.0) as s:
        client = EmbeddingClient(s.url, default_timeout=0.2)
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout) as caught:
            asyncio.run(client(chunk("x")))
        assert time.monotonic() - started < 4.0
        assert isinstance(caught.value, RETRY_ON)


def test_inside_a_task_the_request_timeout_is_what_is_left_of_the_deadline() -> None:
    client = EmbeddingClient("http://127.0.0.1:9", default_timeout=30.0)

    async def timeout_seen(_: int) -> float:
        return client.timeout()

    with workpool.Pool(workers=1, backend="async", task_timeout=2.0) as pool:
        (with_deadline,) = pool.map(timeout_seen, [0])
    with workpool.Pool(workers=1, backend="async") as pool:
        (without,) = pool.map(timeout_seen, [0])
    assert 0.0 < with_deadline <= 2.0
    assert without == 30.0


def test_a_slow_service_fails_the_attempt_at_the_stage_deadline() -> None:
    with (
        EmbeddingService(latency=5.0) as s,
        workpool.Pool(workers=1, backend="async", task_timeout=0.3) as pool,
    ):
        started = time.monotonic()
        (r,) = pool.results(EmbeddingClient(s.url), [chunk("x")])
        assert time.monotonic() - started < 4.0
    assert isinstance(r.error, RETRY_ON)  # httpx.ReadTimeout or TaskTimeout: both retried


def test_throttled_requests_succeed_through_the_pools_retries() -> None:
    with (
        EmbeddingService(latency=0.0, rate=4.0, burst=1) as s,
        workpool.Pool(
            workers=6,
            backend="async",
            retries=workpool.Retry(30, backoff=0.05, max_backoff=0.3, on=RETRY_ON),
        ) as pool,
    ):
        chunks = [chunk(f"passage {i}", i) for i in range(6)]
        results = list(pool.results(EmbeddingClient(s.url), chunks))
        stats = s.stats()
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert sorted(r.value.chunk.seq for r in results if r.value) == list(range(6))
    # Six requests at once against a bucket of one: some were throttled and retried.
    assert stats["throttled"] > 0
    assert stats["served"] == 6
    assert sum(r.attempts - 1 for r in results) == stats["throttled"]


def test_the_service_counts_add_up(service: EmbeddingService) -> None:
    httpx.post(f"{service.url}/v1/embeddings", json={"input": "x"})
    httpx.post(f"{service.url}/v1/embeddings", content=b"{")
    stats = json.loads(httpx.get(f"{service.url}/stats").text)
    assert stats == {"requests": 2, "served": 1, "throttled": 0, "bad": 1}
