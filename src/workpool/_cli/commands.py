"""Commands: ``workpool run -- COMMAND ARGS {}`` runs one process per input.

An argument that is exactly ``{}`` becomes the input; ``{}`` inside a longer argument becomes
the shell-quoted input, so ``sh -c 'wc -l {}'`` is safe; with no ``{}`` the input is appended
as the last argument. A command runs without a shell, in a session of its own, from a pool
thread; :data:`children` knows every running one, so that a stop can kill them all (and
none starts after it). A command that exits non-zero is a :class:`CommandFailed`.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from workpool import TaskCancelled, TaskTimeout, current_task

from .inputs import BadJSON

if TYPE_CHECKING:
    import subprocess

__all__ = ["CommandFailed", "CommandOutput", "CommandTask", "children"]

_STDERR_TAIL = 300  # characters of a failed command's stderr quoted in its error


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


class Children:
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


children = Children()
# After a timeout's kill, how long to wait for the pipes to close: a grandchild that left
# the process group may hold them open for ever.
_KILL_GRACE = 1.0


class CommandTask:
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
        if type(value) is BadJSON:
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
            proc = children.spawn(self.executable, argv, out_w, err_w)
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
            code, late = children.reap(proc, deadline)
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
