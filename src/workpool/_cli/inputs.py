"""The input of ``workpool run``: lines of ``--input`` or standard input, as items to run.

Lines are read lazily (a ten-million-line input starts at once, in constant memory) and
decoded with ``surrogateescape``, so a line that is not UTF-8 reaches a command as its own
bytes. :class:`Input` numbers them, parses them with ``--jsonl`` and skips what a journal says
succeeded; each item is an ``(index, text, value)`` tuple.
"""

from __future__ import annotations

import json
import os
import stat
import sys
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


def _read_pipe_lines(fd: int, stop_fd: int) -> Iterator[str]:
    """The lines of a pipe or terminal; ends early once ``stop_fd`` is readable.

    A pipe can stay quiet for ever (``tail -f log | workpool run ...``): waiting for it with
    ``select`` together with ``stop_fd`` lets a signal end the input instead of waiting for
    the next line.
    """
    import select

    pending = b""
    while True:
        ready = select.select([fd, stop_fd], [], [])[0]
        if stop_fd in ready:
            return
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        lines = chunk.split(b"\n")
        lines[0] = pending + lines[0]
        pending = lines.pop()
        for line in lines:
            yield line.decode("utf-8", "surrogateescape").removesuffix("\r")
    if pending:
        yield pending.decode("utf-8", "surrogateescape").removesuffix("\r")


class Input:
    """Turns input lines into ``(index, text, value)`` items, skipping what the journal has."""

    def __init__(self, lines: Iterator[str], jsonl: bool, watch: SignalWatch) -> None:
        self.lines = lines
        self.jsonl = jsonl
        self.watch = watch
        self.skipped = 0

    def items(self, done: Iterator[tuple[int, int]] | None) -> Iterator[tuple[int, str, Any]]:
        """Every item to run. ``done``: ``(index, hash)`` of succeeded items, by index."""
        from .journal import line_hash

        loads = json.loads
        done = done if done is not None else iter(())
        nxt = next(done, None)
        watch = self.watch
        for idx, text in enumerate(self.lines):
            if watch.stopped:
                return  # a signal, or the output failed: read no further
            if nxt is not None and nxt[0] == idx:
                recorded = nxt[1]
                nxt = next(done, None)
                if recorded == line_hash(text):
                    self.skipped += 1
                    continue
            if self.jsonl:
                try:
                    value: Any = loads(text)
                except ValueError as e:
                    value = BadJSON(str(e))
                yield (idx, text, value)
            else:
                yield (idx, text, text)


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
        return _read_pipe_lines(fd, stop_fd), name
    # surrogateescape: any bytes (file names, mostly) reach commands unchanged.
    stream = open(  # noqa: SIM115 - lives as long as the run
        fd, encoding="utf-8", errors="surrogateescape", newline="\n", buffering=1 << 16, closefd=own
    )
    return _read_lines(stream), name
