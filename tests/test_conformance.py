"""What code written for ``concurrent.futures`` relies on, adapted from CPython's executor tests.

``Pool`` is an ``Executor`` and ``Task`` a ``Future``: submitting after shutdown raises a
``RuntimeError``, nothing of a finished task stays referenced by the pool, the iterator of
``map`` keeps its pool alive, and an event loop that uses the pool as its executor is never
blocked by it.
"""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import textwrap
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from handshakes import wait_until
from workpool import Pool, PoolClosed

pytestmark = pytest.mark.timeout(30)

MakePool = Callable[..., Pool]


class Dummy:
    """An object whose collection the test can observe."""

    def __init__(self, payload: int = 0) -> None:
        self.payload = payload

    def method(self) -> int:
        return self.payload


def make_dummy(i: int) -> Dummy:
    return Dummy(i)


def collected(ref: weakref.ref[Any], timeout: float = 5.0) -> bool:
    """True once the object behind ``ref`` is gone (collecting garbage while waiting)."""
    try:
        wait_until(lambda: gc.collect() >= 0 and ref() is None, timeout)
    except AssertionError:
        return False
    return True


# ---------------------------------------------------------------------- PoolClosed


def test_pool_closed_is_a_runtime_error() -> None:
    # Executor.submit's documentation promises a RuntimeError after shutdown.
    assert issubclass(PoolClosed, RuntimeError)


def test_submit_and_map_after_shutdown_raise_runtime_error(make_pool: MakePool) -> None:
    pool = make_pool(workers=1)
    pool.shutdown()
    with pytest.raises(RuntimeError, match="closed"):
        pool.submit(abs, 1)
    with pytest.raises(RuntimeError, match="closed"):
        list(pool.map(abs, [1]))


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_submit_during_interpreter_shutdown_raises_runtime_error(backend: str) -> None:
    # CPython's test_submit_after_interpreter_shutdown: atexit handlers run after the pools
    # were drained, and a new pool made there could never be drained.
    script = textwrap.dedent(
        f"""
        import atexit
        from workpool import Pool

        @atexit.register
        def run_last():
            for target in (pool, None):
                try:
                    p = target or Pool(2, backend={backend!r})
                    p.submit(abs, 1)
                except RuntimeError as e:
                    print("runtime-error:", e)

        if __name__ == "__main__":
            pool = Pool(2, backend={backend!r})
            print(pool.submit(abs, -42).result())
        """
    )
    out = _run_script(script)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "42"
    assert len(lines) == 3 and all(line.startswith("runtime-error:") for line in lines[1:])
    assert "interpreter shutdown" in lines[2], lines


def _run_script(script: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout
    )


# ---------------------------------------------------------------------- references


def test_no_stale_references(make_pool: MakePool) -> None:
    # CPython's test_no_stale_references: the future lives on, the callable must not.
    pool = make_pool(workers=2)
    obj = Dummy(3)
    ref = weakref.ref(obj)
    task = pool.submit(obj.method)
    assert task.result(timeout=5) == 3
    del obj
    assert collected(ref), "the pool still holds the callable of a finished task"
    assert task.done()


def test_no_stale_references_under_a_deadline(make_pool: MakePool) -> None:
    # A task's deadline timer must not keep the task alive until the deadline.
    pool = make_pool(workers=1, task_timeout=3600)
    obj = Dummy(4)
    ref = weakref.ref(obj)
    assert pool.submit(obj.method).result(timeout=5) == 4
    del obj
    assert collected(ref)


def test_arguments_and_results_of_finished_tasks_are_released(make_pool: MakePool) -> None:
    pool = make_pool(workers=2)
    arg = Dummy(5)
    arg_ref = weakref.ref(arg)
    task = pool.submit(make_dummy, arg.payload)
    result = task.result(timeout=5)
    result_ref = weakref.ref(result)
    del task, result
    assert collected(result_ref), "the pool still holds the result of a dropped task"
    id_task = pool.submit(id, arg)
    id_task.result(timeout=5)
    del id_task, arg
    assert collected(arg_ref), "the pool still holds the argument of a dropped task"


def test_map_frees_each_value_once_yielded(make_pool: MakePool) -> None:
    # CPython's test_free_reference: a value the caller dropped is gone, even while the
    # rest of its batch is still being iterated.
    pool = make_pool(workers=2)
    for obj in pool.map(make_dummy, range(60)):
        ref = weakref.ref(obj)
        del obj
        gc.collect()
        assert ref() is None, "map still holds a value it yielded"


def test_results_frees_each_value_once_yielded(make_pool: MakePool) -> None:
    pool = make_pool(workers=2)
    for r in pool.results(make_dummy, range(60), ordered=True):
        ref = weakref.ref(r.value)
        del r
        gc.collect()
        assert ref() is None, "results still holds a value it yielded"


def test_map_frees_each_argument_once_its_value_was_yielded(make_pool: MakePool) -> None:
    pool = make_pool(workers=2)
    refs: list[weakref.ref[Any]] = []

    def inputs() -> Iterator[Dummy]:
        for i in range(60):
            d = Dummy(i)
            refs.append(weakref.ref(d))
            yield d

    for n, _ in enumerate(pool.map(id, inputs())):
        gc.collect()
        assert refs[n]() is None, f"map still holds input {n} after yielding its value"


# ---------------------------------------------------------------------- map keeps its pool


def test_map_of_a_pool_nobody_else_holds(backend: str) -> None:
    # list(Pool(4).map(f, xs)) works as it does with ThreadPoolExecutor.
    assert list(Pool(2, backend=backend).map(abs, range(-50, 0))) == list(range(50, 0, -1))


def test_a_function_may_return_the_map_of_a_pool_it_created(backend: str) -> None:
    name = f"wp-orphan-{backend}"

    def squares(n: int) -> Iterator[int]:
        return Pool(2, backend=backend, name=name).map(pow, range(n), [2] * n)

    it = squares(100)
    gc.collect()
    assert list(it) == [i * i for i in range(100)]
    # Once both the pool and its iterator are gone, the pool shuts down.
    del it
    gc.collect()
    # (A worker that was sent a unit ahead which another worker took back held that unit,
    # and through it the map and the pool, so the pool was never collected.)
    wait_until(lambda: not [t for t in threading.enumerate() if name in t.name], 10)


# ---------------------------------------------------------------------- event loops


@pytest.mark.timeout(10)
def test_run_in_executor_never_blocks_the_loop_when_the_queue_is_full(
    make_pool: MakePool, gate: Any
) -> None:
    # The loop's thread submits; a blocked submit would block the very loop that opens the
    # gate below: a deadlock, caught by the timeout.
    pool = make_pool(workers=1, queue_size=1)

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        futs = [loop.run_in_executor(pool, gate.task, i) for i in range(10)]
        await loop.run_in_executor(None, gate.wait_started, 1)
        gate.open()
        return list(await asyncio.gather(*futs))

    assert asyncio.run(main()) == list(range(10))


@pytest.mark.timeout(10)
@pytest.mark.skip_backend(
    "process",
    reason="the task calls back into this process's loop, which a worker process "
    "cannot reach; the no-blocking part is covered by the test above",
)
@pytest.mark.skip_backend(
    "dask",
    reason="the task calls back into this process's loop, which a Dask worker cannot "
    "reach; the no-blocking part is covered by the test above",
)
def test_tasks_that_call_back_into_the_loop(make_pool: MakePool) -> None:
    pool = make_pool(workers=1, queue_size=1)

    async def double(x: int) -> int:
        return 2 * x

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()

        def task(x: int) -> int:
            return asyncio.run_coroutine_threadsafe(double(x), loop).result(5)

        futs = [loop.run_in_executor(pool, task, i) for i in range(20)]
        return list(await asyncio.gather(*futs))

    assert asyncio.run(main()) == [2 * i for i in range(20)]


# ---------------------------------------------------------------------- coroutine functions


async def fetch(x: int) -> int:
    return x


def test_a_coroutine_function_is_refused_by_a_thread_pool_with_a_pointer_to_async() -> None:
    # (The async backend awaits coroutine functions; a process worker runs them on its own
    # event loop: see test_async_pool.py.)
    with Pool(1, backend="thread") as pool:
        for call in (
            lambda: pool.submit(fetch, 1),
            lambda: pool.try_submit(fetch, 1),
            lambda: pool.map(fetch, [1]),
            lambda: pool.results(fetch, [1]),
        ):
            with pytest.raises(TypeError, match=r"coroutine function.*backend=.async.*AsyncPool"):
                call()
        assert pool.stats().submitted == 0
