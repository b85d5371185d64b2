"""map / results: order, laziness, bounded intake, fail-fast, break-out, and batching."""

from __future__ import annotations

import functools
import gc
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from bursts import Bursts
from handshakes import wait_until
from workpool import Pool, PoolClosed, Result, TaskError, current_task

MakePool = Callable[..., Pool]


pytestmark = pytest.mark.timeout(15)


class Source:
    """An input generator that records every item pulled from it (in the consuming thread)."""

    def __init__(self, n: int | None = None, *, fail_after: int | None = None) -> None:
        self.pulled: list[int] = []
        self._n = n
        self._fail_after = fail_after
        self.error = RuntimeError(f"input failed after {fail_after} items")

    def __iter__(self) -> Iterator[int]:
        numbers = itertools.count() if self._n is None else range(self._n)
        for i in numbers:
            if self._fail_after is not None and i == self._fail_after:
                raise self.error
            self.pulled.append(i)
            yield i

    @property
    def count(self) -> int:
        return len(self.pulled)


def square(x: int) -> int:
    return x * x


def fail_on_multiples_of_7(x: int) -> int:
    if x % 7 == 0:
        raise ValueError(f"item {x} is a multiple of 7")
    return -x


def _finish_last(shared: Any, n: int) -> Callable[[int], int]:
    """A task where item 0 returns only after items 1..n-1 ran: completion order != input."""
    cv = shared.condition()
    finished = shared.value(0)

    def fn(x: int) -> int:
        with cv:
            if x == 0:
                assert cv.wait_for(lambda: finished.value >= n - 1, timeout=10)
            else:
                finished.value += 1
                cv.notify_all()
        return x

    return fn


# -- order


def test_map_yields_values_in_input_order(make_pool: MakePool, shared: Any) -> None:
    pool = make_pool(workers=4)
    fn = _finish_last(shared, 4)
    assert list(pool.map(fn, range(4), chunksize=1)) == [0, 1, 2, 3]
    assert list(pool.map(square, range(1000))) == [x * x for x in range(1000)]


def test_map_unordered_yields_as_they_finish(make_pool: MakePool, shared: Any) -> None:
    pool = make_pool(workers=4)
    release = shared.event()

    def fn(x: int) -> int:
        if x == 0:
            assert release.wait(10)
        return x

    it = pool.map(fn, range(4), ordered=False, chunksize=1)
    # Item 0 is blocked until we have seen the other three: an ordered map would hang here.
    first = [next(it) for _ in range(3)]
    assert sorted(first) == [1, 2, 3]
    release.set()
    assert list(it) == [0]
    assert sorted(pool.map(square, range(500), ordered=False)) == [x * x for x in range(500)]


def test_results_default_is_unordered_and_complete(make_pool: MakePool, shared: Any) -> None:
    pool = make_pool(workers=4)
    release = shared.event()

    def fn(x: int) -> int:
        if x == 0:
            assert release.wait(10)
        return x * 10

    it = pool.results(fn, range(4), chunksize=1)
    first = [next(it) for _ in range(3)]
    assert sorted(r.index for r in first) == [1, 2, 3]
    release.set()
    rest = list(it)
    assert [r.index for r in rest] == [0]
    for r in [*first, *rest]:
        assert isinstance(r, Result)
        assert r.ok and r.item == r.index and r.value == r.index * 10
        assert r.attempts == 1 and r.duration >= 0

    many = list(pool.results(square, range(2000)))
    assert sorted(r.index for r in many) == list(range(2000))
    assert all(r.value == r.item * r.item for r in many)


def test_results_ordered(make_pool: MakePool, shared: Any) -> None:
    pool = make_pool(workers=4)
    fn = _finish_last(shared, 4)
    assert [r.index for r in pool.results(fn, range(4), ordered=True, chunksize=1)] == [0, 1, 2, 3]
    out = list(pool.results(square, range(2000), ordered=True))
    assert [r.index for r in out] == list(range(2000))
    assert [r.value for r in out] == [x * x for x in range(2000)]


# -- several iterables


def test_several_iterables_zip(make_pool: MakePool) -> None:
    pool = make_pool(workers=2)
    assert list(pool.map(pow, [2, 3, 4], [5, 2])) == [32, 9]  # shortest wins
    out = list(pool.results(pow, [2, 3, 4], [5, 2, 1], ordered=True))
    assert [r.item for r in out] == [(2, 5), (3, 2), (4, 1)]
    assert [r.value for r in out] == [32, 9, 4]
    assert list(pool.map(pow, itertools.count(2), [1, 2, 3])) == [2, 9, 64]


def test_empty_input(make_pool: MakePool) -> None:
    pool = make_pool(workers=2)
    assert list(pool.map(square, [])) == []
    assert list(pool.results(square, [])) == []
    assert list(pool.map(pow, [1, 2], [])) == []
    assert list(pool.results(square, iter(()))) == []
    assert pool.stats().submitted == 0


# -- laziness and bounded intake


def test_nothing_is_read_before_the_first_next(make_pool: MakePool) -> None:
    pool = make_pool(workers=2)
    src_map, src_results = Source(10), Source(10)
    it_map = pool.map(square, src_map)
    it_results = pool.results(square, src_results)
    assert src_map.count == 0 and src_results.count == 0
    assert pool.stats().submitted == 0
    assert next(it_map) == 0
    assert src_map.count >= 1
    assert src_results.count == 0
    assert next(it_results).ok
    assert src_results.count >= 1
    it_map.close()
    it_results.close()


def test_an_infinite_generator_works(make_pool: MakePool) -> None:
    pool = make_pool(workers=4)
    assert list(itertools.islice(pool.map(square, itertools.count()), 300)) == [
        x * x for x in range(300)
    ]
    for taken, r in enumerate(pool.results(square, itertools.count()), 1):
        assert r.ok
        if taken == 300:
            break
    assert pool.join(timeout=5)


@pytest.mark.parametrize("face", ["map", "results"])
def test_an_input_that_would_wait_holds_back_no_item_and_no_result(
    make_pool: MakePool, face: str
) -> None:
    """Where the input would wait (a pipe gone quiet), every item read before has run and its
    result is in the caller's hands: nothing waits for the input to fill a unit, and no result
    waits for the input's next item. Bursts are bigger than the batches the pool learns for a
    call this short (``tail -f log | workpool run`` in the library's terms)."""
    pool = make_pool(workers=2)
    bursts = [1, 3, 40, 300, 7, 2000, 1]
    src = Bursts(bursts)
    out: list[int] = []
    if face == "map":
        for value in pool.map(square, src):
            out.append(value)
            src.received += 1
    else:
        for r in pool.results(square, src):
            out.append(r.unwrap())
            src.received += 1
    n = sum(bursts)
    assert sorted(out) == [i * i for i in range(n)]
    ends = list(itertools.accumulate(bursts))
    assert src.waits == [(0, 0)] + [(end, end) for end in ends]


def test_intake_is_bounded_while_tasks_block(make_pool: MakePool, gate: Any) -> None:
    workers, queue_size = 2, 2
    pool = make_pool(workers=workers, queue_size=queue_size)
    src = Source()  # infinite
    out: list[Any] = []
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            for v in pool.map(gate.task, src):
                out.append(v)
        except BaseException as e:
            errors.append(e)

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    gate.wait_started(workers)
    # The bound from the notes: read-but-not-yielded <= 2 * (workers + queue_size + 1) * batch,
    # with batch 1 before any result came back.
    bound = 2 * (workers + queue_size + 1)
    assert src.count <= bound
    s = pool.stats()
    assert s.submitted <= workers + queue_size
    assert s.running == workers
    # Closing the pool ends the map: what was accepted drains and comes out, in order, then
    # PoolClosed says why the rest of the input was not read.
    pool.close()
    gate.open()
    consumer.join(10)
    assert not consumer.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], PoolClosed)
    assert out == list(range(len(out)))
    assert s.submitted <= len(out) <= src.count <= bound


def test_intake_stays_bounded_while_streaming(make_pool: MakePool) -> None:
    workers, queue_size, chunk = 3, 2, 4
    pool = make_pool(workers=workers, queue_size=queue_size)
    src = Source(3000)
    bound = 2 * (workers + queue_size + 1) * chunk
    worst = 0
    consumed = 0
    for v in pool.map(square, src, chunksize=chunk):
        assert v == consumed * consumed
        consumed += 1
        worst = max(worst, src.count - consumed)
    assert consumed == 3000
    assert worst <= bound


def test_map_keeps_every_worker_busy_with_a_hand_off_queue(make_pool: MakePool, gate: Any) -> None:
    # queue_size=0: no unit waits, so map must hand a unit to each worker as it becomes free.
    pool = make_pool(workers=2, queue_size=0)
    out: list[Any] = []
    consumer = threading.Thread(
        target=lambda: out.extend(pool.map(gate.task, range(6))), daemon=True
    )
    consumer.start()
    try:
        gate.wait_started(2, timeout=5)
    finally:
        gate.open()
        consumer.join(10)
    assert out == list(range(6))


def test_map_keeps_every_worker_busy(make_pool: MakePool, gate: Any) -> None:
    pool = make_pool(workers=3)
    out: list[Any] = []
    consumer = threading.Thread(
        target=lambda: out.extend(pool.map(gate.task, range(9))), daemon=True
    )
    consumer.start()
    try:
        gate.wait_started(3, timeout=5)
    finally:
        gate.open()
        consumer.join(10)
    assert out == list(range(9))


# -- map fails fast


def test_map_raises_task_error_at_the_failed_item(make_pool: MakePool) -> None:
    pool = make_pool(workers=3)

    def fn(x: int) -> int:
        if x == 5:
            raise KeyError(f"no {x}")
        return x

    got: list[int] = []
    with pytest.raises(TaskError) as info:
        for v in pool.map(fn, range(50), chunksize=1):
            got.append(v)
    assert got == [0, 1, 2, 3, 4]  # ordered: values before the failure come out first
    err = info.value
    assert isinstance(err.__cause__, KeyError)
    assert err.__cause__.args == ("no 5",)
    r = err.result
    assert isinstance(r, Result)
    assert not r.ok and r.index == 5 and r.item == 5
    assert r.error is err.__cause__
    assert r.traceback is not None and "KeyError" in r.traceback
    assert "5" in str(err)


def test_map_failure_cancels_the_calls_queued_work(
    make_pool: MakePool, gate: Any, shared: Any
) -> None:
    pool = make_pool(workers=2, queue_size=4)
    src = Source(100)
    ran = shared.list()

    def fn(x: int) -> int:
        ran.append(x)
        if x == 0:
            raise ValueError("first item fails")
        return int(gate.block(x))

    with pytest.raises(TaskError) as info:
        list(pool.map(fn, src, chunksize=1))
    assert info.value.result.index == 0
    assert isinstance(info.value.__cause__, ValueError)
    pulled = src.count
    gate.open()
    assert pool.join(timeout=5)
    s = pool.stats()
    assert s.cancelled > 0
    assert s.submitted == s.succeeded + s.failed + s.cancelled
    # Only what was running (at most one item per worker after the failed one) ever ran.
    assert len(ran) <= 1 + 2
    assert src.count == pulled  # the input is not read any further
    assert pulled < 100


one_unit_whole = pytest.mark.skip_backend(
    "process",
    "dask",
    reason="a worker process (or Dask task) runs its unit whole: a failure in it ends the "
    "map at its raise, and the units not started then are cancelled (the queued-work test)",
)


@one_unit_whole
@pytest.mark.parametrize("ordered", [True, False])
def test_a_map_failure_cancels_the_rest_of_its_unit(
    make_pool: MakePool, shared: Any, ordered: bool
) -> None:
    # Units hold many calls (chunksize here; the pool's own sizing for tiny calls): after
    # item 10 failed, its unit went on with items 11-99 (an outside tester counted up to
    # 3,900 tiny calls started after the failure). They are the call's not-yet-started work.
    pool = make_pool(workers=1)
    ran = shared.list()

    def fn(x: int) -> int:
        ran.append(x)
        if x == 10:
            raise ValueError("item 10 fails")
        return x

    with pytest.raises(TaskError) as info:
        list(pool.map(fn, range(100), chunksize=100, ordered=ordered))
    assert info.value.result.index == 10
    assert pool.join(timeout=5)
    assert sorted(ran[:]) == list(range(11))
    s = pool.stats()
    assert (s.succeeded, s.failed, s.cancelled, s.queued, s.running) == (10, 1, 89, 0, 0)


@one_unit_whole
def test_a_map_failure_cancels_the_unstarted_rest_of_its_running_units(
    make_pool: MakePool, gate: Any, shared: Any
) -> None:
    # Worker 1 is in item 5 of its unit (0-99) when item 100 (worker 2's) fails: once the
    # map raised, items 6-99 never start (they ran on, started after the TaskError reached
    # the caller, before). Item 5 itself runs to its end.
    pool = make_pool(workers=2)
    ran = shared.list()
    at_5 = shared.event()

    def fn(x: int) -> int:
        ran.append(x)
        if x == 5:
            at_5.set()
            gate.block()
        if x == 100:
            assert at_5.wait(10)
            raise ValueError("item 100 fails")
        return x

    with pytest.raises(TaskError) as info:
        list(pool.map(fn, range(200), chunksize=100, ordered=False))
    assert info.value.result.index == 100
    gate.open()
    assert pool.join(timeout=5)
    assert sorted(ran[:]) == [*range(6), 100]
    s = pool.stats()
    assert s.submitted == s.succeeded + s.failed + s.cancelled
    assert s.cancelled == 200 - 7


def test_map_unordered_fails_fast_too(make_pool: MakePool) -> None:
    pool = make_pool(workers=2)
    with pytest.raises(TaskError) as info:
        list(pool.map(fail_on_multiples_of_7, range(1, 1000), ordered=False))
    assert info.value.result.index % 7 == 6  # input position of a multiple of 7
    assert isinstance(info.value.__cause__, ValueError)


def test_map_timeout(make_pool: MakePool, gate: Any) -> None:
    pool = make_pool(workers=1)
    it = pool.map(gate.task, [1, 2], timeout=0.1)
    with pytest.raises(TimeoutError) as info:
        next(it)
    assert not isinstance(info.value, TaskError)
    gate.open()
    it.close()
    assert pool.join(timeout=5)
    assert list(pool.map(square, [3], timeout=5)) == [9]


# -- results never raises for a task


def test_results_never_raises_for_task_failures(make_pool: MakePool) -> None:
    pool = make_pool(workers=3)
    out = list(pool.results(fail_on_multiples_of_7, range(100), chunksize=1))
    assert len(out) == 100
    failed = sorted(r.index for r in out if not r.ok)
    assert failed == list(range(0, 100, 7))


def test_batching_keeps_per_item_errors(make_pool: MakePool) -> None:
    # Tiny tasks get batched automatically; every item still gets its own Result.
    n = 5000
    pool = make_pool(workers=4)
    out = list(pool.results(fail_on_multiples_of_7, range(n)))
    assert len(out) == n
    by_index = {r.index: r for r in out}
    assert sorted(by_index) == list(range(n))
    for i, r in by_index.items():
        assert r.item == i
        if i % 7 == 0:
            assert not r.ok
            assert isinstance(r.error, ValueError)
            assert str(r.error) == f"item {i} is a multiple of 7"
            assert r.traceback is not None and "fail_on_multiples_of_7" in r.traceback
            # The traceback starts at the task: the worker's own loop is left out.
            assert "run_batch" not in r.traceback and "_run_unit" not in r.traceback
            assert r.value is None
        else:
            assert r.ok and r.value == -i and r.traceback is None
    s = pool.stats()
    assert s.failed == len(range(0, n, 7))
    assert s.succeeded == n - s.failed


def stop_on_multiples_of_50(x: int) -> int:
    if x % 50 == 0:
        raise StopIteration(f"item {x}")
    return x


@pytest.mark.parametrize("iterables", [1, 2])
def test_a_task_raising_stop_iteration_fails_only_itself(
    make_pool: MakePool, iterables: int
) -> None:
    # StopIteration out of a task is just its error: the batch it runs in goes on, and no
    # later outcome shifts onto its place (a loop that ran calls through an iterator would
    # take it for the end of the batch).
    pool = make_pool(workers=2)
    fn = stop_on_multiples_of_50 if iterables == 1 else (lambda x, y: stop_on_multiples_of_50(x))
    out = list(pool.results(fn, *[range(3000)] * iterables, ordered=True))
    assert [r.index for r in out] == list(range(3000))
    for r in out:
        if r.index % 50 == 0:
            assert isinstance(r.error, StopIteration) and str(r.error) == f"item {r.index}"
            assert r.traceback is not None and "stop_on_multiples_of_50" in r.traceback
        else:
            assert r.ok and r.value == r.index, r


def where_am_i(x: int) -> tuple[int, int, float | None]:
    task = current_task()
    assert task is not None
    return task.id, task.attempt, task.deadline


@pytest.mark.parametrize("iterables", [1, 2])
def test_current_task_knows_each_batched_call(make_pool: MakePool, iterables: int) -> None:
    # Batched tiny calls run in bulk, but each still sees its own index in current_task().
    pool = make_pool(workers=2)
    fn = where_am_i if iterables == 1 else (lambda x, y: where_am_i(x))
    inputs = [range(3000)] * iterables
    out = list(pool.results(fn, *inputs, chunksize=64))
    assert sorted(r.index for r in out) == list(range(3000))
    assert all(r.ok and r.value == (r.index, 1, None) for r in out), [
        r for r in out if r.value is None or r.value[0] != r.index
    ][:3]


def test_batched_map_raises_at_the_first_failure_in_order(make_pool: MakePool) -> None:
    def fn(x: int) -> int:
        if x % 7 == 6:
            raise ValueError(x)
        return x

    pool = make_pool(workers=4)
    got: list[int] = []
    with pytest.raises(TaskError) as info:
        for v in pool.map(fn, range(5000)):
            got.append(v)
    assert got == [0, 1, 2, 3, 4, 5]
    assert info.value.result.index == 6 and info.value.result.item == 6


@pytest.mark.parametrize("chunksize", [1, 3, 64])
def test_chunksize(make_pool: MakePool, chunksize: int) -> None:
    pool = make_pool(workers=3)
    out = list(pool.results(fail_on_multiples_of_7, range(200), ordered=True, chunksize=chunksize))
    assert [r.index for r in out] == list(range(200))
    assert [r.index for r in out if not r.ok] == list(range(0, 200, 7))
    assert list(pool.map(square, range(200), chunksize=chunksize)) == [x * x for x in range(200)]


def test_chunksize_groups_items_into_one_unit(make_pool: MakePool, gate: Any, shared: Any) -> None:
    # With chunksize=5, items 0-4 are one unit and 5-9 the next: the two workers start on
    # items 0 and 5 (a unit runs its items one after another in one worker).
    pool = make_pool(workers=2)
    entered = shared.list()

    def fn(x: int) -> int:
        entered.append(x)
        return int(gate.block(x))

    consumer_out: list[int] = []
    consumer = threading.Thread(
        target=lambda: consumer_out.extend(pool.map(fn, range(10), chunksize=5)), daemon=True
    )
    consumer.start()
    try:
        gate.wait_started(2, timeout=5)
        assert sorted(entered[:]) == [0, 5]
        assert pool.stats().running == 2
    finally:
        gate.open()
        consumer.join(10)
    assert consumer_out == list(range(10))


@pytest.mark.skip_backend(
    "process",
    "dask",
    reason="a unit goes to a worker process (or a remote worker) whole: only workers that "
    "claim a unit's calls one at a time here (threads, coroutines) can share its rest",
)
@pytest.mark.parametrize("face", ["map", "results"])
def test_calls_that_turn_slow_in_a_large_unit_spread_over_the_idle_workers(
    make_pool: MakePool, shared: Any, face: str
) -> None:
    # A generator (length unknown): 400 instant calls make the units large, then the last
    # four calls are slow, in one unit or two. They must not run one after another while
    # three workers idle: each waits until all four run at once (a barrier). Before, the
    # barrier broke (the calls of a unit ran in a row) and the four failed.
    pool = make_pool(workers=4)
    barrier = shared.barrier(4, timeout=20)

    def fn(x: int) -> int:
        if x >= 400:
            barrier.wait()
        return x

    def items() -> Iterator[int]:
        yield from range(404)

    if face == "map":
        assert list(pool.map(fn, items())) == list(range(404))
    else:
        got = sorted(pool.results(fn, items()), key=lambda r: r.index)
        assert [r.error for r in got if not r.ok] == []
        assert [r.value for r in got] == list(range(404))


@pytest.mark.skip_backend(
    "process",
    "dask",
    reason="a worker process gives back its unit's rest itself (test_process.py::test_a_unit_"
    "whose_calls_turned_slow_hands_out_its_results_and_gives_back_the_rest); a Dask task runs "
    "its unit whole",
)
def test_a_busy_worker_whose_calls_turned_slow_hands_out_what_finished(
    make_pool: MakePool,
) -> None:
    # One worker, so none is idle to take the rest of its unit: a slow call and a held one
    # after 3,000 instant calls fell in one unit, and the slow call's result (with the
    # instant ones before it) came only once the held call returned (an outside tester's
    # finding: `workpool run -j 1` wrote and journaled nothing meanwhile). Once the slow
    # call is late, the unit's rest goes back to the queue: the unit ends with that call.
    pool = make_pool(workers=1)
    release = threading.Event()

    def fn(x: int) -> int:
        if x == 3000:
            time.sleep(0.05)  # (the work: it turns late)
        elif x == 3001:
            release.wait(20)  # (bounds the old behaviour's wait)
        return x

    seen_while_held = None
    try:
        for r in pool.results(fn, (i for i in range(3005))):  # (length unknown)
            assert r.ok, r.error
            if r.index == 3000:
                seen_while_held = not release.is_set()
                release.set()
    finally:
        release.set()
    assert seen_while_held


@pytest.mark.skip_backend(
    "process", "dask", reason="units go to other processes whole: none is ever split there"
)
@pytest.mark.parametrize("chunksize", [None, 4])
def test_only_units_the_pool_sized_itself_may_be_split(
    make_pool: MakePool, gate: Any, chunksize: int | None
) -> None:
    # A chunksize the caller gave is kept: its units run whole (white-box: the engine's set
    # of units an idle worker may split). The pool's own units of several calls may be.
    # One worker: none other may take the blocked calls before the check (with four, a
    # loaded machine let the check come after one did); 3,000 instant calls before them
    # grow the units even when a few of those calls are slowed by the machine's load.
    pool = make_pool(workers=1)

    def fn(x: int) -> int:
        return x if x < 3000 else int(gate.block(x))  # instant calls grow the units

    items = iter(range(3004))  # (a generator: no tail sizing)
    results = pool.results(fn, items, chunksize=chunksize)
    consumer = threading.Thread(target=lambda: list(results), daemon=True)
    consumer.start()
    try:
        gate.wait_started(1)
        splittable = [s for s in pool._engine.split._splittable if s.unit is not None]
        if chunksize is None:
            assert splittable != []  # the unit with the blocked calls
        else:
            assert splittable == []
    finally:
        gate.open()
        consumer.join(10)


@pytest.mark.skip_backend(
    "process", "dask", reason="units go to other processes whole: none is ever split there"
)
def test_a_chunksize_unit_is_never_split_even_after_the_pools_own_units(
    make_pool: MakePool, gate: Any
) -> None:
    # The worker first runs units the pool sized itself (splittable), then a unit of the
    # caller's chunksize: that one must not be taken for a late unit. (White-box: ask the
    # engine for a late unit as if much time had passed. A reviewer found it split: the
    # worker stayed in the engine's set of splittable slots.)
    pool = make_pool(workers=1)
    assert list(pool.map(abs, iter(range(-3000, 0)))) == list(range(3000, 0, -1))
    got: list[int] = []
    consumer = threading.Thread(
        target=lambda: got.extend(pool.map(gate.task, range(4), chunksize=4)), daemon=True
    )
    consumer.start()
    try:
        gate.wait_started(1)
        engine = pool._engine
        with engine._lock:
            assert engine.split.late_unit(engine.now() + 3600, None) == (None, None)
    finally:
        gate.open()
        consumer.join(10)
    assert got == [0, 1, 2, 3]


# -- breaking off


def _first_then_block(gate: Any, ran: Any, reads: Any) -> Callable[[int], int]:
    """Every item records itself in ``ran``; item 0 then returns once four items were read
    (``reads``: see ``_counted``), the others wait at the gate. Until item 0's result is
    ready the call reads its input on (a result ready goes back before the next read): so
    two workers hold items 1 and 2 at the gate after it, and item 3 is queued."""

    def fn(x: int) -> int:
        ran.append(x)
        if x == 0:
            wait_until(lambda: len(reads) >= 4, 10)
            return x
        return int(gate.block(x))

    return fn


def _counted(src: Iterable[int], reads: Any) -> Iterator[int]:
    for x in src:
        reads.append(x)
        yield x


def test_break_out_of_results_cancels_and_stops_reading(
    make_pool: MakePool, gate: Any, shared: Any
) -> None:
    workers = 2
    pool = make_pool(workers=workers, queue_size=2)
    src = Source(1000)
    ran, reads = shared.list(), shared.list()
    fn = _first_then_block(gate, ran, reads)
    for r in pool.results(fn, _counted(src, reads), chunksize=1):
        assert r.index == 0
        gate.wait_started(workers)  # both workers now hold a blocked item
        pulled = src.count
        break
    gate.open()
    assert pool.join(timeout=5)
    assert src.count == pulled  # nothing read after the break
    s = pool.stats()
    assert s.cancelled > 0
    assert s.submitted == s.succeeded + s.failed + s.cancelled
    assert len(ran) == 1 + workers  # item 0 plus what was running; the queued never ran
    # The pool is still fine.
    assert list(pool.map(square, range(10))) == [x * x for x in range(10)]
    assert pool.submit(square, 3).result(timeout=5) == 9


def test_dropping_the_generator_cancels_and_stops_reading(
    make_pool: MakePool, gate: Any, shared: Any
) -> None:
    workers = 2
    pool = make_pool(workers=workers, queue_size=2)
    src = Source(1000)
    ran, reads = shared.list(), shared.list()
    it = pool.results(_first_then_block(gate, ran, reads), _counted(src, reads), chunksize=1)
    assert next(it).index == 0
    gate.wait_started(workers)
    pulled = src.count
    del it
    gc.collect()
    gate.open()
    assert pool.join(timeout=5)
    assert src.count == pulled
    s = pool.stats()
    assert s.cancelled > 0
    assert len(ran) == 1 + workers
    assert sorted(pool.map(square, range(5), ordered=False)) == [0, 1, 4, 9, 16]


def test_break_out_of_map_cancels(make_pool: MakePool, gate: Any, shared: Any) -> None:
    pool = make_pool(workers=2, queue_size=2)
    src = Source(1000)
    ran, reads = shared.list(), shared.list()
    for v in pool.map(_first_then_block(gate, ran, reads), _counted(src, reads), chunksize=1):
        assert v == 0
        gate.wait_started(2)
        pulled = src.count
        break
    gate.open()
    assert pool.join(timeout=5)
    assert src.count == pulled
    assert pool.stats().cancelled > 0


# -- an input that fails


@pytest.mark.parametrize("face", ["map", "results"])
def test_failing_input_yields_in_flight_results_then_raises(make_pool: MakePool, face: str) -> None:
    pool = make_pool(workers=2)
    src = Source(fail_after=5)
    got: list[Any] = []
    with pytest.raises(RuntimeError) as info:
        for v in getattr(pool, face)(square, src, chunksize=1):
            got.append(v)
    assert info.value is src.error
    if face == "map":
        assert got == [0, 1, 4, 9, 16]
    else:
        assert sorted(r.index for r in got) == [0, 1, 2, 3, 4]
    assert pool.join(timeout=5)
    assert list(pool.map(square, [2])) == [4]


@pytest.mark.parametrize("chunksize", [None, 8])
def test_failing_input_loses_no_item_it_produced(
    make_pool: MakePool, chunksize: int | None
) -> None:
    # Every item the iterator handed over before raising gets its Result, however the
    # items were batched (here the error comes in the middle of a batch).
    pool = make_pool(workers=2)
    src = Source(fail_after=3005)
    got: list[Result[int]] = []
    with pytest.raises(RuntimeError):
        for r in pool.results(square, src, chunksize=chunksize):
            got.append(r)
    assert src.count == 3005
    assert sorted(r.index for r in got) == list(range(3005))


# -- progress


def test_progress_is_silent_off_a_terminal_and_a_bar_on_one(
    make_pool: MakePool, capsys: pytest.CaptureFixture[str]
) -> None:
    pool = make_pool(workers=2)
    assert list(pool.map(abs, range(-50, 0), progress=True)) == list(range(50, 0, -1))
    assert len(list(pool.results(abs, range(50), progress=True))) == 50
    assert capsys.readouterr().err == ""  # stderr is not a terminal here: nothing at all


@pytest.mark.skip_backend("process", "async", reason="the bar is the face's; one backend shows it")
def test_progress_bar_on_a_terminal(backend: str) -> None:
    import fcntl
    import os
    import pty
    import struct
    import sys
    import termios

    script = (
        "from workpool import Pool\n"
        "with Pool(2, name='counting') as p:\n"
        "    list(p.results(abs, range(300), progress=True))\n"
    )
    pid, fd = pty.fork()
    if pid == 0:  # the child's stderr is a terminal 120 columns wide (a new one has 0)
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        os.execv(sys.executable, [sys.executable, "-c", script])
    chunks = []
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.waitpid(pid, 0)
    screen = b"".join(chunks).decode(errors="replace")
    assert "counting" in screen and "300/300" in screen, screen[-1000:]


@pytest.mark.timeout(60)
def test_a_slow_input_gets_the_results_that_are_ready_before_each_read(
    make_pool: MakePool,
) -> None:
    # An input that waits for its next item (a generator over a quiet source), read with
    # chunksize=1: a result that is ready goes back before the next read, which may wait.
    # It waited until the window (workers + queue) was read full: 6 slow reads for 2
    # workers, ~3 per worker in general (an outside tester's finding against the README).
    pool = make_pool(workers=2)
    log: list[tuple[str, int]] = []

    def delivered(k: int) -> bool:
        # Item k's result reached the call (or the consumer): white-box, the call's inbox
        # and its ready results, as the next read must not begin before it is looked at.
        frame = getattr(it, "gi_frame", None)
        stream = frame.f_locals["self"] if frame is not None else None
        if stream is None:
            return True
        intake = stream._intake
        return ("result", k) in log or bool(intake.inbox) or bool(stream._ready)

    def slow_input() -> Iterator[int]:
        for k in range(8):
            log.append(("read", k))
            if k:
                wait_until(functools.partial(delivered, k - 1), 10)  # the source's next item
            yield k

    it = pool.results(abs, slow_input(), chunksize=1)
    for r in it:
        log.append(("result", r.index))
    where = {event: i for i, event in enumerate(log)}
    # Result k comes back before item k + 2 is asked for (item k + 1's read is under way
    # when it becomes ready).
    late = [k for k in range(6) if where[("result", k)] > where[("read", k + 2)]]
    assert not late, log
