"""The backend registry: the one place that maps a backend name to its implementation."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from ._base import Backend

__all__ = ["Backend", "create_backend", "names"]

# name -> "module:Class"; modules import lazily so `import workpool` stays cheap and an
# optional backend's dependency is only needed when it is used.
_REGISTRY: dict[str, str] = {
    "async": "workpool._backends.aio:AsyncBackend",
    "dask": "workpool._backends.dask:DaskBackend",
    "process": "workpool._backends.process:ProcessBackend",
    "thread": "workpool._backends.thread:ThreadBackend",
}


def names() -> list[str]:
    """The backend names a Pool accepts."""
    return sorted(_REGISTRY)


def backend_class(name: Any) -> type[Backend]:
    """The Backend subclass registered under ``name``."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ConfigError(f"unknown backend {name!r}; choose one of: {', '.join(names())}")
    module, _, cls = _REGISTRY[name].partition(":")
    found: type[Backend] = getattr(importlib.import_module(module), cls)
    return found


def create_backend(name: Any, options: Mapping[str, Any]) -> Backend:
    """Instantiate the backend ``name`` with its ``options`` (validated by the backend)."""
    return backend_class(name)(options)
