"""The ``workpool`` logger: quiet unless the program configures logging.

What it says, by level: ``INFO`` a retry scheduled, a worker replaced; ``WARNING`` a thread
abandoned in a call that would not stop, a worker process that died or was killed under a
task; ``ERROR`` a pool that cannot start workers and gave up. Like any library's, it has a
``NullHandler``, so nothing is printed unless the program sets up logging, e.g.
``logging.basicConfig(level=logging.INFO)``.
"""

from __future__ import annotations

import logging

__all__ = ["logger"]

logger = logging.getLogger("workpool")
logger.addHandler(logging.NullHandler())
