"""The fork server of the process backend: started once per program, with the main module and
what every worker needs already imported, so each worker is a cheap fork of it."""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

__all__ = ["FORK_SERVER_PRELOAD", "start_fork_server"]

_server_lock = threading.Lock()


def _after_fork_in_child() -> None:
    """A process forked (``os.fork``) from one that runs process pools: the parent's worker
    processes and fork server are not its own. Without this, its exit printed "AssertionError:
    can only join a child process" (multiprocessing's exit handler joined the parent's
    workers), and a process pool of its own could not start (multiprocessing asked after the
    parent's fork server: ChildProcessError). Plain stores only: another thread may have held
    a lock at the fork."""
    global _server_lock
    _server_lock = threading.Lock()
    pid = os.getpid()
    children = getattr(sys.modules.get("multiprocessing.process"), "_children", None)
    if isinstance(children, set):
        for child in list(children):
            if getattr(child, "_parent_pid", pid) != pid:
                children.discard(child)
    server = getattr(sys.modules.get("multiprocessing.forkserver"), "_forkserver", None)
    if server is not None and getattr(server, "_forkserver_pid", None) is not None:
        alive = server._forkserver_alive_fd  # (the parent's server lives while the parent does)
        server._forkserver_pid = server._forkserver_address = server._forkserver_alive_fd = None
        server._lock = threading.Lock()
        if isinstance(alive, int):
            try:
                os.close(alive)
            except OSError:
                pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

# CPython tells its fork server where the main script is from 3.13.8 on (gh-126631); before,
# workpool adds the path itself while the server starts (see start_fork_server).
NEEDS_MAIN_PATH = sys.version_info < (3, 13, 8)

# What the fork server imports besides the program's main module, so that every worker it
# forks has it already (see start_fork_server).
FORK_SERVER_PRELOAD = (
    # Makes the server survive SIGTERM (see that module); first, so that it does while the
    # rest is imported.
    "workpool._backends._in_fork_server",
    "workpool._backends._child",
    "workpool._backends._wire",
    "cloudpickle",
    # What unpickling a worker's arguments needs: its progress array (ctypes, ~10 ms to import
    # in every new worker otherwise) and its pipes.
    "multiprocessing.sharedctypes",
    "multiprocessing.connection",
    # What reporting a task's failure needs (formatting its traceback).
    "traceback",
    # What unpickling the worker's own process object needs.
    "multiprocessing.popen_forkserver",
)


def start_fork_server() -> None:
    """Make sure the fork server runs, with the program's main module imported in it once.

    Workers are forked from the server, so whatever it imported they have for free. It imports
    this package's worker loop, cloudpickle and the program's main module, which every worker
    needs to unpickle functions defined there; without it each worker, also each replacement
    of a crashed one, runs the main script again (tens of ms for a script with imports).
    CPython's fork server means to preload the main script but, before 3.13.8 (gh-126631), is
    never told its path: it looks for a ``main_path`` key that
    ``spawn.get_preparation_data`` does not produce. For the moment the server is started, the
    key is added. (Other users of that function see one more key, which nothing reads.)
    A main module run with ``-m`` is not preloaded (as in CPython): importing it by name in
    the server would run its unguarded code outside multiprocessing's start-up guard.

    Preloads the user asked for with ``set_forkserver_preload`` are kept; a server that runs
    already (started by the user or another pool) is used as it is.
    """
    from multiprocessing import forkserver, spawn

    server: Any = getattr(forkserver, "_forkserver", None)
    if server is None or not hasattr(server, "_preload_modules"):
        return  # not the CPython fork server we know: let multiprocessing do it
    with _server_lock:
        preload = list(server._preload_modules or [])
        wanted = ["__main__", *FORK_SERVER_PRELOAD]
        server._preload_modules = preload + [m for m in wanted if m not in preload]
        if not NEEDS_MAIN_PATH:
            forkserver.ensure_running()
            return
        original = spawn.get_preparation_data

        def with_main_path(name: str) -> dict[str, Any]:
            data: dict[str, Any] = original(name)
            path = data.get("init_main_from_path")
            if path is not None:
                data.setdefault("main_path", path)
            return data

        spawn.get_preparation_data = with_main_path
        try:
            forkserver.ensure_running()
        finally:
            spawn.get_preparation_data = original
