"""What travels between the pool and a worker process, and how (process backend).

Every message is one byte string: a *body*, then a small *header* (a pickle of builtins only),
then the header's length in 4 bytes. The header comes last so that the body can be pickled
straight into the message buffer, without a copy, before the header (which says how to read it)
is known. Two bodies exist:

- **whole**: one pickle of all the values (or of ``(entries, kwargs)``);
- **split**: a *stream*, one ``dump`` per value by one pickler, so that what values share (a
  class, a string) is pickled once, as in a whole pickle; the header lists where each value
  ends, and where a new pickler took over (after a value failed).

Plain data (numbers, strings, bytes, ``None`` and lists, tuples, dicts and sets of them) is sent
whole: the C pickler handles it at full speed, and it can neither fail to unpickle nor run code
while it is (un)pickled. Anything else (instances, functions, failures) is sent split, so that
a value the other side cannot unpickle, or whose pickling kills the process, is pinned to its
own task: the reader loads the values one by one (``load_stream``), and the worker publishes
which value it is (un)pickling (see ``_child``). Telling the two apart costs nothing extra for
plain data: it is pickled by a pickler whose ``reducer_override``, which the C pickler calls
only for objects that are not plain, gives up (``dumps_plain``).

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
from ..errors import RemoteError

__all__ = [
    "BadArgument",
    "RemoteTraceback",
    "TaskPickler",
    "Unloadable",
    "dumps_for_spawn",
    "dumps_plain",
    "entry_pickler",
    "finish",
    "from_main",
    "load_stream",
    "loads_for_spawn",
    "main_importable",
    "portable",
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


# ---------------------------------------------------------------------- streams


class _Poison:
    """Stands in, in a reader's memo, for an object of a value that could not be loaded."""


_POISON = _Poison()
_MEMO_GETS = frozenset({"GET", "BINGET", "LONG_BINGET"})


def _memo_ops(data: memoryview) -> tuple[int, set[int]]:
    """How many objects one pickle of a stream adds to the memo (MEMOIZE: our picklers use
    protocol 5, so no numbered PUT), and the memo indices it refers to."""
    import pickletools

    added = 0
    used: set[int] = set()
    for op, arg, _ in pickletools.genops(bytes(data)):
        if op.name == "MEMOIZE":
            added += 1
        elif op.name in _MEMO_GETS and isinstance(arg, int):
            used.add(arg)
    return added, used


class _Replay(pickle.Unpickler):
    """A reader whose memo is given: its stream starts with a pickle that pushes each memo
    object by persistent id and MEMOIZEs it (the C unpickler's memo cannot be set from a
    dict: it is left empty)."""

    def __init__(self, memo: list[Any], rest: memoryview) -> None:
        prefix = bytearray(b"\x80\x05")  # PROTO 5
        for i in range(len(memo)):
            # BININT i, BINPERSID, MEMOIZE, POP
            prefix += b"J" + i.to_bytes(4, "little", signed=True) + b"Q\x94" + b"0"
        prefix += b"N."  # NONE, STOP
        super().__init__(io.BytesIO(bytes(prefix) + bytes(rest)))
        self._memo = memo
        self.load()  # the prefix: now the memo is the writer's
        self._memo = []

    def persistent_load(self, pid: Any) -> Any:
        return self._memo[pid]


# Objects that are complete the moment they are memoized: an atom, or a class or function
# (found by name). Anything else of a value that failed may be half-built (memoized before
# its state was set).
_ATOMS = frozenset({str, bytes, int, float, complex, bool, type(None)})


def _whole(obj: Any) -> bool:
    return type(obj) in _ATOMS or isinstance(
        obj, (type, types.FunctionType, types.BuiltinFunctionType)
    )


def load_stream(
    body: memoryview,
    ends: list[int],
    resets: list[int],
    ints: Any = None,
    slot: int = 0,
) -> tuple[list[Any], dict[int, BaseException]]:
    """Load the values of a stream one by one: the values, and the exceptions of those that
    failed to load, by position (their place in the values holds None).

    Each value's position is published in ``ints[slot]`` before it is loaded, if given. A
    value that fails to load leaves the reader's memo behind the writer's: the reader goes on
    with a memo as the writer's, where what the failed value would have added is a stand-in
    (counting it needs a look at the opcodes, only then), and a later value that refers to one
    of those fails too, instead of getting a wrong object.
    """
    values: list[Any] = []
    failed: dict[int, BaseException] = {}
    append = values.append
    restarts = set(resets)
    reader = pickle.Unpickler(io.BytesIO(body))
    load = reader.load
    first = 0  # the first value of the current pickler's stream
    poisoned: set[int] = set()
    lo = 0
    for j, hi in enumerate(ends):
        if ints is not None:
            ints[slot] = j
        if restarts and j in restarts and j:
            stream = io.BytesIO(body)
            stream.seek(lo)
            reader = pickle.Unpickler(stream)
            load = reader.load
            first = j
            poisoned = set()
        if not poisoned:
            try:
                append(load())
                lo = hi
                continue
            except BaseException as e:  # anything from a __setstate__: this value fails
                error: BaseException = e
        elif _memo_ops(body[lo:hi])[1] & poisoned:
            error = pickle.UnpicklingError(
                "it refers to an object of an earlier value that could not be unpickled"
            )
        else:
            try:
                append(load())
                lo = hi
                continue
            except BaseException as e:
                error = e
        append(None)
        failed[j] = error
        # Go on with the memo the writer had after this value.
        count = 0
        start = ends[first - 1] if first else 0
        for k in range(first, j + 1):
            added = _memo_ops(body[start : ends[k]])[0]
            if k == j:
                poisoned.update(range(count, count + added))
            count += added
            start = ends[k]
        memo = reader.memo.copy()
        for i in list(poisoned):
            if _whole(memo.get(i, _POISON)):
                poisoned.discard(i)  # complete once memoized: a later value may use it
        reader = _Replay(
            [_POISON if i in poisoned else memo.get(i, _POISON) for i in range(count)],
            body[hi:],
        )
        load = reader.load
        lo = hi
    return values, failed


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


class FastTaskPickler(pickle.Pickler):
    """The C pickler, with TaskPickler's handling of main-script functions and classes.

    For arguments that are not plain data, pickled one entry at a time: cloudpickle looks at
    each entry's class again for every entry (~3x the cost of the C pickler). What this one
    cannot pickle (a lambda, a closure, a local class...) is pickled with TaskPickler
    instead. Only while the worker imports the main script (``main_by_reference``) and no
    module is registered with cloudpickle to travel by value: else it is TaskPickler's job.
    """

    def __init__(self, buf: io.BytesIO, main_by_reference: bool) -> None:
        super().__init__(buf, PROTOCOL)

    def reducer_override(self, obj: Any) -> Any:
        t = type(obj)
        if t is types.FunctionType or isinstance(obj, type):
            name = _main_name(obj)
            if name is not None:
                code = getattr(obj, "__code__", None)
                line = code.co_firstlineno if code is not None else 0
                return from_main, (name, line, _by_value(obj))
        return NotImplemented


def entry_pickler(main_by_reference: bool) -> type[TaskPickler] | type[FastTaskPickler]:
    """The pickler for entries that are not plain data (see FastTaskPickler)."""
    if main_by_reference and not cloudpickle.list_registry_pickle_by_value():
        return FastTaskPickler
    return TaskPickler


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


def portable(failure: Failure, dumps: Any = pickle.dumps) -> Failure:
    """The failure, with its exception replaced by a RemoteError if it would not round-trip
    through ``dumps`` (``pickle.dumps`` for a worker process's results, ``cloudpickle.dumps``
    for a Dask worker's) and ``pickle.loads``.

    The exception's traceback (text in ``failure.traceback``) and chained exceptions are let
    go: they don't travel, and they would keep the task's frames, and so its arguments, alive
    here until the next garbage collection."""
    error = failure.error
    name = f"{type(error).__module__}.{type(error).__qualname__}"
    try:
        blob = dumps(error, PROTOCOL)
        pickle.loads(blob)
    except BaseException:
        error = RemoteError(f"{name}: {_text(error)}", name)
        failure = Failure(error, failure.traceback)
    else:
        # Pickled once, sent as such: the caller gets a RemoteError if it won't load there.
        failure = Failure(error, failure.traceback, (blob, name, f"{name}: {_text(error)}"))
    error.__traceback__ = None
    error.__context__ = error.__cause__ = None
    return failure


def _text(error: BaseException) -> str:
    try:
        return str(error)
    except Exception:
        return "(its str() failed)"


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


# describe()'s answers by type: one dict lookup per value of a result message. Dropped when
# they grow large (classes made by unpickling functions by value are new for every unit).
descriptions: dict[tuple[type, bool], str] = {}


def describe(value: Any) -> str:
    """What a value of a result message is, for an error about it. (Callers may look in
    ``descriptions`` first: ``descriptions.get((type(v), False))`` for a value.)"""
    failed = type(value) is Failure
    t = type(value.error) if failed else type(value)
    found = descriptions.get((t, failed))
    if found is None:
        if len(descriptions) >= 256:
            descriptions.clear()
        what = "exception" if failed else "return value"
        found = descriptions[t, failed] = f"{what} ({qualified(t)})"
    return found


def with_remote_cause(failure: Failure) -> Failure:
    """Chain the worker's traceback to the failure's exception (see RemoteTraceback)."""
    if failure.traceback is not None:
        failure.error.__cause__ = RemoteTraceback(failure.traceback)
    return failure
