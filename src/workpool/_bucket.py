"""The rate limit on task starts: a token bucket, run as its "virtual scheduling" twin (GCRA).

A start is allowed once the theoretical start time of the next task, minus the slack a
burst gives, has come; each start pushes that time one interval on. The engine asks it
under its lock: when the next start may go (``allowed_at``), to take one (``take``), and how
many starts would go now (``tokens``: an idle worker is room for a task only while a token
lets that task start, so that no more than ``queue_size`` accepted tasks ever wait).
"""

from __future__ import annotations

__all__ = ["Bucket"]


class Bucket:
    __slots__ = ("_next", "_slack", "burst", "interval")

    def __init__(self, interval: float, burst: int) -> None:
        self.interval = interval
        self.burst = burst
        self._slack = (burst - 1) * interval
        self._next = 0.0  # the theoretical start time of the next task

    def allowed_at(self) -> float:
        """The time from which the next start is allowed."""
        return self._next - self._slack

    def take(self, now: float) -> None:
        """One task starts at ``now`` (allowed: ``allowed_at() <= now``)."""
        self._next = max(self._next, now) + self.interval

    def tokens(self, now: float) -> int:
        """How many tasks could start at ``now``, one after another."""
        spare = now + self._slack - max(self._next, now)
        if spare < 0:
            return 0
        # (A hair of slack: a float sum of intervals must not lose a whole token.)
        return min(self.burst, int(spare / self.interval + 1e-9) + 1)
