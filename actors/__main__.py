"""`python -m actors worker ...`: the entry point of worker processes (started by agents)."""

import sys

from ._worker import main

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "worker":
        sys.exit("usage: python -m actors worker --agent ADDRESS --node-ip IP --worker-id ID --token-file F ...")
    sys.exit(main(sys.argv[2:]))
