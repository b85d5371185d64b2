"""The README's Python examples run, as written.

Each ```python block of README.md is executed on its own. The few names a block uses without
defining (the reader's own ``fetch``, ``save``, ... in the first examples) come from the
prelude below, small stand-ins that do what the prose says they do. A block that names a Dask
scheduler by address gets the test cluster's.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)

pytestmark = pytest.mark.timeout(120)


def prelude() -> dict[str, Any]:
    import workpool

    saved: list[Any] = []
    return {
        "__name__": "readme_example",  # not importable: functions travel by value
        "workpool": workpool,
        "fetch": lambda url: url.upper(),
        "urls": [f"https://example.org/{i}" for i in range(50)],
        "log": logging.getLogger("readme"),
        "save": saved.append,
        "saved": saved,
        "pages": lambda url: [f"{url}/{i}" for i in range(3)],
        "get": lambda page, timeout=None: page,
        "simulate": abs,
        "parameters": range(-20, 0),
    }


LOCAL = [b for b in BLOCKS if 'backend="dask"' not in b]
DASK = [b for b in BLOCKS if 'backend="dask"' in b]


def _ids(blocks: list[str]) -> list[str]:
    return [f"{BLOCKS.index(b)}-{b.splitlines()[0][:40]}" for b in blocks]


def test_the_readme_has_python_examples() -> None:
    assert len(LOCAL) >= 5 and DASK, "the README's Python examples were not found"


@pytest.mark.parametrize("block", LOCAL, ids=_ids(LOCAL))
def test_a_readme_example_runs(block: str) -> None:
    ns = run(block)
    if 'if __name__ == "__main__":' in block:
        ns["main"]()  # (run as a script, it would)
    if "def crawl" in block:
        from workpool import Pool

        with Pool(workers=2) as pool:
            assert list(pool.map(ns["crawl"], ["a", "b"])) == [None, None]
    if "pool.results(fetch, urls)" in block:
        assert sorted(ns["saved"]) == sorted(u.upper() for u in ns["urls"])
    if "done = []" in block:
        assert sorted(ns["done"]) == [n * n for n in range(1000)]


@pytest.mark.parametrize("block", DASK, ids=_ids(DASK))
def test_a_readme_dask_example_runs(block: str, dask_cluster: Any) -> None:
    # (With no address, Pool(backend="dask") finds the test cluster as it would the one a
    # user configured: see conftest.)
    ns = run(block.replace("tcp://scheduler:8786", dask_cluster.address))
    assert sorted((r.index, r.value) for r in ns["results"]) == list(enumerate(range(20, 0, -1)))


def run(block: str) -> dict[str, Any]:
    ns = prelude()
    exec(compile(block, str(README), "exec"), ns)
    return ns
