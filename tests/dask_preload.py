"""Preloaded by the test suite's Dask workers (``dask worker --preload dask_preload``).

Tasks of the behavioural suite share handshakes with the test through ``multiprocessing``
Manager proxies (see handshakes.ManagerKit). A proxy connects to the Manager with the
authentication key of the process that made it; a worker process started by Dask's command
line has a key of its own, so it takes the test process's key from the environment.
"""

from __future__ import annotations

import multiprocessing
import os

_key = os.environ.get("WORKPOOL_TEST_AUTHKEY")
if _key:
    multiprocessing.current_process().authkey = bytes.fromhex(_key)
