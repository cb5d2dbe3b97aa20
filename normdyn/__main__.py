"""``python -m normdyn``: the same command line as the ``normdyn`` script."""

from __future__ import annotations

import sys

from normdyn.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
