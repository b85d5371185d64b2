"""What a person watching ``workpool run`` sees on standard error.

A progress bar while it runs, when standard error is a terminal (:class:`Progress`), and
always a one-line summary at the end (:func:`summary`)::

    workpool: 1000 items, 998 ok, 2 failed, 0 skipped in 3.21s (311/s)
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .inputs import Input
    from .output import Writer

__all__ = ["Progress", "summary"]


class Progress:
    """A tqdm bar on standard error: done (ok / failed / skipped), rate, and ETA if known.

    Only used when standard error is a terminal; the total comes from counting the lines of
    a regular ``--input`` file in a background thread, so a huge file does not delay the start.
    """

    def __init__(self, path: str | None) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=None,
            unit="item",
            file=sys.stderr,
            dynamic_ncols=True,
            mininterval=0.2,
            smoothing=0.1,
            leave=False,
        )
        if path is not None and path != "-" and os.path.isfile(path):
            threading.Thread(target=self._count, args=(path,), daemon=True).start()

    def _count(self, path: str) -> None:
        n = 0
        last = b"\n"
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                n += chunk.count(b"\n")
                last = chunk[-1:]
        self.bar.total = n + (last != b"\n")

    def show(self, ok: int, failed: int, skipped: int) -> None:
        bar = self.bar
        extra = f" skipped={skipped}" if skipped else ""
        bar.set_postfix_str(f"ok={ok} failed={failed}{extra}", refresh=False)
        bar.update(ok + failed + skipped - bar.n)

    def close(self) -> None:
        self.bar.close()


def summary(writer: Writer, source: Input, elapsed: float, stopped_by: int | None) -> None:
    """Print the run's one-line summary to standard error."""
    done = writer.ok + writer.failed
    total = done + writer.stopped + writer.cancelled + source.skipped
    rate = done / elapsed if elapsed > 0 else 0.0
    text = (
        f"workpool: {total} items, {writer.ok} ok, {writer.failed} failed, {source.skipped} skipped"
    )
    if writer.stopped:
        text += f", {writer.stopped} cancelled"
    if writer.cancelled:
        text += f", {writer.cancelled} not started"
    text += f" in {elapsed:.2f}s" if elapsed < 10 else f" in {elapsed:.0f}s"
    text += f" ({rate:.0f}/s)"
    if stopped_by is not None:
        text += f"; stopped by {signal.Signals(stopped_by).name}"
    print(text, file=sys.stderr, flush=True)
