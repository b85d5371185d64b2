"""``workpool run``'s reader of a pipe (white-box: ``_cli.inputs``): bounded, linear, exact.

End to end these were: ``yes | workpool run ...`` growing by ~200 MB a second (every look at
what the pipe had at hand took its next chunk, whether or not the last was used), and one
40 MB line from a pipe taking 12 s (each 64 KiB chunk copied the line so far).
"""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Iterator

import pytest

from workpool._cli.inputs import Input, _PipeLines
from workpool._cli.stopping import SignalWatch

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def pipe() -> Iterator[tuple[int, int, int]]:
    """A pipe (read end, write end) and a stop pipe's read end. The write end is the
    writer's (``_write_all`` closes it); the read end is closed first, which ends a writer
    still waiting, and the test waits for it: a writer left running would write into the
    next test's pipe, which gets the same descriptor number."""
    r, w = os.pipe()
    stop_r, stop_w = os.pipe()
    writers.clear()
    yield r, w, stop_r
    os.close(r)
    for t in writers:
        t.join(10)
        assert not t.is_alive()
    os.close(stop_r)
    os.close(stop_w)


writers: list[threading.Thread] = []


def _write_all(fd: int, data: bytes) -> None:
    """Write ``data`` to ``fd`` from a thread (it blocks while the pipe is full), then close."""

    def run() -> None:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            pass  # the reader went away (the test ended)
        finally:
            os.close(fd)

    t = threading.Thread(target=run, daemon=True)
    writers.append(t)
    t.start()


def test_looking_at_what_is_at_hand_reads_no_more_until_it_is_taken(
    pipe: tuple[int, int, int],
) -> None:
    r, w, stop_r = pipe
    _write_all(w, b"y\n" * 1_000_000)  # far more than the pipe holds: the writer waits
    assert select.select([r], [], [], 10)[0] == [r]  # it has written
    items = Input(_PipeLines(r, stop_r), False, SignalWatch(False)).items(None)
    first = items._workpool_at_hand()  # type: ignore[attr-defined]
    assert first > 0
    for _ in range(20):
        assert items._workpool_at_hand() == first  # type: ignore[attr-defined]
    got = [next(items) for _ in range(first)]
    assert got == [(i, "y", "y") for i in range(first)]
    # Taken: the next look reads what the pipe has next.
    assert items._workpool_at_hand() > 0  # type: ignore[attr-defined]


def test_lines_longer_than_a_read_come_whole(pipe: tuple[int, int, int]) -> None:
    r, w, stop_r = pipe
    # A 1 MiB line of two-byte characters (every 64 KiB read ends inside one), a CRLF
    # line, a blank line and a last line without a line break.
    long = "é" * (1 << 19)
    _write_all(w, (long + "\nsecond\r\n\nlast").encode())
    lines = list(_PipeLines(r, stop_r))
    assert lines == [long, "second", "", "last"]


def test_blank_jsonl_lines_are_skipped_and_counted(pipe: tuple[int, int, int]) -> None:
    # ``--jsonl``: a blank line is no value, but it is a line: the next item's index is
    # its line number (it was the count of values before it).
    r, w, stop_r = pipe
    long = '"' + "c" * 200_000 + '"'  # a last line longer than a read, without a break
    _write_all(w, b'"a"\n\n  \n"b"\n' + long.encode())
    items = Input(_PipeLines(r, stop_r), True, SignalWatch(False)).items(None)
    assert list(items) == [(0, '"a"', "a"), (3, '"b"', "b"), (4, long, long[1:-1])]
