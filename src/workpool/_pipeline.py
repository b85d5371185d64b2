"""``Pipeline``: one pool per stage, bounded buffers between them, lineage to the input."""

from __future__ import annotations

import dataclasses
import itertools
import operator
import threading
import time
import weakref
from collections.abc import Callable, Generator, Iterable, Iterator
from types import TracebackType
from typing import Any

from ._config import check_flag, check_seconds
from ._engine import open_engine
from ._flow import Flow
from ._intake import INPUT_POLL, at_hand
from ._lifecycle import later_shutdown, not_picklable, own_task_message, stop_interrupted
from ._reports import ShutdownReport, Stats, UnstartedTask
from ._result import Result
from ._signals import SignalGuard, drains_on_exit
from ._stage import Stage, StageRuntime, check_runnable
from .errors import ConfigError, Interrupted, PoolClosed, TaskError, WorkpoolError

__all__ = ["Pipeline", "PipelineCore"]

_numbers = itertools.count(1)


class PipelineCore:
    """What the sync and async faces share: the stages, their pools, the open flows, and
    the drain. Its waits are the sync face's; the async face awaits the same steps."""

    def __init__(self, stages: tuple[Stage, ...], name: str | None) -> None:
        if not stages:
            raise ConfigError("a Pipeline needs at least one Stage")
        for s in stages:
            if not isinstance(s, Stage):
                raise ConfigError(f"Pipeline takes Stage objects, got {s!r}; wrap it: Stage(fn)")
        names = [s.name for s in stages]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(
                f"stage names must be unique in a pipeline, got {', '.join(map(repr, dupes))} "
                "more than once; give each Stage its own name="
            )
        self.stages = stages
        if name is not None and not isinstance(name, str):
            raise ConfigError(f"name must be a str or None, got {name!r}")
        self.name = name or f"pipeline-{next(_numbers)}"
        self.runtimes: list[StageRuntime] = []
        self.flows: weakref.WeakSet[Flow] = weakref.WeakSet()
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)  # a flow moved on (drain waits on it)
        self.closed = False
        self.interrupted_by: int | None = None
        self.interrupt_reported = False
        # The second signal, which cancelled the work (an AsyncPipeline's loop handler).
        self.second_signal: int | None = None
        self.unstarted: list[UnstartedTask] = []
        self.totals = [0, 0, 0, 0]  # completed, failed, cancelled, timed_out of ended flows
        self._shutdown_started = False
        self._shutdown_done = threading.Event()
        self._report: ShutdownReport | None = None
        self.lifecycle = self  # what SignalGuard drives: shutdown, abort, report, flags

    def open(self, loop: Any = None) -> None:
        """Start every stage's pool (first use)."""
        if self.runtimes:
            return
        opened: list[StageRuntime] = []
        try:
            for stage in self.stages:
                engine = open_engine(
                    stage.options, f"{self.name}-{stage.name}", stage._clock, loop=loop
                )
                opened.append(StageRuntime(stage, engine))
                check_runnable(stage, engine.caps.coroutines)
        except BaseException:
            for rt in opened:
                rt.engine.lifecycle.shutdown(cancel_futures=True, timeout=0)
            raise
        self.runtimes = opened

    def new_flow(
        self, *, ordered: bool, per_input: bool, wake: Callable[[], None], length: int = -1
    ) -> Flow:
        if self.closed:
            raise self.closed_error()
        self.open()

        def woken() -> None:
            wake()
            with self.changed:
                self.changed.notify_all()

        flow = Flow(
            self.runtimes,
            ordered=ordered,
            per_input=per_input,
            wake=woken,
            name=self.name,
            length=length,
        )
        flow.late_unstarted = self._late_unstarted
        with self.lock:
            self.flows.add(flow)
        return flow

    def _late_unstarted(self, tasks: list[UnstartedTask]) -> None:
        """Inputs a call's first stage never started, cancelled after its consumer left."""
        with self.lock:
            self.unstarted += tasks

    def closed_error(self) -> PoolClosed:
        if self.interrupted_by is not None:
            return PoolClosed(
                f"pipeline {self.name!r} is draining after signal {self.interrupted_by}"
            )
        return PoolClosed(f"pipeline {self.name!r} is closed and accepts no more work")

    def shutting_down(self) -> bool:
        """Closed, or a second signal's Interrupted already raised (it may reach the consumer
        before the signal thread has closed the pipeline)."""
        return self.closed or self.interrupt_reported

    def flow_ended(self, flow: Flow) -> None:
        """A call ended: keep its counts for the report."""
        with self.lock:
            lineage = flow.lineage
            for i, n in enumerate(
                (lineage.completed, lineage.failed, lineage.cancelled, lineage.timed_out)
            ):
                self.totals[i] += n
            self.unstarted += flow.unstarted
            flow.unstarted = []
            self.flows.discard(flow)
            self.changed.notify_all()

    # ------------------------------------------------------------------ close and drain

    def close(self) -> None:
        """Read no more input in any call; what was read goes on through the stages."""
        self.closed = True
        for flow in list(self.flows):
            flow.input_ended(self.closed_error())

    def busy(self) -> bool:
        return any(f.lineage.live_tokens for f in list(self.flows))

    def in_own_task(self) -> bool:
        """True when called from a task of one of the stages (``Engine.own_slot``)."""
        return any(rt.engine.lifecycle.in_own_task() for rt in self.runtimes)

    def check_not_own_task(self, what: str) -> None:
        """``what`` waits for every item: from a stage's task it would wait for itself."""
        if self.in_own_task():
            raise WorkpoolError(own_task_message(f"pipeline {self.name!r}", what))

    def join(self, timeout: float | None = None) -> bool:
        """Wait until no item is in flight in any call; False if ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.changed:
            while self.busy():
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    return False
                self.changed.wait(wait)
        return True

    def shutdown(
        self, wait: bool = True, *, cancel_futures: bool = False, timeout: float | None = None
    ) -> ShutdownReport:
        """Close, then drain the whole pipeline (see ``Pipeline.shutdown``)."""
        if wait and self.in_own_task():
            wait = False  # from a stage's task: it would wait for itself
        self.close()
        with self.lock:
            first = not self._shutdown_started
            self._shutdown_started = True
        if cancel_futures:
            self.abort(queued_only=True)
        if not wait:
            if first:
                threading.Thread(
                    target=self.drain, args=(timeout,), name=f"{self.name}-shutdown", daemon=True
                ).start()
            else:
                later_shutdown(self._shutdown_done, timeout, self.abort, self.name, wait)
            return self.report(finished=False)
        if first:
            self.drain(timeout)
        elif later_shutdown(self._shutdown_done, timeout, self.abort, self.name, wait):
            return self.report(finished=False)
        return self.report(finished=self._shutdown_done.is_set())

    def drain(self, timeout: float | None) -> None:
        try:
            self._drain(timeout)
        except BaseException:
            stop_interrupted(self.abort, lambda: self._drain(0, cut=True), self.name)
            raise

    def _drain(self, timeout: float | None, cut: bool = False) -> None:
        if self._shutdown_done.is_set():
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        drained = self.join(timeout)
        if not drained:
            self.abort()
            self.join(None)
        for rt in self.runtimes:
            # A stage may still run calls no item waits for any more (a call whose consumer
            # left with an error cancelled only its queued work): they get what is left of
            # the deadline too, then they are stopped.
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            rt.engine.lifecycle.shutdown(timeout=left)
        self._report = dataclasses.replace(
            self.report(finished=False), finished=drained and not cut
        )
        self._shutdown_done.set()

    def abort(self, *, queued_only: bool = False) -> None:
        """Cancel what waits (and, unless ``queued_only``, what runs) in every stage."""
        self.closed = True
        for flow in list(self.flows):
            flow.cancel_waiting("was cancelled by the pipeline's shutdown")
        for rt in self.runtimes:
            if queued_only:
                rt.engine.lifecycle.cancel_queued()
            else:
                rt.engine.lifecycle.abort()
        for flow in list(self.flows):
            flow.cancel_waiting("was cancelled by the pipeline's shutdown")

    def settle(self, timeout: float) -> None:
        """After ``abort``: wait (up to ``timeout``) until the stopped calls have settled."""
        deadline = time.monotonic() + timeout
        for rt in self.runtimes:
            rt.engine.lifecycle.settle(max(0.0, deadline - time.monotonic()))

    def shutdown_done(self) -> bool:
        return self._shutdown_done.is_set()

    def wait_shutdown(self, timeout: float | None = None) -> ShutdownReport | None:
        if self._shutdown_done.wait(timeout):
            return self._report
        return None

    def report(self, finished: bool) -> ShutdownReport:
        if finished and self._report is not None:
            return self._report
        with self.lock:
            totals = list(self.totals)
            unstarted = list(self.unstarted)
            for flow in self.flows:
                lineage = flow.lineage
                totals[0] += lineage.completed
                totals[1] += lineage.failed
                totals[2] += lineage.cancelled
                totals[3] += lineage.timed_out
                unstarted += flow.unstarted
        return ShutdownReport(
            completed=totals[0],
            failed=totals[1],
            cancelled=totals[2],
            unstarted=unstarted,
            timed_out=totals[3],
            finished=finished and self._shutdown_done.is_set(),
        )

    def unlocked_report(self) -> ShutdownReport:
        return ShutdownReport(
            completed=self.totals[0],
            failed=self.totals[1],
            cancelled=self.totals[2],
            unstarted=list(self.unstarted),
            timed_out=self.totals[3],
            finished=False,
        )

    def stats(self) -> dict[str, Stats]:
        return {rt.name: rt.stats(rt.engine.now()) for rt in self.runtimes}

    def interrupted_error(self, report: ShutdownReport, reported: bool = True) -> Interrupted:
        """The Interrupted a call raises after a signal; ``reported``: it reaches the
        program (not a call in a stage's own task), whose block then raises no other."""
        if reported:
            self.interrupt_reported = True
        sig, how = self.interrupted_by, "in-flight work drained"
        if self.second_signal is not None:
            sig, how = self.second_signal, "second signal: running work cancelled"
        return Interrupted(
            f"pipeline {self.name!r} was stopped by signal {sig}: {how}",
            report,
            sig,
        )


class Pipeline:
    """Stages of work, each on its own pool, with bounded buffers between them.

    ::

        pipeline = Pipeline(
            Stage(extract_text, workers=2, backend="process"),
            Stage(split_chunks, flat=True),
            Stage(embed, workers=32, backend="async", rate_limit="50/s", retries=3),
            Stage(insert_rows, workers=2, batch_size=64, batch_timeout=0.5),
        )
        with pipeline:
            for r in pipeline.results(documents):     # lazy: documents may be endless
                if not r.ok:
                    log.warning("%s failed in %s: %s", r.item, r.stage, r.error)

    A slow stage backs the others up to the input, which is read only as capacity frees up;
    memory stays constant on an endless input. A failed item leaves at once as a Result
    naming its stage and its input; it never stops the pipeline. ``with`` drains the whole
    pipeline on exit; ``handle_signals=True``: the first SIGINT/SIGTERM stops the input and
    drains what is in flight (iteration then raises :class:`Interrupted`), the second
    cancels. Raises :class:`ConfigError` for bad stages (names must be unique).
    """

    def __init__(
        self,
        *stages: Stage,
        handle_signals: bool | Callable[[int, int], object] = False,
        name: str | None = None,
    ) -> None:
        if not isinstance(handle_signals, bool) and not callable(handle_signals):
            raise ConfigError(
                f"handle_signals must be True, False, or a callable(signum, count), got "
                f"{handle_signals!r}"
            )
        self._core = PipelineCore(stages, name)
        self.name = self._core.name
        notify = handle_signals if callable(handle_signals) else None
        self._signals = SignalGuard(self._core, notify) if handle_signals else None  # type: ignore[arg-type]

    @property
    def stages(self) -> tuple[Stage, ...]:
        return self._core.stages

    def __enter__(self) -> Pipeline:
        if self._signals is not None:
            self._signals.install()
        self._core.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if drains_on_exit(exc_type, self._core.interrupted_by):
                report = self.shutdown()
            else:
                report = self.shutdown(cancel_futures=True, timeout=0)
        finally:
            if self._signals is not None:
                self._signals.restore()
        core = self._core
        if (
            core.interrupted_by is not None
            and not core.interrupt_reported
            and (exc_type is None or not issubclass(exc_type, Interrupted))
        ):
            raise core.interrupted_error(report)

    def results(
        self,
        items: Iterable[Any],
        *,
        ordered: bool = False,
        per_input: bool = False,
        progress: bool = False,
    ) -> Generator[Result[Any], None, None]:
        """Yield Results as items leave the pipeline (see the class and API docs).

        ``ordered=False``: one Result per output of the last stage and one per failure, as
        they happen; ``index`` and ``item`` are those of the input they came from, ``stage``
        the stage that failed. ``ordered=True``: the same in input order. ``per_input=True``:
        exactly one Result per input once all of its descendants left: ``value`` the list
        of its outputs, ``error`` its first failure. ``progress=True`` shows a live view of
        the stages on standard error when it is a terminal.
        """
        if not hasattr(items, "__iter__"):
            raise TypeError(f"results() needs an iterable of inputs, got {items!r}")
        check_flag("results() ordered", ordered)
        check_flag("results() per_input", per_input)
        check_flag("results() progress", progress)
        if self._signals is not None:
            self._signals.install()
        # The input's length, when known, sizes the tail's units (as Pool's map does).
        length = operator.length_hint(items, -1)
        consumer = _Consumer(self._core, ordered, per_input, length)  # PoolClosed here
        return consumer.results(iter(items), progress)

    def map(self, items: Iterable[Any], *, progress: bool = False) -> Generator[Any, None, None]:
        """Yield the last stage's values in input order; raise :class:`TaskError` at the
        first failure (``__cause__`` its error, ``.result`` its Result, naming its stage)."""
        for r in self.results(items, ordered=True, progress=progress):
            if r.error is not None:
                raise TaskError(
                    f"input {r.index} failed in stage {r.stage!r}: "
                    f"{type(r.error).__name__}: {r.error}",
                    r,
                ) from r.error
            yield r.value

    def stats(self) -> dict[str, Stats]:
        """``{stage name: Stats}``; a stage's Stats also says how long it was held back by
        the next stage (``backpressure_seconds``) and starved by the previous one."""
        return self._core.stats()

    def close(self) -> None:
        """Read no more input; what was read still goes through every stage."""
        self._core.close()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until nothing is in flight; False if ``timeout`` passed first."""
        timeout = check_seconds("timeout", timeout, allow_zero=True)
        self._core.check_not_own_task("join()")
        return self._core.join(timeout)

    def shutdown(
        self, wait: bool = True, *, cancel_futures: bool = False, timeout: float | None = None
    ) -> ShutdownReport:
        """Close, then drain the whole pipeline: every item in flight goes through the
        remaining stages and its Result reaches the consumer. At the ``timeout``, what waits
        is cancelled (read but never started: ``report.unstarted``) and what runs is stopped
        as each stage's backend stops work. The report counts inputs."""
        timeout = check_seconds("timeout", timeout, allow_zero=True)
        check_flag("shutdown() wait", wait)
        check_flag("shutdown() cancel_futures", cancel_futures)
        return self._core.shutdown(wait, cancel_futures=cancel_futures, timeout=timeout)

    def __reduce__(self) -> Any:
        # Said plainly (pickle would name a lock or a weak reference inside): a task sent to
        # a worker process, or a Dask worker, gets a copy of its arguments, never this object.
        raise TypeError(not_picklable(self))

    def __repr__(self) -> str:
        return f"<Pipeline {self.name!r} {' -> '.join(s.name for s in self.stages)}>"


class _Consumer:
    """One results() call of a sync Pipeline: its flow, and the consumer's wake-ups."""

    def __init__(self, core: PipelineCore, ordered: bool, per_input: bool, length: int) -> None:
        self._core = core
        self._cv = threading.Condition(threading.Lock())
        self._generation = 0
        self.flow = core.new_flow(
            ordered=ordered, per_input=per_input, wake=self._wake, length=length
        )

    def _wake(self) -> None:
        with self._cv:
            self._generation += 1
            self._cv.notify()

    def results(self, source: Iterator[Any], progress: bool) -> Generator[Result[Any], None, None]:
        """Read input while there is room (in units the first stage takes: an input that
        blocks holds back only that much), hand out Results, wait."""
        core = self._core
        flow = self.flow
        cv = self._cv
        view = _progress(core, progress)
        # The wake-up this call last acted on. A wake-up (room freed in a stage by another
        # call, a result) may come while this consumer is away in its loop body: it is acted
        # on at the next turn, never lost by reading the count afresh.
        pumped = 0
        try:
            while True:
                with cv:
                    seen = self._generation
                if seen != pumped:
                    pumped = seen
                    flow.pump()  # room in a stage another call freed, maybe
                want = min(flow.want_input(), flow.read_size())
                input_idle = False
                read = False
                if want:
                    batch: list[Any] = []
                    try:
                        # An input with nothing at hand is not waited for while results are
                        # on their way: they come first (see at_hand); it is looked at again.
                        want = at_hand(source, want, wait=not flow.results_coming())
                        input_idle = not want
                        batch.extend(itertools.islice(source, want))
                    except BaseException as e:  # the input failed: what it gave still runs
                        flow.admit(batch)
                        flow.input_ended(e)
                        continue
                    flow.admit(batch)
                    if len(batch) < want:
                        flow.input_ended()
                    read = bool(batch)
                # A Result that is ready goes out before the next read: an input that blocks
                # (a generator that waits for its next item) holds back at most one unit of
                # what it gave, not the whole window's worth.
                result = flow.pop_ready()
                if result is not None:
                    if view is not None:
                        view.update(result)
                    yield result
                    continue
                if read:
                    continue
                if flow.finished():
                    break
                if flow.unstall():
                    continue
                with cv:
                    if self._generation == pumped:
                        cv.wait(INPUT_POLL if input_idle else None)
            stop = flow.stop
            if stop is not None:
                if isinstance(stop, PoolClosed) and core.interrupted_by is not None:
                    if core.in_own_task():  # (a stage's task: the drain waits for it)
                        raise core.interrupted_error(core.report(False), reported=False)
                    report = core.wait_shutdown()
                    raise core.interrupted_error(report or core.report(finished=False)) from None
                raise stop
        finally:
            flow.close(listed=core.shutting_down())
            core.flow_ended(flow)
            if view is not None:
                view.close()


def _progress(core: PipelineCore, wanted: bool) -> Any:
    if not wanted:
        return None
    from ._progress import StageView

    return StageView.open(core)
