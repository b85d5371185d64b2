"""W7: ``workpool run``, the command line, against ``xargs -P`` and against its own targets.

Rows (each the best of 3 whole runs, wall time from starting the process to its exit, so the
interpreter's start-up counts as it does for a user):

- ``xargs -P 8 -n 1 true`` over 2,000 inputs, and ``workpool run -j 8 -- true`` over the
  same: spawning short commands, where xargs is the floor to match;
- ``workpool run -j 8 --call bench_cli:noop`` over 200,000 inputs, with the journal off and
  on (``--journal``): the per-item cost of the CLI's own path (read, run, format, write,
  commit).

``--quick``: 500 commands and 20,000 calls. Two ways to run it::

    python benchmarks/run.py --only W7          # through the suite's harness (``build``)
    python benchmarks/bench_cli.py [--quick]    # standalone (``run``), prints the rows
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from time import perf_counter
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPS = 3
WORKERS = 8


def noop(x: Any) -> Any:
    """The ``--call`` target: does nothing, so the CLI's own cost is what is measured."""
    return x


def _env() -> dict[str, str]:
    """Child environment: the same workpool as this process, and bytecode caching on."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # recompiling on every start is not the CLI's cost
    src = BENCH_DIR.parent / "src"
    paths = [str(src)] if (src / "workpool").is_dir() else []
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _time(cmd: list[str], *, stdin_path: Path | None = None, cwd: Path = BENCH_DIR) -> float:
    """Wall seconds of one run of ``cmd``; raises if it fails."""
    with open(stdin_path or os.devnull, "rb") as stdin:
        t0 = perf_counter()
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            env=_env(),
            stdin=stdin,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        elapsed = perf_counter() - t0
    if proc.returncode:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}: {tail}")
    return elapsed


def _inputs(n: int, folder: Path) -> Path:
    path = folder / f"inputs-{n}.txt"
    path.write_text("".join(f"{i}\n" for i in range(n)))
    return path


def _workpool(*args: str) -> list[str]:
    return [sys.executable, "-m", "workpool", "run", "-j", str(WORKERS), *args]


def _measure(n: int, make_cmd: Any, use_stdin: bool = False) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="wp-bench-cli-") as tmp:
        folder = Path(tmp)
        inputs = _inputs(n, folder)
        _time(make_cmd(inputs, folder, 0), stdin_path=inputs if use_stdin else None)  # warm-up
        best = min(
            _time(make_cmd(inputs, folder, rep + 1), stdin_path=inputs if use_stdin else None)
            for rep in range(REPS)
        )
    return {"seconds": best, "items": n, "note": "", "metrics": {"ms": best * 1000}}


# --------------------------------------------------------------------------- row functions


def xargs_true(n: int) -> dict[str, Any]:
    """``xargs -P 8 -n 1 true < inputs``."""
    xargs = shutil.which("xargs")
    if xargs is None:
        raise RuntimeError("xargs is not installed")
    return _measure(
        n, lambda inputs, folder, rep: [xargs, "-P", str(WORKERS), "-n", "1", "true"], True
    )


def workpool_true(n: int) -> dict[str, Any]:
    """``workpool run -j 8 --input inputs --output /dev/null -- true``."""
    return _measure(
        n,
        lambda inputs, folder, rep: _workpool(
            "--input", str(inputs), "--output", os.devnull, "--", "true"
        ),
    )


def workpool_call(n: int, journal: bool) -> dict[str, Any]:
    """``workpool run -j 8 --call bench_cli:noop`` (a fresh journal for every run)."""

    def cmd(inputs: Path, folder: Path, rep: int) -> list[str]:
        args = ["--input", str(inputs), "--call", "bench_cli:noop", "--output"]
        if journal:
            args += [str(folder / f"out-{rep}.jsonl"), "--journal", str(folder / f"run-{rep}.db")]
        else:
            args += [os.devnull]
        return _workpool(*args)

    return _measure(n, cmd)


# --------------------------------------------------------------------------- registration

XARGS = "xargs -P 8 -n 1 true"
WP_TRUE = "workpool run -j 8 -- true"
WP_CALL = "workpool run -j 8 --call noop"
WP_JOURNAL = "workpool run -j 8 --call noop --journal"


def _sizes(quick: bool) -> tuple[int, int]:
    return (500, 20_000) if quick else (2_000, 200_000)


def build(cfg: Any) -> Any:
    """The workload for ``benchmarks/run.py`` (add ``"bench_cli"`` to its ``WORKLOADS``)."""
    from harness import RowSpec, Target, Workload

    n_cmd, n_call = _sizes(cfg.quick)
    m = __name__
    return Workload(
        id="W7",
        title=f"workpool run: {n_cmd:,} `true` commands vs xargs -P 8; {n_call:,} --call "
        f"no-ops; best of {REPS}, wall time incl. start-up",
        description="the command line",
        default_ref=XARGS,
        columns=[("ms", "ms", ".0f")],
        rows=[
            RowSpec(XARGS, m, "xargs_true", {"n": n_cmd}),
            RowSpec(WP_TRUE, m, "workpool_true", {"n": n_cmd}, ("workpool",)),
            # The --call rows are compared with each other: the ratio is the journal's cost.
            RowSpec(
                WP_CALL,
                m,
                "workpool_call",
                {"n": n_call, "journal": False},
                ("workpool",),
                ref=WP_CALL,
            ),
            RowSpec(
                WP_JOURNAL,
                m,
                "workpool_call",
                {"n": n_call, "journal": True},
                ("workpool",),
                ref=WP_CALL,
            ),
        ],
        targets=[
            Target("W7 run -- true >= 1.0x xargs -P 8 (items/s)", WP_TRUE, ">=", 1.0, ref=XARGS),
            Target("W7 --call no-op >= 100,000 items/s", WP_CALL, ">=", 100_000, unit="/s"),
            Target(
                "W7 --call no-op, journal on >= 20,000 items/s",
                WP_JOURNAL,
                ">=",
                20_000,
                unit="/s",
            ),
        ],
    )


def run(quick: bool) -> list[dict[str, Any]]:
    """Measure every row in this process's children; one dict per row.

    Each dict: ``name``, ``seconds`` (best wall time), ``items``, ``items_per_s``, and
    ``vs_xargs`` (items/s relative to the xargs row, for the command rows).
    """
    n_cmd, n_call = _sizes(quick)
    rows: list[tuple[str, Callable[..., dict[str, Any]], dict[str, Any]]] = [
        (XARGS, xargs_true, {"n": n_cmd}),
        (WP_TRUE, workpool_true, {"n": n_cmd}),
        (WP_CALL, workpool_call, {"n": n_call, "journal": False}),
        (WP_JOURNAL, workpool_call, {"n": n_call, "journal": True}),
    ]
    out: list[dict[str, Any]] = []
    for name, fn, kwargs in rows:
        data = fn(**kwargs)
        out.append(
            {
                "name": name,
                "seconds": data["seconds"],
                "items": data["items"],
                "items_per_s": data["items"] / data["seconds"],
            }
        )
    xargs_rate = out[0]["items_per_s"]
    out[1]["vs_xargs"] = out[1]["items_per_s"] / xargs_rate
    return out


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv[1:]):
        extra = f"  ({row['vs_xargs']:.2f}x xargs)" if "vs_xargs" in row else ""
        print(
            f"{row['name']:<42} {row['seconds']:8.3f} s  {row['items_per_s']:>10,.0f} items/s{extra}"
        )
