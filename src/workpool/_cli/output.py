"""The output of ``workpool run``: one JSON line per finished item, written by a thread.

Every finished item is one JSON object on one line of ``--output`` (or standard output)::

    {"index": 0, "input": "a.txt", "ok": true, "stdout": "3 a.txt\\n", "stderr": "",
     "exit_code": 0, "error": null, "traceback": null, "attempts": 1, "duration": 0.0021}

``--call`` gives ``"value"`` (the return value; ``repr`` when not JSON) instead of
``stdout``, ``stderr`` and ``exit_code``. Lines are written as UTF-8 with
``backslashreplace``, which turns a lone surrogate (an input byte that is not UTF-8, decoded
with ``surrogateescape``) inside a JSON string into the JSON escape ``\\udcXX``: the output
stays UTF-8, and ``json.loads`` plus ``.encode("utf-8", "surrogateescape")`` gives the
bytes back.

:class:`Writer` formats, journals and writes results in groups from its own thread;
:func:`open_output` opens the output and, on a resume, repairs or rebuilds it from the
journal first.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from workpool import Result, TaskCancelled

from .commands import CommandFailed, CommandOutput
from .inputs import BadJSON

if TYPE_CHECKING:
    from .inputs import Input
    from .journal import Journal
    from .progress import Progress

__all__ = [
    "OutputFailed",
    "Writer",
    "error_text",
    "format_call",
    "format_command",
    "open_output",
    "write_all",
]

# The writer thread takes results in groups: it writes (and commits to the journal) when this
# many wait, or FLUSH_DELAY after the first of them arrived, whichever comes first. Groups
# make the journal's commits and the output's writes cheap per item; the delay bounds how
# stale the output (and what a SIGKILL can lose of the work done) may be.
FLUSH_DELAY = 0.02
BATCH_JOURNAL = 256
BATCH_PLAIN = 2048
# Results waiting for the writer beyond which the main thread waits for it: a slow output
# (a full pipe) slows the run down instead of filling memory.
HIGH_WATER = 16384


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may take part of it); OSError if not,
    with the bytes written before it as its ``written``."""
    view = memoryview(data)
    written = 0
    while view:
        try:
            n = os.write(fd, view)
        except OSError as e:
            e.written = written  # type: ignore[attr-defined]
            raise
        written += n
        view = view[n:]


# One encoder for every line: non-JSON values become their repr, NaN is refused (not JSON).
_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, default=repr).encode
_quote: Callable[[str], str] = json.encoder.encode_basestring


def _json(v: Any) -> str:
    """``v`` as JSON: the common scalars by hand (5x faster than the encoder), the rest by it.

    What JSON cannot hold becomes its ``repr``, inside a value (a set in a list) or whole
    (NaN, a cycle, non-string keys, an int too long to print).
    """
    t = type(v)
    if t is str:
        return _quote(v)
    if v is None:
        return "null"
    if t is bool:
        return "true" if v else "false"
    try:
        if t is int:
            return str(v)
        if t is float and v - v == 0:  # finite
            return repr(v)
        return _encode(v)
    except Exception:
        return _quote(_safe(repr, v))


def _safe(show: Callable[[Any], str], v: Any) -> str:
    """``show(v)`` (repr or str), or a placeholder when the user's ``__repr__`` raises."""
    try:
        return show(v)
    except Exception as e:
        return f"<{type(v).__name__} object: {show.__name__}() failed with {type(e).__name__}>"


def error_text(error: BaseException) -> str:
    """An exception as the ``error`` of a line: ``"Type: message"``."""
    return f"{type(error).__name__}: {_safe(str, error)}"


def _input_of(item: tuple[int, str, Any]) -> str:
    value = item[2]
    return _quote(item[1]) if type(value) is BadJSON else _json(value)


# The output lines are assembled from a template: building a dict and encoding it all cost
# about 5 us a line, most of the per-item budget of a fast run.
def format_call(r: Result[Any]) -> str:
    """The line of a ``--call`` item: ``value`` holds the return value."""
    item = r.item
    error = r.error
    if error is None:
        value = item[2]
        inp = _quote(value) if type(value) is str else _input_of(item)
        v = r.value
        return (
            f'{{"index": {item[0]}, "input": {inp}, "ok": true, '
            f'"value": {_quote(v) if type(v) is str else _json(v)}, "error": null, '
            f'"traceback": null, "attempts": {r.attempts}, "duration": {r.duration:.6f}}}\n'
        )
    return (
        f'{{"index": {item[0]}, "input": {_input_of(item)}, "ok": false, "value": null, '
        f'"error": {_quote(error_text(error))}, "traceback": {_json(r.traceback)}, '
        f'"attempts": {r.attempts}, "duration": {r.duration:.6f}}}\n'
    )


def format_command(r: Result[Any]) -> str:
    """The line of a command's item: its ``stdout``, ``stderr`` and ``exit_code``."""
    item = r.item
    error = r.error
    out: Any = r.value if error is None else error
    tb = r.traceback
    if isinstance(out, (CommandOutput, CommandFailed)):
        stdout, stderr, code = _quote(out.stdout), _quote(out.stderr), str(out.exit_code)
        tb = None  # the traceback of a non-zero exit is workpool's, not the command's
    else:
        stdout = stderr = code = "null"
    return (
        f'{{"index": {item[0]}, "input": {_input_of(item)}, "ok": {_json(error is None)}, '
        f'"stdout": {stdout}, "stderr": {stderr}, "exit_code": {code}, '
        f'"error": {"null" if error is None else _quote(error_text(error))}, '
        f'"traceback": {_json(tb)}, "attempts": {r.attempts}, '
        f'"duration": {r.duration:.6f}}}\n'
    )


class OutputFailed(Exception):
    """The writer thread could not write the output or the journal; ``__cause__`` says why."""


class Writer:
    """Formats results, commits them to the journal, then writes their lines: in a thread.

    The main thread only appends each Result to a deque (:meth:`add`); this thread takes them
    in groups (see ``FLUSH_DELAY``), so formatting, the journal's commit and the write cost
    little per item and the main thread keeps the pool fed. A line is written only once its
    journal row is committed: whatever is in the output is in the journal.
    """

    def __init__(
        self,
        fd: int,
        offset: int,
        fmt: Callable[[Result[Any]], str],
        journal: Journal | None,
        progress: Progress | None,
        source: Input,
        on_error: Callable[[], None],
    ) -> None:
        self.fd = fd
        self.on_error = on_error
        self.offset = offset
        self.fmt = fmt
        self.journal = journal
        self.progress = progress
        self.source = source
        self.ok = self.failed = self.cancelled = self.stopped = 0
        self.last: Result[Any] | None = None  # the last result add() took
        self.error: BaseException | None = None
        self._batch_max = BATCH_JOURNAL if journal is not None else BATCH_PLAIN
        self._queue: deque[Result[Any]] = deque()
        self._cv = threading.Condition(threading.Lock())
        self._closing = False
        self._room_waiter = False
        self._thread = threading.Thread(target=self._loop, name="workpool-cli-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, r: Result[Any]) -> None:
        """Queue one result (main thread). Raises OutputFailed once the writer has failed."""
        if self.error is not None:
            raise OutputFailed() from self.error
        queue = self._queue
        queue.append(r)
        self.last = r
        n = len(queue)
        if n == 1 or n == self._batch_max:
            with self._cv:
                self._cv.notify()
        elif n >= HIGH_WATER:
            with self._cv:
                self._room_waiter = True
                self._cv.notify()
                while len(queue) >= HIGH_WATER // 2 and self.error is None:
                    self._cv.wait()
                self._room_waiter = False
            if self.error is not None:
                raise OutputFailed() from self.error

    def close(self) -> None:
        """Write what is queued, stop the thread, record the end in the journal.

        The journal may rebuild the output file then (see :meth:`Journal.close`); an error
        doing so is the writer's ``error``.
        """
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        self._thread.join()
        if self.journal is not None:
            from .journal import JournalError

            try:
                self.journal.close(self.offset if self.error is None else None, self.fd)
            except (JournalError, OSError) as e:
                self.error = self.error or e

    def _loop(self) -> None:
        queue = self._queue
        cv = self._cv
        try:
            while True:
                with cv:
                    while not queue and not self._closing:
                        cv.wait()
                    if not self._closing:
                        deadline = time.monotonic() + FLUSH_DELAY
                        while len(queue) < self._batch_max and not self._closing:
                            left = deadline - time.monotonic()
                            if left <= 0:
                                break
                            cv.wait(left)
                    closing = self._closing
                if queue:
                    self._flush([queue.popleft() for _ in range(len(queue))])
                    if self._room_waiter:
                        with cv:
                            cv.notify_all()
                elif closing:
                    return
        except BaseException as e:
            self.error = e
            with cv:
                cv.notify_all()
            self.on_error()

    def _count(self, written: list[Result[Any]]) -> None:
        for r in written:
            error = r.error
            if error is None:
                self.ok += 1
            elif r.attempts == 0 and isinstance(error, TaskCancelled):
                self.cancelled += 1  # read from the input, never started: the pool was stopping
            elif isinstance(error, TaskCancelled):
                self.stopped += 1  # cut off (a second signal)
            else:
                self.failed += 1

    def _flush(self, batch: list[Result[Any]]) -> None:
        fmt = self.fmt
        # Each line as the bytes written (the journal keeps them so: "Any bytes").
        encoded = [fmt(r).encode("utf-8", "backslashreplace") for r in batch]
        if self.journal is not None:
            from .journal import line_hash

            rows = [
                (r.item[0], line_hash(r.item[1]), r.error is None, line)
                for r, line in zip(batch, encoded)
            ]
            self.journal.commit(rows, self.offset)
        data = b"".join(encoded)
        try:
            write_all(self.fd, data)
        except OSError as e:
            # Counted as written: the lines that reached the output whole (a full disk, or
            # the reader of | head left after a part of the batch).
            written, whole = getattr(e, "written", 0), 0
            for line in encoded:
                written -= len(line)
                if written < 0:
                    break
                whole += 1
            self._count(batch[:whole])
            raise
        self.offset += len(data)
        self._count(batch)
        if self.progress is not None:
            self.progress.show(self.ok, self.failed, self.source.skipped)


def restore_stdout(fd: int) -> None:
    """Give descriptor 1 back its standard output (``fd``, from ``open_output``), and close
    ``fd``; what the run's functions printed and Python still buffers goes to stderr first."""
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except (OSError, ValueError):
        pass
    os.dup2(fd, 1)
    os.close(fd)


def open_output(path: str | None, journal: Journal | None, key: str) -> tuple[int, int]:
    """The output's file descriptor and length; on a resume, repair or rebuild it first.

    A resume's output file is made to hold every result the journal has, one line per item
    (see :mod:`workpool._cli.journal`, "One line per item"), before this run adds to it.
    """
    if path is None or path == "-":
        # The results get standard output to themselves: a descriptor of their own, and
        # descriptor 1 becomes standard error for everything else (what a --call function
        # prints, in this process or a worker process it starts): else a print landed inside
        # the JSON lines. ``restore_stdout`` undoes it.
        fd, offset = os.dup(1), 0
        os.dup2(2, 1)
    elif journal is not None and journal.resumed:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        offset = os.fstat(fd).st_size
    else:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o666)
        offset = 0
    if journal is not None and journal.resumed:
        if journal.must_rebuild(key, fd):
            return fd, journal.rebuild(key, fd)
        replay, cut = journal.replay(key)
        if cut is not None:
            os.ftruncate(fd, cut)  # drop lines (maybe half a line) written after the last record
            offset = cut
        data = b"".join(replay)
        write_all(fd, data)
        offset += len(data)
        journal.start_output(key, offset)
    return fd, offset
