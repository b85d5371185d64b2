"""Module-level stage functions of the pipeline tests (worker processes import them here)."""

from __future__ import annotations

import asyncio
from typing import Any


def double(x: int) -> int:
    return 2 * x


def inc(x: int) -> int:
    return x + 1


def pair(x: int) -> list[int]:
    return [x, x]


def upto(x: int) -> list[int]:
    """``x % 3`` children: 0, 1 or 2 (zero drops the input's branch)."""
    return list(range(x % 3))


def fail_on_7(x: int) -> int:
    if x % 10 == 7:
        raise ValueError(f"seven: {x}")
    return x


async def adouble(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


async def asplit(x: int) -> Any:
    for i in range(2):
        await asyncio.sleep(0)
        yield x * 10 + i


def total(batch: list[int]) -> list[int]:
    """A batch function: one output per item."""
    return [x + 1000 for x in batch]


def sink(batch: list[int]) -> None:
    """A batch sink: items pass on unchanged."""
    return None


def batch_fails_on_13(batch: list[int]) -> list[int]:
    if 13 in batch:
        raise ValueError("13 in this batch")
    return batch
