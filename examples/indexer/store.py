"""Stage 4 and the query side: a SQLite file that holds chunks, their vectors and what was indexed.

Tables::

    documents(path PRIMARY KEY, sha256, chunks, indexed_at)   -- documents indexed completely
    chunks(id, path, sha256, seq, text, embedding)            -- embedding: float32 blob
    meta(key PRIMARY KEY, value)                              -- dim, whether the vec index is fresh

A document goes into ``documents`` only once *all* of its chunks are stored (the pipeline
tells when, see ``pipeline.py``), so a rerun skips exactly the documents whose ``(path,
sha256)`` is there and redoes any that failed or were cut short. Chunks of a document that
failed are deleted (:meth:`Store.forget`), and a search only returns chunks of documents in
``documents``: a half-indexed document is never half-found.

**Vector search.** When the ``sqlite-vec`` extension can be loaded, a ``vec0`` virtual table
(cosine distance) indexes the vectors and answers the nearest-neighbour query. Loading it needs
a Python whose ``sqlite3`` was built with extension loading (``enable_load_extension``);
where it was not, the store falls back to a brute-force scan: it reads every stored vector and
ranks them by cosine similarity (a dot product: the vectors have length 1). Both give the same
ranking; the scan is linear in the number of chunks, fine for tens of thousands of them. The
blobs in ``chunks`` are the truth either way, so a file written by one Python can be searched by
the other (the ``vec0`` table is rebuilt when a writer without the extension left it stale).

Each connection serves one thread: stage 4's function, :class:`StoreWriter`, opens the file
for each batch; the program's main thread has its own :class:`Store`. WAL mode lets them
write one after the other without "database is locked" errors.
"""

from __future__ import annotations

import heapq
import sqlite3
import time
from array import array
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from functools import cache
from operator import mul
from pathlib import Path
from types import TracebackType

from .embed_client import Embedded
from .embed_server import DIM
from .extract import Source

__all__ = ["Hit", "Store", "StoreWriter", "vec_available"]

_SCHEMA = """
PRAGMA journal_mode = WAL;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    path TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    chunks INTEGER NOT NULL,
    indexed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    seq INTEGER NOT NULL,
    text TEXT NOT NULL,
    embedding BLOB NOT NULL,
    UNIQUE (path, sha256, seq)
);
"""


@cache
def vec_available() -> bool:
    """True when sqlite-vec is installed *and* this Python's sqlite3 can load it."""
    try:
        with closing(sqlite3.connect(":memory:")) as conn:
            _load_vec(conn)
        return True
    except (ImportError, AttributeError, sqlite3.Error):
        # AttributeError: sqlite3 built without extension loading (no enable_load_extension)
        return False


@dataclass(frozen=True)
class Hit:
    """One search result: chunk ``seq`` of ``path``, and its cosine similarity to the query."""

    path: str
    seq: int
    text: str
    score: float


class Store:
    """The index in the SQLite file ``path`` (created on first use).

    ``use_vec``: ``None`` uses sqlite-vec when :func:`vec_available`, ``False`` never does.
    ``dim`` is the vector length; a file made with another one raises ``ValueError``.
    """

    def __init__(self, path: str | Path, *, dim: int = DIM, use_vec: bool | None = None) -> None:
        self.path = str(path)
        self.dim = dim
        self.vec = vec_available() if use_vec is None else use_vec
        self.conn = _connect(self.path)
        try:
            self.conn.executescript(_SCHEMA)
            self._check_dim()
            if self.vec:
                _load_vec(self.conn)
                self._vec_freshen()
        except BaseException:
            self.conn.close()
            raise

    # -- what is indexed ------------------------------------------------------------------

    def indexed(self) -> dict[str, str]:
        """``{path: sha256}`` of every completely indexed document."""
        return dict(self.conn.execute("SELECT path, sha256 FROM documents").fetchall())

    def counts(self) -> tuple[int, int]:
        """(documents indexed, chunks searchable)."""
        docs = self.conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        chunks = self.conn.execute(
            "SELECT COUNT(*) FROM chunks c JOIN documents d USING (path, sha256)"
        ).fetchone()[0]
        return int(docs), int(chunks)

    def mark_indexed(self, source: Source, chunks: int) -> None:
        """Record that all ``chunks`` chunks of ``source`` are stored, and drop the chunks of
        any older version of the same path."""
        with self.conn:
            self._delete_chunks("path = ? AND sha256 != ?", (source.path, source.sha256))
            self.conn.execute(
                "INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?)",
                (source.path, source.sha256, chunks, time.time()),
            )

    def forget(self, source: Source) -> None:
        """Delete what was stored of ``source`` if it is not the indexed version (a document
        whose indexing failed part way leaves no chunks behind)."""
        with self.conn:
            self._delete_chunks(
                "path = ? AND sha256 = ? AND NOT EXISTS "
                "(SELECT 1 FROM documents d WHERE d.path = chunks.path AND d.sha256 = chunks.sha256)",
                (source.path, source.sha256),
            )

    def prune(self) -> int:
        """Delete chunks of documents that are not indexed (left by a run that was killed);
        returns how many. Call it when no other run writes to the file."""
        with self.conn:
            return self._delete_chunks(
                "NOT EXISTS (SELECT 1 FROM documents d "
                "WHERE d.path = chunks.path AND d.sha256 = chunks.sha256)",
                (),
            )

    # -- writing and searching ------------------------------------------------------------

    def add(self, batch: Sequence[Embedded]) -> None:
        """Store a batch of embedded chunks in one transaction (a chunk stored before, by a run
        that was cut short, is replaced)."""
        with self.conn:
            for item in batch:
                c = item.chunk
                if len(item.vector) != self.dim:
                    raise ValueError(
                        f"{c.path} chunk {c.seq}: vector of length {len(item.vector)}, "
                        f"this index holds {self.dim}"
                    )
                blob = array("f", item.vector).tobytes()
                (rowid,) = self.conn.execute(
                    "INSERT INTO chunks (path, sha256, seq, text, embedding) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (path, sha256, seq) "
                    "DO UPDATE SET text = excluded.text, embedding = excluded.embedding "
                    "RETURNING id",
                    (c.path, c.sha256, c.seq, c.text, blob),
                ).fetchone()
                if self.vec:
                    # vec0 tables have no upsert: delete, then insert.
                    self.conn.execute("DELETE FROM chunk_vectors WHERE rowid = ?", (rowid,))
                    self.conn.execute(
                        "INSERT INTO chunk_vectors (rowid, embedding) VALUES (?, ?)",
                        (rowid, blob),
                    )

    def search(self, vector: Sequence[float], k: int = 5) -> list[Hit]:
        """The ``k`` indexed chunks most similar to ``vector``, best first."""
        if len(vector) != self.dim:
            raise ValueError(f"query vector of length {len(vector)}, this index holds {self.dim}")
        if k < 1:
            return []
        query = array("f", vector)
        if self.vec:
            # Ask for a few more than k: chunks of documents still being indexed by another
            # run are in the vec0 table but not searchable yet, and are filtered out below.
            rows = self.conn.execute(
                "SELECT rowid, distance FROM chunk_vectors WHERE embedding MATCH ? AND k = ? "
                "ORDER BY distance",
                (query.tobytes(), 2 * k + 10),
            ).fetchall()
            # (A passage or query with no content words embeds to a zero vector, whose cosine
            # distance vec0 gives as NULL: it scores 0, as the brute force finds.)
            # (vec0 puts those NULLs first: sorted again by score.)
            best = sorted(
                (
                    (0.0 if distance is None else 1.0 - float(distance), int(rowid))
                    for rowid, distance in rows
                ),
                reverse=True,
            )
        else:
            scored = (
                (sum(map(mul, query, array("f", blob))), int(rowid))
                for rowid, blob in self.conn.execute(
                    "SELECT c.id, c.embedding FROM chunks c JOIN documents d USING (path, sha256)"
                )
            )
            best = heapq.nlargest(k, scored)
        hits: list[Hit] = []
        for score, rowid in best:
            row = self.conn.execute(
                "SELECT c.path, c.seq, c.text FROM chunks c JOIN documents d USING (path, sha256) "
                "WHERE c.id = ?",
                (rowid,),
            ).fetchone()
            if row is not None:
                hits.append(Hit(row[0], row[1], row[2], score))
            if len(hits) == k:
                break
        return hits

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------

    def _check_dim(self) -> None:
        with self.conn:
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('dim', ?)", (str(self.dim),))
        (stored,) = self.conn.execute("SELECT value FROM meta WHERE key = 'dim'").fetchone()
        if int(stored) != self.dim:
            raise ValueError(f"{self.path} holds vectors of length {stored}, not {self.dim}")

    def _vec_freshen(self) -> None:
        """Create the vec0 table, and rebuild it if a writer without sqlite-vec changed chunks."""
        with self.conn:
            self.conn.execute(
                "CREATE VIRTUAL TABLE IF NOT EXISTS chunk_vectors "
                f"USING vec0(embedding float[{self.dim}] distance_metric=cosine)"
            )
            fresh = self.conn.execute("SELECT value FROM meta WHERE key = 'vec_fresh'").fetchone()
            if fresh is None or fresh[0] != "1":
                self.conn.execute("DELETE FROM chunk_vectors")
                self.conn.execute(
                    "INSERT INTO chunk_vectors (rowid, embedding) SELECT id, embedding FROM chunks"
                )
                self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('vec_fresh', '1')")

    def _delete_chunks(self, where: str, params: tuple[str, ...]) -> int:
        if self.vec:
            self.conn.execute(
                f"DELETE FROM chunk_vectors WHERE rowid IN (SELECT id FROM chunks WHERE {where})",
                params,
            )
        else:
            # The vec0 table (if a run with sqlite-vec made one) no longer matches the chunks.
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('vec_fresh', '0')")
        return self.conn.execute(f"DELETE FROM chunks WHERE {where}", params).rowcount


class StoreWriter:
    """Stage 4's function: stores one batch of embedded chunks in the file at ``path``.

    It returns ``None``, so each chunk passes on unchanged (the pipeline's sink contract),
    and opens the file per batch: a connection made in one thread must stay there, and the
    stage's worker threads are the pool's, not ours. It is plain data, so it pickles too.
    """

    def __init__(self, path: str | Path, *, dim: int = DIM, use_vec: bool | None = None) -> None:
        self.path = str(path)
        self.dim = dim
        self.use_vec = use_vec

    def __call__(self, batch: list[Embedded]) -> None:
        with Store(self.path, dim=self.dim, use_vec=self.use_vec) as store:
            store.add(batch)


def _connect(path: str) -> sqlite3.Connection:
    # timeout: wait for the other connection's transaction instead of failing at once.
    return sqlite3.connect(path, timeout=30.0)


def _load_vec(conn: sqlite3.Connection) -> None:
    import sqlite_vec  # type: ignore[import-untyped]

    conn.enable_load_extension(True)
    try:
        sqlite_vec.load(conn)
    finally:
        conn.enable_load_extension(False)
