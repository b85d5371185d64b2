"""workpool: bounded concurrency done right.

A pool of workers that takes work from a bounded queue, returns a result for every item (errors
included), honours deadlines and cancellation, drains gracefully on SIGTERM and resizes at run
time::

    from workpool import Pool

    with Pool(workers=8) as pool:
        for r in pool.results(fetch, urls):
            print(r.index, r.value if r.ok else r.error)

The public names load on first use, each with what it needs (PEP 562): ``import workpool``
stays cheap for tools that import it and may not run a pool, and a program that only uses
``Pool`` never imports asyncio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._apipeline import AsyncPipeline
    from ._apool import AsyncPool
    from ._atask import AsyncTask
    from ._config import RateLimit, Retry
    from ._context import TaskContext, current_task
    from ._pipeline import Pipeline
    from ._pool import Pool
    from ._result import LatencySummary, Result, ShutdownReport, Stats, UnstartedTask
    from ._stage import Stage
    from ._task import Task
    from .errors import (
        ConfigError,
        Interrupted,
        PoolClosed,
        RemoteError,
        TaskCancelled,
        TaskError,
        TaskTimeout,
        WorkerCrashed,
        WorkpoolError,
        WouldDeadlock,
    )

__all__ = [
    "AsyncPipeline",
    "AsyncPool",
    "AsyncTask",
    "ConfigError",
    "Interrupted",
    "LatencySummary",
    "Pipeline",
    "Pool",
    "PoolClosed",
    "RateLimit",
    "RemoteError",
    "Result",
    "Retry",
    "ShutdownReport",
    "Stage",
    "Stats",
    "Task",
    "TaskCancelled",
    "TaskContext",
    "TaskError",
    "TaskTimeout",
    "UnstartedTask",
    "WorkerCrashed",
    "WorkpoolError",
    "WouldDeadlock",
    "current_task",
]

__version__ = "0.1.0"

# Where each public name is defined.
_HOMES = {
    "AsyncPipeline": "_apipeline",
    "AsyncPool": "_apool",
    "AsyncTask": "_atask",
    "RateLimit": "_config",
    "Retry": "_config",
    "TaskContext": "_context",
    "current_task": "_context",
    "Pipeline": "_pipeline",
    "Pool": "_pool",
    "Stage": "_stage",
    "LatencySummary": "_result",
    "Result": "_result",
    "ShutdownReport": "_result",
    "Stats": "_result",
    "UnstartedTask": "_result",
    "Task": "_task",
}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use: ``workpool.Pool`` does not import asyncio,
    ``workpool.AsyncPool`` does."""
    if name not in __all__:
        raise AttributeError(f"module 'workpool' has no attribute {name!r}")
    import importlib

    obj = getattr(importlib.import_module(f"{__name__}.{_HOMES.get(name, 'errors')}"), name)
    if getattr(obj, "__module__", "").startswith("workpool."):
        obj.__module__ = "workpool"  # tracebacks and reprs say workpool.Pool
    globals()[name] = obj
    return obj


def __dir__() -> list[str]:
    return sorted([*__all__, "__version__"])
