"""workpool quick start: checksum every file of this repository, in parallel.

Run it with ``python3 dev.py example``. It shows the three things most programs need:

1. ``Pool.results``: one Result per input, errors included, read lazily from a generator;
2. a per-task deadline (``task_timeout``) and retries that do not stop the other tasks;
3. ``stats()`` and the ``ShutdownReport`` that leaving the ``with`` block produces.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from workpool import Pool, Retry

ROOT = Path(__file__).resolve().parent.parent
SKIP = {".git", ".venv", ".tools", "__pycache__", ".mypy_cache", ".ruff_cache", ".hypothesis"}


def files(root: Path) -> Iterator[Path]:
    """Walk the tree lazily: the pool pulls paths only as workers free up."""
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP)
        for name in sorted(names):
            yield Path(folder) / name
    yield root / "no-such-file.txt"  # one input that fails, to show an error Result


def checksum(path: Path) -> tuple[str, int]:
    """SHA-256 and size of one file (I/O-bound: threads suit it)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def main() -> int:
    failed = 0
    total = 0
    with Pool(workers=8, task_timeout=10, retries=Retry(2, backoff=0.05, on=OSError)) as pool:
        for r in pool.results(checksum, files(ROOT), ordered=True):
            rel = r.item.relative_to(ROOT)
            if r.ok:
                digest, size = r.unwrap()
                total += size
                print(f"{digest[:16]}  {size:>9,}  {rel}")
            else:
                failed += 1
                print(
                    f"{'FAILED':16}  {'':>9}  {rel}: {type(r.error).__name__}: {r.error} "
                    f"(after {r.attempts} attempts)"
                )
        stats = pool.stats()
    print(
        f"\n{stats.succeeded} files, {total:,} bytes checksummed, {failed} failed; "
        f"{stats.retried} retries; p50 {stats.latency.p50 * 1e6:.0f} us per file"
        if stats.latency
        else "no files"
    )
    # The one missing file is expected to fail; anything else is a real problem.
    return 0 if failed == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
