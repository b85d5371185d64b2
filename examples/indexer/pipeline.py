"""The indexer's pipeline: four stages, each a pool sized to its own bottleneck.

::

    paths ──▶ extract ──▶ chunk ──▶ embed ──▶ store
             2 processes  1 thread   16 coroutines   1 thread, batches of 32
             (CPU: PDFs)  (flat)     (HTTP, 40/s,     (SQLite: one writer)
                                      retries, deadline)

* ``extract`` parses PDFs in pure Python: CPU-bound, so it runs on worker **processes**.
* ``chunk`` returns a list of chunks per document: a ``flat=True`` stage sends each one on
  as its own item.
* ``embed`` waits on the network: a coroutine function on the ``async`` backend, many
  requests in flight, paced by ``rate_limit``, retried on 429/5xx/timeouts, each attempt
  bounded by ``task_timeout`` (which the request uses as its own timeout).
* ``store`` writes to SQLite, which takes one writer at a time: **one** worker, fed
  **batches** (one transaction per batch instead of per chunk).

The buffers between stages are bounded, so when the embedding service is the bottleneck the
whole pipeline slows to its pace and the documents are read from disk only as fast as they
can be embedded: memory stays flat however large the corpus.

**Exactly-once bookkeeping.** The program asks for ``results(..., per_input=True)``: one
``Result`` per *document*, delivered once every chunk of it has left the last stage. Only
then is the document recorded as indexed; a document with a failed chunk is not (its stored
chunks are deleted) and is tried again by the next run. ``Result.stage`` names the stage
that failed and ``Result.error`` says why: a damaged PDF fails in ``extract`` and the rest of
the run goes on.

**Stopping.** ``handle_signals=True``: the first SIGINT/SIGTERM stops reading documents and
drains the ones in flight through all four stages (their results are recorded as usual);
then the iteration raises ``workpool.Interrupted``. Rerunning picks up where it stopped:
documents already indexed (same path, same content hash) are skipped.
"""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import workpool

from .chunks import DEFAULT_OVERLAP, DEFAULT_SIZE, split
from .embed_client import RETRY_ON, EmbeddingClient
from .embed_server import EmbeddingService
from .extract import KINDS, Source, extract
from .store import Store, StoreWriter, vec_available

__all__ = ["IndexerBusy", "Settings", "Summary", "build_pipeline", "index", "sources"]


@dataclass
class Settings:
    """Every knob of an indexing run (the command line sets them; the defaults are sane)."""

    embed_url: str | None = None
    """An embedding service that is already running; None starts a local one."""
    latency: float = 0.3
    """Seconds the local service takes per request (ignored with ``embed_url``)."""
    service_rate: float = 50.0
    """Requests a second the local service admits before it answers 429."""
    service_burst: int = 10
    rate: float = 40.0
    """Requests a second the embed stage starts: a little below the service's limit."""
    extract_workers: int = 2
    embed_workers: int = 16
    request_timeout: float = 5.0
    """Deadline of each embedding request (the embed stage's ``task_timeout``)."""
    retries: int = 5
    batch_size: int = 32
    batch_timeout: float = 0.5
    chunk_size: int = DEFAULT_SIZE
    chunk_overlap: int = DEFAULT_OVERLAP
    use_vec: bool | None = None
    """None: sqlite-vec when it loads, else brute force; False: always brute force."""
    progress: bool = True
    """Show the live per-stage view on standard error (only when it is a terminal)."""


@dataclass
class Summary:
    """What one run did."""

    indexed: int = 0
    chunks: int = 0
    skipped: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    """(path, stage, error message) of each document that failed."""
    interrupted: workpool.Interrupted | None = None
    """Set when a signal stopped the run (its ``.report`` lists what never started)."""
    stats: dict[str, workpool.Stats] = field(default_factory=dict)


def sources(root: str | Path, known: dict[str, str], summary: Summary) -> Iterator[Source]:
    """The documents under ``root`` to index, lazily, in a stable order.

    A file whose suffix is not a known kind is not a document. One whose ``(path, sha256)``
    is in ``known`` is already indexed: it is counted in ``summary.skipped`` and not yielded.
    A file that cannot even be hashed is yielded anyway (with an empty hash) so that it fails
    in ``extract`` with its own ``Result`` instead of stopping the listing. What cannot be a
    document at all fails here, alone, in ``summary.failed`` (stage ``list``): a folder that
    cannot be listed, a name that is not UTF-8 (the index stores names as text), and what is
    not a regular file (a FIFO or a device would block the listing, or never end).
    """

    def unlisted(error: OSError) -> None:
        summary.failed.append((shown(error.filename or str(root)), "list", f"{error}"))

    for folder, dirs, names in os.walk(root, onerror=unlisted):
        dirs.sort()
        for name in sorted(names):
            if Path(name).suffix.lower() not in KINDS:
                continue
            path = os.path.abspath(os.path.join(folder, name))
            why = _not_a_document(path)
            if why is not None:
                summary.failed.append((shown(path), "list", why))
                continue
            try:
                source = Source.of(path)
            except OSError:
                yield Source(path, "")
                continue
            if known.get(path) == source.sha256:
                summary.skipped += 1
            else:
                yield source


def shown(path: str) -> str:
    """``path`` as text that prints and stores anywhere (a name that is not UTF-8 gets its
    bytes escaped)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _not_a_document(path: str) -> str | None:
    """Why ``path`` cannot be indexed at all, or None."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "the file name is not valid UTF-8 (the index stores names as text): rename it"
    try:
        mode = os.stat(path).st_mode  # (a symlink: what it points to)
    except OSError:
        return None  # (it fails in extract, saying why)
    if not stat.S_ISREG(mode):
        return "not a regular file (a FIFO, a device or a socket): nothing to read to its end"
    return None


def build_pipeline(settings: Settings, embed_url: str, db: str | Path) -> workpool.Pipeline:
    """The four stages of the indexer, configured from ``settings``."""
    use_vec = vec_available() if settings.use_vec is None else settings.use_vec
    return workpool.Pipeline(
        workpool.Stage(
            extract, name="extract", workers=settings.extract_workers, backend="process"
        ),
        workpool.Stage(
            partial(split, size=settings.chunk_size, overlap=settings.chunk_overlap),
            name="chunk",
            flat=True,
            workers=1,  # microseconds a document: one thread keeps up with everything else
        ),
        workpool.Stage(
            EmbeddingClient(embed_url),
            name="embed",
            backend="async",
            workers=settings.embed_workers,
            rate_limit=settings.rate,
            task_timeout=settings.request_timeout,
            retries=workpool.Retry(settings.retries, backoff=0.2, max_backoff=5.0, on=RETRY_ON),
        ),
        workpool.Stage(
            StoreWriter(db, use_vec=use_vec),
            name="store",
            workers=1,  # SQLite takes one writer at a time: more would only wait on its lock
            batch_size=settings.batch_size,
            batch_timeout=settings.batch_timeout,
        ),
        handle_signals=True,
    )


class IndexerBusy(RuntimeError):
    """Another indexer runs on the same database."""


@contextmanager
def _one_indexer_at_a_time(db: str | Path) -> Iterator[None]:
    """Hold ``<db>.lock`` for the run: a second indexer on the same database would prune the
    passages the first has stored and not recorded yet, and the first would then record a
    document without them. (``query`` takes no lock: it reads recorded documents only.)"""
    path = f"{db}.lock"
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IndexerBusy(
                f"{db}: another indexer is running on this database (it holds {path}); "
                "run one at a time"
            ) from None
        yield


def index(
    root: str | Path,
    db: str | Path,
    settings: Settings | None = None,
    *,
    on_result: Callable[[workpool.Result[Any]], None] | None = None,
) -> Summary:
    """Index every document under ``root`` into the SQLite file ``db``; return a
    :class:`Summary`. ``on_result`` sees each document's ``Result`` as it is recorded.

    Raises ``ValueError`` when ``root`` is not a directory. A signal does not raise: the run
    drains, and ``summary.interrupted`` holds the ``Interrupted`` error.
    """
    settings = settings or Settings()
    if not Path(root).is_dir():
        raise ValueError(f"{root}: not a directory (give the folder of documents to index)")
    summary = Summary()
    with ExitStack() as stack:
        stack.enter_context(_one_indexer_at_a_time(db))
        store = stack.enter_context(Store(db, use_vec=settings.use_vec))
        store.prune()  # chunks left by a run that was killed before it could clean up
        url = settings.embed_url
        if url is None:
            service = EmbeddingService(
                latency=settings.latency, rate=settings.service_rate, burst=settings.service_burst
            )
            url = stack.enter_context(service).url  # stops after the pipeline has drained
        pipeline = stack.enter_context(build_pipeline(settings, url, db))
        todo = sources(root, store.indexed(), summary)
        try:
            for r in pipeline.results(todo, per_input=True, progress=settings.progress):
                source: Source = r.item
                if r.ok:
                    chunks = len(r.value or [])
                    store.mark_indexed(source, chunks)
                    summary.indexed += 1
                    summary.chunks += chunks
                else:
                    store.forget(source)
                    message = f"{type(r.error).__name__}: {r.error}"
                    summary.failed.append((source.path, r.stage or "?", message))
                if on_result is not None:
                    on_result(r)
        except workpool.Interrupted as exc:
            summary.interrupted = exc
        summary.stats = pipeline.stats()
    return summary
