"""Reading an async input for ``AsyncPool.map``/``results``, in a task of its own.

The consumer cannot await the input itself: while an ``await input.__anext__()`` waits (a
queue, a socket, a slow API), results that are ready would wait with it. So a reader task
reads the input one item at a time into a buffer, and the consumer hands whatever is there to
the pool whenever it runs. A slow input thus goes to the pool item by item, as it comes; a
fast one (items ready at once) is read a whole window at a time, without a turn of the loop
per item, and goes to the pool in full units.

The call owns its input: when it stops early (``aclose``, ``break``, a cancelled consumer,
an error), the input is closed (its ``aclose()``: an async generator's ``finally`` and
``async with`` blocks run) by a task of its own, once a read under way has ended;
``AsyncStreamIterator.aclose`` awaits it. Left to the garbage collector,
an async generator would be closed only when the loop shuts down.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

__all__ = ["AsyncReader", "cancel_requested"]


class AsyncReader:
    """Reads ``source`` into ``buffer`` in a task on ``loop``, up to the number of items the
    consumer last asked for (``want``), calling ``wake()`` (on the loop) when an item comes to
    an empty buffer and when the reading stops. ``ended``: the input is done; ``error``: what
    it raised, if it failed.
    """

    __slots__ = (
        "_cancelled",
        "_closer",
        "_loop",
        "_source",
        "_task",
        "_wake",
        "_want",
        "buffer",
        "ended",
        "error",
    )

    def __init__(
        self, source: AsyncIterator[Any], loop: asyncio.AbstractEventLoop, wake: Callable[[], None]
    ) -> None:
        self._source = source
        self._loop = loop
        self._wake = wake
        self._task: asyncio.Task[None] | None = None
        self._want = 0
        self.buffer: deque[Any] = deque()
        self.ended = False
        self.error: BaseException | None = None
        self._cancelled = False
        self._closer: asyncio.Task[None] | None = None  # closes the input (see cancel)

    def want(self, n: int) -> None:
        """Read until ``n`` items are buffered (a read under way takes the new number)."""
        self._want = n
        if self.ended or len(self.buffer) >= n:
            return
        task = self._task
        if task is None or task.done():
            self._task = self._loop.create_task(self._read())

    async def _read(self) -> None:
        buffer = self.buffer
        source = self._source
        wake = self._wake
        try:
            while len(buffer) < self._want and not self._cancelled:
                buffer.append(await source.__anext__())
                if len(buffer) == 1:
                    wake()  # (with more buffered, the consumer was woken already)
        except StopAsyncIteration:
            self.ended = True
        except asyncio.CancelledError as e:
            if self._cancelled or cancel_requested():
                raise  # the call stopped: cancel() (the input sees the cancellation)
            # The input's own CancelledError (it awaited something that was cancelled): its
            # failure, not this task's end, or the consumer would wait for it for ever.
            self.ended = True
            self.error = e
        except BaseException as e:  # the input failed: what it produced before still runs
            self.ended = True
            self.error = e
        wake()

    def cancel(self) -> None:
        """Stop reading (the call stopped) and close the input; an item being awaited is
        never taken."""
        if self._cancelled:
            return
        self.ended = True
        self._cancelled = True
        try:
            if asyncio.events._get_running_loop() is self._loop:
                self._stop()
            else:  # (a call dropped in another thread, say a worker's wake-up)
                self._loop.call_soon_threadsafe(self._stop)
        except RuntimeError:
            pass  # its loop is closed: the task is gone with it

    def _stop(self) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()
        if self._closer is None and hasattr(self._source, "aclose"):
            self._closer = self._loop.create_task(self._close_input(task))

    async def closed(self) -> None:
        """Wait until the input is closed, after ``cancel()`` (on the loop)."""
        closer = self._closer
        if closer is not None and not closer.done():
            await asyncio.wait([closer])

    async def _close_input(self, reading: asyncio.Task[None] | None) -> None:
        """Close the input once the read under way (cancelled) has ended: a generator
        cannot be closed while it runs."""
        if reading is not None and not reading.done():
            await asyncio.wait([reading], timeout=_READ_GRACE)
            if not reading.done():
                # The input ignores the cancellation of a read that never ends: it cannot be
                # closed while it runs (Python refuses), and nothing waits for it longer.
                self._loop.call_exception_handler(
                    {
                        "message": "the input of an AsyncPool map/results call ignored the "
                        f"cancellation of a read for {_READ_GRACE:g}s; it is left unclosed",
                        "task": reading,
                    }
                )
                return
        try:
            await self._source.aclose()  # type: ignore[attr-defined]
        except Exception as e:
            self._loop.call_exception_handler(
                {
                    "message": "the input of an AsyncPool map/results call failed to close",
                    "exception": e,
                }
            )


# How long closing an input waits for a cancelled read under way to end.
_READ_GRACE = 1.0


def cancel_requested() -> bool:
    """True when someone asked to cancel the current task (Python 3.11+; before, assumed)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return bool(cancelling()) if cancelling is not None else True
