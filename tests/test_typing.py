"""Static typing of the public API, checked by running mypy on small programs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")

pytestmark = pytest.mark.timeout(120)

PROGRAM = """
from workpool import Pool, Result

def fetch(url: str) -> bytes:
    return url.encode()

def add(a: int, b: int) -> int:
    return a + b

with Pool(2) as pool:
    ok1: list[bytes] = list(pool.map(fetch, ["a", "b"]))
    ok2: list[Result[bytes]] = list(pool.results(fetch, ["a"]))
    ok3: list[int] = list(pool.map(add, [1], [2]))
    ok4: list[Result[int]] = list(pool.results(add, [1], [2], ordered=True))
    ok5 = pool.submit(add, 1, 2).result() + 1
    bad1 = list(pool.map(fetch, [1, 2]))                 # E: int is not str
    bad2 = list(pool.results(fetch, [1, 2]))             # E
    bad3 = list(pool.map(add, [1], ["x"]))               # E: str is not int
    bad4 = list(pool.results(add, ["x"], [2]))           # E
    bad5 = pool.submit(fetch, 3)                         # E
    bad6: list[str] = list(pool.map(fetch, ["a"]))       # E: bytes is not str
"""


def check_program(tmp_path: Path, source: str, errors_expected: int) -> None:
    """Run mypy --strict on ``source``: it must report errors on exactly the lines marked
    ``# E`` (there are ``errors_expected`` of them), and nowhere else."""
    program = tmp_path / "prog.py"
    text = textwrap.dedent(source)
    program.write_text(text)
    expected = [n for n, line in enumerate(text.splitlines(), 1) if "# E" in line]
    out, err, _ = mypy_api.run(
        ["--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"), str(program)]
    )
    errors = sorted({int(line.split(":")[1]) for line in out.splitlines() if ": error:" in line})
    assert len(expected) == errors_expected
    assert errors == expected, out + err


def test_map_results_and_submit_check_fn_against_their_inputs(tmp_path: Path) -> None:
    check_program(tmp_path, PROGRAM, 6)


ASYNC_PROGRAM = """
import asyncio
from collections.abc import AsyncIterator
from workpool import AsyncPool, Pool, Result

async def fetch(url: str) -> bytes:
    return url.encode()

async def add(a: int, b: int) -> int:
    return a + b

class Urls:  # an async iterable that is not an iterator
    def __aiter__(self) -> AsyncIterator[str]:
        return self._gen()

    async def _gen(self) -> AsyncIterator[str]:
        yield "a"

with Pool(2, backend="async") as pool:
    ok1: list[bytes] = list(pool.map(fetch, ["a", "b"]))   # the coroutine's value
    ok2: list[Result[bytes]] = list(pool.results(fetch, ["a"]))
    ok3: list[int] = list(pool.map(add, [1], [2]))
    ok4: bytes = pool.submit(fetch, "a").result()
    task = pool.try_submit(add, 1, 2)
    ok5: int | None = None if task is None else task.result()
    values = pool.map(fetch, ["a"])
    values.close()                                          # map is a generator
    pool.results(fetch, ["a"]).close()
    bad1: list[str] = list(pool.map(fetch, ["a"]))          # E: bytes is not str
    bad2 = pool.submit(fetch, 3)                            # E: int is not str
    bad3: int = pool.submit(add, 1, 2)                      # E: a Task, not its value

async def main() -> None:
    async with AsyncPool(2) as apool:
        got: list[bytes] = [v async for v in apool.map(fetch, Urls())]
        res: list[Result[bytes]] = [r async for r in apool.results(fetch, Urls())]
        bad4: list[str] = [v async for v in apool.map(fetch, Urls())]  # E
        stream: AsyncIterator[bytes] = apool.map(fetch, ["a"])  # an async iterator
        await stream.__anext__()
        await apool.results(fetch, ["a"]).aclose()              # that can be closed early

asyncio.run(main())
"""


def test_coroutine_functions_type_as_their_values_and_streams_as_generators(
    tmp_path: Path,
) -> None:
    check_program(tmp_path, ASYNC_PROGRAM, 4)
