"""`python -m serve run|deploy|status|shutdown ...`: the `zeroserve serve ...` commands."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
