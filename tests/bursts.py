"""An input that comes in bursts, for the tests of inputs that would wait (a quiet pipe)."""

from __future__ import annotations


class Bursts:
    """An input that comes in bursts, like lines down a pipe: the items of a burst are at hand
    at once, and it says how many are left (``_workpool_at_hand``, as ``workpool run``'s
    reader of a pipe does); past them the input would have to wait for the next burst. Each
    time it is asked for an item past a burst (where a real input would wait), it records how
    many items were read and how many results the consumer had by then."""

    def __init__(self, bursts: list[int]) -> None:
        self._bursts = list(bursts)
        self._at_hand = 0
        self.read = 0
        self.received = 0  # the consumer counts its results here
        self.waits: list[tuple[int, int]] = []  # (read, received) where the input waited

    def __iter__(self) -> Bursts:
        return self

    def _workpool_at_hand(self) -> int:
        return self._at_hand

    def __next__(self) -> int:
        if not self._at_hand:
            self.waits.append((self.read, self.received))
            if not self._bursts:
                raise StopIteration
            self._at_hand = self._bursts.pop(0)
        self._at_hand -= 1
        self.read += 1
        return self.read - 1
