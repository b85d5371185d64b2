"""``workpool run``: the real command, run in a subprocess, as a user would run it.

Every test starts ``python -m workpool run ...`` with ``src/`` and ``tests/`` on PYTHONPATH
(``--call`` targets live in ``tests/cli_fixtures/targets.py``) and a fresh working directory.
Tests that must catch the command in a given state read its standard error line by line
(the targets announce themselves there); a file is polled, in a bounded loop, only when a
command that is not ours (``sh``) is what reaches the state.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]),
}
ENV.pop("WORKPOOL_TEST_BLOCK_FROM", None)
T = "cli_fixtures.targets"
KEYS_CALL = ["index", "input", "ok", "value", "error", "traceback", "attempts", "duration"]
KEYS_COMMAND = [
    "index",
    "input",
    "ok",
    "stdout",
    "stderr",
    "exit_code",
    "error",
    "traceback",
    "attempts",
    "duration",
]


def workpool(*args: str) -> list[str]:
    return [sys.executable, "-m", "workpool", "run", *args]


def run(
    cwd: Path, *args: str, stdin: str | IO[str] | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``workpool run args``; ``stdin``: its input as text, or an open file to read it from."""
    text = "" if stdin is None else stdin
    return subprocess.run(
        workpool(*args),
        cwd=cwd,
        input=text if isinstance(text, str) else None,
        stdin=None if isinstance(text, str) else text,
        capture_output=True,
        text=True,
        env={**ENV, **(env or {})},
        timeout=30,
    )


def records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def numbers(n: int) -> str:
    return "".join(f"{i}\n" for i in range(n))


def read_until(stream: IO[str], want: str, seen: list[str] | None = None) -> list[str]:
    """Read lines from a child's pipe until one contains ``want``; return the lines read."""
    lines = [] if seen is None else seen
    for line in stream:
        lines.append(line)
        if want in line:
            return lines
    raise AssertionError(f"the command ended before printing {want!r}: {''.join(lines)}")


def wait_for_file(path: Path, timeout: float = 10.0) -> str:
    """Wait for a file that a child of the command writes (bounded poll: not our process)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return path.read_text()
        time.sleep(0.01)
    raise AssertionError(f"{path} never appeared")


def alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie waiting for its reaper counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    """The command's working directory: a fresh one per test."""
    return tmp_path


@pytest.fixture(params=["thread", "process"])
def backend(request: pytest.FixtureRequest) -> str:
    """The --backend of a --call test (commands always run from threads)."""
    from workpool import _backends

    if request.param not in _backends.names():
        pytest.skip(f"backend {request.param!r} is not available")
    return str(request.param)


# ---------------------------------------------------------------------- output and ordering


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "target",
    [
        ["--call", f"{T}:square"],
        ["--call", f"{T}:square", "--backend", "process"],
        ["--call", f"{T}:async_square"],
        ["--", "echo", "{}"],
        ["--jsonl", "--call", f"{T}:square"],
        ["--journal", "j.db", "--call", f"{T}:square"],
        ["--journal", "done.db", "--call", f"{T}:square"],
    ],
    ids=["thread", "process", "async", "command", "jsonl", "journal", "resume"],
)
def test_a_quiet_pipe_holds_back_no_line_and_no_result(cwd: Path, target: list[str]) -> None:
    """``tail -f log | workpool run ...``: every line that came down the pipe is run and its
    result written while the pipe stays quiet, not when more lines come (or the pipe ends).

    Each burst of lines is written at once; the test then waits for all of its results
    before it writes the next. Bursts are bigger than the first units, so the pool batches
    them: a batch that waits for the pipe to fill it would hold lines back.
    """
    import queue
    import threading

    sent = 0
    if "done.db" in target:
        # A resume: the journal has the first 50 lines done, which come down the pipe again.
        assert run(cwd, *target, stdin=numbers(50)).returncode == 0
        sent = 50
    proc = subprocess.Popen(
        workpool("-j", "2", *target),
        cwd=cwd,
        env=ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    out: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc.stdin.write(numbers(sent))
        for burst in (1, 40, 300, 7, 1000):
            proc.stdin.write(numbers(sent + burst)[len(numbers(sent)) :])
            proc.stdin.flush()
            got = set()
            for _ in range(burst):
                try:
                    got.add(json.loads(out.get(timeout=10))["index"])
                except queue.Empty:
                    raise AssertionError(
                        f"only {len(got)} of the {burst} lines written at once came back "
                        "while the pipe stayed open"
                    ) from None
            assert got == set(range(sent, sent + burst))
            sent += burst
        proc.stdin.close()
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("flag", [[], ["--backend", "process"]], ids=["default", "process"])
def test_call_of_a_coroutine_function_awaits_it(cwd: Path, flag: list[str]) -> None:
    # By default a coroutine function runs on the async backend (on its event loop, no
    # thread each); --backend process runs it on each worker process's own loop.
    proc = run(cwd, "-j", "8", *flag, "--call", f"{T}:async_square", stdin=numbers(40))
    assert proc.returncode == 0, proc.stderr
    out = records(proc.stdout)
    assert sorted(r["index"] for r in out) == list(range(40))
    assert all(r["value"][0] == int(r["input"]) ** 2 for r in out)
    on_loop = {r["value"][1] for r in out}
    assert on_loop == ({True} if not flag else {False})


@pytest.mark.timeout(20)
def test_call_writes_one_json_object_a_line_with_the_documented_keys(cwd: Path) -> None:
    proc = run(cwd, "-j", "4", "--call", f"{T}:square", stdin=numbers(100))
    assert proc.returncode == 0, proc.stderr
    out = records(proc.stdout)
    assert len(out) == 100
    for rec in out:
        assert list(rec) == KEYS_CALL
        assert rec["ok"] is True
        assert rec["value"] == int(rec["input"]) ** 2
        assert rec["input"] == str(rec["index"])
        assert rec["error"] is None and rec["traceback"] is None
        assert rec["attempts"] == 1 and rec["duration"] >= 0
    assert sorted(r["index"] for r in out) == list(range(100))
    assert "workpool: 100 items, 100 ok, 0 failed, 0 skipped in " in proc.stderr
    assert "\x1b" not in proc.stderr and "\r" not in proc.stderr  # not a terminal: no bar


@pytest.mark.timeout(20)
def test_keep_order_writes_results_in_input_order(cwd: Path, backend: str) -> None:
    (cwd / "in.txt").write_text(numbers(500))
    args = ("-j", "4", "-k", "--backend", backend, "--input", "in.txt", "--call", f"{T}:square")
    proc = run(cwd, *args)
    assert proc.returncode == 0, proc.stderr
    assert [r["index"] for r in records(proc.stdout)] == list(range(500))


@pytest.mark.timeout(20)
def test_failures_exit_1_and_carry_the_error_and_traceback(cwd: Path) -> None:
    (cwd / "out.jsonl").write_text("stale line from an earlier run\n")
    proc = run(cwd, "--call", f"{T}:fail_odd", "-o", "out.jsonl", stdin=numbers(10))
    assert proc.returncode == 1
    assert proc.stdout == ""
    out = {r["index"]: r for r in records((cwd / "out.jsonl").read_text())}  # truncated
    assert sorted(out) == list(range(10))
    for i, rec in out.items():
        if i % 2:
            assert rec["ok"] is False and rec["value"] is None
            assert rec["error"] == f"ValueError: {i} is odd"
            assert "in fail_odd" in rec["traceback"]
            assert "ValueError" in rec["traceback"]
        else:
            assert rec["ok"] is True and rec["value"] == i and rec["error"] is None
    assert "10 items, 5 ok, 5 failed, 0 skipped" in proc.stderr


@pytest.mark.timeout(20)
def test_jsonl_passes_parsed_values_and_fails_bad_lines(cwd: Path) -> None:
    stdin = '{"a": 1}\n\n{"a": "x"}\nnot json\n{"a": [2]}\n'
    proc = run(cwd, "-k", "--jsonl", "--call", f"{T}:double_a", stdin=stdin)
    assert proc.returncode == 1
    out = records(proc.stdout)
    # The blank line is no input, but the index is still the input line's (0-based).
    assert [r["index"] for r in out] == [0, 2, 3, 4]
    assert [r["input"] for r in out] == [{"a": 1}, {"a": "x"}, "not json", {"a": [2]}]
    assert [r["value"] for r in out] == [2, "xx", None, [2, 2]]
    assert out[2]["error"].startswith("ValueError: the input line is not valid JSON")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("journal", [False, True])
def test_a_jsonl_line_nested_too_deeply_to_parse_fails_alone(cwd: Path, journal: bool) -> None:
    # Valid JSON that Python's parser cannot take (a RecursionError, not a ValueError): it
    # crashed the whole run with a traceback, no summary, and every resume crashed again.
    deep = "[" * 100_000 + "]" * 100_000
    stdin = f'{{"a": 1}}\n{deep}\n{{"a": 2}}\n'
    args = ["--journal", "run.db", "-o", "out.jsonl"] if journal else []
    proc = run(cwd, "-k", "--jsonl", *args, "--call", f"{T}:double_a", stdin=stdin)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "3 items, 2 ok, 1 failed" in proc.stderr
    out = records((cwd / "out.jsonl").read_text() if journal else proc.stdout)
    assert [r["index"] for r in out] == [0, 1, 2]
    assert [r["value"] for r in out] == [2, None, 4]
    assert out[1]["error"].startswith("ValueError: the input line is JSON nested too deeply")
    if journal:  # a resume runs only the failed line again, and ends
        again = run(cwd, "-k", "--jsonl", *args, "--call", f"{T}:double_a", stdin=stdin)
        assert again.returncode == 1 and "2 skipped" in again.stderr, again.stderr


@pytest.mark.timeout(20)
def test_a_value_that_is_not_json_is_written_as_its_repr(cwd: Path) -> None:
    proc = run(cwd, "--call", f"{T}:as_set", stdin="x\n")
    assert proc.returncode == 0, proc.stderr
    assert records(proc.stdout)[0]["value"] == "{'x'}"
    # Whatever a function returns or raises, every line is valid JSON and the run goes on.
    stdin = "nan\nhuge\nkeys\nunprintable\nraise\nset\n"
    proc = run(cwd, "-k", "--call", f"{T}:awkward", stdin=stdin)
    assert proc.returncode == 1  # "raise" failed
    out = records(proc.stdout)
    assert [r["value"] for r in out[:3]] == ["nan", out[1]["value"], "{(1, 2): 'tuple key'}"]
    assert out[1]["value"].startswith("<int object: repr() failed")
    assert out[3]["value"] == "<list object: repr() failed with RuntimeError>"
    assert (
        out[4]["error"]
        == "_UnprintableError: <_UnprintableError object: str() failed with RuntimeError>"
    )
    assert out[5]["value"] == {"nested": "{'set'}"}


@pytest.mark.timeout(20)
def test_input_lines_keep_their_text_exactly(cwd: Path) -> None:
    # CRLF endings go, inner spaces, quotes and undecodable bytes stay; no final newline is fine.
    raw = b"a b \r\nquote\"'\n\xff\xfe\nlast"
    (cwd / "in.txt").write_bytes(raw)
    proc = run(cwd, "-k", "--input", "in.txt", "--call", f"{T}:block")
    assert proc.returncode == 0, proc.stderr
    out = records(proc.stdout)
    assert [r["input"] for r in out] == ["a b ", "quote\"'", "\udcff\udcfe", "last"]
    assert [r["value"] for r in out] == [r["input"] for r in out]


# ---------------------------------------------------------------------- commands


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["printf", "<%s>", "{}"], "<it's a b>"),  # exactly {}: the input, one argument
        (["sh", "-c", "printf '<%s>' {}"], "<it's a b>"),  # inside: shell-quoted, one word
        (["printf", "<%s>"], "<it's a b>"),  # no {}: appended
        # both at once: inside an argument the quoting is literal (meant for a shell to read)
        (["printf", "%s|%s", "x{}y", "{}"], "x'it'\"'\"'s a b'y|it's a b"),
    ],
)
def test_command_substitutes_the_input(cwd: Path, command: list[str], expected: str) -> None:
    proc = run(cwd, "--", *command, stdin="it's a b\n")
    assert proc.returncode == 0, proc.stderr
    [rec] = records(proc.stdout)
    assert list(rec) == KEYS_COMMAND
    assert rec["stdout"] == expected
    assert (rec["ok"], rec["exit_code"], rec["stderr"], rec["error"]) == (True, 0, "", None)


@pytest.mark.timeout(20)
def test_command_exit_status_is_a_failure_with_its_output(cwd: Path) -> None:
    proc = run(cwd, "-k", "--", "sh", "-c", "echo out; echo oops >&2; exit {}", stdin="3\n0\n")
    assert proc.returncode == 1
    failed, ok = records(proc.stdout)
    assert (failed["ok"], failed["exit_code"]) == (False, 3)
    assert (failed["stdout"], failed["stderr"]) == ("out\n", "oops\n")
    assert failed["error"] == "CommandFailed: command exited with code 3: oops"
    assert failed["traceback"] is None
    assert (ok["ok"], ok["exit_code"], ok["error"]) == (True, 0, None)


@pytest.mark.timeout(20)
def test_jsonl_values_reach_a_command_as_json_text(cwd: Path) -> None:
    proc = run(cwd, "-k", "--jsonl", "--", "printf", "%s", stdin='"plain"\n{"a": 1}\n')
    assert proc.returncode == 0, proc.stderr
    assert [r["stdout"] for r in records(proc.stdout)] == ["plain", '{"a": 1}']


@pytest.mark.timeout(30)
def test_a_reader_that_leaves_stops_the_run_at_the_first_failed_write(cwd: Path) -> None:
    # `workpool run -j 2 ... | head -n 1`. Item 0 ends at once; 1 and 2 wait for "release";
    # the rest wait (up to 3 s) for a file that never comes, then note that they finished.
    # The test reads item 0's line, closes the pipe, then releases 1 and 2: writing their
    # lines fails. Items 3 and 4 may have started in between (each took the place of 1 or
    # 2), but nothing starts after the failed write, and the commands running then are
    # killed at once instead of being waited for.
    wait = 'i=0; while [ ! -e "$1" ] && [ $i -lt 300 ]; do sleep 0.01; i=$((i+1)); done'
    script = (
        f'echo "$2" >> calls.txt; case "$2" in 0) ;; 1|2) {wait} ;; '
        f'*) set -- never "$2"; {wait}; echo "$2" >> finished.txt ;; esac; echo "$2"'
    )
    (cwd / "in.txt").write_text(numbers(20))
    args = workpool("-j", "2", "--input", "in.txt", "--", "sh", "-c", script, "sh", "release", "{}")
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(args, cwd=cwd, env=ENV, stdout=write_fd, stderr=subprocess.PIPE)
    finally:
        os.close(write_fd)
    try:
        with os.fdopen(read_fd, "rb") as reader:
            first = json.loads(reader.readline())
        assert first["index"] == 0
        (cwd / "release").touch()
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 128 + signal.SIGPIPE, err
    assert b"Traceback" not in err
    started = {int(line) for line in (cwd / "calls.txt").read_text().split()}
    assert {0, 1, 2} <= started <= {0, 1, 2, 3, 4}
    assert not (cwd / "finished.txt").exists()  # 3 and 4 were killed, not waited for


@pytest.mark.timeout(30)
def test_lines_the_reader_got_before_it_left_are_counted(cwd: Path) -> None:
    # `seq 1 100000 | workpool run ... | head -n 1`: the write that fails took part of a
    # batch; the lines that reached the pipe whole count (the summary said "0 items").
    (cwd / "in.txt").write_text(numbers(100_000))
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(
            workpool("--input", "in.txt", "--call", "json:dumps"),
            cwd=cwd,
            env=ENV,
            stdout=write_fd,
            stderr=subprocess.PIPE,
        )
    finally:
        os.close(write_fd)
    try:
        with os.fdopen(read_fd, "rb") as reader:
            assert json.loads(reader.readline())["ok"] is True
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 128 + signal.SIGPIPE, err
    summary = next(line for line in err.decode().splitlines() if " items, " in line)
    items = int(summary.split()[1])
    assert items >= 1 and f"{items} ok" in summary, summary


# ---------------------------------------------------------------------- timeouts


@pytest.mark.timeout(20)
def test_call_timeout_fails_the_item_and_the_rest_goes_on(cwd: Path, backend: str) -> None:
    args = ("-k", "--backend", backend, "--timeout", "0.5", "--call", f"{T}:block")
    proc = run(cwd, *args, stdin="a\nblock\nb\n")
    assert proc.returncode == 1
    a, blocked, b = records(proc.stdout)
    assert (a["value"], b["value"]) == ("a", "b")
    assert blocked["ok"] is False
    assert blocked["error"].startswith("TaskTimeout: ")
    assert blocked["duration"] >= 0.5


@pytest.mark.timeout(20)
def test_command_timeout_kills_the_command_and_what_it_started(cwd: Path) -> None:
    # sh starts a background sleep, records its pid, and waits: both must be killed.
    script = "sleep 60 & echo $! > {}.pid; wait"
    proc = run(cwd, "--timeout", "0.5", "--", "sh", "-c", script, stdin="child\n")
    assert proc.returncode == 1
    [rec] = records(proc.stdout)
    assert rec["error"].startswith("TaskTimeout: ")
    assert not alive(int((cwd / "child.pid").read_text()))


@pytest.mark.timeout(20)
@pytest.mark.parametrize("seconds", ["inf", "1e300"])
def test_an_infinite_timeout_means_no_limit(cwd: Path, seconds: str) -> None:
    # inf, or a deadline too far for the platform's clocks, is no limit: no item fails.
    proc = run(cwd, "-k", "--timeout", seconds, "--", "sh", "-c", "echo {}", stdin="a\nb\n")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [r["stdout"] for r in records(proc.stdout)] == ["a\n", "b\n"]
    args = ("-k", "--timeout", seconds, "--call", f"{T}:announce_and_wait")
    env = {"WORKPOOL_TEST_RELEASE": str(cwd)}  # exists: no wait
    proc = run(cwd, *args, stdin="a\nb\n", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [r["value"] for r in records(proc.stdout)] == ["A", "B"]
    assert "Traceback" not in proc.stderr


@pytest.mark.timeout(20)
def test_retries_run_a_failed_item_again(cwd: Path) -> None:
    side = cwd / "calls.txt"
    env = {"WORKPOOL_TEST_SIDE": str(side)}
    proc = run(cwd, "-k", "--retries", "2", "--call", f"{T}:flaky", stdin="a\nb\n", env=env)
    assert proc.returncode == 0, proc.stderr
    assert [(r["value"], r["attempts"]) for r in records(proc.stdout)] == [("a", 2), ("b", 2)]
    assert sorted(side.read_text().split()) == ["a", "a", "b", "b"]


# ---------------------------------------------------------------------- the journal


def journal_rows(path: Path) -> dict[int, bool]:
    with sqlite3.connect(path) as conn:
        return {idx: bool(ok) for idx, ok in conn.execute("SELECT idx, ok FROM items")}


@pytest.mark.timeout(30)
def test_resume_after_sigkill_loses_nothing_and_reruns_no_success(cwd: Path) -> None:
    n = 400
    (cwd / "in.txt").write_text(numbers(n))
    side = cwd / "calls.txt"
    args = workpool(
        "-j", "4", "--input", "in.txt", "--call", f"{T}:record_and_block",
        "--journal", "run.db", "--output", "out.jsonl",
    )  # fmt: skip
    env = {**ENV, "WORKPOOL_TEST_SIDE": str(side), "WORKPOOL_TEST_BLOCK_FROM": "200"}
    first = subprocess.Popen(args, cwd=cwd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert first.stderr is not None
        read_until(first.stderr, "blocked")  # a worker is stuck on an input >= 200,
        wait_for_file(cwd / "out.jsonl")  # and some results were written: kill it now
        first.kill()
    finally:
        first.kill()
        first.wait()
    done_before = {i for i, ok in journal_rows(cwd / "run.db").items() if ok}
    assert done_before and max(done_before) < 200

    env.pop("WORKPOOL_TEST_BLOCK_FROM")
    second = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=30)
    assert second.returncode == 0, second.stderr
    assert f"{len(done_before)} skipped" in second.stderr

    # Every input is in the output exactly once, and every line is whole.
    out = records((cwd / "out.jsonl").read_text())
    assert sorted(r["index"] for r in out) == list(range(n))
    assert all(r["ok"] for r in out)
    # What the journal had as done was never called again; everything was called.
    calls = Counter(int(line) for line in side.read_text().split())
    assert set(calls) == set(range(n))
    assert all(calls[i] == 1 for i in done_before)


@pytest.mark.timeout(20)
def test_resume_skips_what_succeeded_and_retries_what_failed(cwd: Path) -> None:
    (cwd / "in.txt").write_text(numbers(10))
    side = cwd / "calls.txt"
    args = ("--input", "in.txt", "--call", f"{T}:record_and_fail_odd", "--journal", "run.db")
    env = {"WORKPOOL_TEST_SIDE": str(side), "WORKPOOL_TEST_FAIL": "1"}
    first = run(cwd, *args, "-o", "out.jsonl", env=env)
    assert first.returncode == 1
    assert "10 items, 5 ok, 5 failed, 0 skipped" in first.stderr
    second = run(cwd, *args, "-o", "out.jsonl", env={"WORKPOOL_TEST_SIDE": str(side)})
    assert second.returncode == 0, second.stderr
    assert "10 items, 5 ok, 0 failed, 5 skipped" in second.stderr
    calls = Counter(int(line) for line in side.read_text().split())
    assert calls == {i: 1 if i % 2 == 0 else 2 for i in range(10)}
    # One line per item, its latest outcome: the failed lines of the first run are gone.
    out = records((cwd / "out.jsonl").read_text())
    assert sorted(r["index"] for r in out) == list(range(10))
    assert all(r["ok"] for r in out)
    # Nothing left to do: a third run skips everything.
    third = run(cwd, *args, env={"WORKPOOL_TEST_SIDE": str(side)})
    assert third.returncode == 0 and third.stdout == ""
    assert "10 items, 0 ok, 0 failed, 10 skipped" in third.stderr
    # A resume with another output file writes every result there, not only its own.
    (cwd / "other.jsonl").write_text("stale line\n")
    fourth = run(cwd, *args, "-o", "other.jsonl", env={"WORKPOOL_TEST_SIDE": str(side)})
    assert fourth.returncode == 0, fourth.stderr
    assert (cwd / "other.jsonl").read_text() == (cwd / "out.jsonl").read_text()


@pytest.mark.timeout(30)
def test_output_holds_one_line_per_item_after_a_killed_resume(cwd: Path) -> None:
    # Run 1 fails the odd items. Run 2 runs them again, writes some successes (their items
    # now have two lines) and is killed with SIGKILL before it ends. Run 3 finishes: the
    # output holds every item once, with its latest outcome.
    n = 40
    (cwd / "in.txt").write_text(numbers(n))
    side = cwd / "calls.txt"
    args = workpool(
        "-j", "2", "--input", "in.txt", "--call", f"{T}:record_and_fail_odd",
        "--journal", "run.db", "-o", "out.jsonl",
    )  # fmt: skip
    env = {**ENV, "WORKPOOL_TEST_SIDE": str(side)}
    first = subprocess.run(
        args, cwd=cwd, env={**env, "WORKPOOL_TEST_FAIL": "1"}, capture_output=True, timeout=30
    )
    assert first.returncode == 1

    env_block = {**env, "WORKPOOL_TEST_BLOCK_FROM": str(n // 2)}
    second = subprocess.Popen(args, cwd=cwd, env=env_block, stderr=subprocess.PIPE, text=True)
    try:
        assert second.stderr is not None
        read_until(second.stderr, "blocked")
        deadline = time.monotonic() + 10  # the writer is not ours: a bounded poll
        while not any(r["ok"] and r["index"] % 2 for r in records(read_whole_lines(cwd))):
            assert time.monotonic() < deadline, "run 2 wrote no success of a failed item"
            time.sleep(0.01)
        second.kill()
    finally:
        second.kill()
        second.wait()
    killed = Counter(r["index"] for r in records(read_whole_lines(cwd)))
    assert max(killed.values()) == 2  # what the next run must repair

    third = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=30)
    assert third.returncode == 0, third.stderr
    out = records((cwd / "out.jsonl").read_text())
    assert sorted(r["index"] for r in out) == list(range(n))
    assert all(r["ok"] for r in out)


def read_whole_lines(cwd: Path) -> str:
    """The whole lines of out.jsonl (a run killed mid-write may leave half a line)."""
    text = (cwd / "out.jsonl").read_text()
    return text[: text.rfind("\n") + 1]


@pytest.mark.timeout(20)
def test_resume_repairs_an_output_cut_mid_line(cwd: Path) -> None:
    # The state a SIGKILL can leave, made on purpose: the journal has results whose lines
    # it cannot vouch for ("emitted" points before them), and the output ends in half a line.
    (cwd / "in.txt").write_text(numbers(50))
    args = ("--input", "in.txt", "--journal", "run.db", "-o", "out.jsonl", "--call", f"{T}:square")
    assert run(cwd, *args).returncode == 0
    with sqlite3.connect(cwd / "run.db") as conn:
        conn.execute("UPDATE meta SET value = '0 0' WHERE key = 'emitted'")
    with open(cwd / "out.jsonl", "a") as f:
        f.write('{"index": 7, "inp')
    again = run(cwd, *args)
    assert again.returncode == 0, again.stderr
    assert "50 items, 0 ok, 0 failed, 50 skipped" in again.stderr
    out = records((cwd / "out.jsonl").read_text())  # parses: the half line is gone
    assert sorted(r["index"] for r in out) == list(range(50))  # each exactly once


@pytest.mark.timeout(20)
@pytest.mark.parametrize("damage", ["rebuild cut short", "output emptied"])
def test_resume_rebuilds_an_output_it_cannot_repair(cwd: Path, damage: str) -> None:
    # A rebuild killed halfway (the journal says so) or an output shorter than the journal
    # knows it: cutting back and replaying cannot make it whole, so the resume rebuilds it.
    (cwd / "in.txt").write_text(numbers(50))
    args = ("--input", "in.txt", "--journal", "run.db", "-o", "out.jsonl", "--call", f"{T}:square")
    assert run(cwd, *args).returncode == 0
    whole = (cwd / "out.jsonl").read_text()
    if damage == "rebuild cut short":
        with sqlite3.connect(cwd / "run.db") as conn:
            conn.execute("UPDATE meta SET value = '-1' WHERE key = 'superseded'")
        (cwd / "out.jsonl").write_text(whole[: len(whole) // 2] + whole[:100])
    else:
        (cwd / "out.jsonl").write_text("")
    again = run(cwd, *args)
    assert again.returncode == 0, again.stderr
    assert "50 items, 0 ok, 0 failed, 50 skipped" in again.stderr
    out = records((cwd / "out.jsonl").read_text())
    assert sorted(r["index"] for r in out) == list(range(50))


@pytest.mark.timeout(20)
def test_a_journal_from_another_command_or_input_is_refused(cwd: Path) -> None:
    (cwd / "a.txt").write_text(numbers(5))
    (cwd / "b.txt").write_text("x\n" + numbers(5))
    first = run(cwd, "--input", "a.txt", "--journal", "run.db", "--call", f"{T}:square")
    assert first.returncode == 0, first.stderr

    other = run(cwd, "--input", "a.txt", "--journal", "run.db", "--call", f"{T}:fail_odd")
    assert other.returncode == 2
    assert "was written by another command" in other.stderr
    assert f"--call {T}:square" in other.stderr

    other = run(cwd, "--input", "a.txt", "--journal", "run.db", "--", "echo")
    assert other.returncode == 2 and "another command" in other.stderr

    other = run(cwd, "--input", "b.txt", "--journal", "run.db", "--call", f"{T}:square")
    assert other.returncode == 2
    assert "was written for another input" in other.stderr and "line 1 differs" in other.stderr

    shorter = run(cwd, "--journal", "run.db", "--call", f"{T}:square", stdin="0\n1\n")
    assert shorter.returncode == 2 and "has only 2 lines" in shorter.stderr

    (cwd / "junk.db").write_text("not a database, just text\n" * 100)
    junk = run(cwd, "--journal", "junk.db", "--call", f"{T}:square", stdin="1\n")
    assert junk.returncode == 2 and "is not a workpool journal" in junk.stderr


@pytest.mark.timeout(20)
def test_input_that_is_not_utf8_runs_and_resumes_with_a_journal(cwd: Path) -> None:
    # Any bytes a command can take, the journal records: an input line that is not UTF-8,
    # and input and output file names that are not either. The command gets the bytes
    # (it prints them in hex); the output is UTF-8 JSON whose "input" gives them back.
    inp, out = os.fsdecode(b"in-\xff.txt"), os.fsdecode(b"out-\xfe.jsonl")
    (cwd / inp).write_bytes(b"a\n\xff\xfeb\nc\n")
    script = 'printf %s "$1" | od -An -tx1 | tr -d " \\n"; test -e pass'
    args = ("-k", "--input", inp, "--journal", "run.db", "-o", out, "--", "sh", "-c", script)
    first = run(cwd, *args, "sh", "{}")
    assert first.returncode == 1, first.stderr  # no "pass" file yet: every item fails
    assert "3 items, 0 ok, 3 failed" in first.stderr
    (cwd / "pass").touch()
    second = run(cwd, *args, "sh", "{}")
    assert second.returncode == 0, second.stderr  # the resume reruns all three
    assert "3 items, 3 ok, 0 failed, 0 skipped" in second.stderr
    latest = {r["index"]: r for r in records((cwd / out).read_bytes().decode("utf-8"))}
    assert [latest[i]["ok"] for i in range(3)] == [True, True, True]
    assert [latest[i]["stdout"] for i in range(3)] == ["61", "fffe62", "63"]
    assert latest[1]["input"] == "\udcff\udcfeb"
    assert latest[1]["input"].encode("utf-8", "surrogateescape") == b"\xff\xfeb"
    third = run(cwd, *args, "sh", "{}")
    assert third.returncode == 0 and "3 items, 0 ok, 0 failed, 3 skipped" in third.stderr


def test_a_journal_with_text_lines_replays_them_as_bytes(cwd: Path) -> None:
    # Journals written before lines were stored as bytes hold them as text: a resume
    # writes them out all the same.
    from workpool._cli.journal import Journal

    path = str(cwd / "run.db")
    command = {"argv": ["true"], "jsonl": False}
    journal = Journal.open(path, command=command, input_name="x", output="-")
    journal.commit([(0, 0, 1, b"line 0\n"), (1, 1, 0, b"line 1\n")], 0)
    journal.close(None)  # "emitted" stays before them: a resume replays both
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE items SET line = CAST(line AS TEXT)")
        assert {type(r[0]) for r in conn.execute("SELECT line FROM items")} == {str}
    journal = Journal.open(path, command=command, input_name="x", output="-")
    try:
        assert journal.replay("-") == ([b"line 0\n", b"line 1\n"], None)
    finally:
        journal.close(None)


def test_a_journal_counts_superseded_rows_in_batches_of_any_size(cwd: Path) -> None:
    # The writer commits whatever has queued up (thousands of rows when the output is slow):
    # counting the rows a batch replaces must not hit SQLite's limit on query parameters,
    # 999 in builds before SQLite 3.32 (set here on the journal's connection).
    from workpool._cli.journal import Journal

    if not hasattr(sqlite3.Connection, "setlimit"):
        pytest.skip("Connection.setlimit needs Python 3.11")
    path = str(cwd / "run.db")
    command = {"argv": ["true"], "jsonl": False}
    rows = [(i, i, 0, b"failed\n") for i in range(40_000)]
    journal = Journal.open(path, command=command, input_name="x", output="-")
    journal.commit(rows, 0)
    journal.close(0)
    journal = Journal.open(path, command=command, input_name="x", output="-")
    limit = sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER  # type: ignore[attr-defined]  # 3.11+
    journal._conn.setlimit(limit, 999)  # type: ignore[attr-defined]
    try:
        journal.commit([(i, i, 1, b"ok\n") for i in range(0, 80_000, 2)], 0)
        assert journal.meta("superseded") == "20000"
    finally:
        journal.close(None)


def damage_middle_page(path: Path) -> None:
    """Overwrite one page in the middle of an SQLite file with garbage."""
    size = path.stat().st_size
    page = 4096
    assert size >= 8 * page, "too small a journal to damage only its middle"
    with open(path, "r+b") as f:
        f.seek((size // page // 2) * page)
        f.write(bytes(range(256)) * (page // 256))


@pytest.mark.timeout(20)
def test_a_damaged_journal_is_refused_with_exit_2(cwd: Path) -> None:
    (cwd / "in.txt").write_text(numbers(3000))
    args = ("--input", "in.txt", "--journal", "run.db", "-o", "out.jsonl", "--call", f"{T}:square")
    assert run(cwd, *args).returncode == 0
    damage_middle_page(cwd / "run.db")
    again = run(cwd, *args)
    assert again.returncode == 2, again.stderr
    assert "the journal 'run.db' is damaged" in again.stderr
    assert "Traceback" not in again.stderr
    assert again.stdout == ""


def test_a_journal_damaged_while_in_use_raises_journal_error(cwd: Path) -> None:
    # Damage that appears after the journal was opened and checked (the disk, another
    # program): reading it is a JournalError naming the journal, which the CLI reports as
    # a bad journal (exit 2) instead of a traceback.
    from workpool._cli.journal import Journal, JournalError

    path = str(cwd / "run.db")
    command = {"argv": ["true"], "jsonl": False}
    journal = Journal.open(path, command=command, input_name="x", output="-")
    journal.commit([(i, i, 1, f"line {i:0200}\n".encode()) for i in range(3000)], 0)
    journal.close(0)
    journal = Journal.open(path, command=command, input_name="x", output="-")
    try:
        assert journal.resumed
        damage_middle_page(cwd / "run.db")
        with pytest.raises(JournalError, match=r"the journal '.*run\.db' is damaged"):
            list(journal.succeeded())
    finally:
        journal.close(None)


@pytest.mark.timeout(20)
def test_a_journal_in_use_by_another_run_is_refused(cwd: Path) -> None:
    env = {**ENV, "WORKPOOL_TEST_RELEASE": str(cwd / "release")}
    args = ("--journal", "run.db", "--call", f"{T}:announce_and_wait")
    first = subprocess.Popen(
        workpool(*args),
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert first.stdin is not None and first.stderr is not None
    try:
        first.stdin.write("a\n")
        first.stdin.flush()
        read_until(first.stderr, "started a")
        second = run(cwd, *args, stdin="a\n", env={"WORKPOOL_TEST_RELEASE": str(cwd / "release")})
        assert second.returncode == 2
        assert "is in use by another workpool run" in second.stderr
        (cwd / "release").touch()
        first.stdin.close()
        assert first.wait(timeout=10) == 0
    finally:
        first.kill()
        first.wait()


# ---------------------------------------------------------------------- signals


@pytest.mark.timeout(20)
@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_first_signal_drains_running_items_and_exits_128_plus_signal(
    cwd: Path, sig: signal.Signals, status: int
) -> None:
    env = {**ENV, "WORKPOOL_TEST_RELEASE": str(cwd / "release")}
    args = workpool("-j", "2", "--call", f"{T}:announce_and_wait", "-o", "out.jsonl")
    proc = subprocess.Popen(
        args, cwd=cwd, env=env, stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None and proc.stderr is not None
    try:
        # Two run, the others are read and queued for them (the pool reads ahead): the
        # signal starts none of those (the README: "starts nothing new").
        proc.stdin.write("a\nb\nc\nd\ne\nf\n")
        proc.stdin.flush()
        seen: list[str] = []
        read_until(proc.stderr, "started", seen)
        read_until(proc.stderr, "started", seen)
        proc.send_signal(sig)
        read_until(proc.stderr, f"{sig.name} received", seen)
        (cwd / "release").touch()  # the running items may finish now
        proc.stdin.close()
        rest = proc.stderr.read()
        assert proc.wait(timeout=10) == status
    finally:
        proc.kill()
        proc.wait()
    lines = "".join(seen).splitlines() + rest.splitlines()
    started = sorted(line.split()[1] for line in lines if line.startswith("started "))
    assert started == ["a", "b"], (seen, rest)
    out = records((cwd / "out.jsonl").read_text())
    assert sorted((r["input"], r["value"]) for r in out if r["ok"]) == [("a", "A"), ("b", "B")]
    # Read and never started: written as such (a resume runs them), if read at all.
    assert all(r["error"].startswith("TaskCancelled") for r in out if not r["ok"]), out
    n = len(out)
    not_started = f", {n - 2} not started" if n > 2 else ""
    assert f"workpool: {n} items, 2 ok, 0 failed, 0 skipped{not_started} in" in rest
    assert f"stopped by {sig.name}" in rest


@pytest.mark.timeout(20)
def test_second_signal_stops_at_once_and_kills_running_commands(cwd: Path) -> None:
    script = "sleep 60 & echo $! > {}.pid; wait"
    args = workpool("-j", "2", "-o", "out.jsonl", "--", "sh", "-c", script)
    proc = subprocess.Popen(
        args, cwd=cwd, env=ENV, stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None and proc.stderr is not None
    try:
        proc.stdin.write("a\nb\n")
        proc.stdin.flush()
        pids = [int(wait_for_file(cwd / f"{name}.pid")) for name in "ab"]
        proc.send_signal(signal.SIGTERM)
        seen: list[str] = []
        read_until(proc.stderr, "SIGTERM received", seen)
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(timeout=10) == 143
    finally:
        proc.kill()
        proc.wait()
    assert "received again: stopping now" in "".join(seen) + rest
    assert "stopped by SIGTERM" in rest
    # Nothing finished, and every item read says so: the two cut off get a line too (they
    # had none: the output did not say they were started and stopped).
    out = records((cwd / "out.jsonl").read_text())
    assert sorted(rec["input"] for rec in out) == ["a", "b"], out
    for rec in out:
        assert not rec["ok"] and rec["error"].startswith("TaskCancelled: "), rec
        assert rec["attempts"] == 1
    assert "workpool: 2 items, 0 ok, 0 failed, 0 skipped, 2 cancelled in" in rest
    assert not any(alive(pid) for pid in pids)


# ---------------------------------------------------------------------- usage errors


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--call", f"{T}:square", "--", "echo"], "either --call MODULE:FUNCTION or a command"),
        ([], "nothing to run"),
        (["--bogus", "--call", f"{T}:square"], "unrecognized arguments: --bogus"),
        (["-j", "many", "--call", f"{T}:square"], "invalid int value: 'many'"),
        (["-j", "0", "--call", f"{T}:square"], "invalid -j/--workers: workers must be >= 1"),
        (["--timeout", "-1", "--call", f"{T}:square"], "invalid --timeout"),
        (["--timeout", "0", "--call", f"{T}:square"], "invalid --timeout"),
        (["--timeout", "-inf", "--call", f"{T}:square"], "invalid --timeout: give seconds > 0"),
        (["--timeout", "nan", "--call", f"{T}:square"], "or inf for no limit, got 'nan'"),
        (["--timeout", "soon", "--call", f"{T}:square"], "invalid --timeout"),
        (["--retries", "-2", "--call", f"{T}:square"], "invalid --retries"),
        (["--retries", "1.5", "--call", f"{T}:square"], "--retries: invalid int value: '1.5'"),
        (["--retries", "inf", "--call", f"{T}:square"], "--retries: invalid int value: 'inf'"),
        (["--rate", "10/fortnight", "--call", f"{T}:square"], "invalid --rate"),
        (["--rate", "-1/s", "--call", f"{T}:square"], "invalid --rate"),
        (["--rate", "0/s", "--call", f"{T}:square"], "invalid --rate"),
        (["--rate", "inf/s", "--call", f"{T}:square"], "invalid --rate"),
        (["--rate", "nan", "--call", f"{T}:square"], "invalid --rate"),
        (["--rate", "0", "--call", f"{T}:square"], "invalid --rate"),
        (["--rate", "-3", "--call", f"{T}:square"], "invalid --rate"),
        (["--backend", "carrier-pigeon", "--", "echo"], "invalid choice: 'carrier-pigeon'"),
        (["--backend", "process", "--", "echo"], "--backend process is for --call functions"),
        (["--call", "no_such_module:f"], "No module named 'no_such_module'"),
        (["--call", f"{T}:no_such_function"], "has no attribute 'no_such_function'"),
        (["--call", f"{T}"], "does not name a function"),
        (["--input", "missing.txt", "--call", f"{T}:square"], "cannot read --input missing.txt"),
        (["--input", ".", "--call", f"{T}:square"], "cannot read --input ."),
        (["--", "no-such-command-4711", "{}"], "command not found: 'no-such-command-4711'"),
    ],
)
def test_usage_errors_exit_2_with_a_message(cwd: Path, args: list[str], message: str) -> None:
    proc = run(cwd, *args, stdin="1\n")
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stdout == ""


@pytest.mark.timeout(30)
@pytest.mark.parametrize("code", ["0", "5", "'config missing'"])
def test_a_call_module_that_exits_as_it_is_imported_is_a_usage_error(cwd: Path, code: str) -> None:
    # sys.exit() at a module's top level: it exited 0 (or 5, or 2 without a word) with no
    # output and no summary, as if the run had succeeded.
    (cwd / "exits.py").write_text(f"import sys\nsys.exit({code})\ndef f(x):\n    return x\n")
    proc = run(cwd, "--call", "exits:f", stdin="a\nb\n")
    assert proc.returncode == 2, proc.stderr
    assert f"cannot use --call exits:f: importing it raised SystemExit({code})" in proc.stderr
    assert proc.stdout == ""


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--input", "in.txt", "-o", "in.txt"],
            "--output in.txt is the same file as --input in.txt",
        ),
        (["--input", "in.txt", "-o", "./sub/../in.txt"], "is the same file as --input in.txt"),
        (["--input", "in.txt", "--journal", "in.txt"], "--journal in.txt is the same file as"),
        (["--input", "in.txt", "--journal", "j.db", "-o", "j.db"], "--output j.db is the same"),
        (["-o", "in.txt"], "--output in.txt is the same file as the standard input"),
    ],
)
def test_input_output_and_journal_must_be_three_files(
    cwd: Path, args: list[str], message: str
) -> None:
    # Else the output emptied the input before it was read (a run of 0 items, exit 0), or
    # the results were written into the journal's database.
    (cwd / "in.txt").write_text("1\n2\n")
    (cwd / "sub").mkdir()
    with open(cwd / "in.txt") as stdin:
        proc = run(cwd, *args, "--call", f"{T}:square", stdin=stdin)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert (cwd / "in.txt").read_text() == "1\n2\n"
    assert not (cwd / "j.db").exists()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", ["thread", "process"])
def test_what_a_function_prints_goes_to_stderr_not_into_the_results(
    cwd: Path, backend: str
) -> None:
    proc = run(cwd, "-j", "2", "--backend", backend, "--call", f"{T}:chatty", stdin="a\nb\nc\n")
    assert proc.returncode == 0, proc.stderr
    assert sorted(r["value"] for r in records(proc.stdout)) == ["a", "b", "c"]  # JSON only
    for x in "abc":
        assert f"chatty print {x}" in proc.stderr
        assert f"chatty fd {x}" in proc.stderr


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("redirect", "args", "status", "message"),
    [
        ("<&-", [], 2, "standard input is closed: give the input with --input FILE"),
        (">&-", [], 2, "standard output is closed: give the output with -o FILE"),
        ("<&-", ["--input", "in.txt", "-o", "out.jsonl"], 0, "workpool: 2 items, 2 ok"),
        (">&-", ["-o", "out.jsonl"], 0, "workpool: 2 items, 2 ok"),
        ("2>&-", ["-o", "out.jsonl"], 0, ""),
    ],
)
def test_a_closed_standard_stream_is_a_usage_error_only_when_the_run_needs_it(
    cwd: Path, redirect: str, args: list[str], status: int, message: str
) -> None:
    (cwd / "in.txt").write_text("1\n2\n")
    argv = workpool(*args, "--call", f"{T}:square")
    # The shell closes the descriptor for the run; stdin is in.txt, stdout and stderr files.
    script = f'exec "$@" < in.txt > stdout.txt 2> stderr.txt {redirect}'
    proc = subprocess.run(["sh", "-c", script, "sh", *argv], cwd=cwd, env=ENV, timeout=30)
    assert proc.returncode == status, (cwd / "stderr.txt").read_text()
    stderr = (cwd / "stderr.txt").read_text()
    assert message in stderr
    assert "Traceback" not in stderr
    if status == 0:
        assert sorted(r["value"] for r in records((cwd / "out.jsonl").read_text())) == [1, 4]


@pytest.mark.timeout(30)
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_an_output_that_cannot_be_written_is_an_error_and_counts_nothing_written(
    cwd: Path,
) -> None:
    proc = run(cwd, "-o", "/dev/full", "--call", f"{T}:square", stdin=numbers(5))
    assert proc.returncode == 1
    assert "workpool: 0 items, 0 ok, 0 failed" in proc.stderr  # it said "5 ok"
    assert "workpool: error: cannot write the results: [Errno 28]" in proc.stderr


@pytest.mark.timeout(30)
@pytest.mark.parametrize("rate", ["1000", "2.5e3", "1000/s"])
def test_rate_takes_a_plain_number_of_starts_a_second(cwd: Path, rate: str) -> None:
    # As the Pool's rate_limit does (a float: starts per second), and as its message says.
    proc = run(cwd, "--rate", rate, "--call", f"{T}:square", stdin="1\n2\n3\n")
    assert proc.returncode == 0, proc.stderr
    assert sorted(r["value"] for r in records(proc.stdout)) == [1, 4, 9]


@pytest.mark.timeout(20)
def test_help_version_and_no_subcommand(cwd: Path) -> None:
    base = [sys.executable, "-m", "workpool"]
    help_ = subprocess.run([*base, "run", "--help"], capture_output=True, text=True, env=ENV)
    assert help_.returncode == 0 and "--journal FILE" in help_.stdout
    assert "141 the output's reader went away" in " ".join(help_.stdout.split())
    version = subprocess.run([*base, "--version"], capture_output=True, text=True, env=ENV)
    assert version.returncode == 0 and version.stdout.startswith("workpool ")
    bare = subprocess.run(base, capture_output=True, text=True, env=ENV)
    assert bare.returncode == 2 and "run" in bare.stderr


def test_dev_py_run_is_workpool_run() -> None:
    # `python3 dev.py run ARGS` is `workpool run ARGS`; a `--` right after `run` is optional,
    # and ARGS that already start with workpool's `run` are passed as they are.
    import importlib.util

    spec = importlib.util.spec_from_file_location("dev", ROOT / "dev.py")
    assert spec is not None and spec.loader is not None
    dev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dev)
    args = ["-j", "2", "--", "sh", "-c", "echo {}"]
    assert dev.workpool_args(args) == ["run", *args]
    assert dev.workpool_args(["--", *args]) == ["run", *args]
    assert dev.workpool_args(["run", *args]) == ["run", *args]
    assert dev.workpool_args(["--", "run", *args]) == ["run", *args]
    assert dev.workpool_args([]) == ["run"]
    assert "`python3 dev.py run -j 4 -- wc -l {} < files.txt`" in (ROOT / "README.md").read_text()


def test_the_console_script_entry_point_is_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    # pyproject's [project.scripts] names workpool._cli:main; it must stay importable.
    import importlib
    import re

    scripts = (ROOT / "pyproject.toml").read_text().split("[project.scripts]", 1)[1]
    found = re.search(r'^workpool = "([\w.]+):(\w+)"$', scripts, re.MULTILINE)
    assert found is not None
    module, name = found.groups()
    main = getattr(importlib.import_module(module), name)
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("workpool ")


# ---------------------------------------------------------------------- the terminal


@pytest.mark.timeout(20)
def test_a_terminal_gets_a_progress_bar(cwd: Path) -> None:
    (cwd / "in.txt").write_text(numbers(50))
    master, slave = pty.openpty()
    try:
        proc = subprocess.run(
            workpool("--input", "in.txt", "-o", "out.jsonl", "--call", f"{T}:square"),
            cwd=cwd,
            env=ENV,
            stdin=subprocess.DEVNULL,
            stderr=slave,
            timeout=30,
        )
        os.close(slave)
        slave = -1
        screen = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the writing side is closed
                break
            if not chunk:
                break
            screen += chunk
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert proc.returncode == 0
    text = screen.decode()
    assert "item" in text  # tqdm's bar: "50/50 [... item/s, ok=50 failed=0]"
    assert "workpool: 50 items, 50 ok" in text
