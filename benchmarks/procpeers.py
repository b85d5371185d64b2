"""Helpers for driving the process-pool peers (joblib, loky) in W2/W4/W6p/CRASH."""

from __future__ import annotations

from typing import Any


def joblib_shutdown() -> None:
    """Stop the loky executor that joblib keeps alive for reuse between ``Parallel`` calls.

    joblib has no public call for this; without it a second ``Parallel`` call would skip
    starting its worker processes, and the processes would outlive the measurement.
    """
    from joblib.externals.loky import reusable_executor

    executor = getattr(reusable_executor, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=True)


def loky_module() -> tuple[Any, str]:
    """The standalone ``loky`` if installed, else the copy vendored in joblib, and a label."""
    try:
        import loky
    except ImportError:
        from joblib.externals import loky

        return loky, f"joblib.externals.loky {loky.__version__} (standalone loky not installed)"
    return loky, f"loky {loky.__version__}"
