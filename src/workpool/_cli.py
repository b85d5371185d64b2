"""``workpool run``: GNU parallel / ``xargs -P`` with results, resume and graceful drain.

Run a command, or a Python function, over every line of the input with a bounded pool::

    find . -name '*.py' | workpool run -j 8 -- wc -l {}
    workpool run -j 16 --input urls.txt --timeout 10 --retries 2 --call mymod:fetch
    workpool run -j 4 --input files.txt --journal run.db --output results.jsonl -- gzip -k {}

Inputs are the lines of ``--input`` (or standard input), read lazily: a ten-million-line input
starts producing results at once, in constant memory. With ``--jsonl`` each line is a JSON
value, given parsed to the function (blank lines are ignored).

A command runs without a shell. An argument that is exactly ``{}`` becomes the input; ``{}``
inside a longer argument becomes the shell-quoted input, so ``sh -c 'wc -l {}'`` is safe;
with no ``{}`` the input is appended as the last argument. A ``--call package.module:function``
is imported (the current directory comes first on ``sys.path``, as with ``python -m``) and
called with each input.

Every finished item is one JSON object on one line of ``--output`` (or standard output), in
the order they finish (``--keep-order``: input order)::

    {"index": 0, "input": "a.txt", "ok": true, "stdout": "3 a.txt\\n", "stderr": "",
     "exit_code": 0, "error": null, "traceback": null, "attempts": 1, "duration": 0.0021}

``--call`` gives ``"value"`` (the return value; ``repr`` when not JSON) instead of ``stdout``,
``stderr`` and ``exit_code``. A command that exits non-zero is a failure. Standard error shows
a progress bar when it is a terminal, and always a one-line summary at the end.

Any bytes are an input: lines are decoded with ``surrogateescape``, so a command gets a line
that is not UTF-8 as its own bytes. Lines are written as UTF-8 with ``backslashreplace``, which
turns such a lone surrogate inside a JSON string into the JSON escape ``\\udcXX``: the output
stays UTF-8, and ``json.loads`` plus ``.encode("utf-8", "surrogateescape")`` gives the bytes back.

``--journal run.db`` records each finished item in SQLite (see :mod:`workpool._journal`):
rerunning the same command over the same input with the same journal skips what succeeded
(and retries what failed), so a run that was killed, even by SIGKILL, resumes without
redoing or losing work, and an ``--output`` file ends up with one line per item, its latest
outcome. The first SIGINT or SIGTERM stops reading input and lets the
running items finish; their results are written and journaled, then the summary, exit status
130 or 143. A second signal stops at once, killing running commands.

Exit status: 0 when every item succeeded, 1 when some failed, 2 for a usage error (with a
message that says what is wrong) or a bad journal, 128 + N when stopped by signal N, 141
(128 + SIGPIPE) when the output's reader went away: the first failed write stops the run
(nothing starts after it, running commands are killed; see ``_Stopper``).

How a run flows (only workpool's public API is used)::

    input ──▶ _Input.items() ──▶ pool.results(task, items) ──▶ _Writer.add()     main thread
              lazily; skips what     workers call the task        │ a deque append
              the journal has done   (_CallTask/_CommandTask)     ▼
                                                   writer thread: every 20 ms or 256 results,
                                                   format the lines, commit them to the
                                                   journal, then write them to the output

    _SignalWatch: told by the pool of SIGINT/SIGTERM (it drains, then cancels): input stops

``--backend process`` runs ``--call`` functions in worker processes (for CPU-bound code);
commands always run from threads, since each is a process of its own.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import re
import signal
import stat
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any, NamedTuple, NoReturn

import workpool
from workpool import (
    ConfigError,
    Interrupted,
    Pool,
    PoolClosed,
    Result,
    TaskCancelled,
    TaskTimeout,
    _backends,
    current_task,
)

if TYPE_CHECKING:
    import subprocess

    from ._journal import Journal

__all__ = ["main"]

# The writer thread takes results in groups: it writes (and commits to the journal) when this
# many wait, or FLUSH_DELAY after the first of them arrived, whichever comes first. Groups
# make the journal's commits and the output's writes cheap per item; the delay bounds how
# stale the output (and what a SIGKILL can lose of the work done) may be.
FLUSH_DELAY = 0.02
BATCH_JOURNAL = 256
BATCH_PLAIN = 2048
# Results waiting for the writer beyond which the main thread waits for it: a slow output
# (a full pipe) slows the run down instead of filling memory.
HIGH_WATER = 16384

_STDERR_TAIL = 300  # characters of a failed command's stderr quoted in its error


# ====================================================================== the tasks


class _BadJSON:
    """Stands in for the value of a --jsonl line that did not parse; the task fails with it."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def fail(self) -> NoReturn:
        raise ValueError(f"the input line is not valid JSON: {self.message}")


class _CallTask:
    """Calls the ``--call`` target with an item's input.

    Items are ``(index, text, value)`` tuples. The target travels by name, so the task pickles
    for the process backend even when the target's module is only importable from the
    directory the run started in; it is imported again on first use after unpickling.
    """

    __slots__ = ("_fn", "cwd", "spec")

    def __init__(self, spec: str, cwd: str, fn: Callable[[Any], Any]) -> None:
        self.spec = spec
        self.cwd = cwd
        self._fn: Callable[[Any], Any] | None = fn

    def __getstate__(self) -> tuple[str, str]:
        return self.spec, self.cwd

    def __setstate__(self, state: tuple[str, str]) -> None:
        self.spec, self.cwd = state
        self._fn = None

    def __call__(self, item: tuple[int, str, Any]) -> Any:
        fn = self._fn
        if fn is None:
            fn = self._fn = load_target(self.spec, self.cwd)
        value = item[2]
        if type(value) is _BadJSON:
            value.fail()
        return fn(value)


class CommandOutput(NamedTuple):
    """What a command that exited 0 produced."""

    stdout: str
    stderr: str
    exit_code: int


class CommandFailed(Exception):
    """A command exited with a non-zero status (or was killed by a signal)."""

    def __init__(self, exit_code: int, stdout: str, stderr: str) -> None:
        tail = stderr.strip()[-_STDERR_TAIL:]
        if exit_code < 0:
            try:
                how = f"was killed by {signal.Signals(-exit_code).name}"
            except ValueError:
                how = f"was killed by signal {-exit_code}"
        else:
            how = f"exited with code {exit_code}"
        super().__init__(f"command {how}" + (f": {tail}" if tail else ""))
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr

    def __reduce__(self) -> Any:
        return (type(self), (self.exit_code, self.stdout, self.stderr))


class _Children:
    """The commands running now in this process, so that an abrupt stop can kill them all.

    One lock orders registering a command, killing every group and reaping one: a command
    that starts after ``kill_all`` is killed as it registers (it would be orphaned), and a
    group id is never signalled after its leader was reaped (when the id could be reused).
    After ``kill_all``, no command starts: ``spawn`` raises TaskCancelled instead.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pids: set[int] = set()
        self._stopped = False

    def spawn(
        self, executable: str | None, argv: list[str], stdout: int, stderr: int
    ) -> subprocess.Popen[bytes]:
        """Start a command in a new session (its pid is also its process group id).

        Raises TaskCancelled once :meth:`kill_all` ran: the run is stopping.
        """
        import subprocess

        if self.stopped():  # read without the lock: the check after the start makes it exact
            raise TaskCancelled("the run is stopping: the command was not started")
        # Not under the lock: Popen releases the GIL while the child starts, so commands
        # start in parallel (os.posix_spawn holds the GIL until the exec: 2-3x slower here).
        proc = subprocess.Popen(
            argv,
            executable=executable,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        with self._lock:
            self._pids.add(proc.pid)
            if self._stopped:  # kill_all ran while it started: do not leave it behind
                _kill_group(proc.pid)
        return proc

    def reap(self, proc: subprocess.Popen[bytes], deadline: float | None) -> tuple[int, bool]:
        """Wait for a command to end and reap it: (exit code, -N if killed by signal N; killed).

        At ``deadline`` the command's group is killed (``killed`` True): a command may close
        its output and run on. Without ``os.pidfd_open`` (not Linux) that deadline is not
        enforced here; the command is killed when the run ends.
        """
        killed = False
        if deadline is not None:
            try:
                pidfd = os.pidfd_open(proc.pid)
            except (AttributeError, OSError):
                pidfd = -1
            if pidfd >= 0:
                import select

                try:
                    left = max(0.0, deadline - time.monotonic())
                    if not select.select([pidfd], [], [], left)[0]:
                        _kill_group(proc.pid)
                        killed = True
                finally:
                    os.close(pidfd)
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # wait, but leave it unreaped
        with self._lock:
            self._pids.discard(proc.pid)
            return proc.wait(), killed

    def stopped(self) -> bool:
        """True once :meth:`kill_all` ran (and no :meth:`reset` since)."""
        return self._stopped

    def reset(self) -> None:
        """Allow commands to start (again): a new run in this process."""
        with self._lock:
            self._stopped = False

    def kill_all(self) -> None:
        """Kill every running command's process group; start no more."""
        with self._lock:
            self._stopped = True
            for pid in self._pids:
                _kill_group(pid)


_children = _Children()
# After a timeout's kill, how long to wait for the pipes to close: a grandchild that left
# the process group may hold them open for ever.
_KILL_GRACE = 1.0


class _CommandTask:
    """Runs the command with an item's input substituted (see the module docstring).

    Each command is the leader of a new session (and so of its own process group): a Ctrl-C
    at the terminal reaches workpool alone, which lets the running commands finish (the
    graceful drain), and a timeout or a second signal kills the whole group, grandchildren
    included, so nothing is left behind.

    The output is read from raw pipes with ``poll`` rather than ``Popen.communicate``
    (which wraps each pipe in a file object and runs a selector): short commands are common
    (``workpool run -- true`` must keep up with ``xargs -P``).
    """

    __slots__ = ("argv", "exact", "executable", "inside", "timeout")

    def __init__(self, argv: list[str], timeout: float | None) -> None:
        self.argv = argv
        # Found on PATH once, not for every item; None when the program is itself an input.
        self.executable: str | None = None
        if "{}" not in argv[0]:
            import shutil

            self.executable = shutil.which(argv[0])
        self.exact = [i for i, a in enumerate(argv) if a == "{}"]
        self.inside = [i for i, a in enumerate(argv) if a != "{}" and "{}" in a]
        self.timeout = timeout

    def command_for(self, text: str) -> list[str]:
        """The argv for one input."""
        if not self.exact and not self.inside:
            return [*self.argv, text]
        argv = list(self.argv)
        for i in self.exact:
            argv[i] = text
        if self.inside:
            import shlex

            quoted = shlex.quote(text)
            for i in self.inside:
                argv[i] = argv[i].replace("{}", quoted)
        return argv

    def __call__(self, item: tuple[int, str, Any]) -> CommandOutput:
        value = item[2]
        if type(value) is _BadJSON:
            value.fail()
        text = value if isinstance(value, str) else json.dumps(value)
        return self.run(self.command_for(text))

    def run(self, argv: list[str]) -> CommandOutput:
        """Run ``argv`` to its end (or its deadline); its output, or CommandFailed/TaskTimeout."""
        # The task's own deadline: the pool reports the timeout, this kills the command.
        deadline = None
        if self.timeout is not None:
            remaining = current_task().remaining()
            deadline = None if remaining is None else time.monotonic() + remaining
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            proc = _children.spawn(self.executable, argv, out_w, err_w)
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        killed = True  # until the output is read: an exception then kills the group
        try:
            out, err, killed = _read_output(proc.pid, out_r, err_r, deadline)
        finally:
            os.close(out_r)
            os.close(err_r)
            if killed:
                _kill_group(proc.pid)
            code, late = _children.reap(proc, deadline)
        if killed or late:
            raise TaskTimeout(
                f"the command ran longer than --timeout {self.timeout:g}s and was killed"
            )
        stdout = out.decode("utf-8", "replace")
        stderr = err.decode("utf-8", "replace")
        if code:
            raise CommandFailed(code, stdout, stderr)
        return CommandOutput(stdout, stderr, 0)


def _read_output(
    pid: int, out_fd: int, err_fd: int, deadline: float | None
) -> tuple[bytes, bytes, bool]:
    """Read both pipes to their end; at ``deadline``, kill the group. (stdout, stderr, killed)."""
    import select

    chunks: dict[int, list[bytes]] = {out_fd: [], err_fd: []}
    poller = select.poll()
    poller.register(out_fd, select.POLLIN)
    poller.register(err_fd, select.POLLIN)
    open_fds = 2
    killed = False
    while open_fds:
        wait_ms = None
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                if killed:
                    break  # killed, yet something still holds the pipes: stop reading
                _kill_group(pid)
                killed = True
                deadline = time.monotonic() + _KILL_GRACE
                continue
            wait_ms = int(left * 1000) + 1
        for fd, _ in poller.poll(wait_ms):
            data = os.read(fd, 65536)
            if data:
                chunks[fd].append(data)
            else:
                poller.unregister(fd)
                open_fds -= 1
    return b"".join(chunks[out_fd]), b"".join(chunks[err_fd]), killed


def _kill_group(pid: int) -> None:
    """SIGKILL the process group of a command that has not been reaped yet."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:  # already gone
        pass


def load_target(spec: str, cwd: str | None = None) -> Callable[[Any], Any]:
    """Import ``package.module:function`` (or ``package.module.function``) and return it.

    ``cwd`` goes first on ``sys.path``, as ``python -m`` puts the current directory. Raises
    ImportError or AttributeError with a message that says what is missing, and TypeError
    when the target is not callable.
    """
    if cwd is not None and cwd not in sys.path:
        sys.path.insert(0, cwd)
    module_name, sep, attr = spec.partition(":")
    if not sep:
        module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise ImportError(f"{spec!r} does not name a function; write package.module:function")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AttributeError(
                f"{spec!r} does not name a function: module {module_name!r} has no attribute "
                f"{attr!r} (write package.module:function)"
            ) from None
    if not callable(obj):
        raise TypeError(f"{spec} is a {type(obj).__name__}, not a function")
    fn: Callable[[Any], Any] = obj
    return fn


# ====================================================================== input


def _read_lines(stream: IO[str]) -> Iterator[str]:
    """The lines of a regular file without their line ending (``\\n`` or ``\\r\\n``)."""
    for line in stream:
        if line[-1:] == "\n":
            line = line[:-2] if line[-2:-1] == "\r" else line[:-1]
        yield line


def _read_pipe_lines(fd: int, stop_fd: int) -> Iterator[str]:
    """The lines of a pipe or terminal; ends early once ``stop_fd`` is readable.

    A pipe can stay quiet for ever (``tail -f log | workpool run ...``): waiting for it with
    ``select`` together with ``stop_fd`` lets a signal end the input instead of waiting for
    the next line.
    """
    import select

    pending = b""
    while True:
        ready = select.select([fd, stop_fd], [], [])[0]
        if stop_fd in ready:
            return
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        lines = chunk.split(b"\n")
        lines[0] = pending + lines[0]
        pending = lines.pop()
        for line in lines:
            yield line.decode("utf-8", "surrogateescape").removesuffix("\r")
    if pending:
        yield pending.decode("utf-8", "surrogateescape").removesuffix("\r")


class _Input:
    """Turns input lines into ``(index, text, value)`` items, skipping what the journal has."""

    def __init__(self, lines: Iterator[str], jsonl: bool, watch: _SignalWatch) -> None:
        self.lines = lines
        self.jsonl = jsonl
        self.watch = watch
        self.skipped = 0

    def items(self, done: Iterator[tuple[int, int]] | None) -> Iterator[tuple[int, str, Any]]:
        """Every item to run. ``done``: ``(index, hash)`` of succeeded items, by index."""
        from ._journal import line_hash

        loads = json.loads
        done = done if done is not None else iter(())
        nxt = next(done, None)
        watch = self.watch
        for idx, text in enumerate(self.lines):
            if watch.stopped:
                return  # a signal: read no further
            if nxt is not None and nxt[0] == idx:
                recorded = nxt[1]
                nxt = next(done, None)
                if recorded == line_hash(text):
                    self.skipped += 1
                    continue
            if self.jsonl:
                try:
                    value: Any = loads(text)
                except ValueError as e:
                    value = _BadJSON(str(e))
                yield (idx, text, value)
            else:
                yield (idx, text, text)


def _open_input(path: str | None, stop_fd: int) -> tuple[Iterator[str], str]:
    """The input lines and how the journal names the input; OSError when unreadable."""
    if path is None or path == "-":
        fd, name, own = sys.stdin.fileno(), "<stdin>", False
    else:
        fd, name, own = os.open(path, os.O_RDONLY), os.path.abspath(path), True
    mode = os.fstat(fd).st_mode
    if stat.S_ISDIR(mode):
        if own:
            os.close(fd)
        raise IsADirectoryError(21, "Is a directory", path)
    if not stat.S_ISREG(mode):
        return _read_pipe_lines(fd, stop_fd), name
    # surrogateescape: any bytes (file names, mostly) reach commands unchanged.
    stream = open(  # noqa: SIM115 - lives as long as the run
        fd, encoding="utf-8", errors="surrogateescape", newline="\n", buffering=1 << 16, closefd=own
    )
    return _read_lines(stream), name


# ====================================================================== output


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


# One encoder for every line: non-JSON values become their repr, NaN is refused (not JSON).
_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, default=repr).encode
_quote: Callable[[str], str] = json.encoder.encode_basestring


def _json(v: Any) -> str:
    """``v`` as JSON: the common scalars by hand (5x faster than the encoder), the rest by it.

    What JSON cannot hold becomes its ``repr``, inside a value (a set in a list) or whole
    (NaN, a cycle, non-string keys, an int too long to print).
    """
    t = type(v)
    if t is str:
        return _quote(v)
    if v is None:
        return "null"
    if t is bool:
        return "true" if v else "false"
    try:
        if t is int:
            return str(v)
        if t is float and v - v == 0:  # finite
            return repr(v)
        return _encode(v)
    except Exception:
        return _quote(_safe(repr, v))


def _safe(show: Callable[[Any], str], v: Any) -> str:
    """``show(v)`` (repr or str), or a placeholder when the user's ``__repr__`` raises."""
    try:
        return show(v)
    except Exception as e:
        return f"<{type(v).__name__} object: {show.__name__}() failed with {type(e).__name__}>"


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {_safe(str, error)}"


def _input_of(item: tuple[int, str, Any]) -> str:
    value = item[2]
    return _quote(item[1]) if type(value) is _BadJSON else _json(value)


# The output lines are assembled from a template: building a dict and encoding it all cost
# about 5 us a line, most of the per-item budget of a fast run.
def _format_call(r: Result[Any]) -> str:
    item = r.item
    error = r.error
    if error is None:
        value = item[2]
        inp = _quote(value) if type(value) is str else _input_of(item)
        v = r.value
        return (
            f'{{"index": {item[0]}, "input": {inp}, "ok": true, '
            f'"value": {_quote(v) if type(v) is str else _json(v)}, "error": null, '
            f'"traceback": null, "attempts": {r.attempts}, "duration": {r.duration:.6f}}}\n'
        )
    return (
        f'{{"index": {item[0]}, "input": {_input_of(item)}, "ok": false, "value": null, '
        f'"error": {_quote(_error_text(error))}, "traceback": {_json(r.traceback)}, '
        f'"attempts": {r.attempts}, "duration": {r.duration:.6f}}}\n'
    )


def _format_command(r: Result[Any]) -> str:
    item = r.item
    error = r.error
    out: Any = r.value if error is None else error
    tb = r.traceback
    if isinstance(out, (CommandOutput, CommandFailed)):
        stdout, stderr, code = _quote(out.stdout), _quote(out.stderr), str(out.exit_code)
        tb = None  # the traceback of a non-zero exit is workpool's, not the command's
    else:
        stdout = stderr = code = "null"
    return (
        f'{{"index": {item[0]}, "input": {_input_of(item)}, "ok": {_json(error is None)}, '
        f'"stdout": {stdout}, "stderr": {stderr}, "exit_code": {code}, '
        f'"error": {"null" if error is None else _quote(_error_text(error))}, '
        f'"traceback": {_json(tb)}, "attempts": {r.attempts}, '
        f'"duration": {r.duration:.6f}}}\n'
    )


class _OutputFailed(Exception):
    """The writer thread could not write the output or the journal; ``__cause__`` says why."""


class _Stopper:
    """Stops a run whose output failed, at once: no item starts after the failed write.

    Called from the writer thread when a write (or a journal commit) fails, e.g. the reader
    of ``workpool run ... | head -n 1`` went away: the results can go nowhere, so the input
    stops, queued items are cancelled, running ones are cancelled (commands killed) and no
    command starts any more. The main thread then leaves the pool at its next result.
    """

    def __init__(self, pool: Pool, watch: _SignalWatch) -> None:
        self.pool = pool
        self.watch = watch

    def __call__(self) -> None:
        _children.kill_all()
        self.watch.stop_input()
        self.pool.shutdown(wait=False, cancel_futures=True, timeout=0)


class _Writer:
    """Formats results, commits them to the journal, then writes their lines: in a thread.

    The main thread only appends each Result to a deque (:meth:`add`); this thread takes them
    in groups (see ``FLUSH_DELAY``), so formatting, the journal's commit and the write cost
    little per item and the main thread keeps the pool fed. A line is written only once its
    journal row is committed: whatever is in the output is in the journal.
    """

    def __init__(
        self,
        fd: int,
        offset: int,
        fmt: Callable[[Result[Any]], str],
        journal: Journal | None,
        progress: _Progress | None,
        source: _Input,
        on_error: Callable[[], None],
    ) -> None:
        self.fd = fd
        self.on_error = on_error
        self.offset = offset
        self.fmt = fmt
        self.journal = journal
        self.progress = progress
        self.source = source
        self.ok = self.failed = self.cancelled = 0
        self.error: BaseException | None = None
        self._batch_max = BATCH_JOURNAL if journal is not None else BATCH_PLAIN
        self._queue: deque[Result[Any]] = deque()
        self._cv = threading.Condition(threading.Lock())
        self._closing = False
        self._room_waiter = False
        self._thread = threading.Thread(target=self._loop, name="workpool-cli-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, r: Result[Any]) -> None:
        """Queue one result (main thread). Raises _OutputFailed once the writer has failed."""
        if self.error is not None:
            raise _OutputFailed() from self.error
        queue = self._queue
        queue.append(r)
        n = len(queue)
        if n == 1 or n == self._batch_max:
            with self._cv:
                self._cv.notify()
        elif n >= HIGH_WATER:
            with self._cv:
                self._room_waiter = True
                self._cv.notify()
                while len(queue) >= HIGH_WATER // 2 and self.error is None:
                    self._cv.wait()
                self._room_waiter = False
            if self.error is not None:
                raise _OutputFailed() from self.error

    def close(self) -> None:
        """Write what is queued, stop the thread, record the end in the journal.

        The journal may rebuild the output file then (see :meth:`Journal.close`); an error
        doing so is the writer's ``error``.
        """
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        self._thread.join()
        if self.journal is not None:
            from ._journal import JournalError

            try:
                self.journal.close(self.offset if self.error is None else None, self.fd)
            except (JournalError, OSError) as e:
                self.error = self.error or e

    def _loop(self) -> None:
        queue = self._queue
        cv = self._cv
        try:
            while True:
                with cv:
                    while not queue and not self._closing:
                        cv.wait()
                    if not self._closing:
                        deadline = time.monotonic() + FLUSH_DELAY
                        while len(queue) < self._batch_max and not self._closing:
                            left = deadline - time.monotonic()
                            if left <= 0:
                                break
                            cv.wait(left)
                    closing = self._closing
                if queue:
                    self._flush([queue.popleft() for _ in range(len(queue))])
                    if self._room_waiter:
                        with cv:
                            cv.notify_all()
                elif closing:
                    return
        except BaseException as e:
            self.error = e
            with cv:
                cv.notify_all()
            self.on_error()

    def _flush(self, batch: list[Result[Any]]) -> None:
        fmt = self.fmt
        lines = [fmt(r) for r in batch]
        ok = failed = cancelled = 0
        for r in batch:
            error = r.error
            if error is None:
                ok += 1
            elif r.attempts == 0 and isinstance(error, TaskCancelled):
                cancelled += 1  # read from the input, never started: the pool was stopping
            else:
                failed += 1
        if self.journal is not None:
            from ._journal import line_hash

            # The journal keeps each line as the bytes written (see _journal: "Any bytes").
            encoded = [line.encode("utf-8", "backslashreplace") for line in lines]
            rows = [
                (r.item[0], line_hash(r.item[1]), r.error is None, line)
                for r, line in zip(batch, encoded)
            ]
            self.journal.commit(rows, self.offset)
            data = b"".join(encoded)
        else:
            data = "".join(lines).encode("utf-8", "backslashreplace")
        self.ok += ok
        self.failed += failed
        self.cancelled += cancelled
        _write_all(self.fd, data)
        self.offset += len(data)
        if self.progress is not None:
            self.progress.show(self.ok, self.failed, self.source.skipped)


# ====================================================================== progress


class _Progress:
    """A tqdm bar on standard error: done (ok / failed / skipped), rate, and ETA if known.

    Only used when standard error is a terminal; the total comes from counting the lines of
    a regular ``--input`` file in a background thread, so a huge file does not delay the start.
    """

    def __init__(self, path: str | None) -> None:
        from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs in the lock

        self.bar = tqdm(
            total=None,
            unit="item",
            file=sys.stderr,
            dynamic_ncols=True,
            mininterval=0.2,
            smoothing=0.1,
            leave=False,
        )
        if path is not None and path != "-" and os.path.isfile(path):
            threading.Thread(target=self._count, args=(path,), daemon=True).start()

    def _count(self, path: str) -> None:
        n = 0
        last = b"\n"
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                n += chunk.count(b"\n")
                last = chunk[-1:]
        self.bar.total = n + (last != b"\n")

    def show(self, ok: int, failed: int, skipped: int) -> None:
        bar = self.bar
        extra = f" skipped={skipped}" if skipped else ""
        bar.set_postfix_str(f"ok={ok} failed={failed}{extra}", refresh=False)
        bar.update(ok + failed + skipped - bar.n)

    def close(self) -> None:
        self.bar.close()


# ====================================================================== signals


class _SignalWatch:
    """Tells the user about SIGINT/SIGTERM and stops the input; the pool does the rest.

    The pool (``handle_signals=self.on_signal``) drains on the first signal and cancels on
    the second; it calls ``on_signal`` from its signal thread, which sees every signal at once
    even while the main thread blocks. The first signal also stops the input: ``stopped``, and
    the ``stop_fd`` pipe that wakes a reader blocked on a quiet pipe.
    """

    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.first: int | None = None
        """The first signal received."""
        self.stopped = False
        """True once no more input should be read."""
        self.stop_fd, self._stop_w = os.pipe()

    def stop_input(self) -> None:
        """Read no more input (from any thread); wakes a read waiting on a quiet pipe."""
        if not self.stopped:
            self.stopped = True
            os.write(self._stop_w, b"x")

    def on_signal(self, signum: int, count: int) -> None:
        name = signal.Signals(signum).name
        if count == 1:
            self.first = signum
            self.stop_input()
            msg = (
                f"workpool: {name} received: starting nothing new, finishing the running items "
                "(send it again to stop at once)\n"
            )
        else:
            msg = f"workpool: {name} received again: stopping now\n"
            # Kill the running commands now, from this (helper) thread: the main thread is
            # about to leave the pool, whose exit must not wait on workers still reaping them.
            _children.kill_all()
        os.write(2, (("\n" if self.tty else "") + msg).encode())

    def close(self) -> None:
        for fd in (self.stop_fd, self._stop_w):
            os.close(fd)


# ====================================================================== the command line


def _parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The ``workpool`` parser and its ``run`` subcommand's parser."""
    parser = argparse.ArgumentParser(
        prog="workpool",
        description="Bounded concurrency from the shell: run a command or a Python function "
        "over many inputs.",
    )
    parser.add_argument("--version", action="version", version=f"workpool {workpool.__version__}")
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="run a command or a Python function over every input line",
        description="Run a command (after --) or a Python function (--call) over every line "
        "of the input, with a bounded pool; one JSON object a line per finished item.",
        epilog="examples:\n"
        "  ls *.txt | workpool run -j 8 -- wc -l {}\n"
        "  workpool run -j 16 --input urls.txt --timeout 10 --retries 2 --call mymod:fetch\n"
        "  workpool run --input files.txt --journal run.db --output out.jsonl -- gzip -k {}\n\n"
        "{} exactly: the input; {} inside an argument: the shell-quoted input; no {}: the "
        "input is appended.\n"
        "exit status: 0 all succeeded, 1 some failed, 2 usage error, 130/143 stopped by "
        "SIGINT/SIGTERM.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "-j",
        "--workers",
        type=int,
        metavar="N",
        help="how many items run at once (default: the number of CPUs)",
    )
    run.add_argument(
        "--backend",
        choices=_backends.names(),
        default="thread",
        help="where --call functions run: thread (default), or process for CPU-bound ones",
    )
    run.add_argument(
        "--timeout",
        metavar="S",
        help="seconds an item may run; a command past it is killed (inf: no limit, the default)",
    )
    run.add_argument(
        "--retries",
        type=int,
        default=0,
        metavar="N",
        help="retry a failed item up to N times (exponential backoff)",
    )
    run.add_argument(
        "--rate", metavar="RATE", help='start at most this many items, e.g. "10/s", "30/min"'
    )
    run.add_argument(
        "-a",
        "--input",
        metavar="FILE",
        help="read the inputs from FILE, one a line (default: standard input)",
    )
    run.add_argument(
        "--jsonl", action="store_true", help="each input line is a JSON value, passed parsed"
    )
    run.add_argument(
        "-o", "--output", metavar="FILE", help="write the results to FILE (default: stdout)"
    )
    run.add_argument(
        "--journal",
        metavar="FILE",
        help="record finished items in FILE (SQLite); rerun with it to resume",
    )
    run.add_argument(
        "-k",
        "--keep-order",
        action="store_true",
        help="write results in input order (default: as they finish)",
    )
    run.add_argument(
        "--call",
        metavar="MODULE:FUNCTION",
        help="call this Python function with each input instead of running a command",
    )
    run.add_argument("command", nargs="*", help="the command to run, after -- (e.g. -- wc -l {})")
    return parser, run


def main(argv: list[str] | None = None) -> int:
    """The ``workpool`` console script; returns the exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    # Everything after the first "--" is the command, verbatim (argparse would eat its flags).
    tail: list[str] = []
    if "--" in args:
        cut = args.index("--")
        args, tail = args[:cut], args[cut + 1 :]
    args = _glue_negative_values(args)
    parser, run_parser = _parser()
    try:
        ns = parser.parse_args(args)
        if ns.subcommand is None:
            parser.print_help(sys.stderr)
            return 2
        ns.command = [*ns.command, *tail]
        return _run(ns, run_parser)
    except SystemExit as e:  # argparse's usage errors (2), --help and --version (0)
        return e.code if isinstance(e.code, int) else 2
    except KeyboardInterrupt:  # before the pool took over SIGINT
        return 130


# A value that starts with "-" but that argparse does not take for a negative number
# ("-1/s", "-inf", "-1e3"): argparse would read it as an unknown flag and say the option
# "expected one argument" instead of what is wrong with the value.
_NEGATIVE = re.compile(r"-(\d|\.\d|inf|nan)", re.IGNORECASE)
_NUMBER_FLAGS = frozenset({"-j", "--workers", "--timeout", "--retries", "--rate"})


def _glue_negative_values(args: list[str]) -> list[str]:
    """``--rate -1/s`` as ``--rate=-1/s``, so the value gets its own error message."""
    out: list[str] = []
    for arg in args:
        if out and out[-1] in _NUMBER_FLAGS and _NEGATIVE.match(arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def _timeout(text: str | None, parser: argparse.ArgumentParser) -> float | None:
    """``--timeout``'s seconds; None for no limit: none given, ``inf``, or too far to matter.

    A deadline beyond ``threading.TIMEOUT_MAX`` (about 292 years) is more than the
    platform's waits can take, and no limit in practice.
    """
    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not seconds > 0:  # also NaN
        parser.error(
            f"invalid --timeout: give seconds > 0 (e.g. 30 or 0.5), or inf for no limit, got {text!r}"
        )
    return None if seconds >= threading.TIMEOUT_MAX else seconds


def _run(ns: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``workpool run``: check the arguments, open the files, run, summarise; the exit status."""
    started = time.monotonic()
    if ns.call is not None and ns.command:
        parser.error("give either --call MODULE:FUNCTION or a command after --, not both")
    if ns.call is None and not ns.command:
        parser.error(
            "nothing to run: give a command after -- (e.g. -- echo {}) or --call MODULE:FUNCTION"
        )
    ns.timeout = _timeout(ns.timeout, parser)
    watch = _SignalWatch(sys.stderr.isatty())
    pool = _make_pool(ns, parser, watch)
    task, fmt, command = _make_task(ns, parser)

    # The input, then the journal (which may read the first lines to check them), then the
    # output (repaired and appended to on a resume). A usage error leaves no new file behind.
    where = "standard input" if ns.input in (None, "-") else f"--input {ns.input}"
    try:
        lines, input_name = _open_input(ns.input, watch.stop_fd)
    except OSError as e:
        parser.error(f"cannot read {where}: {e.strerror or e}")
    if ns.jsonl:
        lines = (line for line in lines if line.strip())
    from ._journal import JournalError, output_key

    output = output_key(ns.output)
    journal: Journal | None = None
    if ns.journal is not None:
        from ._journal import Journal

        try:
            journal = Journal.open(
                ns.journal, command=command, input_name=input_name, output=output
            )
            if journal.resumed:
                lines = journal.check_input(lines)
        except (JournalError, OSError) as e:
            if journal is not None:
                journal.discard()
            if isinstance(e, JournalError):
                parser.error(str(e))
            parser.error(f"cannot read {where}: {e.strerror or e}")
    try:
        fd, offset = _open_output(ns.output, journal, output)
    except (JournalError, OSError) as e:
        if journal is not None:
            journal.discard()
        if isinstance(e, JournalError):
            parser.error(str(e))
        parser.error(f"cannot write --output {ns.output}: {e.strerror or e}")

    source = _Input(lines, ns.jsonl, watch)
    progress = _Progress(ns.input) if watch.tty else None
    writer = _Writer(fd, offset, fmt, journal, progress, source, _Stopper(pool, watch))
    done = journal.succeeded() if journal is not None and journal.resumed else None
    stopped_by: int | None = None
    failure: BaseException | None = None
    _children.reset()
    writer.start()
    try:
        with pool:
            for r in pool.results(task, source.items(done), ordered=ns.keep_order):
                writer.add(r)
    except Interrupted as e:
        stopped_by = e.signal
    except _OutputFailed as e:
        failure = e.__cause__
    except PoolClosed as e:  # the writer failed and shut the pool (_Stopper)
        failure = writer.error or e
    except (JournalError, OSError) as e:  # reading the input or the journal failed midway
        failure = e
    finally:
        _children.kill_all()  # commands of cancelled or abandoned tasks
        writer.close()
        watch.close()  # after the writer: its _Stopper may still stop the input
        if progress is not None:
            progress.close()
        if fd != sys.stdout.fileno():
            os.close(fd)

    failure = failure or writer.error
    if stopped_by is None:
        stopped_by = watch.first  # the input ended at the signal before the pool said so
    _summary(writer, source, time.monotonic() - started, stopped_by)
    if stopped_by is not None:
        return 128 + stopped_by
    if failure is not None:
        if isinstance(failure, BrokenPipeError):
            return 128 + signal.SIGPIPE  # the reader went away (`| head`): stop quietly
        if isinstance(failure, JournalError):  # a bad journal, found late: as a usage error
            print(f"workpool: error: {failure}", file=sys.stderr)
            return 2
        print(f"workpool: error: {_error_text(failure)}", file=sys.stderr)
        return 1
    return 0 if writer.failed == 0 and writer.cancelled == 0 else 1


# The Pool option behind each flag, to name the flag in a ConfigError's message.
_FLAGS = {
    "workers": "-j/--workers",
    "task_timeout": "--timeout",
    "retries": "--retries",
    "rate_limit": "--rate",
}


def _make_pool(
    ns: argparse.Namespace, parser: argparse.ArgumentParser, watch: _SignalWatch
) -> Pool:
    """The pool; a bad option is a usage error that names the flag (the Pool checks them)."""
    try:
        return Pool(
            ns.workers if ns.workers is not None else os.cpu_count() or 1,
            backend=ns.backend,
            task_timeout=ns.timeout,
            retries=ns.retries,
            rate_limit=ns.rate,
            handle_signals=watch.on_signal,
            name="workpool-run",
        )
    except ConfigError as e:
        option = str(e).split(" ", 1)[0]
        parser.error(f"invalid {_FLAGS.get(option, 'option')}: {e}")


def _make_task(
    ns: argparse.Namespace, parser: argparse.ArgumentParser
) -> tuple[Callable[[tuple[int, str, Any]], Any], Callable[[Result[Any]], str], dict[str, Any]]:
    """What runs on each item, how its result is written, and its fingerprint for a journal."""
    if ns.call is not None:
        cwd = os.getcwd()
        try:
            fn = load_target(ns.call, cwd)
        except Exception as e:
            parser.error(f"cannot use --call {ns.call}: {_error_text(e)}")
        return _CallTask(ns.call, cwd, fn), _format_call, {"call": ns.call, "jsonl": ns.jsonl}
    if ns.backend != "thread":
        # A worker process killed at a timeout or a second signal would orphan the command it
        # started; and a command is a process of its own already.
        parser.error(
            f"--backend {ns.backend} is for --call functions; a command already runs in its "
            "own process, from a thread (drop --backend)"
        )
    task = _CommandTask(ns.command, ns.timeout)
    if "{}" not in ns.command[0] and task.executable is None:
        parser.error(f"command not found: {ns.command[0]!r} (not an executable on PATH)")
    return task, _format_command, {"argv": ns.command, "jsonl": ns.jsonl}


def _open_output(path: str | None, journal: Journal | None, key: str) -> tuple[int, int]:
    """The output's file descriptor and length; on a resume, repair or rebuild it first.

    A resume's output file is made to hold every result the journal has, one line per item
    (see :mod:`workpool._journal`, "One line per item"), before this run adds to it.
    """
    if path is None or path == "-":
        fd, offset = sys.stdout.fileno(), 0
    elif journal is not None and journal.resumed:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        offset = os.fstat(fd).st_size
    else:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o666)
        offset = 0
    if journal is not None and journal.resumed:
        if journal.must_rebuild(key, fd):
            return fd, journal.rebuild(key, fd)
        replay, cut = journal.replay(key)
        if cut is not None:
            os.ftruncate(fd, cut)  # drop lines (maybe half a line) written after the last record
            offset = cut
        data = b"".join(replay)
        _write_all(fd, data)
        offset += len(data)
        journal.start_output(key, offset)
    return fd, offset


def _summary(writer: _Writer, source: _Input, elapsed: float, stopped_by: int | None) -> None:
    done = writer.ok + writer.failed
    total = done + writer.cancelled + source.skipped
    rate = done / elapsed if elapsed > 0 else 0.0
    text = (
        f"workpool: {total} items, {writer.ok} ok, {writer.failed} failed, {source.skipped} skipped"
    )
    if writer.cancelled:
        text += f", {writer.cancelled} not started"
    text += f" in {elapsed:.2f}s" if elapsed < 10 else f" in {elapsed:.0f}s"
    text += f" ({rate:.0f}/s)"
    if stopped_by is not None:
        text += f"; stopped by {signal.Signals(stopped_by).name}"
    print(text, file=sys.stderr, flush=True)
