"""What the dask backend runs on a Dask worker: one unit (a batch of calls) per Dask task.

:func:`run_unit` is the Dask task. It gets the unit as bytes the pool pickled (the function,
the entries, the keyword arguments), runs the calls one after another in the worker's thread
and sends back, per call, the value or a :class:`~workpool._units.Failure` (the exception,
or a :class:`~workpool.RemoteError` when it would not pickle, with the worker's traceback
text), and each call's run time. Outcomes travel as bytes pickled here, so a value that
won't pickle fails its own call only, not the whole unit.

Inside a call, ``current_task()`` works as on every backend: the id and attempt of the call,
its deadline on this worker's clock, and ``.cancelled``, which reads the worker's own state
of the Dask task. When the pool cancels the task's future (a timeout, ``Task.cancel()``,
shutdown), the scheduler tells the worker to release the task, which marks a running one
``cancelled``: the flag turns true without a message of ours, within the scheduler's round
trip, at no cost per call.

This module imports nothing from Dask at import time, and nothing of it runs in the pool's
process: workers import it by reference (``workpool`` must be installed on them).
"""

from __future__ import annotations

import io
import pickle
import time
from typing import Any

import cloudpickle

from .._context import TaskContext, set_source
from .._units import CALL_ITEM, CALL_KWARGS, Failure, failure_of, is_coroutine_function
from ..errors import TaskCancelled
from ._wire import PROTOCOL, BadArgument, dumps_plain, portable

__all__ = ["run_unit"]

# How often a unit's loop looks whether the pool still wants it (a dict lookup on the
# worker's state): before its first call, then before the first call this long after the
# last look. A unit of tiny calls pays a float comparison per call, no more.
_LOOK_EVERY = 0.001

# Worker-side states of a Dask task that is running and still wanted. Any other state
# ("cancelled", "released", gone) means the scheduler let go of it: the pool cancelled it.
_WANTED = frozenset({"executing", "long-running"})


class _Source:
    """``current_task()`` inside a unit running on a Dask worker."""

    owner = None  # the pool is in another process: a task here cannot submit into it

    __slots__ = ("_key", "_tasks", "attempt", "deadline", "pos", "start")

    def __init__(self, tasks: Any, key: str, start: int, attempt: int, deadline: float | None):
        self._tasks = tasks  # the worker's state of its tasks, by key (or None: no worker)
        self._key = key
        self.start = start
        self.attempt = attempt
        self.deadline = deadline
        self.pos = 0

    def task_context(self) -> TaskContext | None:
        return TaskContext(self.start + self.pos, self.attempt, self.deadline, self)

    def cancel_requested(self) -> bool:
        tasks = self._tasks
        if tasks is None:
            return False
        ts = tasks.get(self._key)
        return ts is None or ts.state not in _WANTED


def _worker_tasks() -> Any:
    """The running worker's task states by key, or None outside a Dask worker."""
    try:
        from distributed import get_worker

        return get_worker().state.tasks
    except Exception:  # not on a worker (a test calling run_unit directly), an old Dask
        return None


def run_unit(fn_blob: bytes, body: bytes, meta: tuple[Any, ...]) -> tuple[Any, list[float], int]:
    """Run the calls of one unit on this Dask worker (the Dask task of the dask backend).

    ``fn_blob`` is the pickled function, ``body`` the pickled ``(entries, kwargs)``;
    ``meta`` is ``(key, first index, calls, mode, attempt, task_timeout, topic)``: with a ``topic``, the
    worker logs the key there as the unit starts, which is how the pool learns when its
    deadline starts. Returns ``(outcomes, durations, failures)``: ``outcomes`` is one pickle
    of the list of outcomes, or a list of one pickle per outcome when the list would not
    pickle whole.
    """
    key, start, n, mode, attempt, timeout, topic = meta
    t0 = time.monotonic()
    if topic is not None:
        try:
            from distributed import get_worker

            get_worker().log_event(topic, key)
        except Exception:
            pass  # no worker (a direct call): nobody is waiting for the start
    deadline = None if timeout is None else t0 + timeout
    try:
        fn = pickle.loads(fn_blob)
        entries, kwargs, each = pickle.loads(body)
        if each:
            entries = _load_each(entries, start, mode)
    except BaseException as e:
        error = pickle.UnpicklingError(
            f"the task's function or arguments could not be unpickled on the Dask worker: "
            f"{type(e).__name__}: {e} (is every module they need installed on the workers?)"
        )
        out: list[Any] = [Failure(error, None)] * n
        return _pack(out), [0.0] * n, n
    source = _Source(_worker_tasks(), key, start, attempt, deadline)
    token = set_source(source)
    try:
        if is_coroutine_function(fn):
            import asyncio

            out, durs, nfail = asyncio.run(_await_calls(fn, entries, kwargs, mode, source))
        else:
            out, durs, nfail = _calls(fn, entries, kwargs, mode, source)
    finally:
        _reset(token)
    return _pack(out), durs, nfail


def _load_each(blobs: list[bytes], start: int, mode: int) -> list[Any]:
    """Entries pickled one by one (not plain data): one that won't unpickle here fails
    alone, as a BadArgument, and the others run."""
    what = "argument" if mode == CALL_ITEM else "arguments"
    entries: list[Any] = []
    for pos, blob in enumerate(blobs):
        try:
            entries.append(pickle.loads(blob))
        except BaseException as e:
            entries.append(
                BadArgument(
                    pickle.UnpicklingError(
                        f"the {what} of task {start + pos} could not be unpickled on the Dask "
                        f"worker: {type(e).__name__}: {e}"
                    )
                )
            )
    return entries


def _reset(token: Any) -> None:
    from .._context import _source

    _source.reset(token)


def _calls(
    fn: Any, entries: list[Any], kwargs: dict[str, Any] | None, mode: int, source: _Source
) -> tuple[list[Any], list[float], int]:
    out: list[Any] = []
    durs: list[float] = []
    nfail = 0
    kw = kwargs or {}
    clock = time.monotonic
    t0 = clock()
    look_at = t0  # when to look again whether the pool still wants the unit
    for pos, entry in enumerate(entries):
        source.pos = pos
        if t0 >= look_at:
            if source.cancel_requested():
                # The pool let go of this unit (its call was left: a map's failure,
                # results() closed; a shutdown): the calls not started yet never start.
                return _not_started(out, durs, nfail, len(entries), source)
            look_at = t0 + _LOOK_EVERY
        try:
            if type(entry) is BadArgument:
                raise entry.error
            if mode == CALL_ITEM:
                v = fn(entry)
            elif mode == CALL_KWARGS:
                v = fn(*entry, **kw)
            else:
                v = fn(*entry)
        except BaseException as e:
            v = portable(failure_of(e), cloudpickle.dumps)
            nfail += 1
        t1 = clock()
        durs.append(t1 - t0)
        out.append(v)
        t0 = t1
    return out, durs, nfail


async def _await_calls(
    fn: Any, entries: list[Any], kwargs: dict[str, Any] | None, mode: int, source: _Source
) -> tuple[list[Any], list[float], int]:
    out: list[Any] = []
    durs: list[float] = []
    nfail = 0
    kw = kwargs or {}
    clock = time.monotonic
    t0 = clock()
    look_at = t0
    for pos, entry in enumerate(entries):
        source.pos = pos
        if t0 >= look_at:
            if source.cancel_requested():
                return _not_started(out, durs, nfail, len(entries), source)
            look_at = t0 + _LOOK_EVERY
        try:
            if type(entry) is BadArgument:
                raise entry.error
            if mode == CALL_ITEM:
                v = await fn(entry)
            elif mode == CALL_KWARGS:
                v = await fn(*entry, **kw)
            else:
                v = await fn(*entry)
        except BaseException as e:
            v = portable(failure_of(e), cloudpickle.dumps)
            nfail += 1
        t1 = clock()
        durs.append(t1 - t0)
        out.append(v)
        t0 = t1
    return out, durs, nfail


def _not_started(
    out: list[Any], durs: list[float], nfail: int, n: int, source: _Source
) -> tuple[list[Any], list[float], int]:
    """The outcomes of a unit stopped before call ``len(out)``: the rest never started.
    (The pool cancelled the Dask task and reads none of this; should a result still be
    wanted, each of those calls says why it did not run, none is missing.)"""
    for pos in range(len(out), n):
        error = TaskCancelled(
            f"task {source.start + pos} was cancelled before it started (its Dask task was "
            "cancelled)"
        )
        out.append(portable(failure_of(error), cloudpickle.dumps))
        durs.append(0.0)
        nfail += 1
    return out, durs, nfail


def _pack(out: list[Any]) -> Any:
    """The outcomes as one pickle when they are plain data (numbers, strings, containers of
    them: they unpickle anywhere); else one pickle each, so that one that won't pickle here,
    or won't unpickle in the pool's process, fails alone (``DaskBackend._receive``)."""
    buf = io.BytesIO()
    if dumps_plain(out, buf):
        return buf.getvalue()
    blobs: list[bytes] = []
    for v in out:
        try:
            blobs.append(cloudpickle.dumps(v, PROTOCOL))
        except Exception as e:
            what = "exception" if type(v) is Failure else "return value"
            t = type(v.error) if type(v) is Failure else type(v)
            error = pickle.PicklingError(
                f"the {what} ({t.__module__}.{t.__qualname__}) could not be pickled on the "
                f"Dask worker to send it back: {type(e).__name__}: {e}"
            )
            blobs.append(cloudpickle.dumps(Failure(error, None), PROTOCOL))
    return blobs
