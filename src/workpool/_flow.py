"""A flow: one ``results``/``map`` call of a pipeline, moving its items through the stages.

The flow holds, for each stage, a *feed*: the tokens waiting for that stage (a bounded
buffer), the units it has in the stage's pool, and (for a batch stage) the partial batch and
its deadline. A feed is the sink of its stage's units; when a unit finishes, the flow turns
its outcomes into the next stage's tokens, the last stage's outputs or failures
(:mod:`._lineage`), then *pumps*: it forms units from the buffers, downstream first, and puts
them into the stages' pools without waiting (``try_put``)::

    input ─▶ feed 0 ─▶ pool 0 ─▶ feed 1 ─▶ pool 1 ─▶ ... ─▶ lineage ─▶ Results
     (the face reads it        │ a stage is held back while the buffer after it is full:
      only while the window    │ backpressure reaches the input, which is read lazily
      has room)

Who calls what: the face (the consumer's thread, or its task) reads the input and admits
items, and waits to be woken; workers deliver chunks (``Feed.deliver``); the batch timer
flushes partial batches. All of it under the flow's lock, except the puts into the pools:
the flow never holds its lock while calling into an engine (an engine calls its sinks and
room watchers under its own lock).

Bounds: the tokens in flight never exceed the sum of the stages' capacities (workers and
queue, in units, plus one unit waiting in front of each): the face reads the input only
below that, so memory stays constant on an endless input. An ordered call also holds at
most that many inputs back for order.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from ._lineage import Lineage, Token
from ._reports import UnstartedTask
from ._result import Result
from ._stage import StageRuntime
from ._timers import Timers
from ._units import CALL_ITEM, Failure, Unit
from .errors import TaskCancelled, WorkpoolError

__all__ = ["Feed", "Flow"]

_FLUSH = 3  # timer kind: a partial batch is due


class Feed:
    """One stage within one flow: its waiting tokens and units in flight. The sink of the
    stage's units (never stopped alone: units of a feed may be sent ahead)."""

    stoppable = False
    splittable = True  # (a batch stage's unit is one call: nothing to split)

    def __init__(self, flow: Flow, k: int, runtime: StageRuntime) -> None:
        self.flow = flow
        self.k = k
        self.rt = runtime
        self.buffer: deque[Token] = deque()
        self.solo: deque[Token] = deque()  # tokens of a failed batch, to run one at a time
        self.inflight: dict[int, list[Token]] = {}  # unit position -> its tokens
        self.inflight_tokens = 0
        self.next_pos = 0
        self.partial_since: float | None = None  # a batch stage's partial batch is waiting
        self.partial_no = 0  # which partial batch that is (its timer names it)
        self.flush = False  # its timer fired: send the partial batch

    def waiting(self) -> int:
        return len(self.buffer) + len(self.solo)

    # -- Sink protocol (called by the stage's engine)

    def started(self) -> None:
        pass

    def active(self) -> bool:
        flow = self.flow
        # (Closing with ``listed``: its cancelled units still come, to be listed.)
        return not flow.closed or (flow._listing and self.k == 0)

    def moved(self, unit: Unit) -> None:
        pass

    def deliver(self, chunk: Unit) -> None:
        self.flow.delivered(self, chunk)


class Flow:
    """The state of one call through an open pipeline's stages (see the module doc)."""

    def __init__(
        self,
        stages: list[StageRuntime],
        *,
        ordered: bool,
        per_input: bool,
        wake: Callable[[], None],
        name: str,
        length: int = -1,
    ) -> None:
        self.lock = threading.RLock()
        self.feeds = [Feed(self, k, rt) for k, rt in enumerate(stages)]
        self.lineage = Lineage(ordered=ordered, per_input=per_input)
        self._wake = wake
        self._name = name
        self.next_index = 0
        # The input's length when known (its length hint, as Pool's map takes it), else -1;
        # per stage, whether a flat stage comes before it (then its tail is not known).
        self.length = length
        self._flat_before = [any(rt.stage.flat for rt in stages[:k]) for k in range(len(stages))]
        self.reading_done = False  # the input ended, failed, or was stopped
        self.stop: BaseException | None = None  # why the input stopped early
        self.closed = False  # the consumer left: results are dropped
        self.unstarted: list[UnstartedTask] = []
        # Where the first stage's queued units cancelled after the consumer left go, when
        # they count as never started (``close(listed=True)``): the pipeline's report.
        self.late_unstarted: Callable[[list[UnstartedTask]], None] | None = None
        self._listed = False
        self._listing = False  # close() cancels the queued units of a listed call
        self._timers: Timers | None = None

    # ------------------------------------------------------------------ the face's side

    def window(self) -> int:
        """Tokens the flow may hold in all: the sum of the stages' capacities."""
        return sum(feed.rt.capacity() for feed in self.feeds)

    def want_input(self) -> int:
        """How many input items to read now: 0 until at least a unit of the first stage
        fits (reading one item at a time as room frees would cost a pump each)."""
        with self.lock:
            if self.reading_done or self.closed:
                return 0
            lineage = self.lineage
            window = self.window()
            # Results not taken yet count too: a consumer slower than the stages must not
            # let them pile up.
            room = window - lineage.live_tokens - len(lineage.ready)
            if lineage.ordered:
                room = min(room, window - lineage.waiting())  # (see _held_for_order)
            first = self.feeds[0]
            room = min(room, first.rt.capacity() - first.waiting())
            return room if room >= first.rt.unit_size() else 0

    def read_size(self) -> int:
        """Input items to read in one go: a unit of the first stage. One at a time when it is
        a batch stage with a ``batch_timeout`` and the input may wait for its next item (not
        a collection in memory): the items read go in, so that a partial batch leaves at its
        timeout while a read waits, not once the read of a whole batch has ended."""
        rt = self.feeds[0].rt
        timeout = rt.stage.batch_timeout
        if rt.batched and self.length < 0 and timeout is not None and timeout != math.inf:
            return 1
        return max(1, rt.unit_size())

    def admit(self, items: Sequence[Any]) -> None:
        """Items read from the input enter the first stage's buffer."""
        with self.lock:
            feed = self.feeds[0]
            for item in items:
                feed.buffer.append(self.lineage.new_input(self.next_index, item))
                self.next_index += 1
        self.pump()

    def input_ended(self, error: BaseException | None = None) -> None:
        """The input is exhausted (or failed with ``error``, or was stopped)."""
        with self.lock:
            self.reading_done = True
            if error is not None and self.stop is None:
                self.stop = error
        self.pump()  # partial batches no longer wait for more
        # The consumer may be waiting with nothing in flight (the pipeline closed while its
        # async input was quiet): it looks again, and ends.
        self._wake()

    def pop_ready(self) -> Result[Any] | None:
        with self.lock:
            ready = self.lineage.ready
            return ready.popleft() if ready else None

    def results_coming(self) -> bool:
        """Results wait to be taken, or inputs of this call are in the stages and come out
        without more input: not while a batch stage's partial batch waits for more (or for
        the input's end) with no ``batch_timeout`` to send it."""
        with self.lock:
            if self.lineage.ready:
                return True
            if not self.lineage.live_tokens:
                return False
            for feed in self.feeds:
                if feed.partial_since is not None:
                    timeout = feed.rt.stage.batch_timeout
                    if timeout is None or timeout == float("inf"):
                        return False
            return True

    def unstall(self) -> bool:
        """The face is about to wait: send a partial batch that nothing else would (see
        ``_stalled``: an ordered call's held-back window may have filled up with no pump
        since, as another call changed the stages' unit sizes). True if that moved it."""
        with self.lock:
            if not self._stalled():
                return False
        self.pump()
        with self.lock:
            return not self._stalled()

    def finished(self) -> bool:
        """Nothing more will come: the input ended, every token left, every Result taken."""
        with self.lock:
            return self.reading_done and not self.lineage.live_tokens and not self.lineage.ready

    def close(self, listed: bool = False, running: bool = False) -> None:
        """The consumer left: cancel this call's queued work in every stage, drop its tokens.
        The inputs still in flight count as cancelled (their outcomes are dropped from now).
        ``listed``: the pipeline is shutting down (the consumer left at a second signal, say):
        the inputs of the first stage's queued units are listed as never started, as the
        shutdown's own cancel would have listed them. ``running``: the consumer was cancelled
        (an AsyncPipeline's task): this call's running work is cancelled too."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self._listed = listed
            self.reading_done = True
            lineage = self.lineage
            lineage.cancelled += lineage.admitted - lineage.released
            if listed:  # read, and waiting for the first stage: never started
                first = self.feeds[0]
                self.unstarted += [_unstarted(first, token) for token in first.buffer]
            for feed in self.feeds:
                feed.buffer.clear()
                feed.solo.clear()
        self._listing = listed
        try:
            for feed in self.feeds:
                feed.rt.engine.cancel_sink(feed, running=running)
        finally:
            self._listing = False

    def never_started(self, items: Sequence[Any], reason: str) -> None:
        """Inputs the face read but never admitted (a read under way when the pipeline
        stopped reading, or when the consumer left): each counts as read and cancelled, with
        a Result saying so, and is listed as unstarted, like what a shutdown's deadline finds
        in the buffers."""
        with self.lock:
            first = self.feeds[0]
            for item in items:
                token = self.lineage.new_input(self.next_index, item)
                self.next_index += 1
                self.unstarted.append(_unstarted(first, token))
                self._cancel(feed=first, token=token, reason=reason)
        self._wake()

    def cancel_waiting(self, reason: str) -> None:
        """Stop now (a shutdown's deadline): tokens waiting in the buffers fail as cancelled;
        those read but never started by the first stage are listed as unstarted."""
        with self.lock:
            self.reading_done = True
            first = self.feeds[0]
            for feed in self.feeds:
                for token in [*feed.solo, *feed.buffer]:
                    if feed is first:
                        self.unstarted.append(_unstarted(first, token))
                    self._cancel(feed=feed, token=token, reason=reason)
                feed.buffer.clear()
                feed.solo.clear()
        self._wake()

    def _cancel(self, *, feed: Feed, token: Token, reason: str) -> None:
        """``token`` leaves at ``feed``'s stage, cancelled before it ran (lock held)."""
        error = TaskCancelled(f"input {token.origin.index} {reason}")
        self.lineage.failure(token, error, None, feed.rt.name, 0, 0.0)

    # ------------------------------------------------------------------ deliveries

    def delivered(self, feed: Feed, chunk: Unit) -> None:
        """A unit of ``feed``'s stage finished (part of it, for a retried or requeued unit)."""
        with self.lock:
            if self.closed:
                late = self._dropped(feed, chunk)
            else:
                late = None
        if late is not None:
            if late and self.late_unstarted is not None:
                self.late_unstarted(late)
            return
        with self.lock:
            rt = feed.rt
            k = feed.k
            last = k == len(self.feeds) - 1
            nxt = None if last else self.feeds[k + 1]
            lineage = self.lineage
            # Cancelled in the first stage's queue (a shutdown's deadline): read from the
            # input and never started, so the report lists them as the buffers' are.
            unstarted = k == 0 and chunk.cancelled and chunk.attempt == 0
            for i, outcome in enumerate(chunk.out):
                tokens = feed.inflight.pop(chunk.start + i, None)
                if tokens is None:
                    continue  # (cannot happen: each position is delivered once)
                feed.inflight_tokens -= len(tokens)
                if unstarted:
                    self.unstarted += [_unstarted(feed, token) for token in tokens]
                attempt, duration = chunk.attempt, chunk.durs[i]
                if type(outcome) is Failure:
                    if rt.batched and len(tokens) > 1 and rt.stage.split_failed_batches:
                        for token in tokens:  # run them one at a time: only the bad ones fail
                            token.solo = True
                        feed.solo.extend(tokens)
                        continue
                    for token in tokens:
                        lineage.failure(
                            token, outcome.error, outcome.traceback, rt.name, attempt, duration
                        )
                    continue
                outputs = self._outputs(rt, tokens, outcome, attempt, duration)
                if outputs is None:
                    continue  # they failed: a batch function's result of the wrong shape
                for token, value in zip(tokens, outputs):
                    if rt.stage.flat:
                        children = lineage.split(token, value)
                        if last:
                            for child in children:
                                lineage.output(child, child.value, attempt, duration)
                        else:
                            assert nxt is not None
                            nxt.buffer.extend(children)
                    elif last:
                        lineage.output(token, value, attempt, duration)
                    else:
                        assert nxt is not None
                        token.value = value
                        nxt.buffer.append(token)
            rt.adapt(chunk.durs)
        self.pump()
        self._wake()

    def _outputs(
        self, rt: StageRuntime, tokens: list[Token], outcome: Any, attempt: int, duration: float
    ) -> list[Any] | None:
        """The outputs of a finished call, one per token; None after failing them all."""
        if not rt.batched:
            return [outcome]
        if outcome is None:
            return [token.value for token in tokens]  # a sink: each item passes on unchanged
        if (
            isinstance(outcome, Sequence)
            and not isinstance(outcome, (str, bytes, bytearray))
            and len(outcome) == len(tokens)
        ):
            return list(outcome)
        if isinstance(outcome, (str, bytes, bytearray)):
            got = f"a {type(outcome).__name__} (one value, never taken as a sequence of outputs)"
        elif isinstance(outcome, Sequence):
            got = f"a sequence of {len(outcome)}"
        else:
            got = type(outcome).__name__
        error = WorkpoolError(
            f"stage {rt.name!r}: a batch function must return a sequence of one output per "
            f"item ({len(tokens)} here) or None (each item passes on unchanged), got {got}"
        )
        for token in tokens:
            self.lineage.failure(token, error, None, rt.name, attempt, duration)
        return None

    # ------------------------------------------------------------------ pumping

    def pump(self) -> None:
        """Move waiting tokens into the stages' pools while they have room (downstream first).

        Never holds the flow's lock while putting into a pool.
        """
        skip: set[int] = set()
        full: list[Any] = []  # engines to watch for room: after the lock is let go
        while True:
            with self.lock:
                job = self._next_unit(skip, full)
            if job is None:
                break
            feed, unit, tokens = job
            engine = feed.rt.engine
            try:
                accepted = engine.try_put(unit)
            except BaseException as e:  # the stage's pool closed (a shutdown's deadline)
                with self.lock:
                    self._refused(feed, unit, tokens)
                    for token in [*feed.solo, *feed.buffer]:
                        self.lineage.failure(token, _cancelled(e), None, feed.rt.name, 0, 0.0)
                    feed.buffer.clear()
                    feed.solo.clear()
                skip.add(feed.k)
                continue
            if not accepted:
                with self.lock:
                    self._refused(feed, unit, tokens)
                skip.add(feed.k)
                engine.watch_room(self)
        for engine in full:
            engine.watch_room(self)
        with self.lock:
            self._clocks()

    def _dropped(self, feed: Feed, chunk: Unit) -> list[UnstartedTask]:
        """A unit delivered after the consumer left: its outcomes go nowhere; the inputs of a
        first-stage unit cancelled in the queue are listed as never started when the
        pipeline shuts down (``close(listed=True)``). Lock held."""
        if not (self._listed and feed.k == 0 and chunk.cancelled and chunk.attempt == 0):
            return []
        late = []
        for i in range(len(chunk.out)):
            tokens = feed.inflight.pop(chunk.start + i, None)
            if tokens:
                feed.inflight_tokens -= len(tokens)
                late += [_unstarted(feed, token) for token in tokens]
        return late

    def room(self) -> None:
        """A stage's pool has room again (its engine's lock held: only wake the face)."""
        self._wake()

    def _next_unit(self, skip: set[int], full: list[Any]) -> tuple[Feed, Unit, list[Token]] | None:
        feeds = self.feeds
        for k in range(len(feeds) - 1, -1, -1):
            feed = feeds[k]
            if k in skip or not (feed.buffer or feed.solo) or self.closed:
                continue
            if k + 1 < len(feeds) and feeds[k + 1].waiting() >= feeds[k + 1].rt.capacity():
                continue  # held back: the next stage is full
            rt = feed.rt
            if not rt.engine.has_room():
                skip.add(k)
                full.append(rt.engine)
                continue
            if feed.solo:
                tokens = [feed.solo.popleft()]
            elif rt.batched:
                size = rt.unit_size()
                if len(feed.buffer) < size and not (feed.flush or self._upstream_done(k)):
                    self._arm(feed)
                    continue
                tokens = [feed.buffer.popleft() for _ in range(min(size, len(feed.buffer)))]
                feed.flush = False
                feed.partial_since = None
            else:
                size = rt.unit_size(self._left(k))
                tokens = [feed.buffer.popleft() for _ in range(min(size, len(feed.buffer)))]
            pos = feed.next_pos
            if rt.batched:
                entries: list[Any] = [[token.value for token in tokens]]
                feed.inflight[pos] = tokens
                feed.next_pos += 1
            else:
                entries = [token.value for token in tokens]
                for i, token in enumerate(tokens):
                    feed.inflight[pos + i] = [token]
                feed.next_pos += len(tokens)
            feed.inflight_tokens += len(tokens)
            return feed, Unit(rt.fn, entries, CALL_ITEM, pos, feed), tokens
        return None

    def _left(self, k: int) -> int:
        """Items still to come to stage ``k`` in this call, its buffer included, or -1 when
        unknown (the input's length is not known, or a flat stage comes before): what
        ``StageRuntime.unit_size`` shares among the stage's workers (lock held)."""
        if self.length < 0 or self._flat_before[k]:
            return -1
        unread = 0
        if not self.reading_done:
            unread = self.length - self.next_index
            if unread < 0:
                return -1  # more than the hint said: the rest is of unknown length
        feeds = self.feeds
        left = unread + feeds[k].waiting()
        for f in feeds[:k]:
            left += f.waiting() + f.inflight_tokens
        return left

    def _refused(self, feed: Feed, unit: Unit, tokens: list[Token]) -> None:
        for pos in range(unit.start, unit.start + len(unit.entries)):
            feed.inflight.pop(pos, None)
        feed.inflight_tokens -= len(tokens)
        if self.closed:
            return  # the consumer left meanwhile: close() counted them, nobody wants them
        if tokens[0].solo:
            feed.solo.extendleft(reversed(tokens))
        else:
            feed.buffer.extendleft(reversed(tokens))

    def _upstream_done(self, k: int) -> bool:
        """No more tokens can reach stage ``k``: flush its partial batch. So it is when the
        input ended, or when the call is stalled (see ``_stalled``), once the stages before
        ``k`` are empty: the partial batch of the first batch stage that holds one goes."""
        if not (self.reading_done or self._stalled()):
            return False
        return all(not f.waiting() and not f.inflight_tokens for f in self.feeds[:k])

    def _held_for_order(self) -> bool:
        """An ordered call reads no more input because the inputs it holds back for order
        fill its window: ``want_input``'s ordered bound (lock held)."""
        lineage = self.lineage
        return (
            lineage.ordered
            and not self.reading_done
            and not self.closed
            and self.window() - lineage.waiting() < self.feeds[0].rt.unit_size()
        )

    def _stalled(self) -> bool:
        """Only a partial batch could move this call (lock held): it is held back for order
        (no more input is read until an earlier input is done), nothing is in flight in any
        stage, and every token left waits in a batch stage's partial batch. Those batches
        would wait for ever for items that only the held inputs' release lets in: the input
        that holds the others back sits in one of them (without batch_timeout, or before
        it). While anything else moves (a call in flight ends, releasing inputs), a partial
        batch waits as usual."""
        if not self._held_for_order():
            return False
        for feed in self.feeds:
            if feed.inflight_tokens or feed.solo:
                return False
            buffer = feed.buffer
            if buffer and not (feed.rt.batched and len(buffer) < feed.rt.unit_size()):
                return False
        return True

    def _arm(self, feed: Feed) -> None:
        """A batch stage's partial batch waits at most its batch_timeout."""
        if feed.partial_since is not None:
            return
        rt = feed.rt
        now = rt.engine.now()
        feed.partial_since = now
        feed.partial_no += 1
        timeout = rt.stage.batch_timeout
        if timeout is None or timeout == float("inf"):
            return
        if self._timers is None:
            self._timers = Timers(
                self.lock, rt.engine.clock, self._on_timer, lambda _: self.pump(), self._name
            )
        # The timer names its partial batch: one that filled up and left before its
        # timeout leaves its timer behind, which must not send the next one early.
        self._timers.add(now + timeout, _FLUSH, (feed, feed.partial_no))

    def _on_timer(self, kind: int, payload: Any, now: float) -> list[Any]:
        feed, number = payload
        if feed.partial_since is None or feed.partial_no != number:
            return []  # that batch left already (full, or at the input's end)
        feed.flush = True
        return [None]  # so that the timer thread calls pump() once the lock is free

    def _clocks(self) -> None:
        """Backpressure and starvation of each stage, as of now (lock held)."""
        feeds = self.feeds
        done = self.reading_done and not self.lineage.live_tokens
        for k, feed in enumerate(feeds):
            rt = feed.rt
            free = rt.has_free_worker()
            blocked = bool(
                k + 1 < len(feeds)
                and feed.waiting()
                and feeds[k + 1].waiting() >= feeds[k + 1].rt.capacity()
            )
            starved = free and not feed.waiting() and not done and not self._upstream_done(k)
            rt.clocks(rt.engine.now(), blocked, starved and not self.closed)


def _unstarted(feed: Feed, token: Token) -> UnstartedTask:
    """An input read and never started by the first stage: ``fn(*args)`` runs it (a batch
    stage's function takes a list: a batch of that one item)."""
    value = token.value
    return UnstartedTask(
        token.origin.index, feed.rt.stage.fn, ([value],) if feed.rt.batched else (value,)
    )


def _cancelled(error: BaseException) -> BaseException:
    if isinstance(error, TaskCancelled):
        return error
    cancelled = TaskCancelled(f"never started: {error}")
    cancelled.__cause__ = error
    return cancelled
