"""The option objects: ``Retry``, ``RateLimit``, and ``PoolOptions`` (every pool option,
validated once for Pool, AsyncPool and Stage).

A module of its own, imported when a pool is made: creating dataclasses is most of what
importing workpool would otherwise cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._config import NO_LIMIT, check_count, check_seconds, parse_rate
from .errors import ConfigError, TaskCancelled

__all__ = ["PoolOptions", "RateLimit", "Retry", "make_rate", "make_retry"]


@dataclass(frozen=True)
class Retry:
    """A retry policy: how many extra attempts, and how long to wait between them.

    The wait before attempt ``n + 1`` is ``min(max_backoff, backoff * 2 ** (n - 1))``, scaled
    by a random factor in ``[1 - jitter, 1 + jitter]`` so retries of many tasks spread out.
    Only exceptions that are instances of ``on`` are retried; ``TaskCancelled`` never is.
    ``TaskTimeout`` and ``WorkerCrashed`` are ``Exception`` subclasses, so the default retries them.

    >>> Pool(retries=Retry(3, backoff=0.5, on=(ConnectionError, TimeoutError)))  # doctest: +SKIP
    """

    retries: int = 3
    backoff: float = 0.1
    max_backoff: float = 30.0
    jitter: float = 0.5
    on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        check_count("Retry.retries", self.retries, minimum=0)
        if check_seconds("Retry.backoff", self.backoff, allow_zero=True) is None:
            raise ConfigError(
                "Retry.backoff must be a number of seconds below "
                f"{NO_LIMIT:.0f} (the longest wait there is; max_backoff caps the growth), got "
                f"{self.backoff!r}"
            )
        check_seconds("Retry.max_backoff", self.max_backoff, allow_zero=True)  # inf: no cap
        if (
            isinstance(self.jitter, bool)
            or not isinstance(self.jitter, (int, float))
            or not (0 <= self.jitter <= 1)
        ):
            raise ConfigError(f"Retry.jitter must be a number in [0, 1], got {self.jitter!r}")
        on: object = self.on
        if isinstance(on, type):
            on = (on,)
            object.__setattr__(self, "on", on)
        if not isinstance(on, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in on
        ):
            raise ConfigError(
                f"Retry.on must be an exception class or a tuple of them, got {self.on!r}"
            )

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """True when ``error`` ending attempt number ``attempt`` (1-based) earns another try."""
        return (
            attempt <= self.retries
            and isinstance(error, self.on)
            and not isinstance(error, TaskCancelled)
        )

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        # (2.0 ** 1100 raises OverflowError; the cap is reached long before anyway)
        base = min(self.max_backoff, self.backoff * (2.0 ** min(attempt - 1, 1000)))
        if self.jitter:
            import random

            base *= random.uniform(1.0 - self.jitter, 1.0 + self.jitter)
        return min(max(0.0, base), NO_LIMIT)


def make_retry(value: Any) -> Retry | None:
    """Turn the ``retries`` option (an int or a Retry) into a policy, None for no retries."""
    if value is None or (value == 0 and not isinstance(value, bool)):
        return None
    if isinstance(value, Retry):
        return value if value.retries > 0 else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"retries must be an int >= 0 or a workpool.Retry policy, got {value!r}")
    return Retry(retries=value)


@dataclass(frozen=True)
class RateLimit:
    """A rate limit on task starts with a burst: a token bucket.

    ``rate`` is ``"100/s"``, ``"30/min"``, ``"5/h"`` or a number of starts per second. The
    bucket holds ``burst`` tokens and starts full; each task start takes one, and they come
    back at ``rate``. ``burst=1`` (what a plain ``rate_limit="50/s"`` means) spaces starts
    evenly, 20 ms apart; ``RateLimit("50/s", burst=10)`` lets 10 start at once after a quiet
    spell, then 50 a second::

        Pool(workers=16, rate_limit=RateLimit("50/s", burst=10))

    Raises :class:`ConfigError` for a rate that does not parse or a burst below 1.
    """

    rate: str | float
    burst: int = 1

    def __post_init__(self) -> None:
        parse_rate(self.rate)
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ConfigError(
                f"RateLimit burst must be an int >= 1 (starts allowed at once), got {self.burst!r}"
            )

    @property
    def per_second(self) -> float:
        """The sustained rate, in starts per second."""
        rate = parse_rate(self.rate)
        assert rate is not None
        return rate


def make_rate(value: Any) -> tuple[float, int] | None:
    """The ``rate_limit`` option as (seconds between starts, burst), or None for no limit."""
    if isinstance(value, RateLimit):
        return 1.0 / value.per_second, value.burst
    rate = parse_rate(value)
    return None if rate is None else (1.0 / rate, 1)


@dataclass(frozen=True)
class PoolOptions:
    """The options every pool takes (``Pool``, ``AsyncPool``, a pipeline's ``Stage``),
    validated once: build it with :meth:`check`, which raises :class:`ConfigError` naming
    the option, the bad value and what is allowed."""

    workers: int | None
    backend: str
    queue_size: int | None
    task_timeout: float | None
    retry: Retry | None
    rate: tuple[float, int] | None
    min_workers: int
    idle_timeout: float | None
    name: str | None
    handle_signals: Any
    backend_options: dict[str, Any]

    @classmethod
    def check(
        cls,
        workers: Any = None,
        *,
        backend: Any = "thread",
        queue_size: Any = None,
        task_timeout: Any = None,
        retries: Any = 0,
        rate_limit: Any = None,
        min_workers: Any = None,
        idle_timeout: Any = None,
        name: Any = None,
        handle_signals: Any = False,
        **backend_options: Any,
    ) -> PoolOptions:
        from ._backends import backend_class

        backend_class(backend)  # an unknown backend is a ConfigError, listing the known ones
        max_workers = check_count("workers", workers, minimum=1, allow_none=True)
        size = check_count("queue_size", queue_size, minimum=0, allow_none=True)
        low = check_count("min_workers", min_workers, minimum=0, allow_none=True) or 0
        if max_workers is not None and low > max_workers:
            raise ConfigError(f"min_workers ({low}) must not exceed workers ({max_workers})")
        if name is not None and not isinstance(name, str):
            raise ConfigError(f"name must be a str or None, got {name!r}")
        if not isinstance(handle_signals, bool) and not callable(handle_signals):
            raise ConfigError(
                "handle_signals must be True, False, or a callable(signum, count) that is told "
                f"of each signal, got {handle_signals!r}"
            )
        return cls(
            workers=max_workers,
            backend=backend,
            queue_size=size,
            task_timeout=check_seconds("task_timeout", task_timeout),
            retry=make_retry(retries),
            rate=make_rate(rate_limit),
            min_workers=low,
            idle_timeout=check_seconds("idle_timeout", idle_timeout),
            name=name,
            handle_signals=handle_signals,
            backend_options=dict(backend_options),
        )
