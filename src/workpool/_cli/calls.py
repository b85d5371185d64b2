"""``--call MODULE:FUNCTION``: a Python function called with each input.

The target is imported in this process first, so a bad name is a usage error before the
run starts (:func:`load_target`); :class:`CallTask` carries it by name to the workers of
either backend.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

from .inputs import BadJSON

__all__ = ["AsyncCallTask", "CallTask", "load_target"]


class CallTask:
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
        if type(value) is BadJSON:
            value.fail()
        return fn(value)


class AsyncCallTask(CallTask):
    """``CallTask`` for a coroutine function: awaited on the async backend's loop (or on a
    worker process's own loop with ``--backend process``)."""

    __slots__ = ()

    async def __call__(self, item: tuple[int, str, Any]) -> Any:
        fn = self._fn
        if fn is None:
            fn = self._fn = load_target(self.spec, self.cwd)
        value = item[2]
        if type(value) is BadJSON:
            value.fail()
        return await fn(value)


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
