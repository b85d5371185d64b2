"""The process backend: each worker is a child process, driven by one thread of the pool.

For CPU-bound Python, which threads cannot run in parallel. What it adds to the engine:

- **Killing**: a task past its deadline, or cancelled while running, has its worker process
  killed (SIGKILL); the slot's thread sees the pipe close, reports ``TaskTimeout`` or
  ``TaskCancelled`` for the call that was running, requeues the rest of the batch, and starts a
  fresh process for the next unit. A worker that dies on its own (segfault, ``os._exit``, the
  OOM killer) becomes ``WorkerCrashed`` for that call only, in the same way.
- **Pickling** (``_wire``): functions and arguments travel with cloudpickle, so lambdas and
  closures work, while functions and classes of the main script go by reference (the worker
  imports the script too). The function is sent once per worker and dropped there when the
  worker goes idle. An argument or return value that won't pickle, or won't unpickle on the
  other side, fails just that task, with a message saying so; so does a worker that dies
  while (un)pickling one (``WorkerCrashed``). Exceptions come back as themselves when they
  pickle, else as ``RemoteError``; the worker's traceback is in ``Result.traceback`` and is
  the exception's ``__cause__``.
- **No orphans**: workers exit when the pool shuts down, and on their own when the pool's
  process dies, even by SIGKILL (see ``_child``).

Start method: ``"forkserver"`` by default where available. ``fork`` would copy a process whose
other threads (the pool's own) may hold locks, which can deadlock the child; ``spawn`` starts
a fresh interpreter per worker (~50 ms). A fork server forks clean workers in a few ms, with
this module and the program's main script pre-imported (see ``_forkserver``). Pass
``start_method=`` to choose another.

Signals: workers ignore SIGINT and SIGTERM, which reach every process of the program (Ctrl-C,
``kill -TERM -PGID``, systemd), and so does the fork server: stopping is the pool's decision
(``handle_signals``: the drain finishes the running tasks, a second signal or the deadline
kills the workers).

Throughput: units of up to ``max_batch`` calls for tiny tasks, a lean loop in the worker, and
the next unit of a ``map``/``results`` sent while the worker still runs the current one
(``_send_ahead``), so the worker does not idle for the round trip between two units. Until the
worker starts it, a unit sent ahead can be taken back (``revoke``): by a worker that would
otherwise go idle, and when the queued work is cancelled.

Options: ``max_tasks_per_worker`` (recycle a worker after that many calls; a batch is never
split), ``initializer``/``initargs`` (run once in every new worker; ``initargs`` may hold
multiprocessing objects: Lock, Queue, Event, Value), ``start_method``.

A pool whose workers never get to run a task (the initializer fails or kills them, the main
module fails to import) breaks after a few in a row: its queued tasks fail with the reason and
submits raise ``PoolClosed`` saying why (``the host's break_pool``), instead of failing every task
it is given, forever.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import multiprocessing
import os
import pickle
import signal
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .._log import logger
from .._units import CALL_ITEM, Failure
from ..errors import ConfigError, WorkerCrashed, WorkpoolError
from . import _child
from ._base import Backend, Host
from ._caps import Capabilities
from ._child import (
    INIT_FAILED,
    LOADING_ARGS,
    LOADING_FN,
    PHASE,
    POS,
    READY,
    RUNNING,
    SENDING,
    STARTED,
    STARTING,
    add_durations,
)
from ._forkserver import FORK_SERVER_PRELOAD, start_fork_server
from ._wire import (
    BadArgument,
    TaskPickler,
    dumps_plain,
    dumps_task,
    entry_pickler,
    finish,
    load_stream,
    main_importable,
    split,
    with_remote_cause,
)

if TYPE_CHECKING:
    from .._crew import Slot
    from .._units import Unit

__all__ = ["FORK_SERVER_PRELOAD", "ProcessBackend"]

# Workers in a row that could not start, or never got to run a task (their initializer failed
# or killed them, the main module failed to import in them), after which the pool is broken.
_START_FAILURES = 3
# Functions a worker holds at most (the least recently used go first); an idle worker holds
# none (see prepare).
_WORKER_FUNCTIONS = 32
# ``_Worker.ahead`` once the unit sent ahead went to another slot (``revoke``): the worker
# must not keep that unit (its results' consumer, and through it its pool) alive while idle.
_TAKEN_BACK = "taken back"

# Largest run message sent ahead of the worker's current unit: well under what a pipe holds.
_AHEAD_BYTES = 64 * 1024
_MAIN_HINT = (
    "Worker processes import the program's main module (the fork server does it once); "
    "a main module that starts a process pool must do it under "
    '`if __name__ == "__main__":`, and must not fail when imported'
)
# Forked workers are started one at a time, each closing its copies of this pool's ends of
# its own pipes: a worker forked while another one's pipes were being set up would hold that
# one's ends open (it would miss the pool's death, and its death would go unnoticed).
_fork_lock = threading.Lock()


class _DryRun:
    """Stands in for the process being started while a pickle is tried out: multiprocessing's
    objects (Lock, Queue...) pickle only then, and ask it to pass their file descriptors."""

    def duplicate_for_child(self, fd: int) -> int:
        return fd

    def DupFd(self, fd: int) -> int:  # multiprocessing's name for it
        return fd


def _dry_run(init: _child.Initializer) -> None:
    """Pickle ``init`` as starting a worker would, to tell at once if it cannot be sent."""
    from multiprocessing import context
    from multiprocessing.reduction import ForkingPickler

    previous = context.get_spawning_popen()
    context.set_spawning_popen(_DryRun())  # type: ignore[arg-type]  # what they use of it
    try:
        _, aside = init.dumps()
        ForkingPickler.dumps(aside)
    finally:
        context.set_spawning_popen(previous)


class _Worker:
    """One child process and its pipes."""

    __slots__ = (
        "ahead",
        "conn",
        "floats",
        "fns",
        "ints",
        "killed",
        "lifeline",
        "lock",
        "proc",
        "seq",
        "shared",
        "tasks",
    )

    def __init__(self, proc: Any, conn: Any, lifeline: Any, shared: Any, lock: Any) -> None:
        self.proc = proc
        self.conn = conn
        self.lifeline = lifeline
        self.shared = shared  # the child's progress (see _child), through these two views:
        self.ints, self.floats = _child.views(shared)
        self.lock = lock  # orders starting a unit sent ahead (child) and taking it back
        # The keys of the functions this child holds, least recently used first: the child
        # drops those that the run messages say to evict (see ProcessBackend._post).
        self.fns: OrderedDict[int, None] = OrderedDict()
        self.tasks = 0
        # A unit sent before the current one finished (or _TAKEN_BACK)
        self.ahead: Unit | str | None = None
        # The number of the last unit sent ahead, or about to be: that of the slot's next unit
        # (Slot.next) while it has one.
        self.seq = 0
        self.killed = False  # a stop killed it: it is replaced before its next unit

    def close(self, grace: float = 1.0) -> None:
        try:
            self.conn.send_bytes(b"")
        except OSError:
            pass
        self.proc.join(grace)
        if self.proc.exitcode is None:
            self.proc.kill()
            self.proc.join()
        self.conn.close()
        self.lifeline.close()


def _polls_in_turn(proc: Any) -> None:
    """Make the threads that ask whether ``proc`` has exited take turns.

    A forkserver child's exit code comes from the server down a pipe, readable once: two
    threads polling at once (``Process.start()`` polls every child of the program, from
    whichever thread starts one, while a worker's own thread joins it after it died) leave
    the second with EOF, and multiprocessing reports exit code 255 for the death. A poll
    that would wait takes its turn; one that would not answers "still running" while another
    poll is under way (it is: that one will say).
    """
    popen = getattr(proc, "_popen", None)
    poll = getattr(popen, "poll", None)
    if poll is None:
        return
    turn = threading.Lock()

    def poll_in_turn(flag: int = os.WNOHANG) -> int | None:
        if not turn.acquire(blocking=flag != os.WNOHANG):
            return None
        try:
            return poll(flag)  # type: ignore[no-any-return]
        finally:
            turn.release()

    popen.poll = poll_in_turn  # type: ignore[union-attr]


class ProcessBackend(Backend):
    name = "process"
    options = frozenset({"initializer", "initargs", "max_tasks_per_worker", "start_method"})

    def __init__(self, options: Mapping[str, Any]) -> None:
        super().__init__(options)
        if getattr(multiprocessing.current_process(), "_inheriting", False):
            # This is a worker process (or the fork server) importing the program's main
            # module, which creates a pool at import time: it would start workers of its own.
            raise WorkpoolError(
                "a process pool was created while a worker process was importing the "
                f"program's main module. {_MAIN_HINT}"
            )
        methods = multiprocessing.get_all_start_methods()
        default = "forkserver" if "forkserver" in methods else "spawn"
        method = options.get("start_method", default)
        if method not in methods:
            raise ConfigError(f"start_method must be one of {', '.join(methods)}, got {method!r}")
        limit = options.get("max_tasks_per_worker")
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise ConfigError(f"max_tasks_per_worker must be an int >= 1 or None, got {limit!r}")
        initializer = options.get("initializer")
        if initializer is not None and not callable(initializer):
            raise ConfigError(f"initializer must be callable or None, got {initializer!r}")
        initargs = options.get("initargs", ())
        if not isinstance(initargs, tuple):
            raise ConfigError(f"initargs must be a tuple, got {initargs!r}")
        self._main_ref = main_importable(method)
        self._init: _child.Initializer | None = None
        if initializer is not None:
            self._init = _child.Initializer(initializer, initargs, self._main_ref)
            if method != "fork":  # a forked worker inherits them: nothing to pickle
                try:
                    _dry_run(self._init)
                except Exception as e:
                    raise ConfigError(
                        f"initializer and initargs must pickle to reach a worker process "
                        f"(start_method={method!r}): {type(e).__name__}: {e}. "
                        "multiprocessing objects in initargs must come from the same start "
                        f"method: multiprocessing.get_context({method!r}).Queue() ..."
                    ) from e
        self._max_tasks: int | None = limit
        self._ctx = multiprocessing.get_context(method)
        self._fork_server = method == "forkserver"
        self._forks = method == "fork"
        self._rate: tuple[Any, Any, float, float] | None = None
        self.host: Host | None = None
        # Pickled functions by id(fn): (weak reference to fn, key, bytes). An entry goes when
        # its function does, so the pool keeps no task's function alive.
        self._fn_blobs: dict[int, tuple[weakref.ref[Any], int, bytes]] = {}
        self._fn_keys = itertools.count(1)
        self._failures_lock = threading.Lock()
        self._start_failures = 0
        self._broken_error: WorkpoolError | None = None

    def open(self, host: Host) -> Capabilities:
        self.host = host
        if host.rate is not None:
            # Workers pace their calls on one shared token bucket (see _child._pacer).
            interval, burst = host.rate
            next_start = self._ctx.RawValue("d", 0.0)
            self._rate = (self._ctx.Lock(), next_start, interval, (burst - 1) * interval)
        return Capabilities(
            default_workers=os.cpu_count() or 1,
            stop="kill",
            # A unit is a round trip to the child (~0.2-0.5 ms of pickling, pipe and
            # wake-ups), which a unit of 256 no-op calls (~0.1 ms of work) would leave the
            # child idle for most of.
            max_batch=8192,
            send_ahead=True,
            coroutines=True,  # run on each worker process's own event loop (_child.OnLoop)
        )

    def _launch(self, slot: Slot) -> _Worker:
        ctx = self._ctx
        if self._fork_server:
            start_fork_server()
        assert self.host is not None
        with _fork_lock if self._forks else contextlib.nullcontext():
            conn, child_conn = ctx.Pipe(duplex=True)
            life_read, life_write = ctx.Pipe(duplex=False)
            shared = ctx.RawArray("d", _child.SLOTS)
            lock = ctx.Lock()
            # A forked worker gets these objects as they are and closes its copies of our
            # ends; other start methods would pickle them: they never had them.
            parent_ends = (conn, life_write) if self._forks else None
            proc = ctx.Process(
                target=_child.main,
                args=(child_conn, life_read, shared, lock, self._init, self._rate, parent_ends),
                name=f"{self.host.name}-process-{slot.id}",
            )
            try:
                proc.start()
            finally:
                child_conn.close()
                life_read.close()
        _polls_in_turn(proc)
        return _Worker(proc, conn, life_write, shared, lock)

    def prepare(self, slot: Slot) -> None:
        assert self.host is not None
        worker: _Worker | None = slot.handle
        if worker is None:
            if not slot.retire and not self.host.closed and self._broken_error is None:
                try:
                    slot.handle = self._launch(slot)
                except Exception:
                    pass  # run() tries again and fails the unit with the reason
        elif worker.fns and worker.ahead is None and not self.host.has_queued():
            # Going idle, most likely: the worker lets go of the functions it holds (and what
            # they hold: a bound method's object), as no task of theirs is queued. A unit
            # that comes anyway sends its function again.
            try:
                worker.conn.send_bytes(_child.FORGET)
            except OSError:
                pass  # dead: the next unit replaces it
            worker.fns.clear()

    def call_started(self, slot: Slot) -> float:
        worker: _Worker | None = slot.handle
        if worker is None:
            return time.monotonic()  # still starting the worker: no call runs yet
        ints = worker.ints
        if ints[POS] < 0 or ints[PHASE] not in (RUNNING, SENDING):
            return time.monotonic()  # not started, or loading it: nothing is late
        return float(worker.floats[_child.T0])

    def stop(self, slot: Slot) -> None:
        worker: _Worker | None = slot.handle
        if worker is not None:
            # Kill first: a task that saw the cancel flag before the kill landed could end on
            # its own (it polls current_task().cancelled) and send back its own outcome
            # instead of TaskTimeout / TaskCancelled. The flag only matters if the kill fails.
            slot.stop_pos = int(worker.ints[_child.POS])
            worker.killed = True
            try:
                worker.proc.kill()
            except (OSError, ValueError):
                pass  # already gone
            worker.floats[_child.CANCEL] = 1.0

    def release(self, slot: Slot) -> None:
        worker: _Worker | None = slot.handle
        slot.handle = None
        if worker is not None:
            worker.close()

    # -- start failures

    def _start_failed(self, why: str) -> None:
        """A worker could not start, or never got to run a task: after a few in a row, the
        pool is broken (the host's break_pool)."""
        with self._failures_lock:
            self._start_failures += 1
            if self._start_failures < _START_FAILURES or self._broken_error is not None:
                return
            self._broken_error = WorkpoolError(
                f"its worker processes cannot run tasks: {self._start_failures} in a row "
                f"failed to start; the last: {why}"
            )
        assert self.host is not None
        self.host.break_pool(self._broken_error)

    # -- running a unit

    def _function(self, fn: Callable[..., Any]) -> tuple[int, bytes]:
        """A key unique to ``fn`` for this pool, and its pickled bytes (cached while ``fn``
        lives; a callable that takes no weak reference is pickled for every unit)."""
        ident = id(fn)
        hit = self._fn_blobs.get(ident)
        if hit is not None and hit[0]() is fn:
            return hit[1], hit[2]
        blob = dumps_task(fn, self._main_ref)
        # A fresh key, never id(fn): once fn is gone, its id may be reused by another
        # function, which workers must not mistake for the one they hold.
        key = next(self._fn_keys)
        blobs = self._fn_blobs

        def gone(ref: weakref.ref[Any]) -> None:
            # Called by the garbage collector, maybe in a thread that is using the cache:
            # no lock, one atomic step at a time (a miss at worst).
            entry = blobs.get(ident)
            if entry is not None and entry[0] is ref:
                blobs.pop(ident, None)

        try:
            ref = weakref.ref(fn, gone)
        except TypeError:
            return key, blob
        blobs[ident] = (ref, key, blob)
        return key, blob

    def _message(
        self, worker: _Worker, unit: Unit, seq: int = 0
    ) -> tuple[memoryview, int, tuple[int, ...]] | None:
        """The run message for ``unit``, its function's key and the keys it evicts; or None
        after failing every call (the function or the arguments won't pickle). ``worker.fns``
        changes only once the message is sent (see _post)."""
        assert self.host is not None
        try:
            key, blob = self._function(unit.fn)
        except Exception as e:
            self._fail_all(
                unit,
                f"the task's function {unit.fn!r} could not be pickled "
                f"to send it to a worker process: {type(e).__name__}: {e}",
            )
            return None
        known = key in worker.fns
        evict: tuple[int, ...] = ()
        if not known and len(worker.fns) >= _WORKER_FUNCTIONS:
            evict = (next(iter(worker.fns)),)
        entries = unit.entries
        n = len(entries)
        buf = io.BytesIO()
        ends: list[int] | None = None
        resets: list[int] = []
        bad = False
        if n == 1 or unit.kwargs:
            try:
                TaskPickler(buf, self._main_ref).dump((entries, unit.kwargs))
            except Exception as e:
                self._fail_unpicklable(unit, e)
                return None
        elif not dumps_plain((entries, None), buf):
            # Not plain data: a stream (see _wire), so that an entry the worker cannot
            # unpickle (or that kills it) fails alone.
            ends = []
            pickler = entry_pickler(self._main_ref)(buf, self._main_ref)
            for pos, entry in enumerate(entries):
                at = buf.tell()
                try:
                    pickler.dump(entry)
                except Exception:
                    # cloudpickle from here on (it takes more: lambdas, closures...), fresh:
                    # that pickler's memo has what was cut off.
                    buf.seek(at)
                    buf.truncate()
                    resets.append(pos)
                    pickler = TaskPickler(buf, self._main_ref)
                    try:
                        pickler.dump(entry)
                    except Exception as e:
                        buf.seek(at)
                        buf.truncate()
                        pickler = TaskPickler(buf, self._main_ref)
                        what = "argument" if unit.mode == CALL_ITEM else "arguments"
                        error = pickle.PicklingError(
                            f"the {what} of task {unit.start + pos} could not be pickled to "
                            f"send them to a worker process: {type(e).__name__}: {e}"
                        )
                        pickler.dump(BadArgument(error))
                        bad = True
                ends.append(buf.tell())
        header = (
            key,
            None if known else blob,
            unit.mode,
            unit.start,
            unit.attempt,
            self.host.task_timeout,
            bad,
            seq,  # the number of a unit sent ahead (0 for others), checked before starting it
            evict,
            n,
            ends,
            resets,
            # A unit the engine sized may give back the calls left once it runs far too long.
            n > 1 and unit.sink.splittable,
        )
        data = finish(buf, header)
        unit.nbytes = len(data)
        return data, key, evict

    def _fail_unpicklable(self, unit: Unit, error: Exception) -> None:
        """Fail a one-call unit whose arguments won't pickle, saying which ones."""
        what = "arguments"
        if unit.kwargs:
            try:
                TaskPickler(io.BytesIO(), self._main_ref).dump(unit.kwargs)
            except Exception:
                what = "keyword arguments"
        self._fail_all(
            unit,
            f"the {what} of task {unit.start} could not be pickled to send them to a worker "
            f"process: {type(error).__name__}: {error}",
        )

    @staticmethod
    def _fail_all(
        unit: Unit,
        message: str,
        kind: Callable[[str], BaseException] = pickle.PicklingError,
    ) -> None:
        for _ in range(len(unit.entries) - len(unit.out)):
            unit.out.append(Failure(kind(message), None))
            unit.durs.append(0.0)
            unit.nfail += 1

    def run(self, slot: Slot, unit: Unit) -> None:
        if self._broken_error is not None:
            self._fail_all(unit, f"the pool is broken: {self._broken_error}", WorkpoolError)
            return
        worker: _Worker | None = slot.handle
        ahead = None
        seq = 0  # the number of this unit if it was sent ahead
        if worker is not None:
            ahead, worker.ahead = worker.ahead, None
        if ahead is unit and worker is not None:
            seq = worker.seq  # (the next one is numbered by _send_ahead below)
        else:
            if ahead is not None and worker is not None:
                self._skip_taken_back(worker)
            worker = self._send(slot, worker, unit)
            if worker is None:
                return
        self._send_ahead(slot, worker)
        out = unit.out
        try:
            while True:
                data = worker.conn.recv_bytes()
                if not data:
                    continue  # the child skipped a unit sent ahead that was taken back
                unit.nbytes += len(data)
                final = self._receive(data, unit)
                if final:
                    break
        except (EOFError, OSError):
            self._broken(slot, worker, unit, seq)
            return
        except Exception as e:  # a message that could not be read at all
            worker.proc.kill()
            error = WorkpoolError(
                f"could not read the results of task {unit.start + len(out)} from the worker "
                f"process: {type(e).__name__}: {e}"
            )
            self._broken(slot, worker, unit, seq, error)
            return
        # A stop (kill) aimed at this unit that came after its outcomes had left the worker
        # is the engine's to settle (Engine._stopped_late); the worker is replaced in _send.
        worker.tasks += len(out)
        if len(out) < len(unit.entries):
            assert self.host is not None
            self.host.gave_back(slot, unit)  # it ran too long: the rest for any worker
        if worker.ints[READY] == INIT_FAILED:
            # Its tasks failed with the reason; a new worker tries the initializer again.
            slot.handle = None
            worker.close()
            last = out[-1] if out else None
            self._start_failed(str(last.error) if type(last) is Failure else "initializer")
            return
        self._start_failures = 0
        if self._max_tasks is not None and worker.tasks >= self._max_tasks:
            slot.handle = None
            worker.close()

    def _receive(self, data: bytes, unit: Unit) -> bool:
        """Add a results message's outcomes to ``unit``; True for the unit's last message.

        A value sent on its own (see _wire) that cannot be unpickled here fails alone, with a
        message naming its type. A failure gets the worker's traceback as its ``__cause__``.
        """
        (final, ds, nfail, ends, resets, names), body = split(data)
        out = unit.out
        if ends is None:
            out.extend(pickle.loads(body))
        else:
            values, failed = load_stream(body, ends, resets)
            first = unit.start + len(out)
            for j, e in failed.items():
                values[j] = Failure(
                    pickle.UnpicklingError(
                        f"the {names[j]} of task {first + j} was pickled in the worker "
                        f"process but could not be unpickled here: {type(e).__name__}: {e}"
                    ),
                    None,
                )
            nfail += len(failed)
            if nfail > len(failed):
                for v in values:
                    if type(v) is Failure:
                        with_remote_cause(v)
            out.extend(values)
        add_durations(unit.durs, ds)
        unit.nfail += nfail
        return bool(final)

    def _send(self, slot: Slot, worker: _Worker | None, unit: Unit) -> _Worker | None:
        """Send ``unit`` to ``slot``'s worker (started if needed); None when it was settled
        without a worker (no worker could start, it won't pickle, it was stopped)."""
        stale = slot.stop is not None and slot.stop[0] is not unit
        if stale or (worker is not None and (worker.killed or not worker.proc.is_alive())):
            # A kill aimed at a unit that finished just in time, or a worker that died idle.
            if stale:
                slot.stop = None
            if worker is not None:
                worker.close(grace=0)
            worker = slot.handle = None
        if worker is None:
            try:
                worker = slot.handle = self._launch(slot)
            except Exception as e:
                why = f"could not start a worker process: {type(e).__name__}: {e}. {_MAIN_HINT}"
                self._fail_all(unit, why, WorkpoolError)
                self._start_failed(why)
                return None
        message = self._message(worker, unit)
        if message is None:
            return None
        ints, floats = worker.ints, worker.floats
        ints[POS] = -1  # nothing started yet: no deadline runs, no call to blame
        ints[PHASE] = _child.IDLE
        floats[_child.T0] = time.monotonic()
        floats[_child.CANCEL] = 0.0
        stop = slot.stop  # read after publishing the handle: see Slot.stop
        if stop is not None:
            # Cancelled (or timed out) while its worker was starting: nothing ran.
            slot.stop = None
            assert self.host is not None
            self.host.finish_broken(slot, unit, 0, stop[1](f"task {unit.start} {stop[2]}"), 0.0)
            return None
        self._post(worker, *message)  # a dead worker: receiving says so, and settles it
        return worker

    @staticmethod
    def _post(worker: _Worker, data: memoryview, key: int, evict: tuple[int, ...]) -> bool:
        """Send a run message; False if the worker is gone. Only once it went out does
        ``worker.fns`` follow what the child does with it: drop ``evict``, then hold ``key``
        (most recently used)."""
        try:
            worker.conn.send_bytes(data)
        except OSError:
            return False
        fns = worker.fns
        for old in evict:
            fns.pop(old, None)
        fns[key] = None
        fns.move_to_end(key)
        return True

    def _send_ahead(self, slot: Slot, worker: _Worker) -> None:
        """Send the next unit too, so the worker starts it as soon as this one is done.

        The round trip between two units (results back, the next unit out) would otherwise
        leave the worker idle each time. Only one unit waits in the pipe, and only a small
        one: the worker reads it only after the current unit, and a message larger than the
        pipe holds would block this thread while the worker blocks sending results to it.
        A unit that can't go ahead stays this slot's next one and is sent when its turn comes
        (unless another slot takes it back first).
        """
        if self._max_tasks is not None:
            return  # the worker may be recycled after this unit
        assert self.host is not None
        # Numbered before the engine makes it the slot's next unit, so that ``revoke`` (which
        # the engine calls under its lock once that is done) always sees the number.
        worker.seq += 1
        seq = worker.seq
        unit = self.host.prefetch(slot)
        if unit is None:
            return
        try:
            self._function(unit.fn)  # a function that won't pickle fails when its turn comes
        except Exception:
            return
        message = self._message(worker, unit, seq)
        if message is None or len(message[0]) > _AHEAD_BYTES:
            return
        if self._post(worker, *message):
            worker.ahead = unit
            if slot.next is not unit:
                worker.ahead = _TAKEN_BACK  # revoked before it was recorded above
        # else the worker died: it is replaced when the unit's turn comes

    @staticmethod
    def _skip_taken_back(worker: _Worker) -> None:
        """The unit this worker was sent ahead went to another slot (``revoke``): read the
        child's answer that it skipped it before sending anything else. So the child has seen
        that unit before a later one can be taken back and overwrite ``REVOKED``."""
        while True:
            try:
                data = worker.conn.recv_bytes()
            except (EOFError, OSError):
                return  # the worker died: _send replaces it
            if not data:
                return
            # Results instead (``revoke`` rules that out) would be a second run of a unit
            # that another worker delivers: drop them up to the last one, never misfile them.
            try:
                if split(data)[0][0]:
                    return
            except Exception:
                return

    def revoke(self, slot: Slot, *, cancel: bool = False) -> bool:
        """Take back the unit sent ahead to ``slot``'s worker, unless the worker started it.

        Under the child's lock, the child marks a unit sent ahead as started before it runs
        it, and skips it (answering with an empty message) if it was marked as taken back;
        so exactly one side wins. Never blocks: a lock held right now (the child is deciding,
        or died deciding) counts as started. A unit not sent yet (it may never be, or be sent
        just after this) is taken back the same way. ``REVOKED`` holds one number: the slot's
        thread reads the child's answer before it sends anything else (``_skip_taken_back``),
        so no second unit can be taken back before the child has seen the first.
        """
        worker: _Worker | None = slot.handle
        if worker is None or not worker.seq:
            return False
        lock = worker.lock
        if not lock.acquire(False):
            return False
        try:
            if worker.ints[_child.STARTED] >= worker.seq:
                return False
            worker.ints[_child.REVOKED] = worker.seq
        finally:
            lock.release()
        if worker.ahead is not None:
            worker.ahead = _TAKEN_BACK
        return True

    def _broken(
        self,
        slot: Slot,
        worker: _Worker,
        unit: Unit,
        seq: int,
        unreadable: WorkpoolError | None = None,
    ) -> None:
        """The worker died (or was killed) under ``unit``: say why, settle the unit, forget
        the worker. ``seq``: the unit's number if it was sent ahead. ``unreadable``: the
        worker was killed because its results could not be read."""
        assert self.host is not None
        proc = worker.proc
        proc.join(5)
        if proc.exitcode is None:  # closed its pipe but lives on: make sure
            proc.kill()
            proc.join()
        if worker.ahead is not None:
            # The worker died before it got to the unit sent ahead: that goes back to the
            # queue first, so the rest of this one is requeued in front of it.
            worker.ahead = None
            self.host.drop_prefetched(slot)
        ints = worker.ints
        phase, pos, ready = ints[PHASE], ints[POS], ints[READY]
        if seq and ints[STARTED] < seq:
            phase, pos = _child.IDLE, -1  # never started: the rest is about the unit before
        duration = time.monotonic() - worker.floats[_child.T0]
        slot.handle = None
        worker.conn.close()
        worker.lifeline.close()
        stop = slot.stop
        if stop is not None and stop[0] is not unit:
            stop = None  # aimed at an earlier unit: this death is a crash
        slot.stop = None
        received = len(unit.out)
        if unreadable is not None:
            self.host.finish_broken(slot, unit, received, unreadable, 0.0)
            return
        tid = unit.start + max(pos, 0)
        if stop is not None:
            ran = phase in (RUNNING, SENDING) and pos >= 0
            error: BaseException = stop[1](f"task {tid} {stop[2]}")
            logger.warning(
                "pool %r: task %d %s; its worker process was killed and is replaced",
                self.host.name,
                tid,
                stop[2],
            )
            self.host.finish_broken(slot, unit, pos if ran else None, error, duration)
            return
        code = proc.exitcode
        how = f"exited with code {code}"
        if code is not None and code < 0:
            try:
                how = f"was killed by signal {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"

        def crashed(message: str) -> WorkerCrashed:
            if code is not None and code < 0:
                return WorkerCrashed(message, exitcode=code, signal=-code)
            return WorkerCrashed(message, exitcode=code)

        if phase == LOADING_FN:
            # Every call of the unit needs the function: they all fail (none ran).
            n = len(unit.entries)
            tasks = f"task {unit.start}" if n == 1 else f"tasks {unit.start}..{unit.start + n - 1}"
            self._fail_all(
                unit,
                f"the worker process {how} while unpickling the function of {tasks}",
                crashed,
            )
            return
        if phase == LOADING_ARGS and pos < 0:
            pos = 0  # unpickling a whole body: one call, or plain data that cannot kill it
        if phase in (LOADING_ARGS, RUNNING, SENDING) and pos >= 0:
            what = {
                LOADING_ARGS: f"the worker process {how} while unpickling the arguments of "
                f"task {tid}",
                RUNNING: f"the worker process running task {tid} {how}",
                SENDING: f"the worker process {how} while pickling or sending the result of "
                f"task {tid}",
            }[phase]
            logger.warning("pool %r: %s; the worker is replaced", self.host.name, what)
            self.host.finish_broken(slot, unit, pos, crashed(what), duration)
            return
        # Between units: nothing of this one started; it goes back to the queue.
        if ready == STARTING:
            self._start_failed(f"a new worker process {how} before it was ready. {_MAIN_HINT}")
        else:
            logger.warning(
                "pool %r: an idle worker process %s; it is replaced", self.host.name, how
            )
        self.host.finish_broken(slot, unit, None, crashed(how), duration)
