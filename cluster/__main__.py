"""`python -m cluster head|agent ...`: the head and agent processes."""

import sys

from ._main import main

if __name__ == "__main__":
    sys.exit(main())
