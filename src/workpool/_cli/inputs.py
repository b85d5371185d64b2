"""The input of ``workpool run``: lines of ``--input`` or standard input, as items to run.

Lines are read lazily (a ten-million-line input starts at once, in constant memory) and
decoded with ``surrogateescape``, so a line that is not UTF-8 reaches a command as its own
bytes. :class:`Input` numbers them, parses them with ``--jsonl`` and skips what a journal says
succeeded; each item is an ``(index, text, value)`` tuple.
"""

from __future__ import annotations

import itertools
import json
import os
import stat
from collections import deque
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any, NoReturn

from workpool._intake import at_hand_count

if TYPE_CHECKING:
    from .stopping import SignalWatch

__all__ = ["BadJSON", "Input", "Prefixed", "open_input"]


class BadJSON:
    """Stands in for the value of a --jsonl line that did not parse; the task fails with it."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def fail(self) -> NoReturn:
        raise ValueError(self.message)


def _read_lines(stream: IO[str]) -> Iterator[str]:
    """The lines of a regular file without their line ending (``\\n`` or ``\\r\\n``)."""
    for line in stream:
        if line[-1:] == "\n":
            line = line[:-2] if line[-2:-1] == "\r" else line[:-1]
        yield line


class _PipeLines:
    """The lines of a pipe or terminal; ends early once ``stop_fd`` is readable.

    A pipe can stay quiet for ever (``tail -f log | workpool run ...``): waiting for it with
    ``select`` together with ``stop_fd`` lets a signal end the input instead of waiting for
    the next line. ``_workpool_at_hand()`` is how many lines it has at hand (what the pipe
    has now, read without waiting): the pool reads no further than that at a time (see
    ``_intake.at_hand``), so it never waits for the pipe while holding lines it has read.
    """

    def __init__(self, fd: int, stop_fd: int) -> None:
        self._fd = fd
        self._stop_fd = stop_fd
        self._lines: deque[str] = deque()
        # The start of a line whose end has not come yet, in the chunks it was read in
        # (joined once its end comes: a long line is read in linear time).
        self._partial: list[bytes] = []
        self._ended = False

    def __iter__(self) -> _PipeLines:
        return self

    def __next__(self) -> str:
        lines = self._lines
        while not lines:
            if self._ended:
                raise StopIteration
            self._read()
        return lines.popleft()

    def _workpool_at_hand(self) -> int:
        if not self._lines and not self._ended:
            self._read(wait=False)  # what the pipe has now, if anything
        return len(self._lines)

    def _read(self, wait: bool = True) -> None:
        import select

        fd = self._fd
        ready = select.select([fd, self._stop_fd], [], [], None if wait else 0)[0]
        if not ready:
            return
        if self._stop_fd in ready:
            self._ended = True
            return
        chunk = os.read(fd, 1 << 16)
        partial = self._partial
        if not chunk:
            self._ended = True
            if partial:
                self._add(b"".join(partial))
            return
        end = chunk.rfind(b"\n") + 1
        if not end:
            partial.append(chunk)  # no line ends in it
            return
        partial.append(chunk[:end])
        data = b"".join(partial)
        self._partial = [chunk[end:]] if end < len(chunk) else []
        # A line break is never inside a UTF-8 sequence: the whole lines decode as one.
        self._add(data[:-1])

    def _add(self, data: bytes) -> None:
        lines = data.decode("utf-8", "surrogateescape").split("\n")
        self._lines.extend(line[:-1] if line[-1:] == "\r" else line for line in lines)


class Prefixed:
    """``head`` (lines already read, to check them), then the rest of ``lines``; at hand: what
    is left of the head, plus what the rest has at hand (see ``_PipeLines``)."""

    def __init__(self, head: list[str], lines: Iterator[str]) -> None:
        self._head = deque(head)
        self._lines = lines

    def __iter__(self) -> Prefixed:
        return self

    def __next__(self) -> str:
        return self._head.popleft() if self._head else next(self._lines)

    def _workpool_at_hand(self) -> int:
        n = at_hand_count(self._lines)
        return -1 if n < 0 else len(self._head) + n


class Input:
    """Turns input lines into ``(index, text, value)`` items, skipping what the journal has."""

    def __init__(self, lines: Iterator[str], jsonl: bool, watch: SignalWatch) -> None:
        self.lines = lines
        self.jsonl = jsonl
        self.watch = watch
        self.skipped = 0
        # Items handed to the pool whose result is not written yet, by index (the main
        # thread's: see ``unfinished``).
        self.handed: dict[int, tuple[int, str, Any]] = {}

    def items(self, done: Iterator[tuple[int, int]] | None) -> Iterator[tuple[int, str, Any]]:
        """Every item to run. ``done``: ``(index, hash)`` of succeeded items, by index."""
        return _Items(self, iter(()) if done is None else done)

    def unfinished(self) -> list[tuple[int, str, Any]]:
        """The items handed to the pool with no result written, in input order: a run
        stopped at once (a second signal) gives them no result, and they still get a line."""
        return [self.handed[idx] for idx in sorted(self.handed)]

    def item(self, idx: int, text: str) -> tuple[int, str, Any]:
        """The item of input line ``idx`` (its value parsed with ``--jsonl``)."""
        if self.jsonl:
            try:
                value: Any = json.loads(text)
            except ValueError as e:
                value = BadJSON(f"the input line is not valid JSON: {e}")
            except RecursionError as e:
                # Valid, but nested deeper than Python's parser goes: that item fails alone.
                value = BadJSON(f"the input line is JSON nested too deeply to parse ({e})")
            return (idx, text, value)
        return (idx, text, text)


class _Items:
    """The iterator of :meth:`Input.items`. ``_workpool_at_hand()``: the items it gives
    without waiting (the lines at hand, skipped or parsed now), when its lines can tell what
    they have at hand (a pipe's can: see ``_PipeLines``)."""

    def __init__(self, source: Input, done: Iterator[tuple[int, int]]) -> None:
        from .journal import line_hash

        self._source = source
        self._line_hash = line_hash
        self._done = done
        self._next_done = next(done, None)
        self._lines = source.lines
        self._index = 0
        self._at_hand: deque[tuple[int, str, Any]] = deque()
        self._ended = False
        self._handed = source.handed

    def __iter__(self) -> _Items:
        return self

    def __next__(self) -> tuple[int, str, Any]:
        if self._ended or self._source.watch.stopped:
            self._ended = True  # a signal, or the output failed: hand out nothing more
            raise StopIteration
        item: tuple[int, str, Any] | None
        if self._at_hand:
            item = self._at_hand.popleft()
        else:
            while (item := self._take(next(self._lines))) is None:
                pass
        self._handed[item[0]] = item
        return item

    def _workpool_at_hand(self) -> int:
        if self._ended:
            return 0
        at_hand = self._at_hand
        if at_hand:
            # Not taken yet: read no more lines (each look would take the pipe's next
            # chunk, and a fast writer's lines would pile up here without bound).
            return len(at_hand)
        n = at_hand_count(self._lines)
        if n < 0:
            return -1  # lines of a file: they never wait
        try:
            for text in itertools.islice(self._lines, n):
                item = self._take(text)
                if item is not None:
                    at_hand.append(item)
        except StopIteration:
            pass
        return len(at_hand)

    def _take(self, text: str) -> tuple[int, str, Any] | None:
        """The item of the next line, ``text``; None when the journal has it done."""
        source = self._source
        if self._ended or source.watch.stopped:
            # A signal, or the output failed: read no further.
            self._ended = True
            raise StopIteration
        idx = self._index
        self._index = idx + 1  # (the input's line number: blank lines count too)
        if source.jsonl and not text.strip():
            return None  # a blank line is no JSON value: skipped
        nxt = self._next_done
        if nxt is not None and nxt[0] == idx:
            recorded = nxt[1]
            self._next_done = next(self._done, None)
            if recorded == self._line_hash(text):
                source.skipped += 1
                return None
        return source.item(idx, text)


def open_input(path: str | None, stop_fd: int) -> tuple[Iterator[str], str]:
    """The input lines and how the journal names the input; OSError when unreadable."""
    if path is None or path == "-":
        fd, name, own = 0, "<stdin>", False
    else:
        fd, name, own = os.open(path, os.O_RDONLY), os.path.abspath(path), True
    mode = os.fstat(fd).st_mode
    if stat.S_ISDIR(mode):
        if own:
            os.close(fd)
        raise IsADirectoryError(21, "Is a directory", path)
    if not stat.S_ISREG(mode):
        return _PipeLines(fd, stop_fd), name
    # surrogateescape: any bytes (file names, mostly) reach commands unchanged.
    stream = open(  # noqa: SIM115 - lives as long as the run
        fd, encoding="utf-8", errors="surrogateescape", newline="\n", buffering=1 << 16, closefd=own
    )
    return _read_lines(stream), name
