"""The journal of ``workpool run --journal FILE``: what finished, so that a rerun resumes.

A journal is a SQLite database (WAL mode, ``synchronous=NORMAL``: a commit survives the
process being killed; only a power cut may lose the last ones)::

    meta(key TEXT PRIMARY KEY, value TEXT)
        format    "workpool-journal/1"
        command   canonical JSON of what runs on each item: the --call target or the
                  command's argv, and whether --jsonl parses the input
        input     where the input came from ("<stdin>" or a path); informational only
        output    absolute path of the --output file, or "-" for standard output
        emitted   "BATCH OFFSET": the lines of every batch <= BATCH are in the output,
                  and the output was OFFSET bytes long after them
        superseded  how many lines of the output a later line of the same item replaced:
                  "0" when it holds one line per item ("-1": unknown, a rebuild was cut short)
    items(idx INTEGER PRIMARY KEY, hash INTEGER, ok INTEGER, line BLOB, batch INTEGER)
        one row per finished item: its 0-based input position, a fingerprint of its input
        line (``line_hash``), whether it succeeded, its output line (the UTF-8 bytes of a
        JSON line, as written to the output), and its batch (indexed: a resume looks up the
        last batches)

**Any bytes.** Input lines are text decoded with ``surrogateescape``, so a line that is not
UTF-8 still reaches a command as its own bytes; SQLite text must be UTF-8. So the journal
keeps no input text: a line is fingerprinted from its original bytes, an output line is
stored as the bytes written out, and a path that is not UTF-8 (``input``, ``output``) is
stored as a BLOB of its bytes (``meta`` reads either back as the same ``str``).

**Group commit, then output.** Results are committed in groups ("batches"): one transaction
inserts a batch's rows and records where the output stood before it (``emitted``); only
then are the batch's lines written to the output. So whenever the process dies, even by
SIGKILL, every line in the output has its row in the journal, and a result that was never
committed just runs again. The rows of a batch after ``emitted`` may or may not have
reached the output (perhaps half a line of them): a resume cuts the output file back to
``OFFSET`` and writes those rows' lines again, so each result is in that file exactly once.
When the output is standard output (or another kind of file than a regular one), nothing can
be cut: those lines are written again, so each result appears at least once.

**One line per item.** A resume runs failed items again, and their new lines would follow
the old ones in the output. Each commit counts the rows it replaced (``superseded``); a run
that replaced some, when it ends (even by a signal) and the output is a regular file,
*rebuilds* the output from the journal: truncated, then every item's latest line, in the
order they were committed. A resume rebuilds it at the start too when cutting and replaying
cannot make it right: lines were superseded (a run killed before its own rebuild), the output
is another file than the journal's last one, or it is shorter than the journal says. The
rebuild marks ``superseded`` unknown first and clears it once the file is whole, so a run
killed in the middle of one rebuilds again. Runs that rerun nothing never rebuild: a fresh
run, or a resume of a run that failed nothing, costs no extra write. So after any sequence of
runs, killed ones included, the output file holds one line per item, its latest outcome; in
between (a resumed run still going, or killed with SIGKILL) an item run again may appear
twice, its latest line last.

**Fingerprints.** The ``command`` must match exactly, or the journal is refused: results of
another command are not results of this one. The *input* is fingerprinted by the items
table itself: every row carries the hash of its input line. Before anything runs, a resume
compares the journal's rows among the first ``PREFIX_CHECK`` positions with the new input's
lines and refuses the journal at the first difference: a different file is caught at once,
while an input that only grew (lines appended) resumes and runs the new lines. Past that
prefix an item is skipped only when its row says it succeeded *and* its hash matches, so a
line that changed in place runs again instead of being taken for done. A hash of the first
lines taken at the start of a fresh run would have been simpler, but it would make a fresh
run read ahead before its first result (slow on a pipe); the lines a resume compares are
ones the journal proves were there, so reading them delays nothing.

Only one run may use a journal at a time (an exclusive ``flock`` on the file).

**Damage.** A resume first runs SQLite's ``PRAGMA quick_check`` (about a third of the time the
resume's own scan of the succeeded items takes), so a journal with a damaged page is refused
before anything runs; an SQLite error later in the run (the file damaged under it, a full
disk) also becomes a :class:`JournalError` that names the journal, never a traceback.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sqlite3
import stat
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["Journal", "JournalError", "line_hash"]

FORMAT = "workpool-journal/1"
# How many leading input positions a resume checks against the journal before it starts.
PREFIX_CHECK = 1000
# Rows per query when a resume walks the succeeded items alongside the input: a short read
# transaction each, so the writer's checkpoints are never held back for long.
_SKIP_CHUNK = 4096
# Values per "IN (?, ...)" query: SQLite before 3.32 takes at most 999 parameters a query,
# and a batch of the writer's can hold thousands of rows.
_IN_CHUNK = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    idx INTEGER PRIMARY KEY,
    hash INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    line BLOB NOT NULL,
    batch INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS items_batch ON items (batch);
"""


class JournalError(Exception):
    """The journal cannot be used for this run; the message says why and what to do."""


def _sqlite_failed(path: str, e: sqlite3.Error) -> JournalError:
    """The JournalError for an SQLite error on the journal at ``path``."""
    if isinstance(e, sqlite3.OperationalError):  # a full disk, an I/O error, a lock
        return JournalError(f"the journal {path!r} failed: {e}")
    return JournalError(
        f"the journal {path!r} is damaged ({e}); delete it to start over, or give --journal "
        "a new file name"
    )


@contextlib.contextmanager
def _sqlite_errors(path: str) -> Iterator[None]:
    """Turn an SQLite error into a JournalError that names the journal."""
    try:
        yield
    except sqlite3.Error as e:
        raise _sqlite_failed(path, e) from e


def line_hash(text: str) -> int:
    """A stable 63-bit fingerprint of one input line: its CRC-32 and its length in bytes.

    It tells whether a line is the one the journal saw at that position, nothing more
    (it is no defence against a crafted input), so CRC-32 is enough: 8x faster than a
    cryptographic hash, which matters when a resume skips millions of lines.
    """
    data = text.encode("utf-8", "surrogateescape")
    return (zlib.crc32(data) << 31) | (len(data) & 0x7FFFFFFF)


def output_key(path: str | None) -> str:
    """How the journal names an output: an absolute path, or "-" for standard output."""
    return "-" if path is None or path == "-" else os.path.abspath(path)


class Journal:
    """An open journal: checked against this run, locked, ready to record results.

    Open it with :meth:`open`; then, on a resume, :meth:`check_input` before reading on,
    :meth:`succeeded` to skip what is done and :meth:`replay` to repair the output. The
    writer thread calls :meth:`commit` for each batch and :meth:`close` at the end.
    """

    def __init__(self, path: str, conn: sqlite3.Connection, lock_fd: int, resumed: bool) -> None:
        self.path = path
        self.resumed = resumed
        """True when the journal already existed: a rerun that skips what succeeded."""
        self._conn = conn  # the writer thread's, once the run starts
        self._reader: sqlite3.Connection | None = None  # the main thread's, for skipping
        self._lock_fd = lock_fd
        self._batch = 1 + (conn.execute("SELECT max(batch) FROM items").fetchone()[0] or 0)
        self._output = self.meta("output") or "-"
        # Lines of the output replaced by later ones; -1: unknown (a journal from before this
        # was counted, or a rebuild cut short), which a rebuild also fixes.
        superseded = self.meta("superseded")
        self._superseded = int(superseded) if superseded is not None else -1

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: str, *, command: dict[str, Any], input_name: str, output: str) -> Journal:
        """Open or create the journal at ``path`` for ``command``.

        Raises :class:`JournalError` when the file is not a journal, belongs to another
        command, or is in use by another run.
        """
        try:
            lock_fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise JournalError(f"cannot open the journal {path!r}: {e.strerror}") from None
        try:
            _lock(path, lock_fd)
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            try:
                with _sqlite_errors(path):
                    resumed = _prepare(conn, path, command, input_name, output)
                    journal = cls(path, conn, lock_fd, resumed)
            except BaseException:
                conn.close()
                raise
        except BaseException:
            os.close(lock_fd)
            raise
        return journal

    # ------------------------------------------------------------------ resuming

    def meta(self, key: str) -> str | None:
        with _sqlite_errors(self.path):
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else _meta_text(row[0])

    def check_input(self, lines: Iterator[str]) -> Iterator[str]:
        """Compare the first input lines with the journal; return the lines, none lost.

        Reads as many lines as the journal has rows for among the first ``PREFIX_CHECK``
        positions. Raises :class:`JournalError` at the first line that differs.
        """
        with _sqlite_errors(self.path):
            rows = self._conn.execute(
                "SELECT idx, hash FROM items WHERE idx < ? ORDER BY idx", (PREFIX_CHECK,)
            ).fetchall()
        if not rows:
            return lines
        head = list(itertools.islice(lines, rows[-1][0] + 1))
        recorded = self.meta("input") or "?"
        for idx, h in rows:
            if idx >= len(head):
                raise JournalError(
                    f"the journal {self.path!r} has results for input line {idx + 1}, but this "
                    f"input has only {len(head)} lines: it was written for another input "
                    f"({recorded}). Use another --journal file, or delete this one to start over"
                )
            if line_hash(head[idx]) != h:
                raise JournalError(
                    f"the journal {self.path!r} was written for another input ({recorded}): "
                    f"line {idx + 1} differs. Use another --journal file, or delete this one "
                    "to start over"
                )
        from .inputs import Prefixed

        return Prefixed(head, lines)  # what the lines have at hand, too

    def succeeded(self) -> Iterator[tuple[int, int]]:
        """``(index, hash)`` of every item that succeeded, by index, read in short chunks."""
        start = 0
        while True:
            with _sqlite_errors(self.path):
                rows = (
                    self._read_conn()
                    .execute(
                        "SELECT idx, hash FROM items WHERE ok = 1 AND idx >= ? ORDER BY idx "
                        "LIMIT ?",
                        (start, _SKIP_CHUNK),
                    )
                    .fetchall()
                )
            yield from rows
            if len(rows) < _SKIP_CHUNK:
                return
            start = rows[-1][0] + 1

    def _read_conn(self) -> sqlite3.Connection:
        # The main thread reads while the writer thread commits: a connection each.
        if self._reader is None:
            self._reader = sqlite3.connect(self.path, isolation_level=None)
        return self._reader

    def replay(self, output: str) -> tuple[list[bytes], int | None]:
        """The lines to write again on a resume, and the offset to cut ``output`` back to.

        These are the committed results whose lines may not have reached the output before
        the last run ended. The offset is None when the output is not the same regular file
        as last time (it cannot be cut; the lines are then written again after what is there).
        """
        batch, offset = self._emitted()
        with _sqlite_errors(self.path):
            lines = [
                _line_bytes(row[0])
                for row in self._conn.execute(
                    "SELECT line FROM items WHERE batch > ? ORDER BY batch, idx", (batch,)
                )
            ]
        cut: int | None = None
        if output != "-" and output == self.meta("output"):
            try:
                st = os.stat(output)
            except OSError:
                st = None
            if st is not None and stat.S_ISREG(st.st_mode) and st.st_size >= offset:
                cut = offset
        return lines, cut

    def must_rebuild(self, output: str, fd: int) -> bool:
        """True when a resume must rebuild the output (``fd`` open at ``output``) from the
        journal: cutting it back and replaying the last batches would not leave one line per
        item. Only a regular file can be rebuilt; see "One line per item".
        """
        if output == "-":
            return False
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return False
        return self._superseded != 0 or output != self._output or st.st_size < self._emitted()[1]

    def rebuild(self, output: str, fd: int) -> int:
        """Rewrite the output file ``fd`` (at ``output``) from the journal; its new length.

        Every item's latest line, in the order they were committed. Raises OSError when the
        output cannot be written; the journal then still says a rebuild is due.
        """
        conn = self._conn
        with _sqlite_errors(self.path):
            conn.execute("BEGIN IMMEDIATE")
            self._set("output", output)
            self._set("superseded", "-1")
            conn.execute("COMMIT")
            self._output = output
            self._superseded = -1
            os.ftruncate(fd, 0)
            offset = 0
            cursor = conn.execute("SELECT line FROM items ORDER BY batch, idx")
            while rows := cursor.fetchmany(_SKIP_CHUNK):
                data = b"".join([_line_bytes(row[0]) for row in rows])
                _write_all(fd, data)
                offset += len(data)
            conn.execute("BEGIN IMMEDIATE")
            self._set("emitted", f"{self._batch - 1} {offset}")
            self._set("superseded", "0")
            conn.execute("COMMIT")
        self._superseded = 0
        return offset

    def _emitted(self) -> tuple[int, int]:
        value = self.meta("emitted") or "0 0"
        batch, offset = value.split()
        return int(batch), int(offset)

    def start_output(self, output: str, offset: int) -> None:
        """Record where the output is and how long it is, once replayed lines are written."""
        with _sqlite_errors(self.path):
            self._conn.execute("BEGIN IMMEDIATE")
            self._set("output", output)
            self._set("emitted", f"{self._batch - 1} {offset}")
            self._conn.execute("COMMIT")
        self._output = output

    # ------------------------------------------------------------------ recording

    def commit(self, rows: Iterable[tuple[int, int, int, bytes]], offset: int) -> None:
        """Commit one batch of ``(index, hash, ok, line)`` rows in one transaction.

        ``offset`` is the output's length *before* this batch's lines are written: it is
        recorded with the previous batch as "emitted". Write the lines only after this returns.
        """
        conn = self._conn
        batch = self._batch
        values = [(idx, h, ok, line, batch) for idx, h, ok, line in rows]
        superseded = self._superseded
        with _sqlite_errors(self.path):
            conn.execute("BEGIN IMMEDIATE")
            try:
                if self.resumed and superseded >= 0:
                    # Items that already have a row: their new line supersedes one written.
                    replaced = self._count_rows([v[0] for v in values])
                    if replaced:
                        superseded += replaced
                        self._set("superseded", str(superseded))
                conn.executemany(
                    "INSERT OR REPLACE INTO items (idx, hash, ok, line, batch) "
                    "VALUES (?, ?, ?, ?, ?)",
                    values,
                )
                self._set("emitted", f"{batch - 1} {offset}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        self._batch = batch + 1
        self._superseded = superseded

    def _count_rows(self, indexes: list[int]) -> int:
        """How many of ``indexes`` have a row, in queries of at most ``_IN_CHUNK`` values."""
        count = 0
        for start in range(0, len(indexes), _IN_CHUNK):
            chunk = indexes[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT count(*) FROM items WHERE idx IN ({marks})"
            count += self._conn.execute(query, chunk).fetchone()[0]
        return int(count)

    def close(self, offset: int | None, fd: int | None = None) -> None:
        """Record that every committed batch reached the output (``offset`` bytes), and close.

        When this run superseded lines and ``fd`` is the output file, rebuild it first (see
        "One line per item"). ``offset`` None leaves "emitted" as it is: after an output
        error, the lines of the last batch may be missing, and the next run writes them again.
        Raises JournalError, or OSError when the rebuild cannot write the output.
        """
        try:
            if offset is not None:
                if fd is not None and self._superseded != 0 and self.must_rebuild(self._output, fd):
                    self.rebuild(self._output, fd)
                    return
                with _sqlite_errors(self.path):
                    self._conn.execute("BEGIN IMMEDIATE")
                    self._set("emitted", f"{self._batch - 1} {offset}")
                    self._conn.execute("COMMIT")
        finally:
            if self._reader is not None:
                self._reader.close()
            self._conn.close()
            os.close(self._lock_fd)  # last: closing any fd of the file drops SQLite's locks

    def discard(self) -> None:
        """Close without recording anything; delete the journal if this run created it.

        For a run that stops before it starts (a usage error found after opening): a new
        journal left behind would hold this command's fingerprint for nothing.
        """
        self.close(None)
        if not self.resumed:
            for suffix in ("", "-wal", "-shm"):
                try:
                    os.unlink(self.path + suffix)
                except FileNotFoundError:
                    pass

    def _set(self, key: str, value: str) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, _meta_value(value))
        )


def _meta_value(text: str) -> str | bytes:
    """How a meta value is stored: text, or its bytes when it is not UTF-8 (a path)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")
    return text


def _meta_text(value: str | bytes) -> str:
    """A meta value as stored by :func:`_meta_value`, back as the same ``str``."""
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)


def _line_bytes(line: str | bytes) -> bytes:
    """A stored output line as bytes (text in a journal written before lines were BLOBs)."""
    return line if isinstance(line, bytes) else line.encode("utf-8", "backslashreplace")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _lock(path: str, fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # not POSIX: no protection against two runs sharing a journal
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise JournalError(
            f"the journal {path!r} is in use by another workpool run; wait for it to end, "
            "or give this run another --journal file"
        ) from None


def _prepare(
    conn: sqlite3.Connection, path: str, command: dict[str, Any], input_name: str, output: str
) -> bool:
    """Create the schema or check the existing one; True when resuming."""
    fingerprint = json.dumps(command, sort_keys=True, separators=(",", ":"))
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as e:
        raise JournalError(
            f"{path!r} is not a workpool journal ({e}); give --journal a new file name"
        ) from None
    if not tables:
        conn.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        for key, value in (
            ("format", FORMAT),
            ("command", fingerprint),
            ("input", input_name),
            ("output", output),
            ("emitted", "0 0"),
            ("superseded", "0"),
        ):
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, _meta_value(value)))
        conn.execute("COMMIT")
        return False
    meta: dict[str, str] = {}
    if {"meta", "items"} <= tables:
        meta = {k: _meta_text(v) for k, v in conn.execute("SELECT key, value FROM meta")}
    if meta.get("format") != FORMAT:
        raise JournalError(
            f"{path!r} is not a workpool journal (or one of another version); give --journal "
            "a new file name"
        )
    if meta.get("command") != fingerprint:
        raise JournalError(
            f"the journal {path!r} was written by another command: "
            f"{_describe(meta.get('command'))}, not {_describe(fingerprint)}. Use another "
            "--journal file, or delete this one to start over"
        )
    # A damaged page would otherwise surface halfway through the run (see "Damage").
    report = [row[0] for row in conn.execute("PRAGMA quick_check(1)")]
    if report != ["ok"]:
        # The first problem, without the "*** in database main ***" heading.
        lines = [line for row in report for line in str(row).splitlines()]
        first = next((line for line in lines if not line.startswith("***")), "?")
        raise JournalError(
            f"the journal {path!r} is damaged ({first}); delete it to start over, or give "
            "--journal a new file name"
        )
    return True


def _describe(fingerprint: str | None) -> str:
    """A command fingerprint as the user typed it."""
    try:
        command = json.loads(fingerprint or "")
    except ValueError:
        return repr(fingerprint)
    if "call" in command:
        text = f"--call {command['call']}"
    else:
        text = "-- " + " ".join(command.get("argv", []))
    return f"`{text}{' --jsonl' if command.get('jsonl') else ''}`"
