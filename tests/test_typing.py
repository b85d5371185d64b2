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


def test_map_results_and_submit_check_fn_against_their_inputs(tmp_path: Path) -> None:
    program = tmp_path / "prog.py"
    text = textwrap.dedent(PROGRAM)
    program.write_text(text)
    expected = [n for n, line in enumerate(text.splitlines(), 1) if "# E" in line]
    out, err, _ = mypy_api.run(
        ["--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"), str(program)]
    )
    errors = sorted({int(line.split(":")[1]) for line in out.splitlines() if ": error:" in line})
    assert len(expected) == 6
    assert errors == expected, out + err
