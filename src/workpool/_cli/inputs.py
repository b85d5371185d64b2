"""The input of ``workpool run``: lines of ``--input`` or standard input, as items to run.

Lines are read lazily (a ten-million-line input starts at once, in constant memory) and
decoded with ``surrogateescape``, so a line that is not UTF-8 reaches a command as its own
bytes. :class:`Input` numbers them, parses them with ``--jsonl`` and skips what a journal says
succeeded; each item is an ``(index, text, value)`` tuple.
"""

from __future__ import annotations

import json
import operator
import os
import stat
import sys
from collections import deque
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from .stopping import SignalWatch

__all__ = ["BadJSON", "Input", "open_input"]


class BadJSON:
    """Stands in for the value of a --jsonl line that did not parse; the task fails with it."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def fail(self) -> NoReturn:
        raise ValueError(f"the input line is not valid JSON: {self.message}")


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
    the next line. ``__length_hint__`` is how many lines it has at hand (read from the pipe,
    not handed out yet): the pool reads no further than that at a time, so it never waits
    for the pipe while holding lines it has read.
    """

    def __init__(self, fd: int, stop_fd: int) -> None:
        self._fd = fd
        self._stop_fd = stop_fd
        self._lines: deque[bytes] = deque()
        self._partial = b""  # the start of a line whose end has not come yet
        self._ended = False

    def __iter__(self) -> _PipeLines:
        return self

    def __next__(self) -> str:
        lines = self._lines
        while not lines:
            if self._ended:
                raise StopIteration
            self._read()
        return lines.popleft().decode("utf-8", "surrogateescape").removesuffix("\r")

    def __length_hint__(self) -> int:
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
        if not chunk:
            self._ended = True
            if self._partial:
                self._lines.append(self._partial)
            return
        lines = chunk.split(b"\n")
        lines[0] = self._partial + lines[0]
        self._partial = lines.pop()
        self._lines.extend(lines)


class Input:
    """Turns input lines into ``(index, text, value)`` items, skipping what the journal has."""

    def __init__(self, lines: Iterator[str], jsonl: bool, watch: SignalWatch) -> None:
        self.lines = lines
        self.jsonl = jsonl
        self.watch = watch
        self.skipped = 0

    def items(self, done: Iterator[tuple[int, int]] | None) -> Iterator[tuple[int, str, Any]]:
        """Every item to run. ``done``: ``(index, hash)`` of succeeded items, by index."""
        return _Items(self, iter(()) if done is None else done)

    def item(self, idx: int, text: str) -> tuple[int, str, Any]:
        """The item of input line ``idx`` (its value parsed with ``--jsonl``)."""
        if self.jsonl:
            try:
                value: Any = json.loads(text)
            except ValueError as e:
                value = BadJSON(str(e))
            return (idx, text, value)
        return (idx, text, text)


class _Items:
    """The iterator of :meth:`Input.items`. ``__length_hint__``: the items it gives without
    waiting (the lines at hand, skipped or parsed now), when its lines say what they have at
    hand (a pipe's do: see ``_PipeLines``)."""

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

    def __iter__(self) -> _Items:
        return self

    def __next__(self) -> tuple[int, str, Any]:
        if self._ended or self._source.watch.stopped:
            self._ended = True  # a signal, or the output failed: hand out nothing more
            raise StopIteration
        if self._at_hand:
            return self._at_hand.popleft()
        while True:
            item = self._take(next(self._lines))
            if item is not None:
                return item

    def __length_hint__(self) -> int:
        if self._ended:
            return 0
        at_hand = self._at_hand
        hint = operator.length_hint(self._lines, -1)
        if hint < 0:
            return NotImplemented  # type: ignore[no-any-return]  # a file's lines: never wait
        try:
            for _ in range(hint):
                item = self._take(next(self._lines))
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
        self._index = idx + 1
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
        fd, name, own = sys.stdin.fileno(), "<stdin>", False
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
