"""``Stage``: one step of a Pipeline, and the pool that runs it.

A :class:`Stage` is a description (a function and options, validated at once). When a
pipeline opens, each stage gets a :class:`StageRuntime`: its own engine (a pool with the
stage's options), the adaptive batch size of its units, and the clocks of its backpressure
and starvation, which its ``stats()`` reports.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._backends import create_backend
from ._config import check_count, check_seconds
from ._intake import tail_share
from ._options import PoolOptions
from ._reports import Stats
from ._timers import REAL_CLOCK, Clock
from ._units import is_coroutine_function
from .errors import ConfigError

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["Stage", "StageRuntime"]

# Most items in a unit of a pipeline stage (tiny calls are grouped like map's): a unit holds
# its outputs back from the next stage until it ends, and it sets how far ahead the pipeline
# reads, so pipeline units stay smaller than map's.
_MAX_UNIT = 32


class Stage:
    """One stage of a :class:`Pipeline`: ``fn`` and the pool that runs it.

    ::

        Stage(extract_text, workers=2, backend="process")            # CPU-bound
        Stage(split_chunks, flat=True)                                 # one item per element
        Stage(embed, workers=32, backend="async", rate_limit="50/s", retries=3)
        Stage(insert_rows, batch_size=64, batch_timeout=0.5)           # fn gets a list

    Every :class:`Pool` option (``workers``, ``backend``, ``queue_size``, ``task_timeout``,
    ``retries``, ``rate_limit``, ...) applies to this stage's own pool. ``name`` defaults to
    the function's name; names must be unique in a pipeline.

    - ``batch_size``: ``fn`` receives a list of up to ``batch_size`` items (fewer when
      ``batch_timeout`` seconds passed since the first item of a partial batch arrived, or
      at the end of the input) and returns a sequence of the same length (one output per
      item) or ``None`` (each item passes on unchanged). Anything else fails each item of
      the batch, saying so. A batch whose call fails is tried again one item at a time
      (``split_failed_batches=True``, the default), so that only the bad items fail, each
      with its own error; ``False`` fails every item of the batch with the batch's error.
    - ``flat=True``: ``fn`` returns an iterable (or is an async generator function); each
      element goes on as its own item, none drops the input's branch.

    Raises :class:`ConfigError` for an invalid option.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        batch_size: int | None = None,
        batch_timeout: float | None = None,
        flat: bool = False,
        split_failed_batches: bool = True,
        **pool_options: Any,
    ) -> None:
        if not callable(fn):
            raise ConfigError(f"Stage needs a callable as its function, got {fn!r}")
        if name is None:
            name = getattr(fn, "__name__", None) or type(fn).__name__
        if not isinstance(name, str) or not name:
            raise ConfigError(f"Stage name must be a non-empty str, got {name!r}")
        check_count("batch_size", batch_size, minimum=1, allow_none=True)
        timeout = check_seconds("batch_timeout", batch_timeout)
        if timeout is not None and batch_size is None:
            raise ConfigError(
                f"stage {name!r}: batch_timeout={batch_timeout!r} needs a batch_size (it is "
                "how long a partial batch may wait for more items)"
            )
        if not isinstance(flat, bool):
            raise ConfigError(f"stage {name!r}: flat must be True or False, got {flat!r}")
        if flat and batch_size is not None:
            raise ConfigError(
                f"stage {name!r}: flat=True and batch_size cannot go together (a batch stage "
                "returns one output per item); split in a flat stage after it"
            )
        if "handle_signals" in pool_options:
            raise ConfigError(
                f"stage {name!r}: handle_signals belongs to the Pipeline, not to a stage"
            )
        self.fn = fn
        self.name = name
        self.batch_size = batch_size
        self.batch_timeout = timeout if timeout is not None else (math.inf if batch_size else None)
        self.flat = flat
        if not isinstance(split_failed_batches, bool):
            raise ConfigError(
                f"stage {name!r}: split_failed_batches must be True or False, got "
                f"{split_failed_batches!r}"
            )
        self.split_failed_batches = split_failed_batches
        # Tests: a fake clock for the stage's pool and the batch timers (see Pool's _clock).
        self._clock: Clock = pool_options.pop("_clock", REAL_CLOCK)
        coroutines = is_coroutine_function(fn) or _is_async_gen(fn)
        if coroutines and "backend" not in pool_options:
            pool_options["backend"] = "async"  # (as AsyncPool's default, and workpool run's)
        self.options = PoolOptions.check(**pool_options)
        if coroutines and self.options.backend == "thread":
            raise ConfigError(_not_awaited(self))
        # The backend's own options are checked now too (a backend is made to check them,
        # and opened only when the pipeline starts), as a Pool's are at construction.
        create_backend(self.options.backend, self.options.backend_options)

    def __repr__(self) -> str:
        extra = ""
        if self.batch_size:
            extra += f", batch_size={self.batch_size}"
        if self.flat:
            extra += ", flat=True"
        return f"Stage({self.name!r}, backend={self.options.backend!r}{extra})"


class _Flatten:
    """What a flat stage's pool runs: ``fn``'s iterable, made a list in the worker (so the
    user's generator runs there, not in the thread that hands results on)."""

    def __init__(self, fn: Callable[..., Any], stage: str) -> None:
        self.fn = fn
        self.stage = stage

    def __call__(self, *args: Any) -> list[Any]:
        return _as_list(self.fn(*args), self.fn, self.stage)


class _FlattenAsync:
    """``_Flatten`` for a coroutine function or an async generator function."""

    def __init__(self, fn: Callable[..., Any], stage: str) -> None:
        self.fn = fn
        self.stage = stage
        self._agen = _is_async_gen(fn)

    async def __call__(self, *args: Any) -> list[Any]:
        if self._agen:
            return [x async for x in self.fn(*args)]
        return _as_list(await self.fn(*args), self.fn, self.stage)


def _as_list(out: Any, fn: Callable[..., Any], stage: str) -> list[Any]:
    try:
        elements = iter(out)
    except TypeError:
        raise TypeError(
            f"stage {stage!r} is flat=True: its function must return an iterable (each "
            f"element goes on alone; an empty one drops the item), {fn!r} returned "
            f"{type(out).__name__} {out!r:.80}"
        ) from None
    return list(elements)


def _is_async_gen(fn: Any) -> bool:
    import inspect

    return inspect.isasyncgenfunction(fn) or inspect.isasyncgenfunction(
        getattr(fn, "__call__", None)  # noqa: B004
    )


def check_runnable(stage: Stage, coroutines: bool) -> None:
    """A stage's function must be one its backend runs: a coroutine function (or an async
    generator function) on a backend that does not await coroutines would only make
    coroutine objects, each a 'successful' result."""
    if not coroutines and (is_coroutine_function(stage.fn) or _is_async_gen(stage.fn)):
        raise ConfigError(_not_awaited(stage))


def _not_awaited(stage: Stage) -> str:
    return (
        f"stage {stage.name!r}: {stage.fn!r} is a coroutine function, which a "
        f"{stage.options.backend!r} stage would only call to make a coroutine, never run; "
        "give the stage backend='async' (its default for a coroutine function) or "
        "backend='process'"
    )


def runnable(stage: Stage) -> Callable[..., Any]:
    """The callable a stage's pool runs for it."""
    if not stage.flat:
        return stage.fn
    if is_coroutine_function(stage.fn) or _is_async_gen(stage.fn):
        return _FlattenAsync(stage.fn, stage.name)
    return _Flatten(stage.fn, stage.name)


class StageRuntime:
    """A stage of an open pipeline: its engine, unit size and wait clocks (shared by every
    call of the pipeline; changed under the calls' locks, read racily by stats)."""

    def __init__(self, stage: Stage, engine: Engine) -> None:
        self.stage = stage
        self.name = stage.name
        self.engine = engine
        self.fn = runnable(stage)
        self.batched = stage.batch_size is not None
        # Units of one call under a rate limit (the limit paces units) or a batch stage.
        self._fixed = self.batched or engine.bucket is not None
        self._batch = stage.batch_size or 1
        self._max_batch = engine.caps.max_batch
        self._per_item: float | None = None
        self.backpressure = 0.0
        self.starvation = 0.0
        self._blocked_since: float | None = None
        self._starved_since: float | None = None

    def unit_size(self, left: int = -1) -> int:
        """Items in one unit: the batch size of a batch stage, one under a rate limit, else
        adaptive (tiny calls are grouped so that a unit runs ~2 ms, at most ``_MAX_UNIT``).

        ``left``: how many items are still to come to this stage in this call, its buffer
        included, when that is known (the input's length is, and no flat stage comes
        before). Then the tail goes in smaller units, a share for every worker, as Pool's
        intake sizes the tail of an input of known length (``Intake._sizes``): a unit runs
        its calls one after another on one worker, so calls that turn slow there (tiny
        ones made the units large) would run serially, their results held back until the
        unit ends, while the other workers are idle.
        """
        batch = self._batch
        if left > 0 and not self._fixed:
            batch = min(batch, tail_share(left, self.engine.max_workers))
        return batch

    def capacity(self) -> int:
        """Items this stage holds at most: its workers and queue, in units, plus one unit
        waiting in front of it."""
        engine = self.engine
        return (engine.max_workers + engine.queue_size + 1) * self._batch

    def adapt(self, durations: list[float]) -> None:
        if self._fixed or not durations:
            return
        n = len(durations)
        mean = sum(durations) / n
        est = self._per_item
        self._per_item = est = mean if est is None else est + n / (n + 4) * (mean - est)
        batch = int(self.engine.caps.unit_seconds / est) if est > 0 else self._max_batch
        self._batch = max(1, min(self._max_batch, batch, _MAX_UNIT))

    def has_free_worker(self) -> bool:
        engine = self.engine
        return engine.ledger.running < engine.max_workers

    def clocks(self, now: float, blocked: bool, starved: bool) -> None:
        """Count the time this stage is held back by the next one, or starved by the last."""
        if blocked:
            if self._blocked_since is None:
                self._blocked_since = now
        elif self._blocked_since is not None:
            self.backpressure += now - self._blocked_since
            self._blocked_since = None
        if starved:
            if self._starved_since is None:
                self._starved_since = now
        elif self._starved_since is not None:
            self.starvation += now - self._starved_since
            self._starved_since = None

    def stats(self, now: float) -> Stats:
        backpressure = self.backpressure
        if self._blocked_since is not None:
            backpressure += now - self._blocked_since
        starvation = self.starvation
        if self._starved_since is not None:
            starvation += now - self._starved_since
        return dataclasses.replace(
            self.engine.stats(),
            backpressure_seconds=backpressure,
            starvation_seconds=starvation,
        )
