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
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import cloudpickle

from .._units import Failure

__all__ = [
    "BadArgument",
    "RemoteTraceback",
    "TaskPickler",
    "Unloadable",
    "dumps_plain",
    "finish",
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


class TaskPickler(cloudpickle.Pickler):  # type: ignore[misc]  # cloudpickle is untyped
    """cloudpickle (so lambdas and closures travel too), at the highest protocol."""

    def __init__(self, buf: io.BytesIO) -> None:
        super().__init__(buf, PROTOCOL)


def dumps_task(obj: Any) -> bytes:
    buf = io.BytesIO()
    TaskPickler(buf).dump(obj)
    return buf.getvalue()


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
