"""Validation of user options and rate strings (the option objects are in ``_options``).

Every check raises :class:`ConfigError` naming the option, the bad value and what is allowed.
"""

from __future__ import annotations

import math
import sys
import threading
from typing import Any

from .errors import ConfigError

__all__ = ["NO_LIMIT", "check_count", "check_flag", "check_seconds", "parse_rate"]

# The longest wait that threading accepts (about 292 years on Linux; above it a wait raises
# OverflowError, in whichever thread makes it). Seconds at or above it, infinity included,
# mean "no limit".
NO_LIMIT = threading.TIMEOUT_MAX


def check_count(name: str, value: Any, *, minimum: int, allow_none: bool = False) -> int | None:
    """Return ``value`` if it is an int >= ``minimum`` (or None when allowed)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(
            f"{name} must be an int >= {minimum}{' or None' if allow_none else ''}, "
            f"got {value!r} ({type(value).__name__})"
        )
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    if value > sys.maxsize:
        # (A count this large is no limit anyway, and Python's own counts stop here.)
        raise ConfigError(f"{name} must be at most sys.maxsize ({sys.maxsize}), got {value}")
    return value


def check_flag(what: str, value: Any) -> bool:
    """Return ``value`` if it is a bool; a method argument that is not raises TypeError (a
    string such as "no" is true, and would do the opposite of what it says)."""
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be True or False, got {value!r}")
    return value


def check_seconds(name: str, value: Any, *, allow_zero: bool = False) -> float | None:
    """Return ``value`` as float seconds if it is a positive number, or None for no limit.

    ``None``, ``float("inf")`` and anything too large to wait for (see ``NO_LIMIT``) all mean
    no limit and come back as None.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(
            f"{name} must be a number of seconds or None, got {value!r} ({type(value).__name__})"
        )
    seconds = float(value)
    if math.isnan(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        allowed = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be {allowed} seconds (or None), got {value!r}")
    if seconds >= NO_LIMIT:
        return None
    return seconds


_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
}


def _number(text: str) -> float | None:
    """A positive, finite number written in ``text`` ("100", "2.5", "1e3"), else None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def parse_rate(value: Any) -> float | None:
    """Parse a rate limit into starts per second.

    Accepts ``None``, a positive number (per second), or a string ``"N/unit"`` with unit
    ``s``, ``min`` or ``h`` (also ``"N/10s"``).

    >>> parse_rate("30/min")
    0.5
    """
    if value is None:
        return None
    allowed = (
        'a positive number (starts per second), a string like "100/s", "30/min", "5/h", '
        "or a workpool.RateLimit (for a burst)"
    )
    rate = _rate(value, allowed)
    if 1.0 / rate >= NO_LIMIT:
        # The wait between two starts would be longer than any wait threading accepts.
        raise ConfigError(
            f"rate_limit {value!r} is too slow: it must allow at least one start every "
            f"{NO_LIMIT / (365.25 * 86400):.0f} years"
        )
    return rate


def _rate(value: Any, allowed: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"rate_limit must be {allowed}, got {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"rate_limit must be {allowed}, got {value!r}")
        return float(value)
    if isinstance(value, str):
        # "N/unit" or "N/Kunit", e.g. "100/s", "30/min", "10/10s" (no regex: import time)
        count_text, slash, per_text = value.lower().partition("/")
        per_text = per_text.strip()
        digits = len(per_text) - len(per_text.lstrip("0123456789."))
        count = _number(count_text)
        multiple = _number(per_text[:digits]) if digits else 1.0
        unit = per_text[digits:].strip()
        if unit not in _UNITS and unit.endswith("s") and unit[:-1] in _UNITS:
            unit = unit[:-1]  # "30/mins", "5/hours"
        if slash and count and multiple and unit in _UNITS:
            return count / (multiple * _UNITS[unit])
        raise ConfigError(f"rate_limit must be {allowed}, got {value!r}")
    raise ConfigError(f"rate_limit must be {allowed}, got {value!r} ({type(value).__name__})")
