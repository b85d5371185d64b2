"""``progress=True``: a live view of a pool or a pipeline on standard error.

Drawn with tqdm (one bar per stage), only when standard error is a terminal: anywhere else it
writes nothing, so logs and pipes get no escape codes. Each bar shows the stage's items
done, failed, in flight and its rate; the stage that holds the others back is marked as the
bottleneck.
"""

from __future__ import annotations

import operator
import sys
import time
from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ._pipeline import PipelineCore
    from ._result import Result

__all__ = ["PoolView", "StageView", "track"]

_REFRESH = 0.1  # seconds between redraws

T = TypeVar("T")


def _terminal() -> bool:
    stream = sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


class StageView:
    """Bars for the stages of a pipeline, updated as its Results come out."""

    def __init__(self, core: PipelineCore) -> None:
        from tqdm import tqdm

        self._core = core
        self._bars = [
            tqdm(
                desc=rt.name,
                position=k,
                unit="item",
                leave=True,
                dynamic_ncols=True,
                file=sys.stderr,
            )
            for k, rt in enumerate(core.runtimes)
        ]
        self._last = 0.0

    @classmethod
    def open(cls, core: PipelineCore) -> StageView | None:
        if not _terminal():
            return None
        core.open()
        return cls(core)

    def update(self, result: Result[Any] | None = None) -> None:
        now = time.monotonic()
        if now - self._last < _REFRESH:
            return
        self._last = now
        stats = [rt.stats(rt.engine.now()) for rt in self._core.runtimes]
        bottleneck = _bottleneck(stats)
        for k, (bar, s) in enumerate(zip(self._bars, stats)):
            done = s.succeeded + s.failed + s.cancelled
            bar.n = done
            mark = "  << bottleneck" if k == bottleneck else ""
            bar.set_postfix_str(
                f"failed={s.failed} in flight={s.running + s.queued}{mark}", refresh=False
            )
            bar.refresh()

    def close(self) -> None:
        self._last = 0.0
        self.update()
        for bar in self._bars:
            bar.close()


def _bottleneck(stats: list[Any]) -> int:
    """The stage the others wait for: the one after the stage held back the longest, or the
    busiest when nothing is held back."""
    held = [s.backpressure_seconds for s in stats]
    if max(held, default=0.0) > 0:
        return min(len(stats) - 1, held.index(max(held)) + 1)
    busy = [s.running / max(1, s.max_workers) for s in stats]
    return busy.index(max(busy)) if busy else 0


class PoolView:
    """One bar for ``Pool.map``/``results(progress=True)``."""

    def __init__(self, name: str, total: int | None) -> None:
        from tqdm import tqdm

        self._bar = tqdm(desc=name, total=total, unit="task", dynamic_ncols=True, file=sys.stderr)
        self._failed = 0

    @classmethod
    def open(cls, name: str, total: int | None) -> PoolView | None:
        return cls(name, total) if _terminal() else None

    def update(self, ok: bool) -> None:
        if not ok:
            self._failed += 1
            self._bar.set_postfix_str(f"failed={self._failed}", refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


def track(
    items: Generator[T, None, None],
    name: str,
    inputs: tuple[Iterable[Any], ...],
    wanted: bool,
    ok: Callable[[T], bool],
) -> Generator[T, None, None]:
    """``items`` as they are, with a bar counting them when ``wanted`` (and on a terminal)."""
    if not wanted:
        return items
    hints = [operator.length_hint(it, -1) for it in inputs]
    total = None if min(hints) < 0 else min(hints)
    view = PoolView.open(name, total)
    if view is None:
        return items
    return _tracked(items, view, ok)


def _tracked(
    items: Generator[T, None, None], view: PoolView, ok: Callable[[T], bool]
) -> Generator[T, None, None]:
    try:
        for item in items:
            view.update(ok(item))
            yield item
    finally:
        items.close()  # a break out of the loop cancels the call's queued work, as without a bar
        view.close()
