"""The stage functions of the pipeline workload (P1): a three-stage document indexer.

1. ``extract(n_iter, doc_id) -> Doc``: pure-Python CPU work (``proctasks.spin``, ~2 ms with the
   calibrated ``n_iter``) producing ~1 KiB of text; runs on processes. The item carries the
   CPU time the work took in the worker (``cpu``), so a run can add up its stage-1 work.
2. ``embed(doc) -> Vec``: a 20 ms I/O wait (``time.sleep``, as a network call would) producing a
   256-byte vector; runs on threads.
3. ``insert(db, batch)``: inserts a batch of ``Vec`` into a SQLite file in one transaction
   (a connection per batch, so any thread may run it); returns ``None``.

The items are small dataclasses, not tuples: mpire unpacks tuple items into arguments.
They live in their own module so that process pools pickle them by reference and a worker
process imports only this file (and ``proctasks``).
"""

from __future__ import annotations

import dataclasses
import itertools
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from proctasks import spin

IO_WAIT = 0.020
SCHEMA = "CREATE TABLE IF NOT EXISTS vectors (id INTEGER PRIMARY KEY, vec BLOB NOT NULL)"


@dataclasses.dataclass(frozen=True)
class Doc:
    id: int
    text: str
    cpu: float  # seconds of stage-1 CPU work (thread CPU time in the worker)


@dataclasses.dataclass(frozen=True)
class Vec:
    id: int
    vec: bytes
    cpu: float  # carried over from the Doc


def extract(n_iter: int, doc_id: int) -> Doc:
    t0 = time.thread_time()
    spin(n_iter)
    text = f"document {doc_id:>10} " * 48  # ~1 KiB, fresh per call
    return Doc(doc_id, text, time.thread_time() - t0)


def embed(doc: Doc) -> Vec:
    time.sleep(IO_WAIT)
    return Vec(doc.id, doc.id.to_bytes(8, "little") * 32, doc.cpu)


def create_db(db: str) -> None:
    with sqlite3.connect(db) as con:
        con.execute(SCHEMA)
    con.close()


def insert(db: str, batch: Sequence[Vec]) -> None:
    """Insert one batch in one transaction. A duplicate id fails (PRIMARY KEY)."""
    con = sqlite3.connect(db)
    try:
        with con:
            con.executemany("INSERT INTO vectors VALUES (?, ?)", [(v.id, v.vec) for v in batch])
    finally:
        con.close()


def count_rows(db: str) -> int:
    con = sqlite3.connect(db)
    try:
        (n,) = con.execute("SELECT COUNT(*) FROM vectors").fetchone()
    finally:
        con.close()
    return int(n)


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """``itertools.batched`` (3.12+) for older Pythons: lists of up to ``size`` items."""
    it = iter(items)
    while batch := list(itertools.islice(it, size)):
        yield batch
