"""Lineage: which input every item in a pipeline came from, and when an input is done.

Plain bookkeeping, no threads and no waits (the pipeline's faces lock around it).

An :class:`Origin` is one input item. Every item in flight is a :class:`Token` that points to
its origin and carries a *path*: the input's index, then its position in each flat split it
went through (``(7, 2, 0)``: the third chunk of input 7, first of its own split). A token
dies when it leaves the pipeline: as an output of the last stage, as a failure, or split
into nothing. An origin whose last token died is complete.

:class:`Lineage` turns those events into the Results a call hands out:

- ``results(ordered=False)``: a Result per output and per failure, as they happen;
- ``results(ordered=True)`` (and ``map``): the same, in input order, the outputs of one input
  in path order: an input's Results are released once it and every input before it are done;
- ``results(per_input=True)``: one Result per input once it is complete: ``value`` the list of
  its outputs (in path order; partial when some failed), ``error`` its first failure.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from ._result import Result, make_result
from .errors import TaskCancelled, TaskTimeout

__all__ = ["Lineage", "Origin", "Token"]


class Origin:
    """One input item and what became of it."""

    __slots__ = (
        "attempts",
        "duration",
        "error",
        "events",
        "index",
        "item",
        "live",
        "stage",
        "traceback",
    )

    def __init__(self, index: int, item: Any) -> None:
        self.index = index
        self.item = item
        self.live = 0  # tokens of this input still in the pipeline
        self.events: list[tuple[tuple[int, ...], Result[Any]]] = []  # held for ordering
        self.error: BaseException | None = None  # the first failure
        self.traceback: str | None = None
        self.stage: str | None = None
        self.attempts = 0  # the most attempts any of its last calls took
        self.duration = 0.0  # the run time of its last calls, summed


class Token:
    """One item in flight: its value, its origin, and its path (see the module doc)."""

    __slots__ = ("origin", "path", "solo", "value")

    def __init__(self, origin: Origin, path: tuple[int, ...], value: Any) -> None:
        self.origin = origin
        self.path = path
        self.value = value
        self.solo = False  # to run alone: it was in a batch that failed (see split batches)


class Lineage:
    """The origins of one ``results``/``map`` call, and the Results ready to hand out."""

    def __init__(self, *, ordered: bool, per_input: bool) -> None:
        self.ordered = ordered
        self.per_input = per_input
        self.ready: deque[Result[Any]] = deque()
        self._next = 0  # ordered: the index of the next input to release
        self._complete: dict[int, Origin] = {}  # ordered: complete, waiting for earlier ones
        self.admitted = 0  # inputs read
        self.released = 0  # inputs whose Results were all handed out (or queued to be)
        self.live_tokens = 0
        # Complete inputs, by how they ended (a shutdown report counts inputs).
        self.completed = self.failed = self.cancelled = self.timed_out = 0

    def new_input(self, index: int, item: Any) -> Token:
        origin = Origin(index, item)
        origin.live = 1
        self.live_tokens += 1
        self.admitted += 1
        return Token(origin, (index,), item)

    def split(self, token: Token, values: list[Any]) -> list[Token]:
        """A flat stage turned ``token`` into ``values``: one token each (none: it died)."""
        origin = token.origin
        tokens = [Token(origin, (*token.path, i), v) for i, v in enumerate(values)]
        origin.live += len(tokens)
        self.live_tokens += len(tokens)
        self.died(token)
        return tokens

    def output(self, token: Token, value: Any, attempts: int, duration: float) -> None:
        """``token`` left the last stage with ``value``."""
        origin = token.origin
        origin.attempts = max(origin.attempts, attempts)
        origin.duration += duration
        if not self.per_input:
            result = make_result(origin.index, origin.item, value, None, None, attempts, duration)
            if self.ordered:
                origin.events.append((token.path, result))
            else:
                self.ready.append(result)
        else:
            origin.events.append((token.path, value))
        self.died(token)

    def failure(
        self,
        token: Token,
        error: BaseException,
        traceback: str | None,
        stage: str,
        attempts: int,
        duration: float,
    ) -> None:
        """``token`` failed in ``stage``: it leaves the pipeline at once."""
        origin = token.origin
        origin.attempts = max(origin.attempts, attempts)
        origin.duration += duration
        if origin.error is None:
            origin.error, origin.traceback, origin.stage = error, traceback, stage
        if not self.per_input:
            result = make_result(
                origin.index, origin.item, None, error, traceback, attempts, duration
            )
            result.__dict__["stage"] = stage
            if self.ordered:
                origin.events.append((token.path, result))
            else:
                self.ready.append(result)
        self.died(token)

    def died(self, token: Token) -> None:
        origin = token.origin
        origin.live -= 1
        self.live_tokens -= 1
        if origin.live == 0:
            self._complete_origin(origin)

    def _complete_origin(self, origin: Origin) -> None:
        if not self.ordered:
            self._release(origin)
            return
        self._complete[origin.index] = origin
        while self._next in self._complete:
            self._release(self._complete.pop(self._next))
            self._next += 1

    def _release(self, origin: Origin) -> None:
        self.released += 1
        error = origin.error
        if error is None:
            self.completed += 1
        elif isinstance(error, TaskCancelled):
            self.cancelled += 1
        else:
            self.failed += 1
            if isinstance(error, TaskTimeout):
                self.timed_out += 1
        events = sorted(origin.events, key=_path) if self.ordered or self.per_input else []
        origin.events = []
        if self.per_input:
            values = [v for _, v in events]
            result = make_result(
                origin.index,
                origin.item,
                values,
                origin.error,
                origin.traceback,
                origin.attempts,
                origin.duration,
            )
            result.__dict__["stage"] = origin.stage
            self.ready.append(result)
        else:
            self.ready.extend(r for _, r in events)

    def waiting(self) -> int:
        """Inputs read and not yet released: what an ordered call holds back."""
        return self.admitted - self.released


def _path(event: tuple[tuple[int, ...], Any]) -> tuple[int, ...]:
    return event[0]
