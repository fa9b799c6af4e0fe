"""The fault drills of `tests/chaos` as a table: fault, requests, failures, requests in
flight at the fault, worst latency, recovery time (and its bound).

Runs the chaos suite (pytest) in a child process; each drill appends its row to a JSON-lines
file named by $ZEROSERVE_DRILLS_JSON, and this prints them as Markdown once the run ends,
with the suite's own summary (passed / xfailed). A drill marked xfail (a known defect not
fixed yet) still gives its row, noted as such.

    python benchmarks/drills.py [-k EXPR] [--json PATH]

`-k` selects drills as pytest does (e.g. `-k "controller or head"`); `--json` keeps the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", dest="select", help="run only the drills matching this pytest expression")
    parser.add_argument("--json", help="also write the rows (JSON lines) to this file")
    args = parser.parse_args()
    fd, rows_file = tempfile.mkstemp(prefix="zs-drills-", suffix=".jsonl")
    os.close(fd)
    env = dict(os.environ, ZEROSERVE_DRILLS_JSON=rows_file)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/chaos"]
    if args.select:
        cmd += ["-k", args.select]
    run = subprocess.run(cmd, cwd=str(ROOT), env=env, capture_output=True, text=True)
    summary = [line for line in run.stdout.splitlines() if line.startswith(("XFAIL", "FAILED", "ERROR", "XPASS"))]
    summary += run.stdout.strip().splitlines()[-1:]
    rows = [json.loads(line) for line in Path(rows_file).read_text().splitlines() if line.strip()]
    os.unlink(rows_file)
    if args.json:
        Path(args.json).write_text("".join(json.dumps(r) + "\n" for r in rows))
    sys.path.insert(0, str(ROOT))
    from tests.chaos._traffic import Row, table

    print(table([Row(**r) for r in rows]))
    print()
    print("\n".join(summary))
    if run.returncode != 0:
        print(run.stdout[-5000:], run.stderr[-3000:], sep="\n", file=sys.stderr)
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
