"""W6: fixed costs — create a pool + run one task + shut down, and ``import workpool``."""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.pool import ThreadPool
from time import perf_counter
from typing import Any

from harness import Config, RowSpec, Target, Workload, child_env, measurement, median_ms

WORKERS = 4


def noop(x: Any) -> Any:
    return x


def _lifecycle(reps: int, once: Any) -> dict[str, Any]:
    once()  # warm-up: first use pays lazy imports and allocator growth
    samples = []
    for _ in range(reps):
        t0 = perf_counter()
        once()
        samples.append(perf_counter() - t0)
    med = median_ms(samples)
    return measurement(med / 1000.0, None, median_ms=med, min_ms=min(samples) * 1000.0)


def wp_lifecycle(reps: int) -> dict[str, Any]:
    from workpool import Pool

    def once() -> None:
        with Pool(workers=WORKERS) as pool:
            pool.submit(noop, 1).result()

    return _lifecycle(reps, once)


def tpe_lifecycle(reps: int) -> dict[str, Any]:
    def once() -> None:
        with ThreadPoolExecutor(WORKERS) as ex:
            ex.submit(noop, 1).result()

    return _lifecycle(reps, once)


def threadpool_lifecycle(reps: int) -> dict[str, Any]:
    def once() -> None:
        pool = ThreadPool(WORKERS)
        pool.apply_async(noop, (1,)).get()
        pool.close()
        pool.join()

    return _lifecycle(reps, once)


# --------------------------------------------------------------------------- import time


def _run_python(code: str, *flags: str, write_bytecode: bool = False) -> tuple[float, str]:
    env = child_env()
    if write_bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    t0 = perf_counter()
    proc = subprocess.run(
        [sys.executable, *flags, "-c", code],
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = perf_counter() - t0
    if proc.returncode:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"python -c {code!r} exited {proc.returncode}: {last}")
    return elapsed, proc.stderr


def _warm(code: str) -> None:
    """Run ``code`` once with bytecode writing on, as any installed package has its ``.pyc``
    files: with PYTHONDONTWRITEBYTECODE set (as in some dev shells) every import would
    otherwise compile workpool's sources again, which is not what a user's import costs."""
    _run_python(code, write_bytecode=True)


def import_wall(module: str, reps: int, touch: str = "") -> dict[str, Any]:
    """best(python -c "import M; M.touch") - best(python -c "pass"), interleaved.

    ``touch`` names an attribute to access after the import, so that a package that is not
    really there (a namespace package, a half-written tree) fails instead of timing 0 ms.
    """
    code = f"import {module}" + (f"; {module}.{touch}" if touch else "")
    _warm(code)
    with_import, bare = [], []
    for _ in range(reps):
        bare.append(_run_python("pass")[0])
        with_import.append(_run_python(code)[0])
    diff = min(with_import) - min(bare)
    return measurement(diff, None, ms=diff * 1000.0, startup_ms=min(bare) * 1000.0)


_IMPORTTIME = re.compile(r"^import time:\s+(\d+)\s*\|\s*(\d+)\s*\|( *)(\S+)\s*$")


def import_importtime(module: str, reps: int, touch: str = "") -> dict[str, Any]:
    """Best cumulative time of ``module`` under ``-X importtime``, plus its heaviest imports."""
    code = f"import {module}" + (f"; {module}.{touch}" if touch else "")
    _warm(code)
    best_us: int | None = None
    best_children: list[tuple[int, str]] = []
    for _ in range(reps):
        _, stderr = _run_python(code, "-X", "importtime")
        entries = []  # (cumulative us, depth, name) in completion order
        for line in stderr.splitlines():
            m = _IMPORTTIME.match(line)
            if m:
                entries.append((int(m.group(2)), (len(m.group(3)) - 1) // 2, m.group(4)))
        # ``module`` completes last among its subtree; its subtree is the run of deeper
        # entries right before it.
        for pos, (cum, depth, name) in enumerate(entries):
            if name == module and depth == 0:
                children = []
                j = pos - 1
                while j >= 0 and entries[j][1] > 0:
                    if entries[j][1] == 1:
                        children.append((entries[j][0], entries[j][2]))
                    j -= 1
                if best_us is None or cum < best_us:
                    best_us, best_children = cum, children
                break
    if best_us is None:
        raise RuntimeError(f"{module} not found in -X importtime output")
    heavy = sorted(best_children, reverse=True)[:4]
    note = (
        "heaviest: " + ", ".join(f"{name} {us / 1000:.1f} ms" for us, name in heavy)
        if heavy
        else ""
    )
    return measurement(best_us / 1e6, None, note=note, ms=best_us / 1000.0)


WP = "workpool: with Pool(4): submit().result()"
TPE = f"TPE({WORKERS}): submit().result()"
IMPORT_WALL = "import workpool (wall, minus bare python)"
IMPORT_USE_WALL = "import workpool; workpool.Pool (wall)"
IMPORT_FLOOR_WALL = "import concurrent.futures, dataclasses, typing (wall)"
IMPORT_TIME = "import workpool (-X importtime cumulative)"
IMPORT_CF = "import concurrent.futures (-X importtime)"
IMPORT_CF_WALL = "import concurrent.futures (wall)"


def build(cfg: Config) -> Workload:
    reps = 50 if cfg.quick else 200
    ireps = 5 if cfg.quick else 10
    m = __name__
    wp = ("workpool",)
    return Workload(
        id="W6",
        title=f"create + 1 task + shutdown (median of {reps}), import time (best of {ireps}); ratio = time / ref",
        description="fixed costs: pool lifecycle and import",
        ratio_mode="time",
        columns=[
            ("median_ms", "median ms", ".3f"),
            ("min_ms", "min ms", ".3f"),
            ("ms", "ms", ".1f"),
        ],
        rows=[
            RowSpec(WP, m, "wp_lifecycle", {"reps": reps}, wp, ref=TPE),
            RowSpec(TPE, m, "tpe_lifecycle", {"reps": reps}),
            RowSpec(
                f"ThreadPool({WORKERS}): apply_async().get() + close/join",
                m,
                "threadpool_lifecycle",
                {"reps": reps},
                ref=TPE,
            ),
            RowSpec(
                IMPORT_WALL,
                m,
                "import_wall",
                {"module": "workpool", "reps": ireps, "touch": "__all__"},
                wp,
                ref=IMPORT_CF_WALL,
                note="python -c 'import workpool; workpool.__all__' (the public names load on "
                "first use, PEP 562)",
            ),
            RowSpec(
                IMPORT_USE_WALL,
                m,
                "import_wall",
                {"module": "workpool", "reps": ireps, "touch": "Pool"},
                wp,
                ref=IMPORT_FLOOR_WALL,
                note="first use: loads the engine; the ref row is the stdlib its public types "
                "need (Executor/Future, the Result dataclass, Generic)",
            ),
            RowSpec(
                IMPORT_FLOOR_WALL,
                m,
                "import_wall",
                {"module": "concurrent.futures, dataclasses, typing", "reps": ireps},
            ),
            RowSpec(
                IMPORT_CF_WALL, m, "import_wall", {"module": "concurrent.futures", "reps": ireps}
            ),
            RowSpec(
                IMPORT_TIME,
                m,
                "import_importtime",
                {"module": "workpool", "reps": ireps, "touch": "Pool"},
                wp,
                ref=IMPORT_CF,
            ),
            RowSpec(
                IMPORT_CF, m, "import_importtime", {"module": "concurrent.futures", "reps": ireps}
            ),
        ],
        targets=[
            Target(
                "W6 create+task+shutdown <= 1 ms (min)", WP, "<=", 1.0, metric="min_ms", unit="ms"
            ),
            Target(
                "W6 create+task+shutdown <= 1 ms (median)",
                WP,
                "<=",
                1.0,
                metric="median_ms",
                unit="ms",
            ),
            Target(
                "W6 import workpool <= 30 ms (wall)",
                IMPORT_WALL,
                "<=",
                30.0,
                metric="ms",
                unit="ms",
            ),
            Target(
                "W6 import workpool <= 30 ms (-X importtime)",
                IMPORT_TIME,
                "<=",
                30.0,
                metric="ms",
                unit="ms",
            ),
        ],
    )
