"""Shared fixtures: every behavioural test runs once per backend through ``backend``.

A test that cannot apply to a backend opts out with ``@pytest.mark.skip_backend(name,
reason=...)``: the reason is printed with the skip, so the opt-out is explicit and reasoned.

Tasks of the ``process`` backend run in child processes, so the handshakes a test shares with
its tasks (``gate``, ``shared``) are Manager proxies there and ``threading`` objects on
``thread``; see ``handshakes.py``. Task functions must pickle with cloudpickle on ``process``:
a closure over a proxy is fine, a closure over a ``threading`` object is not.
"""

from __future__ import annotations

import faulthandler
import multiprocessing
import multiprocessing.forkserver
import os
import signal
from collections.abc import Callable, Iterator
from multiprocessing.managers import SyncManager
from typing import Any

import pytest

from handshakes import AsyncKit, Gate, ManagerKit, ThreadKit
from workpool import Pool, _lifecycle
from workpool._backends import names, process

# Backends the behavioural suite runs on: every backend in the registry.
BACKENDS = names()


# Seconds until a running task that was cancelled has its outcome, per backend (API.md §4):
# 0 where it is delivered at once (thread: the call is abandoned; async: the coroutine is
# cancelled), a bound where the worker must be killed first (process: the outcome comes
# when the kill lands).
STOP_LATENCY = {"thread": 0.0, "async": 0.0, "process": 5.0, "dask": 1.0}


def pytest_configure(config: pytest.Config) -> None:
    # dev.py sends SIGUSR1 to a run that outlives its wall-clock bound: print every stack.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    config.addinivalue_line(
        "markers",
        "skip_backend(*names, reason): this test does not apply to the named backends; "
        "the reason says why, and where the behaviour is covered for them instead",
    )
    config.addinivalue_line(
        "markers",
        "known_bug(*names, reason, strict=True): the test is right but the library fails it "
        "on the named backends; an xfail, strict so that the fix shows up as XPASS and the "
        "mark must go (strict=False only for a bug that strikes some runs, not all)",
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # A pool a failed test left with work would hold the interpreter's exit forever (the
    # exit-time drain waits for running work, as ThreadPoolExecutor's does): drain what is
    # left with a bound, name the pools that would not finish, and fail the run for them.
    stuck = []
    for engine in list(_lifecycle._live):
        engine.lifecycle.shutdown(wait=True, cancel_futures=True, timeout=5)
        if not engine.lifecycle.shutdown_done():
            stuck.append(f"{engine.name} ({engine.stats()})")
    _lifecycle._live.clear()
    _stop_dask_cluster()
    if stuck:
        print("\npools that did not finish their shutdown:", *stuck, sep="\n  ", flush=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for kind in ("skip_backend", "known_bug"):
            for mark in item.iter_markers(kind):
                if "reason" not in mark.kwargs or not mark.args:
                    raise pytest.UsageError(f"{item.nodeid}: {kind} needs names and a reason")
                callspec = getattr(item, "callspec", None)
                if callspec is None or "backend" not in callspec.params:
                    raise pytest.UsageError(f"{item.nodeid}: {kind} on a test without backend")
                name = callspec.params["backend"]
                if name not in mark.args:
                    continue
                reason = f"{name}: {mark.kwargs['reason']}"
                if kind == "skip_backend":
                    item.add_marker(pytest.mark.skip(reason=reason))
                else:
                    strict = bool(mark.kwargs.get("strict", True))
                    item.add_marker(
                        pytest.mark.xfail(reason=f"library bug: {reason}", strict=strict)
                    )


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "dask":  # dask backend (issue 13): its tests need the cluster
        request.getfixturevalue("dask_cluster")
    return str(request.param)


# ---- dask backend (issue 13) ------------------------------------------------------------
# A scheduler and two workers on 127.0.0.1 (``dask_cluster.TestCluster``), shared by the
# session. Started once collection is done, when a selected test needs it: outside any test,
# so its start-up (several seconds) counts against no test's timeout. While it runs, Dask's
# ``scheduler-address`` setting points at it, so ``Pool(backend="dask")`` connects to it as
# it would to the cluster a user configured. Without the extra, the tests are skipped.
_dask: dict[str, Any] = {}


def _needs_dask(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    if callspec is not None and callspec.params.get("backend") == "dask":
        return True
    return "dask_cluster" in getattr(item, "fixturenames", ())


def pytest_collection_finish(session: pytest.Session) -> None:
    if not any(_needs_dask(item) for item in session.items):
        return
    try:
        import dask
        import distributed  # noqa: F401
    except ImportError:
        return  # dask_cluster skips the tests that need it
    from dask_cluster import TestCluster

    cluster = _dask["cluster"] = TestCluster()
    cluster.start()
    _dask["config"] = dask.config.set({"scheduler-address": cluster.address})
    # ... and in the programs the tests start (Dask reads it when imported).
    os.environ["DASK_SCHEDULER_ADDRESS"] = cluster.address


def _stop_dask_cluster() -> None:
    os.environ.pop("DASK_SCHEDULER_ADDRESS", None)
    config = _dask.pop("config", None)
    if config is not None:
        config.__exit__(None, None, None)
    cluster = _dask.pop("cluster", None)
    if cluster is not None:
        cluster.stop()


@pytest.fixture(scope="session")
def dask_cluster() -> Any:
    """The session's test cluster (see above)."""
    pytest.importorskip(
        "distributed", reason='the dask extra is not installed (pip install "workpool[dask]")'
    )
    if "cluster" not in _dask:
        pytest.fail("the Dask test cluster was not started (see pytest_collection_finish)")
    return _dask["cluster"]


# ---- end of dask backend ----------------------------------------------------------------


# What the fork server preloads for the suite: the modules the library asks for, the pytest
# entry point's import (see fork_server) and the light modules tasks of the suite come from.
FORK_SERVER_PRELOAD = [*process.FORK_SERVER_PRELOAD, "_pytest.config", "handshakes", "suite_tasks"]


@pytest.fixture(scope="session", autouse=True)
def fork_server(request: pytest.FixtureRequest) -> None:
    """Start the fork server of the process backend before any pool does, with preloads.

    Every worker process first re-runs the program's main module (multiprocessing's spawn
    preparation) unless the fork server imported it. The library has the server import a main
    *script* (it passes the path CPython 3.11 leaves out), but the suite's main module is the
    pytest entry point, which imports most of ``_pytest``: ~0.3 s per worker, and the suite
    starts hundreds of workers. Started here with that import preloaded, plus what the library
    preloads itself, the same server (the library's pools use the one server of the process)
    forks workers in a few ms. Nothing but their start-up time changes. Only when the run has
    process tests.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return
    if not any("process" in item.nodeid for item in request.session.items):
        return
    multiprocessing.set_forkserver_preload(FORK_SERVER_PRELOAD)
    multiprocessing.forkserver.ensure_running()


@pytest.fixture
def stop_latency(backend: str) -> float:
    return STOP_LATENCY[backend]


@pytest.fixture
def make_pool(backend: str) -> Iterator[Callable[..., Pool]]:
    """``make_pool(**options)`` builds a Pool on the current backend and shuts it down after."""
    pools: list[Pool] = []

    def make(*args: Any, **kwargs: Any) -> Pool:
        kwargs.setdefault("backend", backend)
        pool = Pool(*args, **kwargs)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.shutdown(wait=True, cancel_futures=True, timeout=5)


@pytest.fixture(scope="module")
def manager() -> Iterator[SyncManager]:
    """A Manager process, started the first time a module's process test needs one.

    One per module, not per session: test_process.py checks that no child process but the
    fork server and the resource tracker outlives its module, and a session-long Manager
    would be one. A spawn context: forking the pytest process, whose pools run threads, could
    copy a held lock into the manager. Workers forked by the pool's fork server carry this
    process's authkey, so the proxies they receive can connect.
    """
    mgr = multiprocessing.get_context("spawn").Manager()
    yield mgr
    mgr.shutdown()


@pytest.fixture
def shared(backend: str, request: pytest.FixtureRequest) -> ThreadKit:
    """Makes handshake objects (``event()``, ``barrier(n)``, ``list()``, ``counter()``,
    ``gate()``...) that the current backend's tasks can share with the test."""
    if backend in ("process", "dask"):  # (dask: tasks run in Dask's worker processes)
        return ManagerKit(request.getfixturevalue("manager"))
    if backend == "async":
        return AsyncKit()
    return ThreadKit()


@pytest.fixture
def gate(shared: ThreadKit) -> Iterator[Gate]:
    g = shared.gate()
    yield g
    g.open()  # never leave a worker blocked behind a failed test
