"""`python -m sdg ...` is the `sdg` command (sdg.cli.main)."""

import sys

from sdg.cli import main

if __name__ == "__main__":
    sys.exit(main())
