"""CRASH: recovery after a worker process is SIGKILLed under a task, 2 processes.

One rep: submit ``kill_self`` (it writes ``time.monotonic()`` to a file, then SIGKILLs its own
worker process) and right after it ``stamp`` (returns ``time.monotonic()`` when it starts;
``CLOCK_MONOTONIC`` is one clock for all processes). In the main rows the *other* worker is
busy with a blocking task during the rep (it waits for a file the rep creates at the end), so
the next task can only start on the replacement of the killed worker: what is measured is the
recovery. In the ``other worker idle`` row nothing blocks, so the next task simply runs on the
other worker (the plain back-to-back case). One pool serves all reps (it must survive every
crash). Before every rep (untimed) short tasks run until both worker processes have run one:
the replacement of the previous rep's crashed worker may still be starting, and without this
the "idle" row would measure that start too.

Columns (ms, median and max over the reps; negative = the next task started first):

* ``kill->next``: from the moment just before the SIGKILL to the next task's start — the target;
* ``res->next``: from the arrival of the killed task's result (the moment its future completed,
  in whichever thread completed it) to the next task's start;
* ``sub->next``: from submitting the two tasks back-to-back to the next task's start;
* ``kill->res``: from the SIGKILL to the arrival of the killed task's result (crash detection).

``ProcessPoolExecutor`` cannot run the next task at all: the whole pool is broken
(``BrokenProcessPool``); its row times only ``kill->res`` (1 rep). ``multiprocessing.Pool``
replaces the worker, but the killed task's result never arrives: its row waits a guard time for
the lost results, reports ``hung``, then terminates the pool (with a fallback SIGKILL of its
workers if ``terminate()`` itself hangs).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import statistics
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from harness import Config, RowSpec, Target, Workload, measurement
from proctasks import hold, kill_self, nap, nap_pid, noop, stamp

WORKERS = 2
GUARD = 10.0  # seconds: the most a rep waits for anything but a lost result
LOST_GUARD = 2.0  # seconds: how long multiprocessing.Pool's lost results are waited for


def _wait_path(path: Path, guard: float = GUARD) -> None:
    give_up = time.monotonic() + guard
    while not path.exists():
        if time.monotonic() > give_up:
            raise TimeoutError(f"{path.name} did not appear within {guard} s")
        time.sleep(0.0005)


class _Rep:
    """Files and timestamps of one rep."""

    def __init__(self, tmp: Path, i: int) -> None:
        self.started = tmp / f"started-{i}"
        self.release = tmp / f"release-{i}"
        self.mark = tmp / f"killed-{i}"
        self.t_submit = 0.0
        self.t_result: float | None = None  # arrival of the killed task's result
        self.t_next = 0.0
        self.t_kill = 0.0  # read from ``mark`` by ``done()``

    def done(self) -> None:
        """The rep is over: read the kill time (before the directory goes away)."""
        self.t_kill = float(self.mark.read_text())

    def on_result(self, *_: Any) -> None:
        if self.t_result is None:
            self.t_result = time.monotonic()


def _summary(reps: list[_Rep], note: str = "") -> dict[str, Any]:
    kill = [(r.t_next - r.t_kill) * 1000.0 for r in reps]
    sub = [(r.t_next - r.t_submit) * 1000.0 for r in reps]
    res = [(r.t_next - r.t_result) * 1000.0 for r in reps if r.t_result is not None]
    det = [(r.t_result - r.t_kill) * 1000.0 for r in reps if r.t_result is not None]
    metrics = {
        "kill_med": statistics.median(kill),
        "kill_max": max(kill),
        "sub_med": statistics.median(sub),
        "sub_max": max(sub),
    }
    if res:
        metrics.update(
            res_med=statistics.median(res), res_max=max(res), det_med=statistics.median(det)
        )
    return measurement(metrics["kill_med"] / 1000.0, None, note=note, **metrics)


def _all_up(submit: Any) -> None:
    """Run short tasks until every worker process has run one (after a rep, the replacement
    of the crashed worker may still be starting)."""
    for _ in range(10):
        futures = [submit(nap_pid, 0.02) for _ in range(2 * WORKERS)]
        if len({f.result(timeout=GUARD) for f in futures}) >= WORKERS:
            return
    raise RuntimeError(f"could not get {WORKERS} live worker processes")


def _futures_reps(submit: Any, expected: type[BaseException], reps: int, busy: bool) -> list[_Rep]:
    """Reps on a pool whose ``submit(fn, *args)`` returns a concurrent.futures.Future."""
    out = []
    with tempfile.TemporaryDirectory(prefix="wpbench-crash-") as tmpdir:
        tmp = Path(tmpdir)
        for i in range(reps):
            rep = _Rep(tmp, i)
            _all_up(submit)
            blocker = None
            if busy:
                blocker = submit(hold, str(rep.started), str(rep.release), GUARD)
                _wait_path(rep.started)
            rep.t_submit = time.monotonic()
            killed = submit(kill_self, str(rep.mark))
            nxt = submit(stamp, None)
            killed.add_done_callback(rep.on_result)
            rep.t_next = nxt.result(timeout=GUARD)
            error = killed.exception(timeout=GUARD)
            if not isinstance(error, expected):
                raise RuntimeError(f"killed task: expected {expected.__name__}, got {error!r}")
            rep.release.touch()
            if blocker is not None:
                blocker.result(timeout=GUARD)
            rep.done()
            out.append(rep)
    return out


# --------------------------------------------------------------------------- rows


def wp_crash(reps: int, busy: bool) -> dict[str, Any]:
    from workpool import Pool, WorkerCrashed

    with Pool(WORKERS, backend="process") as pool:
        done = _futures_reps(pool.submit, WorkerCrashed, reps, busy)
        stats = pool.stats()
    note = f"{reps} reps, 1 pool; killed task: WorkerCrashed; stats.failed={stats.failed}"
    return _summary(done, note)


def pebble_crash(reps: int, busy: bool) -> dict[str, Any]:
    from pebble import ProcessPool
    from pebble.common import ProcessExpired

    with ProcessPool(max_workers=WORKERS) as pool:

        def submit(fn: Any, *args: Any) -> Any:
            return pool.schedule(fn, args=args)

        done = _futures_reps(submit, ProcessExpired, reps, busy)
    return _summary(done, f"{reps} reps, 1 pool; killed task: ProcessExpired")


def ppe_crash(busy: bool) -> dict[str, Any]:
    from concurrent.futures.process import BrokenProcessPool

    with tempfile.TemporaryDirectory(prefix="wpbench-crash-") as tmpdir:
        rep = _Rep(Path(tmpdir), 0)
        with ProcessPoolExecutor(WORKERS) as ex:
            for f in [ex.submit(nap, 0.05) for _ in range(2 * WORKERS)]:
                f.result()
            blocker = None
            if busy:
                blocker = ex.submit(hold, str(rep.started), str(rep.release), GUARD)
                _wait_path(rep.started)
            killed = ex.submit(kill_self, str(rep.mark))
            nxt = ex.submit(stamp, None)
            killed.add_done_callback(rep.on_result)
            errors = [killed.exception(timeout=GUARD), nxt.exception(timeout=GUARD)]
            if blocker is not None:
                errors.append(blocker.exception(timeout=GUARD))
            rep.release.touch()
            rep.done()
            try:
                ex.submit(noop, None).result(timeout=GUARD)
                after = "a new submit works"
            except BrokenProcessPool:
                after = "a new submit raises BrokenProcessPool"
        assert rep.t_result is not None
        det = (rep.t_result - rep.t_kill) * 1000.0
    broken = sum(isinstance(e, BrokenProcessPool) for e in errors)
    what = "killed, next" + (" and busy" if busy else "") + " task"
    note = f"broken: {what}: {broken}/{len(errors)} failed with BrokenProcessPool; {after}"
    return measurement(det / 1000.0, None, note=note, det_med=det)


def mp_crash(reps: int, busy: bool) -> dict[str, Any]:
    pool = multiprocessing.Pool(WORKERS)
    lost = []
    out = []
    try:
        pool.map(nap, [0.05] * (2 * WORKERS), chunksize=1)
        with tempfile.TemporaryDirectory(prefix="wpbench-crash-") as tmpdir:
            tmp = Path(tmpdir)
            for i in range(reps):
                rep = _Rep(tmp, i)
                blocker = None
                if busy:
                    blocker = pool.apply_async(hold, (str(rep.started), str(rep.release), GUARD))
                    _wait_path(rep.started)
                rep.t_submit = time.monotonic()
                killed = pool.apply_async(
                    kill_self,
                    (str(rep.mark),),
                    callback=rep.on_result,
                    error_callback=rep.on_result,
                )
                nxt = pool.apply_async(stamp, (None,))
                rep.t_next = nxt.get(timeout=GUARD)
                rep.release.touch()
                if blocker is not None:
                    blocker.get(timeout=GUARD)
                rep.done()
                lost.append(killed)
                out.append(rep)
        give_up = time.monotonic() + LOST_GUARD
        for r in lost:
            r.wait(max(0.0, give_up - time.monotonic()))
        hung = sum(not r.ready() for r in lost)
    finally:
        how = _terminate(pool)
    note = (
        f"{reps} reps; killed task's result: hung (guard {LOST_GUARD:g} s) in {hung}/{reps}; "
        f"cleanup: {how}"
    )
    return _summary(out, note)


def _terminate(pool: Any, guard: float = 10.0) -> str:
    """``pool.terminate()`` + join, or SIGKILL its workers if that does not finish in time."""
    pids = [p.pid for p in list(getattr(pool, "_pool", []))]
    worker = threading.Thread(target=lambda: (pool.terminate(), pool.join()), daemon=True)
    worker.start()
    worker.join(guard)
    if not worker.is_alive():
        return "terminate() ok"
    for p in list(getattr(pool, "_pool", [])):
        pids.append(p.pid)
    for pid in set(pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except (OSError, TypeError):
            pass
    worker.join(guard)
    return "terminate() hung; workers SIGKILLed"


# --------------------------------------------------------------------------- workload

WP_BUSY = "workpool, other worker busy"
WP_IDLE = "workpool, other worker idle"
PEBBLE = "pebble ProcessPool, other worker busy"
PPE = "PPE(2), other worker busy"
MP = "mp.Pool(2), other worker busy"


def build(cfg: Config) -> Workload:
    reps = 5 if cfg.quick else 20
    m = __name__
    busy = {"reps": reps, "busy": True}
    return Workload(
        id="CRASH",
        title=(
            f"SIGKILL of a worker under a task, then the next task, {WORKERS} processes "
            f"(ms; median/max of {reps} reps); time = kill->next median"
        ),
        description="crash recovery of the process backend",
        ratio_mode="time",
        columns=[
            ("kill_med", "kill->next med", ".1f"),
            ("kill_max", "max", ".1f"),
            ("res_med", "res->next med", ".1f"),
            ("res_max", "max", ".1f"),
            ("sub_med", "sub->next med", ".1f"),
            ("sub_max", "max", ".1f"),
            ("det_med", "kill->res med", ".1f"),
        ],
        rows=[
            RowSpec(WP_BUSY, m, "wp_crash", busy, ("workpool",)),
            RowSpec(WP_IDLE, m, "wp_crash", {"reps": reps, "busy": False}, ("workpool",)),
            RowSpec(PEBBLE, m, "pebble_crash", busy, ("pebble",)),
            RowSpec(PPE, m, "ppe_crash", {"busy": True}, note="fork; 1 rep"),
            RowSpec(MP, m, "mp_crash", busy, note="fork"),
        ],
        targets=[
            Target(
                "CRASH next task starts <= 100 ms after SIGKILL (median)",
                WP_BUSY,
                "<=",
                100.0,
                metric="kill_med",
                unit="ms",
            ),
            Target(
                "CRASH next task starts <= 100 ms after SIGKILL (max)",
                WP_BUSY,
                "<=",
                100.0,
                metric="kill_max",
                unit="ms",
            ),
        ],
    )
