"""What travels between the pool and a worker process, and how (process backend).

Every message is one byte string: a *body*, then a small *header* (a pickle of builtins only),
then the header's length in 4 bytes. The header comes last so that the body can be pickled
straight into the message buffer, without a copy, before the header (which says how to read it)
is known. Two bodies exist:

- **whole**: one pickle of all the values (or of ``(entries, kwargs)``);
- **split**: one pickle per value, back to back; the header lists where each one ends.

Plain data (numbers, strings, bytes, ``None`` and lists, tuples, dicts and sets of them) is sent
whole: the C pickler handles it at full speed, and it can neither fail to unpickle nor run code
while it is (un)pickled. Anything else (instances, functions, failures) is sent split, so that
a value the other side cannot unpickle, or whose pickling kills the process, is pinned to its
own task: the reader decodes each value on its own, and the worker publishes which value it is
pickling (see ``_child``). Telling the two apart costs nothing extra for plain data: it is
pickled by a pickler whose ``reducer_override``, which the C pickler calls only for objects
that are not plain, gives up (``dumps_plain``).

Functions, and the classes of arguments, defined in the program's main script are sent by
reference when the worker imports that script too (``TaskPickler``): they keep the globals that
an initializer sets, and instances of the script's classes stay instances of the same class.
"""

from __future__ import annotations

import io
import pickle
import sys
import types
import weakref
from typing import Any

import cloudpickle

from .._units import Failure

__all__ = [
    "BadArgument",
    "RemoteTraceback",
    "TaskPickler",
    "Unloadable",
    "dumps_for_spawn",
    "dumps_plain",
    "finish",
    "from_main",
    "loads_for_spawn",
    "main_importable",
    "split",
]

PROTOCOL = pickle.HIGHEST_PROTOCOL
_LENGTH = 4  # bytes of the header length at the end of a message


class _NotPlain(Exception):
    pass


class _PlainPickler(pickle.Pickler):
    """Pickles plain data only: the C pickler asks ``reducer_override`` about every object
    that is not a number, string, bytes, None, list, tuple, dict or set."""

    def reducer_override(self, obj: Any) -> Any:
        raise _NotPlain


def dumps_plain(obj: Any, buf: io.BytesIO) -> bool:
    """Pickle ``obj`` into ``buf`` if it is plain data; else leave ``buf`` as it was, False."""
    start = buf.tell()
    try:
        _PlainPickler(buf, PROTOCOL).dump(obj)
    except Exception:  # _NotPlain, or too deep to pickle at all: the split path says which
        buf.seek(start)
        buf.truncate()
        return False
    return True


def finish(buf: io.BytesIO, header: tuple[Any, ...]) -> memoryview:
    """Append the header (builtins only) and its length to the body in ``buf``: the message."""
    start = buf.tell()
    pickle.dump(header, buf, PROTOCOL)
    buf.write((buf.tell() - start).to_bytes(_LENGTH, "little"))
    return buf.getbuffer()


def split(data: bytes) -> tuple[tuple[Any, ...], memoryview]:
    """A message's header and body."""
    view = memoryview(data)
    end = len(view) - _LENGTH
    start = end - int.from_bytes(view[end:], "little")
    header: tuple[Any, ...] = pickle.loads(view[start:end])
    return header, view[:start]


# ---------------------------------------------------------------------- task pickling


def main_importable(method: str) -> bool:
    """Whether a worker started with ``method`` imports the program's main module, so that
    names defined at its top level can be sent by reference (see spawn.prepare)."""
    if method == "fork":
        return True  # the worker is a copy of this process
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    if name is not None:  # python -m NAME: imported by name, except a package's __main__
        return name != "__main__" and not name.endswith(".__main__")
    path = getattr(main, "__file__", None)  # a script; -c and the REPL have no file
    return isinstance(path, str) and not path.endswith(("ipython", "ipython.py"))


def _main_name(obj: Any) -> str | None:
    """The qualified name under which ``obj`` (a function or class of ``__main__``) is found
    in the main module, or None if it is not found there as itself (nested, a lambda, or
    shadowed by another object of that name)."""
    if getattr(obj, "__module__", None) != "__main__":
        return None
    name = getattr(obj, "__qualname__", None)
    main = sys.modules.get("__main__")
    if not isinstance(name, str) or "<" in name or main is None:
        return None
    found: Any = main
    for part in name.split("."):
        found = getattr(found, part, None)
    return name if found is obj else None


def from_main(name: str, line: int, by_value: bytes | None) -> Any:
    """In the worker: the object called ``name`` in the main module; ``by_value`` (a
    cloudpickle of it) when the worker's main module has no such object, as for a function
    defined under ``if __name__ == "__main__":``. ``line`` (a function's first line, else 0)
    tells a same-named function defined elsewhere in the script from the one sent.
    ``by_value`` is None for an object that cannot travel by value (it refers to a global
    that won't pickle): then only the main module's own will do."""
    found: Any = sys.modules.get("__main__")
    for part in name.split("."):
        found = getattr(found, part, None)
    code = getattr(found, "__code__", None)
    if found is None or (line and getattr(code, "co_firstlineno", line) != line):
        if by_value is None:
            raise pickle.UnpicklingError(
                f"{name} is not defined by the main module as the worker process imports it "
                "(defined under `if __name__ == '__main__':`?), and cannot be pickled by value"
            )
        return pickle.loads(by_value)
    return found


class TaskPickler(cloudpickle.Pickler):  # type: ignore[misc]  # cloudpickle is untyped
    """cloudpickle, with the program's main-script functions and classes by reference.

    cloudpickle sends everything of ``__main__`` by value: a function with a copy of the
    module's globals (so an initializer's globals are not its globals), a class as a new class
    (so an instance the task returns is not an instance of ``__main__.Point`` there, and won't
    pickle back). The worker imports the main script too (the fork server once, or each spawned
    worker; a forked worker is a copy), so where it does (``main_by_reference``), top-level
    functions and classes of ``__main__`` are sent by name, with their by-value pickle as a
    fallback for those the worker's copy does not define. Lambdas, closures and nested
    functions still travel by value.
    """

    def __init__(self, buf: io.BytesIO, main_by_reference: bool) -> None:
        super().__init__(buf, PROTOCOL)
        self._by_reference = main_by_reference

    def reducer_override(self, obj: Any) -> Any:
        if self._by_reference:
            t = type(obj)
            if t is types.FunctionType or isinstance(obj, type):
                name = _main_name(obj)
                if name is not None:
                    code = getattr(obj, "__code__", None)
                    line = code.co_firstlineno if code is not None else 0
                    return from_main, (name, line, _by_value(obj))
        return super().reducer_override(obj)


# The by-value pickles of main-script classes, which arguments may refer to in every message.
# (A function's own pickle is cached by the backend, once per pool.)
_class_pickles: weakref.WeakKeyDictionary[type, bytes] = weakref.WeakKeyDictionary()


def _by_value(obj: Any) -> bytes | None:
    """cloudpickle's pickle of ``obj``; None if it has none (it uses a global that won't
    pickle, like a threading.local: only by reference can it travel)."""
    if isinstance(obj, type):
        blob = _class_pickles.get(obj)
        if blob is not None:
            return blob
    try:
        blob = bytes(cloudpickle.dumps(obj, PROTOCOL))
    except Exception:
        return None
    if isinstance(obj, type):
        _class_pickles[obj] = blob
    return blob


def dumps_task(obj: Any, main_by_reference: bool) -> bytes:
    buf = io.BytesIO()
    TaskPickler(buf, main_by_reference).dump(obj)
    return buf.getvalue()


class _SpawnPickler(TaskPickler):
    """A TaskPickler for what goes along while a worker process is being started.

    multiprocessing's own objects that carry file descriptors (the pipes of a Queue, the
    shared memory of a Value...) are left out (``persistent_id``), for multiprocessing's
    pickler of the process's arguments to send: it passes each descriptor once, where a
    pickle of our own would pass again one that the process's arguments use too (the shared
    memory of the worker's progress array), which the spawn start method rejects.
    """

    def __init__(
        self, buf: io.BytesIO, main_by_reference: bool, kinds: set[type], aside: list[Any]
    ) -> None:
        super().__init__(buf, main_by_reference)
        self._kinds = kinds
        self._aside = aside

    def persistent_id(self, obj: Any) -> int | None:
        if type(obj) in self._kinds:
            self._aside.append(obj)
            return len(self._aside) - 1
        return None


def dumps_for_spawn(obj: Any, main_by_reference: bool) -> tuple[bytes, list[Any]]:
    """Pickle ``obj`` while a process is being started: the pickle, and the objects left out
    of it for multiprocessing to send (see _SpawnPickler). ``loads_for_spawn`` reverses it."""
    import copyreg
    from multiprocessing.reduction import ForkingPickler

    # The types multiprocessing registers reducers for (at import of their modules).
    table = ForkingPickler(io.BytesIO()).dispatch_table
    kinds = {t for t in table if t not in copyreg.dispatch_table}
    buf = io.BytesIO()
    aside: list[Any] = []
    _SpawnPickler(buf, main_by_reference, kinds, aside).dump(obj)
    return buf.getvalue(), aside


class _SpawnUnpickler(pickle.Unpickler):
    def __init__(self, blob: bytes, aside: list[Any]) -> None:
        super().__init__(io.BytesIO(blob))
        self._aside = aside

    def persistent_load(self, pid: Any) -> Any:
        return self._aside[pid]


def loads_for_spawn(blob: bytes, aside: list[Any]) -> Any:
    return _SpawnUnpickler(blob, aside).load()


# ---------------------------------------------------------------------- stand-ins


class BadArgument:
    """Stands in for an entry that could not travel (pickled, or unpickled in the worker):
    the call fails with ``error`` instead of running."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __reduce__(self) -> Any:
        return (BadArgument, (self.error,))


class Unloadable:
    """Stands in, in the worker, for a function that could not be unpickled there: every
    call of it fails with ``error``."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class RemoteTraceback(Exception):
    """The ``__cause__`` of an exception raised in a worker process: the worker's traceback.

    So ``raise`` of the task's exception (``Task.result()``, ``Result.unwrap()``, ``map``)
    shows where it happened in the worker, as ``ProcessPoolExecutor`` does. Its ``str`` is the
    traceback text (also in ``Result.traceback``).
    """

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb.rstrip()}\n"""'


def qualified(t: type) -> str:
    return f"{t.__module__}.{t.__qualname__}"


def describe(value: Any) -> str:
    """What a value of a result message is, for an error about it."""
    if type(value) is Failure:
        return f"exception ({qualified(type(value.error))})"
    return f"return value ({qualified(type(value))})"


def with_remote_cause(failure: Failure) -> Failure:
    """Chain the worker's traceback to the failure's exception (see RemoteTraceback)."""
    if failure.traceback is not None:
        failure.error.__cause__ = RemoteTraceback(failure.traceback)
    return failure
