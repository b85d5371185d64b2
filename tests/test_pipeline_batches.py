"""Pipeline batch stages: partial batches, batch_timeout, a batch function's outputs (§7)."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from fakeclock import FakeClock
from handshakes import wait_until
from workpool import AsyncPipeline, Pipeline, Result, Stage, TaskError

pytestmark = pytest.mark.timeout(60)


def keep_0(x: int) -> list[int]:
    """A flat stage that drops every input but 0."""
    return [x] if x == 0 else []


def fail_but_0(x: int) -> int:
    if x:
        raise ValueError(f"not zero: {x}")
    return x


def ignore(batch: list[int]) -> None:
    return None


# ------------------------------------------------------------- partial batches, ordered calls


@pytest.mark.timeout(30)
@pytest.mark.parametrize("call", ["map", "ordered", "ordered per_input", "async map"])
def test_an_ordered_call_sends_a_partial_batch_its_held_back_window_would_never_fill(
    call: str,
) -> None:
    # Input 0 waits in the batch stage's partial batch (no batch_timeout) for a second item;
    # every later input is dropped before it, done but held back for order. Once the held
    # inputs fill the read-ahead window nothing more is read, so the batch can only leave
    # because nothing else can come: before, the call waited for ever.
    stages = (Stage(keep_0, flat=True), Stage(ignore, batch_size=2))
    n = 10_000
    if call == "async map":

        async def main() -> list[Any]:
            async with AsyncPipeline(*stages) as pipeline:
                return [v async for v in pipeline.map(range(n))]

        assert asyncio.run(main()) == [0]
        return
    with Pipeline(*stages) as pipeline:
        if call == "map":
            assert list(pipeline.map(range(n))) == [0]
        elif call == "ordered":
            got = list(pipeline.results(range(n), ordered=True))
            assert [(r.index, r.value) for r in got] == [(0, 0)]
        else:
            got = list(pipeline.results(range(n), ordered=True, per_input=True))
            assert [r.index for r in got] == list(range(n))
            assert got[0].value == [0] and all(r.ok and r.value == [] for r in got[1:])


@pytest.mark.timeout(30)
def test_map_raises_at_the_first_failure_while_an_earlier_input_waits_in_a_partial_batch() -> None:
    with (
        Pipeline(Stage(fail_but_0, workers=2), Stage(ignore, batch_size=2)) as pipeline,
        pytest.raises(TaskError) as info,
    ):
        seen = []
        for v in pipeline.map(range(10_000)):
            seen.append(v)
    assert seen == [0]
    assert info.value.result.index == 1 and info.value.result.stage == "fail_but_0"


@pytest.mark.timeout(30)
def test_a_partial_batch_of_an_ordered_call_waits_while_the_call_still_moves() -> None:
    # An ordered call's window is full of inputs held back for input 0, which runs (blocked)
    # in the last stage; the batch stage before it holds a partial batch and nothing is left
    # upstream of it. Input 0's end frees the window, so the batch fills as usual: it must not
    # leave early. Every batch is full but the last one, at the end of the input.
    release = threading.Event()
    sizes: list[int] = []

    def size(batch: list[int]) -> None:
        sizes.append(len(batch))

    def hold_0(x: int) -> int:
        if x == 0:
            assert release.wait(20)
        return x

    pipeline = Pipeline(
        Stage(abs, workers=2),
        Stage(size, batch_size=4, workers=1),
        Stage(hold_0, workers=4),
    )
    n = 2000
    got: list[Result[Any]] = []
    with pipeline:
        consumer = threading.Thread(
            target=lambda: got.extend(pipeline.results(range(n), ordered=True))
        )
        consumer.start()
        try:
            flow = next(iter(pipeline._core.flows))
            first, batch, last = flow.feeds

            def held() -> bool:
                with flow.lock:
                    return (
                        flow.want_input() == 0
                        and not flow.reading_done
                        and flow.lineage.waiting() > flow.window() - first.rt.unit_size()
                        and not first.waiting()
                        and not first.inflight_tokens
                        and not batch.inflight_tokens
                        and not last.waiting()
                        and last.inflight_tokens == 1
                    )

            wait_until(held, 20)
            # A partial batch left early would be in ``sizes`` once the stage is idle again.
            wait_until(lambda: pipeline.stats()["size"].running == 0, 10)
            assert all(s == 4 for s in sizes)
        finally:
            release.set()
        consumer.join(20)
    assert [r.index for r in got] == list(range(n))
    assert sum(sizes) == n and all(s == 4 for s in sizes[:-1])


# ------------------------------------------------------------------------- batch_timeout


class Fed:
    """An input the test feeds item by item; it says how many it has at hand (as ``workpool
    run``'s pipe reader does), so a read never waits for more than there is."""

    def __init__(self) -> None:
        self.items: queue.Queue[Any] = queue.Queue()

    def __iter__(self) -> Iterator[Any]:
        return self

    def _workpool_at_hand(self) -> int:
        return self.items.qsize()

    def __next__(self) -> Any:
        item = self.items.get(timeout=20)
        if item is StopIteration:
            raise StopIteration
        return item


@pytest.mark.timeout(30)
def test_a_batch_leaves_no_earlier_than_batch_timeout_after_its_first_item() -> None:
    # A partial batch that filled up left its timer behind: when it fired, it sent the next
    # partial batch on, well before that one's own batch_timeout.
    clock = FakeClock()
    batches: list[list[str]] = []

    def insert(batch: list[str]) -> None:
        batches.append(list(batch))

    source = Fed()
    got: list[Result[Any]] = []
    pipeline = Pipeline(Stage(insert, batch_size=3, batch_timeout=1.0, _clock=clock))
    with pipeline:
        consumer = threading.Thread(target=lambda: got.extend(pipeline.results(source)))
        consumer.start()
        try:
            wait_until(lambda: bool(pipeline._core.flows), 10)
            feed = next(iter(pipeline._core.flows)).feeds[0]

            def waiting(n: int) -> bool:
                return feed.waiting() == n and feed.partial_since is not None

            source.items.put("a")
            wait_until(lambda: waiting(1), 10)  # a partial batch, due at 1.0
            source.items.put("b")
            source.items.put("c")
            wait_until(lambda: batches == [["a", "b", "c"]], 10)
            clock.advance(0.9)
            source.items.put("d")
            wait_until(lambda: waiting(1), 10)  # due at 1.9
            clock.advance(0.1)  # 1.0: the first batch's time, not this one's
            assert feed.waiting() == 1 and batches == [["a", "b", "c"]]
            clock.advance(0.4)  # 1.4
            source.items.put("e")
            wait_until(lambda: waiting(2), 10)
            clock.advance(0.49)  # 1.89
            assert feed.waiting() == 2 and batches == [["a", "b", "c"]]
            clock.advance(0.02)  # 1.91
            wait_until(lambda: len(batches) == 2, 10)
            assert batches[1] == ["d", "e"]
        finally:
            source.items.put(StopIteration)
        consumer.join(20)
    assert sorted(r.unwrap() for r in got) == ["a", "b", "c", "d", "e"]


# ------------------------------------------------------------------ a batch function's outputs


def test_a_batch_function_that_returns_a_str_fails_each_item_saying_it_got_a_str() -> None:
    def word(batch: list[int]) -> str:
        return "ab"

    with Pipeline(Stage(word, batch_size=2)) as pipeline:
        got = list(pipeline.results(range(2)))
    assert len(got) == 2 and all(not r.ok for r in got)
    message = str(got[0].error)
    assert "one output per item (2 here)" in message
    assert "got a str" in message and "sequence of 2" not in message, message


def test_a_first_stage_batch_leaves_at_its_timeout_while_a_slow_input_waits() -> None:
    # The input gives its next item only once the batch holding the previous one was called
    # (a quiet source). A first-stage batch stage read a whole batch's worth in one go, so
    # the batch waited for the read, and the read for the batch: batch_timeout did nothing
    # until the input ended (a README tester's finding).
    called: list[list[int]] = []
    batched = threading.Event()

    def batch(xs: list[int]) -> None:
        called.append(list(xs))
        batched.set()

    waited_in_vain: list[int] = []

    def quiet() -> Iterator[int]:
        for i in range(3):
            batched.clear()
            yield i
            if not batched.wait(10):  # until the batch holding item i was called
                waited_in_vain.append(i)

    with Pipeline(Stage(batch, batch_size=10, batch_timeout=0.05)) as pipeline:
        got = sorted(r.index for r in pipeline.results(quiet()))
    assert waited_in_vain == []
    assert called == [[0], [1], [2]]
    assert got == [0, 1, 2]
