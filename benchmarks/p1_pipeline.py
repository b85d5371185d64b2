"""P1: a three-stage document indexer — one pool per stage, bounded buffers between them.

2,000 documents: stage 1 ~2 ms of pure-Python CPU per document on 2 processes, stage 2 a
20 ms I/O wait per document on 32 threads, stage 3 inserts into a SQLite file in batches of 64
on 1 worker (``pipetasks``; the implementations are in ``pipepeers``). The physical limit is
the slowest stage's work divided by its workers. The ``physical limit`` row computes it from
stage 1's CPU time per document and stage 3's time per batch measured once when the workload
is built (the title shows them); the ratio column is time / that row. Since this machine's CPU
speed drifts between moments by more than the 15 % the target allows, every run also adds up
the stage-1 CPU time its workers measured (``stage-1 ms`` per document) and divides its time
by the limit computed from that: ``/ own limit``, which the target uses. Every run writes a
fresh SQLite file and checks that it got one result per document and that the table holds
exactly one row per document.

``first s`` is the time to the first result (a document that left stage 3); ``main CPU s`` the
CPU time of the row's own process in the run (the coordination: on 2 cores it competes with
stage 1); ``peak MB`` the highest RSS of the row's process (``ru_maxrss``: the consumer's
process, where buffers and undelivered results live; worker processes are not counted),
``peak +MB`` that minus the RSS before the first run.

The endless rows run the same indexer over an endless input of document ids and stop after N
results; RSS growth is measured as in W5 (see ``streams``), and their ratio is time / the
limit for N documents. ``Executor.map`` reads its whole input first, so it has no endless row.
"""

from __future__ import annotations

import dataclasses
import math
import os
import resource
import statistics
import tempfile
from collections.abc import Iterable
from time import perf_counter
from typing import Any

import pipepeers
from harness import Config, RowSpec, Target, Workload, measurement, rss_bytes
from pipepeers import BATCH, STAGE1, STAGE2
from pipetasks import IO_WAIT, Vec, count_rows, create_db, insert
from proctasks import calibrate_spin
from streams import MB, Endless, MemoryProbe

N = 2_000
REPS = 3  # each run is ~2-4 s: best of 3
CPU_SECONDS = 0.002


@dataclasses.dataclass
class Run:
    seconds: float
    first: float  # seconds to the first result
    count: int  # results
    rows: int  # rows in the table afterwards
    main_cpu: float  # CPU seconds of this (the consumer's) process
    work: float  # stage-1 CPU seconds measured inside the workers, summed over the results

    def metrics(self, batch: float) -> dict[str, float]:
        own = max(
            self.work / STAGE1, self.count * IO_WAIT / STAGE2, -(-self.count // BATCH) * batch
        )
        return {
            "first_s": self.first,
            "stage1_ms": self.work / self.count * 1000,
            "own_ratio": self.seconds / own,
            "main_cpu_s": self.main_cpu,
            "peak_rss_mb": _peak_mb(),
        }


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB  # Linux: KiB


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _run(
    kind: str,
    docs: Iterable[int],
    n_iter: int,
    stop_after: int | None = None,
    probe: MemoryProbe | None = None,
) -> Run:
    """One run of the indexer ``kind`` over ``docs`` into a fresh SQLite file."""
    with tempfile.TemporaryDirectory(prefix="wpbench-p1-") as tmp:
        db = os.path.join(tmp, "index.db")
        create_db(db)
        if probe is not None:
            probe.start()
        cpu0 = _cpu()
        t0 = perf_counter()
        first, count, work = math.nan, 0, 0.0
        gen = pipepeers.RUNS[kind](docs, n_iter, db)
        try:
            for v in gen:
                count += 1
                work += v.cpu
                if count == 1:
                    first = perf_counter() - t0
                if probe is not None:
                    probe.tick(count)
                if count == stop_after:
                    break
        finally:
            gen.close()  # a streaming run stops reading and drains what is in flight
        elapsed = perf_counter() - t0
        return Run(elapsed, first, count, count_rows(db), _cpu() - cpu0, work)


def finite(kind: str, n: int, n_iter: int, reps: int, batch: float) -> dict[str, Any]:
    rss0 = rss_bytes()
    runs = []
    for _ in range(reps):
        run = _run(kind, range(n), n_iter)
        if run.count != n or run.rows != n:
            raise RuntimeError(f"got {run.count} results and {run.rows} rows, expected {n} of each")
        runs.append(run)
    best = min(runs, key=lambda r: r.seconds)
    metrics = best.metrics(batch)
    return measurement(best.seconds, n, peak_mb=metrics["peak_rss_mb"] - rss0 / MB, **metrics)


def endless(
    kind: str, n: int, base_at: int, every: int, n_iter: int, batch: float
) -> dict[str, Any]:
    source = Endless(int)  # document ids 0, 1, 2, ...
    probe = MemoryProbe(n, base_at, every, source)
    run = _run(kind, iter(source), n_iter, stop_after=n, probe=probe)
    if run.count != n or run.rows < n:
        raise RuntimeError(
            f"got {run.count} results and {run.rows} rows, expected {n} (rows: at least)"
        )
    return measurement(run.seconds, n, **run.metrics(batch), **probe.metrics())


def time_batch_insert(batches: int = 32) -> float:
    """Median seconds of one stage-3 call (a batch of BATCH rows into a SQLite file)."""
    samples = []
    with tempfile.TemporaryDirectory(prefix="wpbench-p1-") as tmp:
        db = os.path.join(tmp, "calibrate.db")
        create_db(db)
        for b in range(batches):
            batch = [
                Vec(i, i.to_bytes(8, "little") * 32, 0.0) for i in range(b * BATCH, (b + 1) * BATCH)
            ]
            t0 = perf_counter()
            insert(db, batch)
            samples.append(perf_counter() - t0)
    return statistics.median(samples)


def stage_limits(n: int, cpu: float, batch: float) -> dict[str, float]:
    return {
        f"stage 1: {n} x {cpu * 1000:.2f} ms / {STAGE1}": n * cpu / STAGE1,
        f"stage 2: {n} x {IO_WAIT * 1000:.0f} ms / {STAGE2}": n * IO_WAIT / STAGE2,
        f"stage 3: {-(-n // BATCH)} batches x {batch * 1000:.2f} ms / 1": -(-n // BATCH) * batch,
    }


def limit_row(name: str, n: int, cpu: float, batch: float) -> RowSpec:
    stages = stage_limits(n, cpu, batch)
    note = "; ".join(f"{k} = {v:.3f} s" for k, v in stages.items())
    return RowSpec(name, computed={"seconds": max(stages.values()), "items": n, "note": note})


LIMIT = "physical limit"
ENDLESS_LIMIT = "endless: physical limit"
WP = "workpool Pipeline"
PEERS = {
    "hand": (
        "hand-written PPE + TPE + bounded queues",
        "queue maxsize 64 / 128; 4 docs in flight on the processes",
    ),
    "mpire": (
        "mpire nested imap_unordered",
        "chunk_size 4 (processes), 1 (threads); inserts in the consumer",
    ),
    "pypeln": ("pypeln process -> thread", "maxsize 4 / 64; inserts in the consumer"),
    "stages": (
        "Executor.map stage by stage",
        "PPE(2).map (chunksize 1), then TPE(32).map, then inserts",
    ),
}
# The peers that can take an endless input. pypeln can too, but it runs ~12-20 ms per document
# here (it polls), so 200,000 documents would take over an hour.
STREAMING = ("hand", "mpire")
REQUIRES = {"mpire": ("mpire",), "pypeln": ("pypeln",)}


def build(cfg: Config) -> Workload:
    reps = 1 if cfg.quick else REPS
    n_endless = 20_000 if cfg.quick else 200_000
    base_at = 4_000 if cfg.quick else 20_000
    every = 1_000 if cfg.quick else 5_000
    n_iter, cpu = calibrate_spin(CPU_SECONDS)
    batch = time_batch_insert()
    m = __name__
    kw = {"n": N, "n_iter": n_iter, "reps": reps, "batch": batch}
    ekw = {"n": n_endless, "base_at": base_at, "every": every, "n_iter": n_iter, "batch": batch}
    rows = [limit_row(LIMIT, N, cpu, batch)]
    rows.append(RowSpec(WP, m, "finite", {**kw, "kind": "workpool"}, ("workpool",)))
    for kind, (name, note) in PEERS.items():
        rows.append(
            RowSpec(name, m, "finite", {**kw, "kind": kind}, REQUIRES.get(kind, ()), note=note)
        )
    rows.append(limit_row(ENDLESS_LIMIT, n_endless, cpu, batch))
    rows.append(
        RowSpec(
            f"endless: {WP}",
            m,
            "endless",
            {**ekw, "kind": "workpool"},
            ("workpool",),
            ref=ENDLESS_LIMIT,
        )
    )
    for kind in STREAMING:
        name, note = PEERS[kind]
        rows.append(
            RowSpec(
                f"endless: {name}",
                m,
                "endless",
                {**ekw, "kind": kind},
                REQUIRES.get(kind, ()),
                ref=ENDLESS_LIMIT,
                note=note,
            )
        )
    return Workload(
        id="P1",
        title=(
            f"{N:,} documents through 3 stages: ~{cpu * 1000:.2f} ms CPU (spin({n_iter:,}), calibrated) on "
            f"{STAGE1} processes -> {IO_WAIT * 1000:.0f} ms I/O wait on {STAGE2} threads -> SQLite inserts "
            f"in batches of {BATCH} ({batch * 1000:.2f} ms each, measured) on 1 worker (best of {reps}); "
            f"endless rows: stop after {n_endless:,}; ratio = time / physical limit"
        ),
        description="a pipeline of pools against the slowest stage's limit",
        default_ref=LIMIT,
        ratio_mode="time",
        columns=[
            ("own_ratio", "/ own limit", ".3f"),
            ("stage1_ms", "stage-1 ms", ".2f"),
            ("first_s", "first s", ".3f"),
            ("main_cpu_s", "main CPU s", ".2f"),
            ("peak_rss_mb", "peak MB", ".0f"),
            ("peak_mb", "peak +MB", ".1f"),
            ("rss_growth_mb", "RSS +MB", ".1f"),
            ("read_ahead", "read-ahead", ",.0f"),
        ],
        rows=rows,
        targets=[
            Target(
                "P1 workpool Pipeline <= 1.15x physical limit (stage-1 work measured in the run)",
                WP,
                "<=",
                1.15,
                metric="own_ratio",
            ),
            *(
                Target(
                    f"P1 workpool Pipeline time <= {name}",
                    WP,
                    "<=",
                    1.0,
                    metric="seconds",
                    ref=name,
                )
                for name, _ in PEERS.values()
            ),
            Target(
                f"P1 endless workpool Pipeline RSS growth < 10 MB over {n_endless:,}",
                f"endless: {WP}",
                "<",
                10.0,
                metric="rss_growth_mb",
                unit="MB",
            ),
        ],
    )
