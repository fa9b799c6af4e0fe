"""Entry points of the runtime's own processes (started by agents):

    python -m actors worker --agent ADDRESS --node-ip IP --worker-id ID --token-file F ...
    python -m actors zygote --fd N
"""

import sys

if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "worker":
        from ._worker import main

        sys.exit(main(sys.argv[2:]))
    if command == "zygote" and len(sys.argv) == 4 and sys.argv[2] == "--fd":
        from ._zygote import zygote_main

        sys.exit(zygote_main(int(sys.argv[3])))
    sys.exit("usage: python -m actors worker ... | python -m actors zygote --fd N")
