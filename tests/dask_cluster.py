"""A real Dask cluster for the tests, started with Dask's own command-line tools.

One scheduler and two worker processes (each under a nanny, which restarts it if it dies),
all bound to 127.0.0.1 and without dashboards. The test session starts it once, the first
time a test needs it, and tears it down at the end (see conftest's ``dask_cluster``).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent
WORKERS = 2
# Threads per worker: the behavioural suite runs up to 8 gated tasks at once.
THREADS = 6
START_TIMEOUT = 60.0


# The clusters running now (tests that check for leftover processes leave theirs out).
RUNNING: list[TestCluster] = []


def cluster_pids() -> set[int]:
    """The processes of the running test clusters: scheduler, nannies, workers, helpers."""
    import psutil

    pids: set[int] = set()
    for cluster in RUNNING:
        for proc in cluster.procs:
            try:
                parent = psutil.Process(proc.pid)
                pids |= {parent.pid, *(p.pid for p in parent.children(recursive=True))}
            except psutil.NoSuchProcess:
                pass
    return pids


class TestCluster:
    """The processes of a running test cluster and its scheduler's address."""

    def __init__(self, workers: int = WORKERS) -> None:
        self.workers = workers
        self.dir = tempfile.mkdtemp(prefix="workpool-dask-")
        self.scheduler_file = os.path.join(self.dir, "scheduler.json")
        self.procs: list[subprocess.Popen[bytes]] = []
        self.address = ""

    def start(self) -> TestCluster:
        dask = str(Path(sys.executable).with_name("dask"))
        env = dict(os.environ)
        # Task functions of the suite are pickled by reference: the workers import the test
        # modules, handshakes and suite_tasks from here.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), env.get("PYTHONPATH", "")) if p)
        env["WORKPOOL_TEST_AUTHKEY"] = multiprocessing.current_process().authkey.hex()
        env.pop("DASK_SCHEDULER_ADDRESS", None)
        # One lost worker under a task is rerun, a second gives up on it (KilledWorker): the
        # default (3) would cost four worker restarts where a test wants Dask to give up.
        env["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] = "1"
        log = open(os.path.join(self.dir, "cluster.log"), "ab")  # noqa: SIM115
        common: dict[str, Any] = {
            "env": env,
            "stdout": log,
            "stderr": subprocess.STDOUT,
            "start_new_session": True,  # torn down as a process group, nanny and worker
            "cwd": self.dir,
        }
        self.procs.append(
            subprocess.Popen(
                [
                    dask,
                    "scheduler",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--no-dashboard",
                    "--dashboard-address",
                    "127.0.0.1:0",
                    "--scheduler-file",
                    self.scheduler_file,
                ],
                **common,
            )
        )
        self.address = self._wait_for_address()
        for _ in range(self.workers):
            self.procs.append(
                subprocess.Popen(
                    [
                        dask,
                        "worker",
                        "--scheduler-file",
                        self.scheduler_file,
                        "--host",
                        "127.0.0.1",
                        "--nthreads",
                        str(THREADS),
                        "--no-dashboard",
                        "--dashboard-address",
                        "127.0.0.1:0",
                        "--preload",
                        "dask_preload",
                        "--memory-limit",
                        "0",
                    ],
                    **common,
                )
            )
        self.wait_for_workers(self.workers)
        RUNNING.append(self)
        return self

    def _wait_for_address(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.procs[0].poll() is not None:
                raise RuntimeError(f"dask scheduler exited: see {self.dir}/cluster.log")
            try:
                with open(self.scheduler_file) as f:
                    return str(json.load(f)["address"])
            except (OSError, ValueError, KeyError):
                time.sleep(0.05)  # the scheduler writes the file once it listens
        raise RuntimeError(f"dask scheduler did not start: see {self.dir}/cluster.log")

    def client(self) -> Any:
        from distributed import Client

        return Client(  # type: ignore[no-untyped-call]
            self.address, timeout=START_TIMEOUT, set_as_default=False
        )

    def wait_for_workers(self, n: int | None = None) -> None:
        with self.client() as client:
            client.wait_for_workers(self.workers if n is None else n, timeout=START_TIMEOUT)

    def worker_pids(self) -> dict[str, int]:
        """The worker processes' ids, by worker address."""
        with self.client() as client:
            return dict(client.run(os.getpid))

    def stop(self) -> None:
        if self in RUNNING:
            RUNNING.remove(self)
        for proc in reversed(self.procs):  # workers first: they leave the scheduler cleanly
            _signal_group(proc, signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
            _signal_group(proc, signal.SIGKILL)  # whatever of its group is left


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
