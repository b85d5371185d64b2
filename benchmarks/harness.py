"""Shared machinery for the benchmark suite.

A workload module exposes ``build(cfg: Config) -> Workload``.  A ``Workload`` is a list of
``RowSpec`` (one measured line of the table each) plus ``Target`` checks evaluated on the
measured rows.  Each row is a plain module-level function ``fn(**kwargs) -> dict`` that does
its own timing and returns a measurement dict (see ``measurement``).

By default every row runs in a fresh child interpreter (``python harness.py MODULE FUNC ...``)
so that rows cannot disturb one another (leftover threads, heap growth, RSS baselines), a
hanging row is killed after a timeout, and a crashing library does not stop the suite.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent


# --------------------------------------------------------------------------- configuration


@dataclasses.dataclass(frozen=True)
class Config:
    quick: bool = False
    isolate: bool = True
    timeout: float = 900.0  # seconds per row (child process)


# --------------------------------------------------------------------------- specs


@dataclasses.dataclass(frozen=True)
class RowSpec:
    """One line of a workload table.

    ``func`` is the name of a function in ``module`` called as ``func(**kwargs)``.
    ``requires``: importable modules the row needs; a missing one makes the row
    "skipped (not installed)" instead of an error.
    ``ref``: name of the row the ratio column is computed against (``None``: workload default).
    ``computed``: a row that is not measured (e.g. a physical limit); ``func`` is ignored and
    ``computed`` is the measurement dict itself.
    """

    name: str
    module: str = ""
    func: str = ""
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    requires: tuple[str, ...] = ()
    ref: str | None = None
    note: str = ""
    computed: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class Target:
    """``metric(row) [/ metric(ref)] <op> threshold``.

    metric is ``"items_per_s"``, ``"seconds"`` or a key of the row's ``metrics`` dict.
    With ``ref`` the measured value is the ratio of the two rows' metric.
    """

    description: str
    row: str
    op: str  # ">=", "<=", "<", ">"
    threshold: float
    metric: str = "items_per_s"
    ref: str | None = None
    unit: str = "x"  # how to print the measured value: "x" (ratio), "ms", "MB", "s"


@dataclasses.dataclass
class Workload:
    id: str
    title: str
    description: str
    rows: list[RowSpec]
    targets: list[Target] = dataclasses.field(default_factory=list)
    default_ref: str | None = None
    # "throughput": ratio = items/s of row / items/s of ref (higher is better)
    # "time":       ratio = seconds of row / seconds of ref (lower is better)
    ratio_mode: str = "throughput"
    # extra metric columns: (metrics key, column header, format spec)
    columns: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)


# --------------------------------------------------------------------------- results


class NotAvailable(Exception):
    """Raised by a row function when the feature it measures does not exist (yet).

    The row is reported as ``skipped (not available yet: <message>)`` instead of as an error:
    rows written against a documented API that the library does not implement yet.
    """


@dataclasses.dataclass
class RowResult:
    name: str
    status: str  # "ok" | "skipped" | "error" | "timeout"
    seconds: float | None = None
    items: int | None = None
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    note: str = ""
    ref: str | None = None
    ratio: float | None = None
    detail: str = ""  # error text / skip reason

    @property
    def items_per_s(self) -> float | None:
        if self.status != "ok" or not self.seconds or not self.items:
            return None
        return self.items / self.seconds

    def metric(self, key: str) -> float | None:
        if self.status != "ok":
            return None
        if key == "items_per_s":
            return self.items_per_s
        if key == "seconds":
            return self.seconds
        value = self.metrics.get(key)
        return None if value is None else float(value)


@dataclasses.dataclass
class TargetResult:
    description: str
    value: float | None
    unit: str
    op: str
    threshold: float

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "N/A"
        ok = {
            ">=": self.value >= self.threshold,
            "<=": self.value <= self.threshold,
            ">": self.value > self.threshold,
            "<": self.value < self.threshold,
        }[self.op]
        return "PASS" if ok else "FAIL"


def sleep_floor_rows(limit_name: str, n: int, workers: int, sleep: float) -> list[RowSpec]:
    """The physical limit of ``n`` sleeps of ``sleep`` s on ``workers`` (perfect sharing) and
    the whole-task floor (some worker runs ceil(n / workers) whole sleeps): computed rows."""
    per_worker = -(-n // workers)
    ms = f"{sleep * 1000:.0f} ms"
    return [
        RowSpec(
            limit_name,
            computed={
                "seconds": n * sleep / workers,
                "items": n,
                "note": f"{n} x {ms} / {workers}",
            },
        ),
        RowSpec(
            "whole-task floor",
            computed={
                "seconds": per_worker * sleep,
                "items": n,
                "note": f"ceil({n}/{workers}) x {ms}: some worker runs {per_worker}",
            },
        ),
    ]


def measurement(
    seconds: float,
    items: int | None = None,
    note: str = "",
    **metrics: float,
) -> dict[str, Any]:
    """What a row function returns."""
    return {"seconds": seconds, "items": items, "note": note, "metrics": metrics}


# --------------------------------------------------------------------------- helpers for row functions


def best_of(reps: int, once: Callable[[], float]) -> float:
    """Run ``once`` (which returns elapsed seconds) ``reps`` times; return the minimum."""
    return min(once() for _ in range(reps))


def consume(iterable: Iterable[Any], expected: int | None = None) -> int:
    """Iterate to the end, counting; check the count when ``expected`` is given."""
    count = 0
    for _ in iterable:
        count += 1
    if expected is not None and count != expected:
        raise RuntimeError(f"got {count} results, expected {expected}")
    return count


def consume_results(iterable: Iterable[Any], expected: int | None = None) -> int:
    """Like ``consume`` for workpool ``Result`` objects; every result must be ok."""
    count = 0
    for r in iterable:
        if not r.ok:
            raise RuntimeError(f"task failed: {r.error!r}")
        count += 1
    if expected is not None and count != expected:
        raise RuntimeError(f"got {count} results, expected {expected}")
    return count


def close_iterator(it: Any) -> None:
    close = getattr(it, "close", None)
    if close is not None:
        close()


def require_workpool(*names: str, where: str) -> None:
    """Raise ``NotAvailable`` unless ``workpool`` has every public name in ``names``.

    ``where`` says which part of the contract the row measures (e.g. "API.md §6").
    """
    import workpool

    missing = [name for name in names if not hasattr(workpool, name)]
    if missing:
        raise NotAvailable(f"workpool.{', workpool.'.join(missing)}, {where}")


def median_ms(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1000.0


def rss_bytes() -> int:
    """Resident set size of this process (psutil, else /proc/self/statm)."""
    try:
        import psutil
    except ImportError:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return int(psutil.Process().memory_info().rss)


# --------------------------------------------------------------------------- running rows


def child_env() -> dict[str, str]:
    """Environment for child interpreters: make sure they import the same workpool."""
    env = dict(os.environ)
    extra = [
        p
        for p in sys.path
        if p
        and Path(p, "workpool").is_dir()
        and not Path(p).name.endswith(("site-packages", "dist-packages"))
    ]
    if extra:
        env["PYTHONPATH"] = os.pathsep.join([*extra, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _missing(requires: Iterable[str]) -> list[str]:
    return [name for name in requires if importlib.util.find_spec(name) is None]


def _call(module: str, func: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    fn = getattr(importlib.import_module(module), func)
    result = fn(**kwargs)
    if not isinstance(result, dict):
        raise TypeError(f"{module}.{func} returned {type(result).__name__}, expected dict")
    return result


def run_row(spec: RowSpec, cfg: Config) -> RowResult:
    base = RowResult(name=spec.name, status="ok", note=spec.note, ref=spec.ref)
    if spec.computed is not None:
        return _fill(base, spec.computed)
    missing = _missing(spec.requires)
    if missing:
        base.status, base.detail = "skipped", f"skipped (not installed: {', '.join(missing)})"
        return base
    if not cfg.isolate:
        try:
            return _fill(base, _call(spec.module, spec.func, spec.kwargs))
        except NotAvailable as exc:
            base.status, base.detail = "skipped", f"skipped (not available yet: {exc})"
            return base
        except Exception as exc:  # report and go on: one broken row must not stop the suite
            base.status, base.detail = "error", f"{type(exc).__name__}: {exc}"
            return base

    fd, out_path = tempfile.mkstemp(prefix="wpbench-", suffix=".json")
    os.close(fd)
    cmd = [
        sys.executable,
        str(BENCH_DIR / "harness.py"),
        spec.module,
        spec.func,
        json.dumps(spec.kwargs),
        out_path,
    ]
    # The row runs in a session of its own and writes its output to a file, not a pipe: a
    # process it left behind (a library's worker that outlived the row) can neither hold the
    # suite up (a pipe stays open until its last writer exits) nor outlive the row (the
    # row's process group is killed when the row ends).
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            cmd,
            cwd=str(BENCH_DIR),
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=cfg.timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill_group(proc.pid)
            proc.wait()
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    try:
        payload = "" if timed_out else Path(out_path).read_text()
    finally:
        try:
            os.unlink(out_path)
        except OSError:
            pass
    if timed_out:
        base.status, base.detail = "timeout", f"timeout (> {cfg.timeout:.0f} s, killed)"
        return base
    if not payload:
        tail = (stderr.strip().splitlines() or ["no output"])[-1]
        base.status, base.detail = "error", f"child exited {proc.returncode}: {tail}"
        return base
    data = json.loads(payload)
    if "skipped" in data:
        base.status, base.detail = "skipped", f"skipped (not available yet: {data['skipped']})"
        return base
    if "error" in data:
        base.status, base.detail = "error", data["error"]
        return base
    return _fill(base, data)


def _kill_group(pgid: int) -> None:
    """SIGKILL whatever is left in a row's process group (the row's own session)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # nothing left


def _fill(row: RowResult, data: dict[str, Any]) -> RowResult:
    row.seconds = float(data["seconds"])
    row.items = data.get("items")
    row.metrics = {k: float(v) for k, v in (data.get("metrics") or {}).items()}
    note = data.get("note") or ""
    row.note = "; ".join(x for x in (row.note, note) if x)
    return row


def compute_ratios(workload: Workload, rows: list[RowResult]) -> None:
    by_name = {r.name: r for r in rows}
    for row in rows:
        ref_name = row.ref or workload.default_ref
        if ref_name is None or ref_name == row.name:
            row.ref = None
            continue
        row.ref = ref_name
        ref = by_name.get(ref_name)
        if ref is None:
            continue
        if workload.ratio_mode == "time":
            a, b = row.metric("seconds"), ref.metric("seconds")
        else:
            a, b = row.items_per_s, ref.items_per_s
        row.ratio = a / b if a is not None and b else None


def evaluate_targets(workload: Workload, rows: list[RowResult]) -> list[TargetResult]:
    by_name = {r.name: r for r in rows}
    out = []
    for t in workload.targets:
        row = by_name.get(t.row)
        value = row.metric(t.metric) if row else None
        if t.ref is not None:
            ref = by_name.get(t.ref)
            denom = ref.metric(t.metric) if ref else None
            value = value / denom if value is not None and denom else None
        out.append(TargetResult(t.description, value, t.unit, t.op, t.threshold))
    return out


# --------------------------------------------------------------------------- child entry point


def _child_main(argv: list[str]) -> int:
    module, func, kwargs_json, out_path = argv
    # This file runs as __main__ here; the row modules raise the NotAvailable of the module
    # they import, ``harness``.
    from harness import NotAvailable

    try:
        data = _call(module, func, json.loads(kwargs_json))
    except NotAvailable as exc:
        data = {"skipped": str(exc)}
    except BaseException as exc:  # report anything to the parent
        tb = traceback.format_exc(limit=-3)
        sys.stderr.write(tb)
        data = {"error": f"{type(exc).__name__}: {exc}".strip()}
    Path(out_path).write_text(json.dumps(data))
    sys.stdout.flush()
    sys.stderr.flush()
    # Do not wait for stray non-daemon threads a broken row may have left behind.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
