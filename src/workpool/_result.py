"""``Result``: what every task comes back as (Stats and reports are in ``_reports``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

R = TypeVar("R")

__all__ = ["Result", "make_result"]


@dataclass(frozen=True)
class Result(Generic[R]):
    """The outcome of one task: its value or its error, never both.

    ``map``/``results`` yield one per input item; ``Task.outcome()`` gives one for a submitted task.

    >>> r = Result(index=0, item=3, value=9)
    >>> r.ok, r.unwrap()
    (True, 9)
    """

    index: int
    """Position of the item in the input (0-based); for ``submit``, the task id."""
    item: Any
    """The input item (the args tuple when several iterables were given)."""
    value: R | None = None
    """The return value when ok."""
    error: BaseException | None = None
    """The exception when not ok."""
    traceback: str | None = None
    """The formatted traceback from where the task ran."""
    attempts: int = 1
    """How many attempts ran (1 + retries used)."""
    duration: float = 0.0
    """Seconds spent running (last attempt)."""
    stage: str | None = None
    """In a Pipeline, the name of the stage that produced this result (or failed)."""

    @property
    def ok(self) -> bool:
        """True when the task returned a value."""
        return self.error is None

    def unwrap(self) -> R:
        """Return the value, or raise the task's error."""
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


_new = object.__new__


def make_result(
    index: int,
    item: Any,
    value: Any,
    error: BaseException | None,
    traceback: str | None,
    attempts: int,
    duration: float,
) -> Result[Any]:
    # A frozen dataclass's __init__ pays one object.__setattr__ per field; storing into the
    # instance's __dict__ directly is ~1.4x faster than even one dict.update(**fields) (no
    # keyword dict is built), which matters when results() yields a million Results a second.
    r: Result[Any] = _new(Result)
    d = r.__dict__
    d["index"] = index
    d["item"] = item
    d["value"] = value
    d["error"] = error
    d["traceback"] = traceback
    d["attempts"] = attempts
    d["duration"] = duration
    d["stage"] = None
    return r
