"""workpool: bounded concurrency done right.

A pool of workers that takes work from a bounded queue, returns a result for every item (errors
included), honours deadlines and cancellation, drains gracefully on SIGTERM and resizes at run
time::

    from workpool import Pool

    with Pool(workers=8) as pool:
        for r in pool.results(fetch, urls):
            print(r.index, r.value if r.ok else r.error)
"""

from ._config import Retry
from ._context import TaskContext, current_task
from ._pool import Pool
from ._result import LatencySummary, Result, ShutdownReport, Stats, UnstartedTask
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
    "ConfigError",
    "Interrupted",
    "LatencySummary",
    "Pool",
    "PoolClosed",
    "RemoteError",
    "Result",
    "Retry",
    "ShutdownReport",
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

# Tracebacks and reprs say workpool.Pool, not workpool._pool.Pool.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("workpool._"):
        _obj.__module__ = "workpool"
del _name, _obj
