#!/usr/bin/env python3
"""Developer entry point for workpool. Needs only python3 (>= 3.10); stdlib only.

Usage:
    python3 dev.py test [PYTEST_ARGS...]   ruff check, ruff format --check, mypy, then pytest
    python3 dev.py demo                    the main job: `workpool run` over this repo's files
    python3 dev.py example [NAME [ARGS]]   run examples/NAME.py (default: quickstart)
    python3 dev.py bench [ARGS...]         run benchmarks/run.py (installs the bench group)
    python3 dev.py run [--] ARGS...        `workpool run ARGS...` (the project's console script),
                                           e.g. `python3 dev.py run -j 4 -- wc -l {} < files.txt`
                                           (dev.py's `run`, then workpool's), or `run --version`

Every command first makes sure the tools exist:
  * uv: the one on PATH, else a private copy in .tools/ (a venv with `pip install uv`);
  * .venv: `uv sync --locked` with the interpreter running this script (uv never downloads
    a Python). `--locked` fails if uv.lock is stale: after editing pyproject.toml, run
    `uv lock` (e.g. `.tools/bin/uv lock`) and commit uv.lock.
Both steps are no-ops when already up to date, so reruns are fast.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
TOOLS = ROOT / ".tools"
VENV = ROOT / ".venv"
BIN = "Scripts" if os.name == "nt" else "bin"
UV_REQUIREMENT = "uv>=0.9"
ENV = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_PROJECT_ENVIRONMENT": str(VENV)}
ENV.pop("VIRTUAL_ENV", None)  # an activated venv elsewhere must not redirect uv
# Trust the OS certificate store like pip does, so TLS-intercepting proxies keep working.
ENV.setdefault("UV_SYSTEM_CERTS", "1")


def run(*cmd: str | Path) -> int:
    """Print and run a command from the repo root; return its exit code."""
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.call([str(c) for c in cmd], cwd=ROOT, env=ENV)


# The whole pytest run, exit included, must end within this: each test has its own bound
# (pytest-timeout), and this one catches a hang outside any test (say, at interpreter exit).
PYTEST_WALL_SECONDS = float(os.environ.get("WORKPOOL_TEST_WALL_SECONDS", 30 * 60))


def run_bounded(limit: float, *cmd: str | Path) -> int:
    """``run``, but a command still running after ``limit`` seconds has the stacks of its
    threads printed (SIGUSR1: see tests/conftest.py) and is then killed, with its children."""
    print("+", " ".join(str(c) for c in cmd), flush=True)
    proc = subprocess.Popen([str(c) for c in cmd], cwd=ROOT, env=ENV, start_new_session=True)
    try:
        return proc.wait(limit)
    except subprocess.TimeoutExpired:
        print(f"dev.py: {Path(cmd[0]).name} still running after {limit:.0f} s", flush=True)
        os.kill(proc.pid, signal.SIGUSR1)
        time.sleep(3)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return 124
    except KeyboardInterrupt:
        os.killpg(proc.pid, signal.SIGINT)
        return proc.wait()


def check(*cmd: str | Path) -> None:
    """Run a command; exit with its code if it fails."""
    code = run(*cmd)
    if code:
        sys.exit(f"dev.py: `{Path(cmd[0]).name}` failed (exit {code})")


def tool(name: str, bindir: Path) -> str | None:
    return shutil.which(name, path=str(bindir))


def uv() -> str:
    """uv from PATH, else from .tools/, installing it there on first use."""
    found = shutil.which("uv") or tool("uv", TOOLS / BIN)
    if found:
        return found
    print(f"dev.py: uv not found; installing it into {TOOLS.name}/", flush=True)
    venv.create(TOOLS, with_pip=True)
    check(TOOLS / BIN / "python", "-m", "pip", "install", "--quiet", UV_REQUIREMENT)
    found = tool("uv", TOOLS / BIN)
    if not found:
        sys.exit(f"dev.py: pip installed uv but no uv executable is in {TOOLS / BIN}")
    return found


def sync(*groups: str) -> None:
    """Make .venv match uv.lock exactly (dev group plus the given groups)."""
    extra = [arg for g in groups for arg in ("--group", g)]
    check(uv(), "sync", "--locked", "--python", sys.executable, *extra)


def venv_bin(name: str) -> str:
    found = tool(name, VENV / BIN)
    if not found:
        sys.exit(f"dev.py: `{name}` is not installed in {VENV.name}/")
    return found


def cmd_test(args: list[str]) -> None:
    sync()
    check(venv_bin("ruff"), "check", "src", "tests", "examples")
    check(venv_bin("ruff"), "format", "--check", "src", "tests", "examples")
    check(venv_bin("mypy"))  # strict, on src/, examples/ and tests/ (see [tool.mypy])
    # Every process the tests start inherits this marker; any that is still alive after
    # pytest exits was leaked (a worker process that outlived its pool).
    marker = f"{os.getpid()}-{time.time_ns()}"
    ENV["WORKPOOL_TEST_RUN"] = marker
    code = run_bounded(PYTEST_WALL_SECONDS, venv_bin("pytest"), *args)
    del ENV["WORKPOOL_TEST_RUN"]
    if code == 5:
        sys.exit("dev.py: pytest collected no tests (exit 5); that counts as a failure")
    if code:
        sys.exit(f"dev.py: `pytest` failed (exit {code})")
    leaked = leftovers(f"WORKPOOL_TEST_RUN={marker}".encode())
    if leaked:
        sys.exit(f"dev.py: processes left running after the tests: {leaked}")


def leftovers(marker: bytes, grace: float = 5.0) -> list[str]:
    """Live processes whose environment holds ``marker`` (Linux /proc), after a grace period."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    deadline = time.monotonic() + grace
    while True:
        found = []
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if marker not in (entry / "environ").read_bytes().split(b"\0"):
                    continue
                status = (entry / "status").read_text()
                if "State:\tZ" in status:
                    continue  # a zombie: already dead, waiting to be reaped
                found.append(f"{entry.name} {(entry / 'cmdline').read_bytes()[:80]!r}")
            except OSError:
                continue
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)  # processes still exiting: give them a moment


def cmd_demo(args: list[str]) -> None:
    """`workpool run -j 4 --keep-order -- wc -l {}` over every file this repo tracks."""
    sync()
    listed = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if listed.returncode == 0 and listed.stdout.strip():
        files = listed.stdout
    else:  # not a git checkout: walk the tree instead
        skip = {".git", ".venv", ".tools", "__pycache__"}
        found = []
        for folder, dirs, names in os.walk(ROOT):
            dirs[:] = sorted(d for d in dirs if d not in skip and not d.startswith("."))
            found += [os.path.relpath(os.path.join(folder, n), ROOT) for n in sorted(names)]
        files = "\n".join(found) + "\n"
    cmd = [venv_bin("workpool"), "run", "-j", "4", "--keep-order", *args, "--", "wc", "-l", "{}"]
    print("+", " ".join(cmd), "< (the repo's files, one per line)", flush=True)
    sys.exit(subprocess.run(cmd, cwd=ROOT, env=ENV, input=files, text=True, check=False).returncode)


def cmd_example(args: list[str]) -> None:
    """`dev.py example [NAME [ARGS...]]`: examples/NAME.py (default: quickstart), or the
    indexer package (`dev.py example indexer index DIR --db FILE`)."""
    sync()
    name, rest = (args[0], args[1:]) if args else ("quickstart", [])
    if name == "indexer" and not rest:
        # The whole tour: a generated corpus, indexed, then a query, in a temporary folder.
        with tempfile.TemporaryDirectory(prefix="workpool-indexer-") as tmp:
            docs, db = str(Path(tmp) / "docs"), str(Path(tmp) / "index.db")
            py = venv_bin("python")
            check(py, "-m", "examples.indexer", "corpus", docs, "--documents", "40")
            # Exit 1: some documents failed, which the demo corpus has on purpose (a damaged
            # PDF, a Latin-1 file); each is reported, and the rest is indexed.
            code = run(py, "-m", "examples.indexer", "index", docs, "--db", db)
            if code not in (0, 1):
                sys.exit(f"dev.py: the indexer failed (exit {code})")
            check(
                py,
                "-m",
                "examples.indexer",
                "query",
                "why a slow stage slows the others",
                "--db",
                db,
            )
    elif (ROOT / "examples" / name / "__main__.py").exists():
        check(venv_bin("python"), "-m", f"examples.{name}", *rest)
    else:
        check(venv_bin("python"), f"examples/{name.removesuffix('.py')}.py", *rest)


def cmd_bench(args: list[str]) -> None:
    sync("bench")
    check(venv_bin("python"), "benchmarks/run.py", *args)


def workpool_args(args: list[str]) -> list[str]:
    """The arguments `dev.py run ARGS` gives `workpool`: `run ARGS`.

    dev.py's `run` is `workpool run`, so `python3 dev.py run -j 4 -- wc -l {}` runs
    `workpool run -j 4 -- wc -l {}`. One `--` right after `run` is optional and dropped
    (`dev.py run -- -j 4 ...` is the same), and ARGS that already start with workpool's own
    `run` are passed as they are (`dev.py run run -j 4 ...` still works).
    """
    rest = args[1:] if args[:1] == ["--"] else list(args)
    return rest if rest[:1] == ["run"] else ["run", *rest]


def cmd_run(args: list[str]) -> None:
    sync()
    sys.exit(run(venv_bin("workpool"), *workpool_args(args)))


COMMANDS = {
    "test": cmd_test,
    "demo": cmd_demo,
    "example": cmd_example,
    "bench": cmd_bench,
    "run": cmd_run,
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    COMMANDS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
