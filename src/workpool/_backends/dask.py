"""The dask backend: the same pool on a Dask cluster, one Dask task per unit.

For when one machine is not enough: ``Pool(backend="dask", address="tcp://scheduler:8786")``
(or ``client=`` an existing ``distributed.Client``) runs the pool's tasks on the cluster's
workers; with neither, the pool starts a local cluster of worker processes bound to
127.0.0.1, without a dashboard, and closes it at shutdown. ``workers`` defaults to the
cluster's total threads when the pool starts. Needs ``pip install "workpool[dask]"``.

Data flow::

    engine ── unit ──▶ slot's asyncio task ── client.submit(run_unit, bytes) ──▶ scheduler
                         (the backend's own loop thread,                          │
                          an asynchronous Client on it)                           ▼
    unit.out / durs ◀── outcomes (bytes) ◀───────── await future ◀──── worker thread runs
                                                                        the unit's calls

- **Few local threads.** Every slot is an asyncio task awaiting its remote future, on one
  event loop in one background thread that also runs the Client (an ``AsyncPool``'s slots
  are tasks on its caller's loop, which hand their units to that loop): hundreds of futures
  in flight cost that thread and Dask's own.
- **One Dask task per unit.** ``map``/``results`` batch tiny tasks into units (up to
  ``MAX_BATCH`` calls) like on the other backends; a unit is one Dask task with a unique key
  (never deduplicated: ``pure=False``), run by ``_dask_remote.run_unit``. Its function and
  arguments are pickled here (cloudpickle) and its outcomes there, so an argument or a value
  that won't pickle fails its own call only. The sizes of those pickles (arguments out,
  outcomes back) are the unit's ``nbytes``: the intake keeps a unit of large items near
  ``TARGET_UNIT_BYTES``, so a map reads only a few MB ahead of its consumer.
- **Stopping.** A timeout, ``Task.cancel()`` or a cancelling shutdown settles the unit at
  once (``TaskTimeout``/``TaskCancelled``: the slot's task stops waiting) and cancels the
  remote future, which is never awaited where the engine holds its lock. Dask cannot stop a
  running thread: the worker marks the task cancelled, so ``current_task().cancelled`` turns
  true there, and code that ignores it runs to its end with its outcome discarded.
- **Deadlines** count from when the unit starts on its worker: the worker logs the start on
  a topic of this pool (a Dask event, sent only when the pool has a ``task_timeout``), and a
  pool with a ``task_timeout`` sends one call per unit, so each call has its own start.
- **Lost workers.** Dask reruns a task whose worker died (those reruns are not attempts of
  ours: execution is at-least-once) and gives up after ``distributed.scheduler.allowed-
  failures`` deaths (``KilledWorker``): every call of that unit then fails with
  ``WorkerCrashed`` (``exitcode``/``signal`` None: Dask does not say), and the pool's own
  ``retries`` retry each alone.
- **Nested pools.** A task running on a Dask worker may open ``Pool(backend="dask")``
  itself: with no address it uses the cluster it runs on, and the task leaves the worker's
  thread pool while the pool is open (Dask's ``secede``/``rejoin``), so tasks waiting on
  tasks never hold every thread of the cluster.
"""

from __future__ import annotations

import asyncio
import importlib
import io
import itertools
import pickle
import threading
import uuid
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import cloudpickle

from .._log import logger
from .._units import CALL_ITEM, Failure
from ..errors import ConfigError, TaskCancelled, WorkerCrashed, WorkpoolError
from ._base import Backend, Host
from ._caps import Capabilities
from ._dask_remote import run_unit
from ._wire import PROTOCOL, BadArgument, dumps_plain, with_remote_cause
from .aio import _LoopThread

if TYPE_CHECKING:
    from .._crew import Slot
    from .._units import Unit

__all__ = ["DaskBackend"]

INSTALL_HINT = 'backend="dask" needs Dask\'s distributed package: pip install "workpool[dask]"'
# Most calls in one unit (one Dask task). A Dask task costs ~1-3 ms of scheduler, network and
# worker overhead: units of tiny calls must be large for that to vanish, and the batch size
# still adapts so that a unit runs for a few milliseconds.
MAX_BATCH = 8192
# Seconds to wait for the client and a local cluster to close. (Connecting waits as long as
# Dask's own ``distributed.comm.timeouts.connect`` says.)
CLOSE_TIMEOUT = 10.0
# How often a slot looks whether a client that lost its scheduler got it back.
_RECONNECT_POLL = 0.1
# The reason the pool gives Dask when it cancels a future of its own.
_CANCEL_REASON = "workpool stopped it"


def _import_distributed() -> Any:
    """The ``distributed`` module (typed ``Any``: its API is only partly annotated)."""
    try:
        return importlib.import_module("distributed")
    except ImportError as e:
        raise ConfigError(f"{INSTALL_HINT} ({e})") from e


def _check_address(address: Any) -> None:
    """ConfigError for an address no Dask scheduler can have (not a non-empty str, a scheme
    Dask does not know, no port, a port that is not a number); whether one listens there is
    for connecting."""
    from distributed.comm.addressing import parse_address, parse_host_port
    from distributed.comm.registry import get_backend

    wrong = f"address must be a Dask scheduler's address such as 'tcp://host:8786', got {address!r}"
    if not isinstance(address, str) or not address:
        raise ConfigError(wrong)
    try:
        scheme, location = parse_address(address, strict=False)
        get_backend(scheme)
        if scheme in ("tcp", "tls"):
            parse_host_port(location)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{wrong}: {e}") from e


class _Running:
    """The remote run of one unit: its future, and whether the pool stopped it."""

    __slots__ = ("future", "started", "stopped", "unit")

    def __init__(self, unit: Unit, future: Any, stopped: asyncio.Future[None]) -> None:
        self.unit = unit
        self.future = future
        self.stopped = stopped  # resolved by stop(): settle now, cancel the remote task
        self.started: float | None = None  # when its worker started it (the host's clock)


class DaskBackend(Backend):
    name = "dask"
    options = frozenset({"address", "client"})

    def __init__(self, options: Mapping[str, Any]) -> None:
        super().__init__(options)
        distributed = _import_distributed()
        address = options.get("address")
        client = options.get("client")
        if address is not None and client is not None:
            raise ConfigError(
                "give the dask backend either address= (a running scheduler) or client= (an "
                "existing distributed.Client), not both"
            )
        if address is not None:
            _check_address(address)
        if client is not None and not isinstance(client, distributed.Client):
            raise ConfigError(f"client must be a distributed.Client, got {client!r}")
        self._address: str | None = address
        self._given: Any = client
        self._host: Host | None = None
        self._thread: _LoopThread | None = None
        self._loop: Any = None
        self._client: Any = None
        self._cluster: Any = None
        self._seceded: threading.Thread | None = None
        self._prefix = f"workpool-{uuid.uuid4().hex[:12]}"
        self._keys = itertools.count()
        self._topic: str | None = None  # where workers log unit starts (with a deadline)
        self._by_key: dict[str, _Running] = {}
        self._send_ahead = False
        # Units sent ahead, by slot: (unit, future, when it was sent).
        self._ahead: dict[Slot, tuple[Unit, Any, float]] = {}
        self._chores: set[asyncio.Task[Any]] = set()  # cancels in flight
        self._closing = False  # close() is closing the client: Dask drops what is left
        # Pickled functions by id(fn): (weak reference to fn, bytes); an entry goes when
        # its function does, so the pool keeps no task's function alive.
        self._fns: dict[int, tuple[Any, bytes]] = {}

    # -- opening and closing

    def open(self, host: Host) -> Capabilities:
        self._host = host
        address, security = self._address, None
        if self._given is not None:
            address = self._given.scheduler.address
            security = self._given.security
        elif address is None:
            worker = _current_worker()
            if worker is None:
                # Dask's own setting (DASK_SCHEDULER_ADDRESS), as Client() honours it.
                address = _import_distributed().config.get("scheduler-address", None) or None
            else:
                # A task opening a pool of its own: it runs on the cluster it is part of, and
                # leaves its worker's thread pool while it waits (see the module's doc).
                address, security = worker.scheduler.address, worker.security
                _import_distributed().secede()
                self._seceded = threading.current_thread()
        if host.task_timeout is not None:
            self._topic = f"{self._prefix}-started"
        self._thread = _LoopThread(f"{host.name}-dask")
        self._loop = self._thread.loop
        try:
            threads = asyncio.run_coroutine_threadsafe(
                self._connect(address, security), self._loop
            ).result()
        except BaseException as e:
            self.close()
            where = f"the Dask scheduler at {address}" if address else "a local Dask cluster"
            raise WorkpoolError(
                f"pool {host.name!r} could not connect to {where}: {type(e).__name__}: {e}"
            ) from e
        self._send_ahead = host.task_timeout is None and host.rate is None
        return Capabilities(
            default_workers=max(1, threads),
            # The slot settles a stopped unit itself (finish_broken), at once: a unit is one
            # remote task holding all of its calls, which the engine cannot claim one by one.
            stop="kill",
            # With a deadline, one call per unit: each call's deadline starts with it.
            max_batch=1 if host.task_timeout is not None else MAX_BATCH,
            driver="asyncio",
            coroutines=True,  # awaited on the worker, on a loop of the worker's thread
            send_ahead=True,
            # A unit the engine counts running may wait on the cluster for a thread (one
            # sent ahead to another slot took the thread first): left, it would start later
            # and run whole. Its Dask task is cancelled instead (run_unit then starts none
            # of its calls, or no more of them).
            stops_left_units=True,
        )

    async def _connect(self, address: str | None, security: Any) -> int:
        distributed = _import_distributed()
        if address is None:
            # Worker processes bound to loopback, no dashboard: nothing listens beyond this
            # machine. Dask sizes it to the machine's cores.
            self._cluster = await distributed.LocalCluster(
                host="127.0.0.1",
                dashboard_address=None,
                processes=True,
                asynchronous=True,
            )
            address = self._cluster.scheduler_address
        self._client = client = await distributed.Client(
            address,
            security=security,
            asynchronous=True,
            set_as_default=False,
        )
        if self._topic is not None:
            client.subscribe_topic(self._topic, self._started)
        info = await client.scheduler.identity(n_workers=-1)
        return int(info.get("total_threads", 0))

    def close(self) -> None:
        self._closing = True
        thread, self._thread = self._thread, None
        if thread is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._disconnect(), thread.loop).result(
                    CLOSE_TIMEOUT * 3
                )
            except Exception as e:
                logger.warning("pool: closing the Dask client failed: %s: %s", type(e).__name__, e)
            thread.stop()
        if self._seceded is not None and self._seceded is threading.current_thread():
            self._seceded = None
            _import_distributed().rejoin()

    async def _disconnect(self) -> None:
        if self._chores:
            await asyncio.wait(list(self._chores), timeout=CLOSE_TIMEOUT)
        client, self._client = self._client, None
        cluster, self._cluster = self._cluster, None
        if client is not None:
            # Our own connection even when a client was given (that one stays open): closing
            # it releases every future the pool made on the scheduler.
            await client.close(timeout=CLOSE_TIMEOUT)
        if cluster is not None:
            await cluster.close(timeout=CLOSE_TIMEOUT)

    def event_loop(self) -> Any:
        # An AsyncPool's slots live on its caller's loop (the pool waits for them there);
        # a Pool's on the backend's own loop, with the Client.
        assert self._host is not None
        return self._host.loop if self._host.loop is not None else self._loop

    # -- running a unit

    async def arun(self, slot: Slot, unit: Unit) -> None:
        if asyncio.get_running_loop() is self._loop:
            await self._arun(slot, unit)
            return
        # An AsyncPool's slot, on the caller's loop: the unit is run by the Client's loop.
        done = asyncio.run_coroutine_threadsafe(self._arun(slot, unit), self._loop)
        await asyncio.wrap_future(done)

    async def _arun(self, slot: Slot, unit: Unit) -> None:
        assert self._host is not None
        host = self._host
        ahead = self._ahead.pop(slot, None)
        if ahead is not None and ahead[0] is not unit:
            self._cancel(ahead[1])  # (the engine runs a unit sent ahead next: not reached)
            ahead = None
        stop = slot.stop
        if stop is not None:
            slot.stop = None
            if stop[0] is unit and ahead is None:  # stopped before it was sent: nothing ran
                host.finish_broken(slot, unit, 0, stop[1](f"task {unit.start} {stop[2]}"), 0.0)
                return
            if stop[0] is not unit:
                stop = None  # aimed at an earlier unit that finished first
        if stop is None and host.closed_hard:
            # The pool is stopping what runs (a shutdown's deadline, a second signal), and
            # this unit was not stopped with the rest: it was sent ahead to this slot, whose
            # running unit it was not. It ends cancelled without running. (It was awaited,
            # until the pool closed its client and Dask dropped it: a failure.)
            if ahead is not None:
                self._cancel(ahead[1])
            # None of its calls ran: all of them go back, cancelled and listed as unstarted.
            cancelled = TaskCancelled(f"task {unit.start} was cancelled by shutdown")
            host.finish_broken(slot, unit, None, cancelled, 0.0)
            return
        if ahead is None:
            await self._reconnected()
            if self._client_gone(unit):
                return
        if ahead is not None:
            future, sent = ahead[1], ahead[2]
        else:
            future, sent = self._submit(unit, slot), host.now()
        if future is None:
            return  # every call failed here (it won't pickle)
        loop = self._loop
        run = _Running(unit, future, loop.create_future())
        slot.handle = run
        if stop is not None:
            run.stopped.set_result(None)  # stopped while it was sent ahead
        if self._topic is not None:
            self._by_key[future.key] = run
        if self._send_ahead:
            self._send_next(slot)
        waiter: asyncio.Future[Any] = asyncio.ensure_future(_outcome(future))
        try:
            await asyncio.wait((waiter, run.stopped), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # The slot's task was cancelled (its loop is going away): so is the remote task.
            waiter.cancel()
            self._cancel(future)
            raise
        finally:
            slot.handle = None
            self._by_key.pop(future.key, None)
        stop = slot.stop
        if stop is not None and stop[0] is not unit:
            slot.stop = stop = None  # aimed at an earlier unit that finished first
        if stop is not None or not waiter.done():
            waiter.cancel()
            self._cancel(future)
            slot.stop = None
            assert stop is not None
            # The pool said the call was stopped, so it ends so even if its outcome came
            # in meanwhile: the first call not known to be done fails with the stop's error,
            # the rest goes back to the queue (or is cancelled with it).
            pos = 0
            now = host.now()
            started = run.started if run.started is not None else sent
            error = stop[1](f"task {unit.start + pos} {stop[2]}")
            # (Said at DEBUG for a unit of a call that was left, a map that failed: its
            # outcomes are wanted by nobody, and every running unit of it is stopped.)
            logger.log(
                30 if unit.sink.active() else 10,
                "pool %r: task %d %s; its Dask task was cancelled (code that ignores "
                "current_task().cancelled runs on, and its outcome is discarded)",
                host.name,
                unit.start + pos,
                stop[2],
            )
            host.finish_broken(slot, unit, pos, error, max(0.0, now - started))
            return
        future.release()
        try:
            outcome = waiter.result()
        except BaseException as e:
            if self._dropped_by_us(e):
                # The pool itself let go of it (it cancelled the future, or is closing its
                # client, which drops every future left): cancelled, as a stop would say.
                started = run.started if run.started is not None else sent
                # (Not started on Dask: none of its calls ran, all go back as unstarted.)
                cancelled = TaskCancelled(f"task {unit.start} was cancelled by shutdown")
                first = None if run.started is None else 0
                host.finish_broken(slot, unit, first, cancelled, max(0.0, host.now() - started))
                return
            self._fail_all(unit, self._lost(unit, e))
            self._client_gone(None)
            return
        self._receive(unit, outcome)

    async def _reconnected(self) -> None:
        """Wait while the client reconnects to a scheduler it lost (Dask tries for
        ``distributed.comm.timeouts.connect``, then closes it): a unit submitted meanwhile
        was never run nor failed."""
        client = self._client
        while client is not None and client.status == "connecting":
            await asyncio.sleep(_RECONNECT_POLL)  # (Dask says so through no event)

    def _client_gone(self, unit: Unit | None) -> bool:
        """True when the client lost the scheduler for good (Dask closes it after failing to
        reconnect, ``distributed.comm.timeouts.connect``): the pool breaks (accepted work
        fails with the reason, a submit raises it) and ``unit`` fails so. A submit on a
        closed client gave a future that never ended: the pool waited for ever."""
        client = self._client
        if client is None or client.status not in ("closing", "closed"):
            return False  # (None: the pool closed it, with nothing left to run)
        assert self._host is not None
        error = WorkpoolError(
            "it lost its Dask scheduler: the client could not reach it again and closed"
        )
        if unit is not None:
            self._fail_all(unit, error)
        self._host.break_pool(error)
        return True

    def _submit(self, unit: Unit, slot: Slot) -> Any:
        """Send ``unit`` to the cluster: its future, or None when every call failed here."""
        assert self._host is not None
        payload = self._payload(unit)
        if payload is None:
            return None
        # The bytes its calls move (their arguments here, their outcomes in _receive), for
        # the intake to size units on, as worker processes count theirs: the pickle made to
        # send it anyway. (Not the function: it travels once per unit, however many calls.)
        unit.nbytes = len(payload[1])
        key = f"{self._prefix}-{next(self._keys)}"
        n = len(unit.entries)
        meta = (key, unit.start, n, unit.mode, unit.attempt, self._host.task_timeout, self._topic)
        # No worker is named: a unit pinned to the worker of its slot (allow_other_workers)
        # was never run again once that worker died and every worker was replaced (Dask
        # does not look at loose restrictions when a worker joins): the pool hung. (It
        # saved ~0.5 % on D2.)
        return self._client.submit(run_unit, *payload, meta, key=key, pure=False)

    def _send_next(self, slot: Slot) -> None:
        """Send the slot's next unit now, so that it waits on a worker, not a round trip away.

        Only while the cluster has no more threads than the pool has workers: a unit sent
        ahead may start on any free thread, and ``workers`` bounds the calls running at once.
        The engine sends ahead only when every worker is busy (see its send-ahead section).
        """
        assert self._host is not None
        info = self._client.scheduler_info()
        threads = info.get("total_threads") if isinstance(info, Mapping) else None
        # (The engine that hosts this backend keeps its current ``workers`` there; the Host
        # protocol does not promise it, so a host without it gets no send-ahead.)
        workers = getattr(self._host, "max_workers", None)
        if not isinstance(threads, int) or not isinstance(workers, int) or threads > workers:
            return
        if self._client is None or self._client.status != "running":
            return  # (reconnecting: the slot's next unit waits for it, see _reconnected)
        nxt = self._host.prefetch(slot)
        if nxt is None:
            return
        future = self._submit(nxt, slot)
        if future is not None:
            self._ahead[slot] = (nxt, future, self._host.now())

    def revoke(self, slot: Slot, *, cancel: bool = False) -> bool:
        # A unit sent ahead is on the scheduler, which may have started it: to run it on
        # another slot could run it twice, so it stays. To cancel it (its call was left,
        # the pool cancels its queued work), its Dask task is cancelled: a worker then
        # never starts it, and one that had just started it starts no more of its calls
        # (``run_unit``), its outcome dropped, as when a running unit is cancelled. (It was
        # left on the cluster, to start once a thread was free and run whole.)
        if not cancel:
            return False
        unit = slot.next
        loop = self._loop
        if loop is None:
            return True  # (closed: nothing runs any more)
        if asyncio.events._get_running_loop() is loop:
            self._drop_ahead(slot, unit)
        else:
            try:
                # After the slot's _send_next, if one is sending it now (on the loop).
                loop.call_soon_threadsafe(self._drop_ahead, slot, unit)
            except RuntimeError:
                pass  # the loop is closed: so is the client, with its futures
        return True

    def _drop_ahead(self, slot: Slot, unit: Unit | None) -> None:
        """Cancel the Dask task of ``unit``, sent ahead to ``slot`` and taken back (on the
        backend's loop)."""
        ahead = self._ahead.get(slot)
        if ahead is not None and ahead[0] is unit:
            del self._ahead[slot]
            self._cancel(ahead[1])

    def _started(self, event: Any) -> None:
        """A worker started the unit ``key`` (a Dask event on this pool's topic)."""
        _, key = event
        run = self._by_key.get(key)
        if run is not None and self._host is not None:
            run.started = self._host.now()

    def call_started(self, slot: Slot) -> float:
        run = slot.handle
        if run is not None and run.started is not None:
            return float(run.started)
        assert self._host is not None
        return self._host.now()  # not started on a worker yet: no deadline runs

    def stop(self, slot: Slot) -> None:
        loop = self._loop
        if loop is None:
            return
        if asyncio.events._get_running_loop() is loop:
            _stop_now(slot)
        else:
            try:
                loop.call_soon_threadsafe(_stop_now, slot)
            except RuntimeError:
                pass  # the loop is closed: nothing runs any more

    def _cancel(self, future: Any) -> None:
        """Cancel a remote future without waiting for the scheduler to hear it."""
        client = self._client
        if client is None or client.status in ("closing", "closed"):
            return  # (its scheduler is gone, and the task with it)
        try:
            chore = asyncio.ensure_future(client.cancel([future], reason=_CANCEL_REASON))
        except TypeError:  # a Dask without reason=
            chore = asyncio.ensure_future(client.cancel([future]))
        self._chores.add(chore)
        chore.add_done_callback(self._chores.discard)
        chore.add_done_callback(_retrieved)  # (the client may close meanwhile: no noise)

    # -- what travels

    def _function(self, fn: Any) -> bytes:
        ident = id(fn)
        hit = self._fns.get(ident)
        if hit is not None and hit[0]() is fn:
            return hit[1]
        blob: bytes = cloudpickle.dumps(fn, PROTOCOL)
        fns = self._fns

        def gone(ref: Any) -> None:
            entry = fns.get(ident)
            if entry is not None and entry[0] is ref:
                fns.pop(ident, None)

        try:
            fns[ident] = (weakref.ref(fn, gone), blob)
        except TypeError:
            pass  # takes no weak reference: pickled for every unit
        return blob

    def _payload(self, unit: Unit) -> tuple[bytes, bytes] | None:
        """The unit's function and its arguments, pickled for the worker (a worker keeps no
        state of ours: the function travels with every unit); None after failing every
        call (the function won't pickle)."""
        try:
            fn = self._function(unit.fn)
        except Exception as e:
            self._fail_all(
                unit,
                pickle.PicklingError(
                    f"the task's function {unit.fn!r} could not be pickled to send it to the "
                    f"Dask cluster: {type(e).__name__}: {e}"
                ),
            )
            return None
        entries = unit.entries
        plain = io.BytesIO()
        if dumps_plain((entries, unit.kwargs, False), plain):
            return fn, plain.getvalue()  # (plain data: it unpickles anywhere)
        try:
            if len(entries) == 1:
                body = cloudpickle.dumps((entries, unit.kwargs, False), PROTOCOL)
            else:
                # One pickle per entry: one that won't unpickle on the worker fails alone.
                body = cloudpickle.dumps((self._sendable(unit), unit.kwargs, True), PROTOCOL)
        except Exception as e:
            # One call's arguments, or the keyword arguments every call shares (a batch's
            # entries were pickled one by one: one that won't pickle fails alone).
            what = "arguments"
            if unit.kwargs:
                try:
                    cloudpickle.dumps(unit.kwargs, PROTOCOL)
                except Exception:
                    what = "keyword arguments"
            self._fail_all(
                unit,
                pickle.PicklingError(
                    f"the {what} of task {unit.start} could not be pickled to send them "
                    f"to the Dask cluster: {type(e).__name__}: {e}"
                ),
            )
            return None
        return fn, body

    @staticmethod
    def _sendable(unit: Unit) -> list[bytes]:
        """The entries of a batch, pickled one by one; one that won't pickle is replaced by
        a failure."""
        what = "argument" if unit.mode == CALL_ITEM else "arguments"
        blobs = []
        for pos, entry in enumerate(unit.entries):
            try:
                blob = cloudpickle.dumps(entry, PROTOCOL)
            except Exception as e:
                blob = cloudpickle.dumps(
                    BadArgument(
                        pickle.PicklingError(
                            f"the {what} of task {unit.start + pos} could not be pickled to "
                            f"send them to the Dask cluster: {type(e).__name__}: {e}"
                        )
                    ),
                    PROTOCOL,
                )
            blobs.append(blob)
        return blobs

    @staticmethod
    def _receive(unit: Unit, outcome: tuple[Any, list[float], int]) -> None:
        blob, durs, _ = outcome
        if isinstance(blob, (bytes, bytearray, memoryview)):
            unit.nbytes += len(blob)
            values: list[Any] = pickle.loads(blob)
        else:
            unit.nbytes += sum(len(one) for one in blob)
            values = []
            for pos, one in enumerate(blob):
                try:
                    values.append(pickle.loads(one))
                except Exception as e:
                    values.append(
                        Failure(
                            pickle.UnpicklingError(
                                f"the outcome of task {unit.start + pos} was pickled on the "
                                f"Dask worker but could not be unpickled here: "
                                f"{type(e).__name__}: {e}"
                            ),
                            None,
                        )
                    )
        nfail = 0
        for v in values:
            if type(v) is Failure:
                with_remote_cause(v)
                nfail += 1
        unit.out.extend(values)
        unit.durs.extend(durs)
        unit.nfail += nfail

    @staticmethod
    def _fail_all(unit: Unit, error: BaseException) -> None:
        for _ in range(len(unit.entries) - len(unit.out)):
            unit.out.append(Failure(error, None))
            unit.durs.append(0.0)
            unit.nfail += 1

    def _dropped_by_us(self, e: BaseException) -> bool:
        """``e``, from awaiting a future, says Dask dropped it because the pool asked: it
        cancelled the future, or it is closing its client."""
        if not isinstance(e, asyncio.CancelledError) and type(e).__name__ != "FutureCancelledError":
            return False
        return self._closing or getattr(e, "reason", None) == _CANCEL_REASON

    def _lost(self, unit: Unit, e: BaseException) -> BaseException:
        """What the calls of a unit whose Dask task failed as a whole end with."""
        n = len(unit.entries)
        tasks = f"task {unit.start}" if n == 1 else f"tasks {unit.start}..{unit.start + n - 1}"
        if type(e).__name__ == "KilledWorker":
            return WorkerCrashed(
                f"the Dask workers running {tasks} died under it, and Dask gave up on it "
                f"after each death: {e}"
            )
        if isinstance(e, asyncio.CancelledError) or type(e).__name__ == "FutureCancelledError":
            return WorkpoolError(
                f"the Dask scheduler dropped {tasks} (the client lost its connection, or the "
                f"cluster was restarted): {e}"
            )
        return WorkpoolError(f"the Dask task of {tasks} failed: {type(e).__name__}: {e}")


def _retrieved(chore: asyncio.Future[Any]) -> None:
    if not chore.cancelled():
        chore.exception()


async def _outcome(future: Any) -> Any:
    return await future


def _stop_now(slot: Slot) -> None:
    """Wake the slot's task to settle its stopped unit (on the backend's loop)."""
    run = slot.handle
    if run is not None and not run.stopped.done():
        run.stopped.set_result(None)


def _current_worker() -> Any:
    """The Dask worker whose task calls this, or None."""
    try:
        return _import_distributed().get_worker()
    except Exception:
        return None
