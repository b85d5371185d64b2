"""``AsyncPipeline``: the pipeline for asyncio code (the async face of the same flows)."""

from __future__ import annotations

import asyncio
import operator
import signal
import weakref
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

from ._areader import AsyncReader
from ._config import check_flag, check_seconds
from ._flow import Flow
from ._intake import at_hand
from ._lifecycle import not_picklable
from ._pipeline import PipelineCore, _progress
from ._reports import ShutdownReport, Stats
from ._result import Result
from ._signals import drains_on_exit
from ._stage import Stage
from .errors import ConfigError, Interrupted, PoolClosed, TaskError

__all__ = ["AsyncPipeline"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class AsyncPipeline:
    """A :class:`Pipeline` for ``async`` code: ``async with``, ``async for r in
    pipeline.results(items)``, with ``items`` an iterable or an async iterable.

    Stages with ``backend="async"`` run their coroutines on the caller's event loop; thread
    and process stages run as they do in a :class:`Pipeline`. Nothing blocks the loop:
    the input is read, and Results are awaited, in the consumer's task.
    """

    def __init__(
        self, *stages: Stage, handle_signals: bool = False, name: str | None = None
    ) -> None:
        if not isinstance(handle_signals, bool):
            raise ConfigError(
                f"handle_signals must be True or False for an AsyncPipeline, got {handle_signals!r}"
            )
        self._core = PipelineCore(stages, name)
        self.name = self._core.name
        self._handle_signals = handle_signals
        self._loop: asyncio.AbstractEventLoop | None = None
        self._signals: dict[int, Any] = {}
        self._count = 0
        self._drain: asyncio.Future[ShutdownReport] | None = None

    @property
    def stages(self) -> tuple[Stage, ...]:
        return self._core.stages

    def _open(self) -> PipelineCore:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._core.open(loop=loop)
        elif loop is not self._loop:
            raise RuntimeError(
                f"AsyncPipeline {self.name!r} belongs to the event loop it was first used on"
            )
        if self._handle_signals and not self._signals:
            self._install_signals(loop)
        return self._core

    async def __aenter__(self) -> AsyncPipeline:
        self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if drains_on_exit(exc_type, self._core.interrupted_by):
                report = await self.shutdown()
            else:
                report = await asyncio.shield(self.shutdown(cancel_futures=True, timeout=0))
        finally:
            self._restore_signals()
        core = self._core
        if (
            core.interrupted_by is not None
            and not core.interrupt_reported
            and (exc_type is None or not issubclass(exc_type, Interrupted))
        ):
            raise core.interrupted_error(report)

    def results(
        self,
        items: Any,
        *,
        ordered: bool = False,
        per_input: bool = False,
        progress: bool = False,
    ) -> AsyncIterator[Result[Any]]:
        """Async iterator of Results as items leave the pipeline (see ``Pipeline.results``)."""
        if not hasattr(items, "__aiter__") and not hasattr(items, "__iter__"):
            raise TypeError(f"results() needs an iterable or async iterable, got {items!r}")
        check_flag("results() ordered", ordered)
        check_flag("results() per_input", per_input)
        check_flag("results() progress", progress)
        core = self._open()
        return _Results(core, items, ordered, per_input, progress)

    async def map(self, items: Any, *, progress: bool = False) -> AsyncIterator[Any]:
        """The last stage's values in input order; :class:`TaskError` at the first failure."""
        async for r in self.results(items, ordered=True, progress=progress):
            if r.error is not None:
                raise TaskError(
                    f"input {r.index} failed in stage {r.stage!r}: "
                    f"{type(r.error).__name__}: {r.error}",
                    r,
                ) from r.error
            yield r.value

    def stats(self) -> dict[str, Stats]:
        """``{stage name: Stats}`` (see ``Pipeline.stats``)."""
        return self._core.stats()

    def close(self) -> None:
        """Read no more input; what was read still goes through every stage."""
        self._core.close()

    async def join(self, timeout: float | None = None) -> bool:
        timeout = check_seconds("timeout", timeout, allow_zero=True)
        self._core.check_not_own_task("join()")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._core.join, timeout)

    async def shutdown(
        self, wait: bool = True, *, cancel_futures: bool = False, timeout: float | None = None
    ) -> ShutdownReport:
        """Close, then drain the whole pipeline (see ``Pipeline.shutdown``); the waits run
        off the loop (the stages' own pools may need the loop meanwhile)."""
        timeout = check_seconds("timeout", timeout, allow_zero=True)
        check_flag("shutdown() wait", wait)
        check_flag("shutdown() cancel_futures", cancel_futures)
        core = self._core
        if self._loop is None:
            return core.shutdown(wait=False)  # never opened: nothing runs
        loop = asyncio.get_running_loop()
        if cancel_futures:
            core.close()
            await loop.run_in_executor(None, lambda: core.abort(queued_only=True))
        if self._drain is None:
            self._drain = loop.run_in_executor(
                None, lambda: core.shutdown(wait=True, timeout=timeout)
            )
        if not wait or core.in_own_task():
            return core.report(finished=False)  # (a stage's task would wait for itself)
        return await asyncio.shield(self._drain)

    # -- signals: the loop's own handling (first drains, second cancels)

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in _SIGNALS:
            previous = signal.getsignal(sig)
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError) as e:
                raise ConfigError(
                    "handle_signals=True needs an event loop that can handle signals (the "
                    f"main thread's, on Unix): {e}"
                ) from e
            self._signals[sig] = previous

    def _on_signal(self, sig: int) -> None:
        self._count += 1
        core = self._core
        if self._count == 1:
            core.interrupted_by = sig
            self._drain = asyncio.get_running_loop().run_in_executor(None, core.shutdown)
        else:
            core.second_signal = sig
            core.abort()

    def _restore_signals(self) -> None:
        installed, self._signals = self._signals, {}
        for sig, previous in installed.items():
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_signal_handler(sig)
            if previous is not None:
                signal.signal(sig, previous)

    def __reduce__(self) -> Any:
        # Said plainly (pickle would name a lock or a weak reference inside): a task sent to
        # a worker process, or a Dask worker, gets a copy of its arguments, never this object.
        raise TypeError(not_picklable(self))

    def __repr__(self) -> str:
        return f"<AsyncPipeline {self.name!r} {' -> '.join(s.name for s in self.stages)}>"


class _Results:
    """The async iterator of one results() call: reads the input in the consumer's task."""

    def __init__(
        self, core: PipelineCore, items: Any, ordered: bool, per_input: bool, progress: bool
    ) -> None:
        self._core = core
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None
        self._generation = 0
        self._pumped = 0  # the wake-up last acted on (see _Consumer.results)
        # The flow and the reader wake this call through a weak reference (a wake-up from
        # another thread too, on its way to the loop): a call left with ``break`` is then
        # dropped, and ends (``__del__``), while its input is quiet too.
        own = weakref.ref(self)
        loop = self._loop

        def resolve() -> None:
            me = own()
            if me is not None:
                me._generation += 1
                me._resolve()

        def wake() -> None:
            """From any thread: a Result may be ready, or there may be room for input."""
            if asyncio.events._get_running_loop() is loop:
                resolve()
                return
            # Another thread takes no reference to the call: had it held the last one for a
            # moment (the consumer left meanwhile), the call would end in that thread, and
            # its reader would stop only a turn of the loop later, after reading on.
            try:
                loop.call_soon_threadsafe(resolve)
            except RuntimeError:
                pass  # the loop is closed

        source = items.__aiter__() if hasattr(items, "__aiter__") else None
        # The length of a sync input, when known, sizes the tail's units (as in Pipeline).
        length = -1 if source is not None else operator.length_hint(items, -1)
        self._flow: Flow = core.new_flow(
            ordered=ordered, per_input=per_input, wake=wake, length=length
        )
        # An async input is read by a task of its own (see AsyncReader): awaited here, a
        # slow one would hold back what it gave before and the Results that are ready.
        self._reader = None if source is None else AsyncReader(source, self._loop, wake)
        self._sync = None if source is not None else iter(items)
        self._view = _progress(core, progress)
        self._ended = False

    def _resolve(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __aiter__(self) -> _Results:
        return self

    async def __anext__(self) -> Result[Any]:
        flow = self._flow
        if self._ended:
            raise StopAsyncIteration
        try:
            while True:
                seen = self._generation
                if seen != self._pumped:
                    self._pumped = seen
                    flow.pump()  # room in a stage another call freed, maybe
                want = min(flow.want_input(), flow.read_size())
                if want and self._read(want):
                    continue
                result = flow.pop_ready()
                if result is not None:
                    if self._view is not None:
                        self._view.update(result)
                    return result
                if self._reader is not None and self._reader.buffer and flow.reading_done:
                    # Read as the pipeline stopped reading (a read was under way): never run.
                    self._strand("was read as the pipeline closed, and never started")
                    continue
                if flow.finished():
                    break
                if flow.unstall():
                    continue
                self._waiter = self._loop.create_future()
                if self._generation == self._pumped:
                    await self._waiter
                self._waiter = None
        except asyncio.CancelledError:
            self._end(running=True)  # the consumer was cancelled: so is the call's work
            raise
        except BaseException:
            self._end()
            raise
        self._end()
        stop = flow.stop
        if stop is not None:
            core = self._core
            if isinstance(stop, PoolClosed) and core.interrupted_by is not None:
                report = await asyncio.get_running_loop().run_in_executor(None, core.wait_shutdown)
                raise core.interrupted_error(report or core.report(finished=False)) from None
            raise stop
        raise StopAsyncIteration

    def _read(self, want: int) -> bool:
        """Read up to ``want`` items; True if any was read (or the input ended)."""
        if self._reader is not None:
            return self._take(want)
        flow = self._flow
        batch: list[Any] = []
        try:
            assert self._sync is not None
            for _ in range(at_hand(self._sync, want)):
                batch.append(next(self._sync))
        except StopIteration:
            flow.admit(batch)
            flow.input_ended()
            return True
        except BaseException as e:  # the input failed: what it gave still runs
            flow.admit(batch)
            flow.input_ended(e)
            return True
        flow.admit(batch)
        return bool(batch)

    def _take(self, want: int) -> bool:
        """Take up to ``want`` items the reader has buffered, and keep it reading up to the
        room left; True if any was taken (or the input ended)."""
        reader = self._reader
        assert reader is not None
        buffer = reader.buffer
        flow = self._flow
        if not buffer:
            if reader.ended:
                flow.input_ended(reader.error)
                return True
            reader.want(want)
            return False
        batch = [buffer.popleft() for _ in range(min(want, len(buffer)))]
        flow.admit(batch)
        reader.want(want - len(batch))
        return True

    def _strand(self, reason: str) -> None:
        """What the reader read and the flow never took: each input counts, never started."""
        assert self._reader is not None
        buffer = self._reader.buffer
        if buffer:
            items = list(buffer)
            buffer.clear()
            self._flow.never_started(items, reason)

    def _end(self, running: bool = False) -> None:
        if self._ended:
            return
        self._ended = True
        if self._reader is not None:
            self._reader.cancel()
            self._strand("was read as the call ended, and never started")
        self._flow.close(listed=self._core.shutting_down(), running=running)
        self._core.flow_ended(self._flow)
        if self._view is not None:
            self._view.close()

    async def aclose(self) -> None:
        self._end()

    def __del__(self) -> None:
        if not getattr(self, "_ended", True):
            self._end()
