"""Endless inputs and the memory probe of the streaming workloads (A3, P1's endless rows).

Memory is measured the way W5 measures it (in the process that consumes the results):

* ``RSS +MB`` (the growth) = the highest RSS sampled after the first ``base_at`` results
  (sampled every ``every`` results, and at the last) minus the RSS at the ``base_at``-th;
* ``peak +MB`` = that highest sample minus the RSS before the pool was created;
* ``read-ahead`` = the most items taken from the input but not yet yielded as results
  (sampled every 1,000 results): what "bounded intake" means in items.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from harness import rss_bytes

MB = 1024 * 1024
AHEAD_EVERY = 1_000


class Endless:
    """An endless input: ``make(i)`` for i = 0, 1, 2, ..., counting what was taken.

    ``iter(endless)`` is a generator of them, ``endless.agen()`` an async generator (so that a
    pool sees a real async iterable, not an object that is both); ``produced`` is how many
    items were taken so far.
    """

    def __init__(self, make: Callable[[int], Any]) -> None:
        self.make = make
        self.produced = 0

    def __iter__(self) -> Iterator[Any]:
        i = 0
        while True:
            self.produced = i + 1
            yield self.make(i)
            i += 1

    async def agen(self) -> AsyncIterator[Any]:
        i = 0
        while True:
            self.produced = i + 1
            yield self.make(i)
            i += 1


def kib(i: int) -> bytes:
    """A fresh 1 KiB bytes object (W5's item)."""
    return i.to_bytes(8, "little") * 128


class MemoryProbe:
    """Call ``start()`` before the pool exists and ``tick(count)`` after every result."""

    def __init__(self, n: int, base_at: int, every: int, source: Endless) -> None:
        if not 0 < base_at < n or base_at % every:
            raise ValueError(f"base_at must be a multiple of {every} in (0, {n}), got {base_at}")
        self.n, self.base_at, self.every, self.source = n, base_at, every, source
        self.rss0 = self.base = self.peak = 0
        self.ahead = 0

    def start(self) -> None:
        self.rss0 = self.base = self.peak = rss_bytes()

    def tick(self, count: int) -> None:
        if count % AHEAD_EVERY == 0:
            self.ahead = max(self.ahead, self.source.produced - count)
        if count % self.every == 0 or count == self.n:
            rss = rss_bytes()
            if count == self.base_at:
                self.base = self.peak = rss
            elif count > self.base_at:
                self.peak = max(self.peak, rss)

    def metrics(self) -> dict[str, float]:
        return {
            "rss_growth_mb": (self.peak - self.base) / MB,
            "peak_mb": (self.peak - self.rss0) / MB,
            "read_ahead": float(self.ahead),
        }
