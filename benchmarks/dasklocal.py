"""The local Dask cluster of the Dask workloads (D1-D3), and the warnings it logs.

``Cluster`` starts a scheduler and 2 worker processes of 1 thread each with Dask's own
command-line tools, bound to 127.0.0.1 only, no dashboard, each logging to a file; connects a
``distributed.Client``; waits for both workers and has each import ``proctasks`` (the task
module), so that none of this is in a row's timed region. Leaving it shuts the cluster down
(``client.shutdown()``; any of its processes still alive after 30 s is killed).

The scheduler runs in its own process, not in the row's: the row's process holds only the
client (and workpool), so its RSS is the client's.

``warnings()`` counts the log records of level WARNING and above written since ``mark()``: by
the scheduler and by the workers (their log files), and in the client's process (a handler on
the ``distributed`` loggers, plus Python ``warnings`` raised meanwhile).
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any

from harness import BENCH_DIR, NotAvailable, child_env

WORKERS = 2
LOOPBACK = ("--host", "127.0.0.1", "--no-dashboard")  # listen on loopback only, no dashboard
WORKER_OPTIONS = ("--nworkers", str(WORKERS), "--nthreads", "1")
LEVEL = re.compile(r" - (WARNING|ERROR|CRITICAL) - ")


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}"[:160])


def _distributed_loggers() -> list[logging.Logger]:
    """``distributed`` and those of its loggers that do not propagate to it (its logging
    config gives e.g. ``distributed.client`` a handler of its own)."""
    import distributed  # noqa: F401  (configures its logging)

    names = [n for n in logging.root.manager.loggerDict if n.startswith("distributed.")]
    loggers = [logging.getLogger(n) for n in names]
    return [logging.getLogger("distributed"), *(lg for lg in loggers if not lg.propagate)]


class Cluster:
    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="wpbench-dask-")
        self.dir = Path(self._tmp.name)
        self.logs = {"scheduler": self.dir / "scheduler.log", "workers": self.dir / "workers.log"}
        self._procs: list[subprocess.Popen[bytes]] = []
        self._offsets: dict[str, int] = {}
        self._client_log = _Count()
        self._caught: list[warnings.WarningMessage] = []
        self._catch: Any = None
        self.client: Any = None

    # ------------------------------------------------------------------ start and stop

    def __enter__(self) -> Cluster:
        from distributed import Client

        dask = [str(Path(sys.executable).with_name("dask"))]
        if not Path(dask[0]).exists():  # not in a venv with the dask script: run the module
            dask = [sys.executable, "-m", "dask"]
        env = child_env()
        # The workers unpickle task functions by reference: they must import benchmarks/.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(BENCH_DIR), env.get("PYTHONPATH")) if p)
        sched_file = self.dir / "scheduler.json"
        try:
            self._start(
                [*dask, "scheduler", *LOOPBACK, "--port", "0", "--scheduler-file", str(sched_file)],
                "scheduler",
                env,
            )
            deadline = time.monotonic() + 60
            while not sched_file.exists():
                if time.monotonic() > deadline or self._procs[0].poll() is not None:
                    raise RuntimeError(f"the scheduler did not start: {self._tail('scheduler')}")
                time.sleep(0.05)
            workers = [
                *dask,
                "worker",
                *LOOPBACK,
                *WORKER_OPTIONS,
                "--scheduler-file",
                str(sched_file),
            ]
            self._start([*workers, "--local-directory", str(self.dir)], "workers", env)
            self.client = Client(scheduler_file=str(sched_file), timeout=60)
            self.client.wait_for_workers(WORKERS, timeout=60)
            self.client.run(importlib.import_module, "proctasks")  # warm: import on every worker
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self, cmd: list[str], log: str, env: dict[str, str]) -> None:
        with open(self.logs[log], "wb") as out:
            self._procs.append(
                subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=self.dir,
                )
            )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.client is not None:
            try:
                self.client.shutdown()  # asks the scheduler and the workers to close
            except Exception:
                pass
            self.client.close()
        deadline = time.monotonic() + 30
        for proc in self._procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._tmp.cleanup()

    def _tail(self, log: str) -> str:
        lines = self.logs[log].read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else "no output"

    # ------------------------------------------------------------------ warnings

    def mark(self) -> None:
        """Start counting warnings here (call it just before the timed region)."""
        self._offsets = {k: p.stat().st_size for k, p in self.logs.items()}
        for logger in _distributed_loggers():
            logger.addHandler(self._client_log)
        self._catch = warnings.catch_warnings(record=True)
        self._caught = self._catch.__enter__()
        warnings.simplefilter("always")

    def warnings(self) -> tuple[dict[str, float], str]:
        """Warnings since ``mark()``: counts per source, and the first message of each."""
        if self._catch is not None:
            self._catch.__exit__(None, None, None)
            self._catch = None
        for logger in _distributed_loggers():
            logger.removeHandler(self._client_log)
        counts: dict[str, float] = {}
        first: list[str] = []
        for name, path in self.logs.items():
            with open(path, "rb") as fh:
                fh.seek(self._offsets.get(name, 0))
                found = [
                    ln for ln in fh.read().decode(errors="replace").splitlines() if LEVEL.search(ln)
                ]
            counts[f"{name}_warnings"] = float(len(found))
            first += [f"{name}: {found[0].strip()[:160]}"] if found else []
        client = self._client_log.messages + [
            f"{w.category.__name__}: {w.message}"[:160] for w in self._caught
        ]
        counts["client_warnings"] = float(len(client))
        first += [f"client: {client[0]}"] if client else []
        return counts, "; ".join(first)


def workpool_pool(client: Any) -> Any:
    """``Pool(backend="dask", client=client)`` (API.md §8), or ``NotAvailable`` while workpool
    has no Dask backend (it raises ``ConfigError`` for an unknown backend)."""
    from workpool import ConfigError, Pool

    try:
        return Pool(backend="dask", client=client)
    except ConfigError as exc:
        raise NotAvailable(f'Pool(backend="dask"), API.md §8: {exc}') from None
