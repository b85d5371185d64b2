"""Helper for test_process.py: a module to preload in the fork server that says where it ran.

Importing it appends ``import <pid>`` to the file named by ``WORKPOOL_PRELOAD_PROBE`` (one
``write(2)``, so lines from several processes never interleave). The test asks the fork server
to preload it with ``multiprocessing.set_forkserver_preload`` and then counts the imports.
"""

from __future__ import annotations

import os

_path = os.environ.get("WORKPOOL_PRELOAD_PROBE")
if _path:
    _fd = os.open(_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(_fd, f"import {os.getpid()}\n".encode())
    finally:
        os.close(_fd)
