"""The three-stage indexer of P1 (see ``pipetasks``), written with each library.

Every function ``run(docs, n_iter, db)`` is a generator: it yields each ``Vec`` once its batch
is in the database, so the caller times the first result and counts them. Stage 1 runs on
``STAGE1`` processes, stage 2 on ``STAGE2`` threads, stage 3 on one worker in batches of
``BATCH``. Closing the generator early stops the streaming ones cleanly: they stop reading
the input, drain what is in flight and join their workers.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterable
from concurrent.futures import (
    FIRST_COMPLETED,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    as_completed,
    wait,
)
from functools import partial
from typing import Any

from harness import require_workpool
from pipetasks import Vec, batched, embed, extract, insert

STAGE1 = 2  # processes (CPU-bound)
STAGE2 = 32  # threads (I/O wait)
BATCH = 64  # items per insert (one worker)

Run = Generator[Vec, None, None]
_DONE = object()


def workpool_pipeline(docs: Iterable[int], n_iter: int, db: str) -> Run:
    """API.md §7: one pool per stage, bounded buffers between them."""
    require_workpool("Pipeline", "Stage", where="API.md §7")
    from workpool import Pipeline, Stage

    pipeline = Pipeline(
        Stage(partial(extract, n_iter), name="extract", workers=STAGE1, backend="process"),
        Stage(embed, name="embed", workers=STAGE2, backend="thread"),
        Stage(partial(insert, db), name="insert", workers=1, batch_size=BATCH),
    )
    with pipeline:
        results = pipeline.results(docs)
        try:
            for r in results:
                if not r.ok:
                    raise RuntimeError(f"document {r.item!r} failed in {r.stage}: {r.error!r}")
                yield r.value
        finally:
            getattr(results, "close", lambda: None)()  # what leaving a for loop does


def hand_written(docs: Iterable[int], n_iter: int, db: str) -> Run:
    """ProcessPoolExecutor and ThreadPoolExecutor stages joined by bounded ``queue.Queue``s.

    Stage 1: one thread keeps ``2 * STAGE1`` documents in flight on the process pool and puts
    what comes back on ``q1``; stage 2: ``STAGE2`` loops on a thread pool move items from ``q1``
    to ``q2``; stage 3: one thread inserts batches from ``q2``. Sentinels end each stage; an
    error ends them too and is raised to the consumer.
    """
    q1: queue.Queue[Any] = queue.Queue(maxsize=2 * STAGE2)
    q2: queue.Queue[Any] = queue.Queue(maxsize=2 * BATCH)
    out: queue.Queue[Any] = queue.Queue()  # bounded by what is in flight upstream
    stop = threading.Event()
    errors: list[BaseException] = []
    fn = partial(extract, n_iter)

    def stage1(ppe: ProcessPoolExecutor) -> None:
        inflight: set[Future[Any]] = set()
        try:
            for doc in docs:
                if stop.is_set() or errors:
                    break
                if len(inflight) >= 2 * STAGE1:
                    done, inflight = wait(inflight, return_when=FIRST_COMPLETED)
                    for f in done:
                        q1.put(f.result())
                inflight.add(ppe.submit(fn, doc))
            for f in as_completed(inflight):
                q1.put(f.result())
        except BaseException as exc:
            errors.append(exc)
        finally:
            for _ in range(STAGE2):
                q1.put(_DONE)

    def stage2() -> None:
        try:
            while (doc := q1.get()) is not _DONE:
                q2.put(embed(doc))
        except BaseException as exc:
            errors.append(exc)
        finally:
            q2.put(_DONE)

    def stage3() -> None:
        def flush(batch: list[Vec]) -> None:
            insert(db, batch)
            for v in batch:
                out.put(v)

        try:
            running, batch = STAGE2, []
            while running:
                v = q2.get()
                if v is _DONE:
                    running -= 1
                    continue
                batch.append(v)
                if len(batch) == BATCH:
                    flush(batch)
                    batch = []
            if batch:
                flush(batch)
        except BaseException as exc:
            errors.append(exc)
        finally:
            out.put(_DONE)

    with ProcessPoolExecutor(STAGE1) as ppe, ThreadPoolExecutor(STAGE2) as tpe:
        threads = [
            threading.Thread(target=stage1, args=(ppe,)),
            threading.Thread(target=stage3),
        ]
        for t in threads:
            t.start()
        loops = [tpe.submit(stage2) for _ in range(STAGE2)]
        try:
            while (v := out.get()) is not _DONE:
                yield v
            if errors:
                raise errors[0]
        finally:
            stop.set()
            for t in threads:
                t.join()
            for f in loops:
                f.result()


def mpire_nested(docs: Iterable[int], n_iter: int, db: str) -> Run:
    """mpire: a process pool's ``imap_unordered`` fed into a threading pool's, batches inserted
    by the consumer (the one stage-3 worker)."""
    from mpire import WorkerPool

    with (
        WorkerPool(n_jobs=STAGE1) as p1,
        WorkerPool(n_jobs=STAGE2, start_method="threading") as p2,
    ):
        docs_out = p1.imap_unordered(partial(extract, n_iter), docs, chunk_size=4)
        vecs = p2.imap_unordered(embed, docs_out, chunk_size=1)
        for batch in batched(vecs, BATCH):
            insert(db, batch)
            yield from batch


def pypeln_stages(docs: Iterable[int], n_iter: int, db: str) -> Run:
    """pypeln: a process stage into a thread stage (bounded buffers), batches inserted by the
    consumer (the one stage-3 worker)."""
    import pypeln as pl

    stage1 = pl.process.map(partial(extract, n_iter), docs, workers=STAGE1, maxsize=2 * STAGE1)
    stage2 = pl.thread.map(embed, stage1, workers=STAGE2, maxsize=2 * STAGE2)
    for batch in batched(stage2, BATCH):
        insert(db, batch)
        yield from batch


def stage_by_stage(docs: Iterable[int], n_iter: int, db: str) -> Run:
    """``Executor.map`` one stage after the other: every stage waits for the whole previous one
    (and holds all of its outputs); cannot take an endless input."""
    with ProcessPoolExecutor(STAGE1) as ppe:
        extracted = list(ppe.map(partial(extract, n_iter), docs))
    with ThreadPoolExecutor(STAGE2) as tpe:
        vecs = list(tpe.map(embed, extracted))
    for batch in batched(vecs, BATCH):
        insert(db, batch)
        yield from batch


RUNS = {
    "workpool": workpool_pipeline,
    "hand": hand_written,
    "mpire": mpire_nested,
    "pypeln": pypeln_stages,
    "stages": stage_by_stage,
}
