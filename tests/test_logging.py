"""The ``workpool`` logger: quiet by default, and what it says when asked."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from handshakes import wait_until
from workpool import Pool, Retry, TaskTimeout

pytestmark = pytest.mark.timeout(20)

MakePool = Callable[..., Pool]


def test_retries_are_logged(make_pool: MakePool, shared: Any, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG, logger="workpool")
    pool = make_pool(workers=1, retries=Retry(1, backoff=0))
    counter = shared.counter()

    def flaky() -> int:
        if counter.add() == 1:
            raise OSError("flaky disk")
        return 1

    assert pool.submit(flaky).result(timeout=10) == 1
    [record] = [r for r in caplog.records if "retry" in r.getMessage()]
    assert record.name.startswith("workpool")
    assert record.levelno == logging.INFO
    assert "OSError: flaky disk" in record.getMessage()
    assert "attempt 1" in record.getMessage()


@pytest.mark.skip_backend(
    "process",
    reason="a process worker is killed, not abandoned; its replacement is logged in "
    "test_a_killed_worker_is_logged",
)
@pytest.mark.skip_backend(
    "async",
    reason="a coroutine is cancelled, and ends: nothing stays abandoned; a coroutine that "
    "swallows its cancellation is covered in test_async_pool.py",
)
def test_abandoned_threads_are_logged_and_counted(
    make_pool: MakePool, gate: Any, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG, logger="workpool")
    pool = make_pool(workers=2, task_timeout=0.05)
    task = pool.submit(gate.task, 1)
    assert isinstance(task.exception(timeout=10), TaskTimeout)
    assert pool.stats().abandoned == 1
    [record] = [r for r in caplog.records if "abandoned" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "task 1" in record.getMessage() and "timed out" in record.getMessage()
    gate.open()
    wait_until(lambda: pool.stats().abandoned == 0, 10)


@pytest.mark.skip_backend(
    "thread", "async", reason="threads are abandoned and coroutines cancelled, not killed"
)
def test_a_killed_worker_is_logged(make_pool: MakePool, gate: Any, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG, logger="workpool")
    pool = make_pool(workers=1, task_timeout=0.2)
    task = pool.submit(gate.task, 1)
    assert isinstance(task.exception(timeout=10), TaskTimeout)
    assert pool.submit(abs, -1).result(timeout=10) == 1
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("workpool")]
    assert any("killed" in m and "task 1" in m for m in messages), messages


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_the_logger_is_quiet_by_default(backend: str, tmp_path: Any) -> None:
    script = textwrap.dedent(
        f"""
        import os, sys, time
        from workpool import Pool, Retry
        def flaky(marker):  # fails the first time only (state in a file: any backend)
            if not os.path.exists(marker):
                open(marker, "w").close()
                raise OSError("once")
            return 1
        def hang():
            time.sleep(1)
        if __name__ == "__main__":
            with Pool(1, backend={backend!r}, retries=Retry(1, backoff=0), task_timeout=0.3) as p:
                print(p.submit(flaky, sys.argv[1]).result())
                print(type(p.submit(hang).exception()).__name__)
        """
    )
    marker = str(tmp_path / "marker")
    out = subprocess.run(
        [sys.executable, "-c", script, marker], capture_output=True, text=True, timeout=15
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "TaskTimeout"]
    assert out.stderr == ""
