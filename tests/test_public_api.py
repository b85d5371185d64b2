"""The public surface: names, where they live, the error hierarchy, and the value types."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import importlib.resources
import inspect
import pickle

import pytest

import workpool
import workpool.errors
from workpool import (
    ConfigError,
    Interrupted,
    PoolClosed,
    RemoteError,
    Result,
    ShutdownReport,
    Stats,
    TaskCancelled,
    TaskError,
    TaskTimeout,
    WorkerCrashed,
    WorkpoolError,
    WouldDeadlock,
)

ERROR_NAMES = {
    "ConfigError",
    "Interrupted",
    "PoolClosed",
    "RemoteError",
    "TaskCancelled",
    "TaskError",
    "TaskTimeout",
    "WorkerCrashed",
    "WorkpoolError",
    "WouldDeadlock",
}

PUBLIC_NAMES = ERROR_NAMES | {
    "AsyncPipeline",
    "AsyncPool",
    "AsyncTask",
    "LatencySummary",
    "Pipeline",
    "Pool",
    "RateLimit",
    "Result",
    "Retry",
    "ShutdownReport",
    "Stage",
    "Stats",
    "Task",
    "TaskContext",
    "UnstartedTask",
    "current_task",
}


def test_all_is_exactly_the_public_names() -> None:
    assert set(workpool.__all__) == PUBLIC_NAMES
    assert len(workpool.__all__) == len(PUBLIC_NAMES), "duplicates in __all__"


def test_every_public_name_is_importable_from_the_package() -> None:
    namespace: dict[str, object] = {}
    exec("from workpool import *", namespace)
    for name in PUBLIC_NAMES:
        assert getattr(workpool, name) is namespace[name]


def test_package_namespace_holds_nothing_else_public() -> None:
    # The facade: only __all__ (plus, at most, the public errors submodule).
    public = {n for n in dir(workpool) if not n.startswith("_")}
    assert public - {"errors"} == PUBLIC_NAMES


@pytest.mark.parametrize("name", sorted(PUBLIC_NAMES - ERROR_NAMES))
def test_public_objects_say_they_live_in_workpool(name: str) -> None:
    obj = getattr(workpool, name)
    assert inspect.isclass(obj) or inspect.isfunction(obj)
    assert obj.__module__ == "workpool"


@pytest.mark.parametrize("name", sorted(ERROR_NAMES))
def test_errors_live_in_a_public_module(name: str) -> None:
    obj = getattr(workpool, name)
    assert inspect.isclass(obj)
    assert obj.__module__ in ("workpool", "workpool.errors")


def test_errors_module_exports_the_same_objects() -> None:
    assert set(workpool.errors.__all__) == ERROR_NAMES
    for name in ERROR_NAMES:
        assert getattr(workpool.errors, name) is getattr(workpool, name)


def test_py_typed_ships_in_the_package() -> None:
    assert (importlib.resources.files("workpool") / "py.typed").is_file()


@pytest.mark.parametrize(
    "cls",
    [
        ConfigError,
        Interrupted,
        PoolClosed,
        RemoteError,
        TaskCancelled,
        TaskError,
        TaskTimeout,
        WorkerCrashed,
        WouldDeadlock,
    ],
)
def test_every_error_is_a_workpool_error(cls: type[BaseException]) -> None:
    assert issubclass(cls, WorkpoolError)


def test_errors_also_fit_the_standard_hierarchy() -> None:
    assert issubclass(WorkpoolError, Exception)
    assert issubclass(ConfigError, ValueError)
    assert issubclass(TaskTimeout, TimeoutError)
    assert issubclass(TaskCancelled, concurrent.futures.CancelledError)


def test_errors_pickle_with_their_attributes() -> None:
    result: Result[str] = Result(index=3, item="x", error=ValueError("bad"))
    report = ShutdownReport(completed=1, failed=2, cancelled=3, unstarted=[])

    e1 = pickle.loads(pickle.dumps(TaskError("task 3 failed", result)))
    assert isinstance(e1, TaskError)
    assert str(e1) == "task 3 failed"
    assert e1.result.index == 3 and e1.result.item == "x"

    e2 = pickle.loads(pickle.dumps(WorkerCrashed("died", exitcode=3, signal=9)))
    assert (str(e2), e2.exitcode, e2.signal) == ("died", 3, 9)

    e3 = pickle.loads(pickle.dumps(Interrupted("stopped", report, 15)))
    assert e3.report == report and e3.signal == 15
    later = ShutdownReport(completed=4, failed=0, cancelled=0, unstarted=[])
    e3.report = later  # an attribute as before (a subclass or a handler may set it)
    assert e3.report == later

    e4 = pickle.loads(pickle.dumps(RemoteError("msg", "mod.Type")))
    assert (str(e4), e4.type_name) == ("msg", "mod.Type")


def test_result_is_a_frozen_dataclass() -> None:
    assert dataclasses.is_dataclass(Result)
    names = {f.name for f in dataclasses.fields(Result)}
    assert {"index", "item", "value", "error", "traceback", "attempts", "duration"} <= names
    r = Result(index=0, item=2, value=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.value = 5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.error = ValueError()  # type: ignore[misc]


def test_results_the_pool_makes_are_the_dataclass_the_constructor_makes() -> None:
    # The pools build Results without the frozen dataclass's __init__ (a fast path): they must
    # be indistinguishable from constructed ones (equality, hash, repr, pickling, replace).
    with workpool.Pool(2) as pool:
        made = sorted(pool.results(abs, [-1, 2, -3]), key=lambda r: r.index)
    for r in made:
        built = Result(
            index=r.index, item=r.item, value=r.value, attempts=r.attempts, duration=r.duration
        )
        assert type(r) is Result
        assert r == built and hash(r) == hash(built) and repr(r) == repr(built)
        assert pickle.loads(pickle.dumps(r)) == built
        assert dataclasses.replace(r, value=0) == dataclasses.replace(built, value=0)
        with pytest.raises(dataclasses.FrozenInstanceError):
            r.value = 5  # type: ignore[misc]
    assert [r.value for r in made] == [1, 2, 3]


def test_result_ok_and_unwrap() -> None:
    good = Result(index=0, item=2, value=4)
    assert good.ok and good.unwrap() == 4
    boom = KeyError("k")
    bad: Result[int] = Result(index=1, item=3, error=boom)
    assert not bad.ok
    with pytest.raises(KeyError) as info:
        bad.unwrap()
    assert info.value is boom


def test_stats_and_report_are_frozen_dataclasses() -> None:
    for cls in (Stats, ShutdownReport):
        assert dataclasses.is_dataclass(cls)
        params = getattr(cls, "__dataclass_params__", None)
        assert params is not None and params.frozen
    stats_fields = {f.name for f in dataclasses.fields(Stats)}
    assert {
        "submitted",
        "queued",
        "running",
        "succeeded",
        "failed",
        "cancelled",
        "timed_out",
        "retried",
        "workers",
    } <= stats_fields
    report_fields = {f.name for f in dataclasses.fields(ShutdownReport)}
    assert {"completed", "failed", "cancelled", "unstarted"} <= report_fields


def test_pool_is_an_executor_and_task_a_future() -> None:
    assert issubclass(workpool.Pool, concurrent.futures.Executor)
    assert issubclass(workpool.Task, concurrent.futures.Future)
