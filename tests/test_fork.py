"""A process forked while a pool exists: the child neither hangs at exit nor uses the copy."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork"),
]


def run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=25,
    )


FORK_WHILE_BUSY = """
import multiprocessing, os, tempfile, warnings
from workpool import Pool
warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)

def child():
    pass

def hold(fifo):
    with open(fifo) as f:  # blocks until the parent opens the FIFO to write
        return f.read() == "go"

if __name__ == "__main__":
    fifo = os.path.join(tempfile.mkdtemp(), "fifo")
    os.mkfifo(fifo)
    pool = Pool(2, backend=BACKEND)
    busy = pool.submit(hold, fifo)
    proc = multiprocessing.get_context("fork").Process(target=child)
    proc.start()
    proc.join(10)
    print("child exit code:", proc.exitcode)
    with open(fifo, "w") as f:
        f.write("go")
    print(busy.result(10))
    pool.shutdown()
"""


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_a_process_forked_while_a_pool_has_work_exits(backend: str) -> None:
    # The child inherits the exit-time drain hook and a copy of the busy pool, whose workers
    # do not exist in it: it must not wait for them at exit.
    out = run(FORK_WHILE_BUSY.replace("BACKEND", repr(backend)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["child exit code: 0", "True"], out.stdout + out.stderr


def test_a_forked_child_cannot_use_the_parents_pool_and_says_why() -> None:
    out = run(
        """
        import os, threading, warnings
        from workpool import Pool, PoolClosed
        warnings.simplefilter("ignore", DeprecationWarning)
        if __name__ == "__main__":
            release = threading.Event()
            pool = Pool(2)
            busy = pool.submit(release.wait, 20)
            pid = os.fork()
            if pid == 0:
                try:
                    pool.submit(abs, 1)
                except PoolClosed as e:
                    print("child:", e, flush=True)
                report = pool.shutdown()
                print("child report finished:", report.finished, flush=True)
                os._exit(0)
            _, status = os.waitpid(pid, 0)
            release.set()
            print("parent:", busy.result(5), os.waitstatus_to_exitcode(status))
            pool.shutdown()
        """
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("child:") and "parent process" in lines[0], lines
    assert lines[1] == "child report finished: False"
    assert lines[2] == "parent: True 0"


OS_FORK_CHILD_EXITS = """
import os, sys, warnings
from workpool import Pool
warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)

if __name__ == "__main__":
    with Pool(2, backend="process") as pool:
        assert pool.submit(abs, -1).result(10) == 1  # its worker processes are running
        pid = os.fork()
        if pid == 0:
            sys.exit(0)  # a normal exit: the exit handlers run in the child
        _, status = os.waitpid(pid, 0)
        print("child status", status)
"""


def test_a_child_of_os_fork_exits_quietly_beside_the_parents_process_workers() -> None:
    # The parent's worker processes were in the child's copy of multiprocessing's children:
    # its exit handler tried to join them ("AssertionError: can only join a child process").
    out = run(OS_FORK_CHILD_EXITS)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["child status 0"], out.stdout + out.stderr
    assert "AssertionError" not in out.stderr and "Traceback" not in out.stderr, out.stderr


OS_FORK_CHILD_POOL = """
import os, sys, warnings
from workpool import Pool
warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)

if __name__ == "__main__":
    with Pool(2, backend="process") as pool:
        assert pool.submit(abs, -1).result(10) == 1  # the parent's fork server runs
        pid = os.fork()
        if pid == 0:
            with Pool(2, backend="process") as own:
                print("child:", own.submit(abs, -42).result(20), flush=True)
            sys.exit(0)
        _, status = os.waitpid(pid, 0)
        print("child status", status)
        print("parent:", pool.submit(abs, -7).result(10))
"""


def test_a_child_of_os_fork_can_run_a_process_pool_of_its_own() -> None:
    # It asked after its parent's fork server (not its child: ChildProcessError), and the
    # pool said to guard the main module. It starts a fork server of its own now.
    out = run(OS_FORK_CHILD_POOL)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["child: 42", "child status 0", "parent: 7"], (
        out.stdout + out.stderr
    )
