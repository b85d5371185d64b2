"""Benchmark suite of workpool: every workload compares workpool with its peers in one run.

    python benchmarks/run.py                 # everything, full sizes
    python benchmarks/run.py --quick         # smaller N
    python benchmarks/run.py --only W1,W3 --json out.json
    python benchmarks/run.py --only A2 --rounds 3   # rows in turn 3 times, each row's best

To add a workload: write ``benchmarks/wN_something.py`` with ``build(cfg) -> Workload``
(see harness.py and any existing workload) and add its module name to ``WORKLOADS``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import importlib.util
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from harness import (  # noqa: E402
    Config,
    RowResult,
    TargetResult,
    Workload,
    compute_ratios,
    evaluate_targets,
    run_row,
)

# The registry: workload modules, in the order they run.
WORKLOADS: list[str] = [
    "w1_thread_overhead",
    "w2_process_overhead",
    "w3_sleep_latency",
    "w4_process_cpu",
    "w5_streaming_memory",
    "w6_startup",
    "w6p_process_startup",
    "wcrash_process_recovery",
    "bench_cli",
    "a1_async_overhead",
    "a2_async_sleep",
    "a3_async_streaming",
    "p1_pipeline",
    "d1_dask_overhead",
    "d2_dask_sleep",
    "d3_dask_many",
]


def _ensure_workpool_importable() -> None:
    """Fall back to the source tree when workpool is not installed (e.g. a bare venv)."""
    if importlib.util.find_spec("workpool") is None:
        src = BENCH_DIR.parent / "src"
        if (src / "workpool").is_dir():
            sys.path.insert(0, str(src))


def load_workloads(cfg: Config, only: set[str] | None) -> list[Workload]:
    out = []
    for name in WORKLOADS:
        workload = importlib.import_module(name).build(cfg)
        if only is None or workload.id.upper() in only:
            out.append(workload)
    return out


# --------------------------------------------------------------------------- formatting


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 1.0:
        return f"{seconds:.3f} s"
    return f"{seconds * 1000:.3f} ms"


def fmt_rate(rate: float | None) -> str:
    if rate is None:
        return "-"
    if rate >= 1e6:
        return f"{rate / 1e6:.2f} M/s"
    if rate >= 1e3:
        return f"{rate / 1e3:.1f} k/s"
    return f"{rate:.1f} /s"


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}x" if value < 2 else f"{value:.2f}x"


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "x":
        return fmt_ratio(value)
    return f"{value:.3g} {unit}" if abs(value) < 100 else f"{value:.0f} {unit}"


def render_table(workload: Workload, rows: list[RowResult]) -> str:
    header = ["name", "time", "items/s", "ratio", "vs"]
    header += [title for _, title, _ in workload.columns]
    header.append("note")
    lines = []
    for r in rows:
        if r.status != "ok":
            lines.append([r.name, r.detail] + [""] * (len(header) - 2))
            continue
        cells = [
            r.name,
            fmt_time(r.seconds),
            fmt_rate(r.items_per_s),
            fmt_ratio(r.ratio),
            r.ref or "",
        ]
        for key, _, spec in workload.columns:
            value = r.metrics.get(key)
            cells.append("-" if value is None else format(value, spec))
        cells.append(r.note)
        lines.append(cells)
    widths = [len(h) for h in header]
    for cells in lines:
        if len(cells[1]) > 40 and cells[2] == "":  # a long skip/error text spans the row
            continue
        for i, c in enumerate(cells):
            widths[i] = max(widths[i], len(c))

    def join(cells: list[str]) -> str:
        if cells[2] == "" and len(cells[1]) > widths[1]:
            return f"{cells[0]:<{widths[0]}}  {cells[1]}"
        return "  ".join(f"{c:<{w}}" for c, w in zip(cells, widths)).rstrip()

    mode = (
        "items/s / ref items/s (higher is better)"
        if workload.ratio_mode == "throughput"
        else "time / ref time (lower is better)"
    )
    out = [f"== {workload.id}: {workload.title}", f"   ratio = {mode}", join(header)]
    out.append("  ".join("-" * w for w in widths))
    out += [join(cells) for cells in lines]
    return "\n".join(out)


def render_targets(results: list[TargetResult]) -> str:
    width = max((len(t.description) for t in results), default=10)
    out = ["== targets", f"{'target':<{width}}  {'measured':>10}  verdict"]
    for t in results:
        out.append(f"{t.description:<{width}}  {fmt_value(t.value, t.unit):>10}  {t.verdict}")
    counts = {v: sum(t.verdict == v for t in results) for v in ("PASS", "FAIL", "N/A")}
    out.append(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['N/A']} not measured")
    return "\n".join(out)


def environment() -> dict[str, Any]:
    info: dict[str, Any] = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    try:
        import workpool

        info["workpool"] = getattr(workpool, "__version__", "?")
        info["workpool_path"] = str(Path(workpool.__file__).parent)
    except Exception as exc:  # the suite still runs the peer rows
        info["workpool"] = f"not importable ({type(exc).__name__}: {exc})"
    return info


# --------------------------------------------------------------------------- main


def faster(a: RowResult, b: RowResult) -> RowResult:
    """The better of two rounds of one row: the faster one that measured (its metrics come
    with it, so a row's numbers are always one run's)."""
    if b.status != "ok":
        return a
    if a.status != "ok" or a.seconds is None:
        return b
    return b if b.seconds is not None and b.seconds < a.seconds else a


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", help="comma-separated workload ids, e.g. W1,W3")
    parser.add_argument("--quick", action="store_true", help="smaller N (smoke run)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds per row before it is killed"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        metavar="K",
        help="run each workload's rows K times in turn (row 1..n, then again) and keep each "
        "row's fastest round: on a shared machine a busy moment then hits every row alike, "
        "not the one that happened to run during it",
    )
    parser.add_argument(
        "--no-isolate",
        action="store_true",
        help="run rows in this process (debugging; RSS numbers suffer)",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")

    _ensure_workpool_importable()
    cfg = Config(quick=args.quick, isolate=not args.no_isolate, timeout=args.timeout)
    only = {x.strip().upper() for x in args.only.split(",") if x.strip()} if args.only else None
    workloads = load_workloads(cfg, only)
    if only is not None:
        unknown = only - {w.id.upper() for w in workloads}
        if unknown:
            parser.error(f"unknown workload(s): {', '.join(sorted(unknown))}")

    env = environment()
    print(
        f"workpool benchmarks  {env['date']}  Python {env['python']} ({env['implementation']})  "
        f"{env['cpus']} CPUs  workpool {env['workpool']}" + ("  [quick]" if cfg.quick else "")
    )
    report: dict[str, Any] = {"environment": env, "quick": cfg.quick, "workloads": []}
    all_targets: list[TargetResult] = []
    for workload in workloads:
        print(
            f"\n.. running {workload.id} ({len(workload.rows)} rows)", file=sys.stderr, flush=True
        )
        rows: list[RowResult] = []
        for k in range(args.rounds):
            if args.rounds > 1:
                print(f"   round {k + 1} of {args.rounds}", file=sys.stderr, flush=True)
            got = []
            for spec in workload.rows:
                print(f"   {spec.name}", file=sys.stderr, flush=True)
                got.append(run_row(spec, cfg))
            rows = got if not rows else [faster(a, b) for a, b in zip(rows, got, strict=True)]
        compute_ratios(workload, rows)
        targets = evaluate_targets(workload, rows)
        all_targets += targets
        print()
        print(render_table(workload, rows), flush=True)
        report["workloads"].append(
            {
                "id": workload.id,
                "title": workload.title,
                "ratio_mode": workload.ratio_mode,
                "rows": [dict(dataclasses.asdict(r), items_per_s=r.items_per_s) for r in rows],
                "targets": [dict(dataclasses.asdict(t), verdict=t.verdict) for t in targets],
            }
        )

    print()
    print(render_targets(all_targets))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nresults written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
