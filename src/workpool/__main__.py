"""``python -m workpool run ...``: the same as the ``workpool`` console script."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
