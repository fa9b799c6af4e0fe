"""The `zeroserve` command: start, stop and inspect the nodes of a cluster.

    zeroserve start --head [--node-ip IP] [--port 6380] [--num-cpus N] [--num-gpus N] [--resources JSON] [--token-file F]
                    [--block] [--grace-period-s S] [--state-dir DIR] [--advertise-address A]
    zeroserve start --address H:P [--node-ip IP] [--num-cpus N] [--resources JSON] [--token-file F] [--block] ...
        also: [--metrics-port 8080] [--log-max-bytes N] [--log-backups N]
    zeroserve stop [--node-ip IP]
    zeroserve status [--address H:P] [--json]
    zeroserve logs [TARGET] [-f] [--tail N] [--node IP] [--address H:P]
    zeroserve health [--node-ip IP]
    zeroserve serve run|deploy|status|shutdown ...   (handed over to `python -m serve`)
    zeroserve --version

`start` daemonizes the node's processes (or, with `--block`, runs them in the foreground;
see `_start`), returns once the node is registered with the head, and prints how to join
and connect. Errors are immediate and say what to change.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys

import psutil

from actors import InsecureSessionDirError
from actors.system import find_local_head, probe, read_token

from ._logs import logs as show_logs
from ._nodes import load_records, remove_record
from ._start import (
    DEFAULT_GRACE_S,
    DEFAULT_PORT,
    check_head_verdict,
    health,
    local_token,
    start,
)
from ._start_flags import resolve_token, split_address
from ._status import fetch_status, render_status
from .exceptions import NodeStartError

__all__ = ["main"]


def _version() -> str:
    try:
        return importlib.metadata.version("zeroserve")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zeroserve", description="Start, stop and inspect zeroserve clusters.")
    p.add_argument("--version", action="version", version=f"zeroserve {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start a head node, or a node that joins one")
    role = start.add_mutually_exclusive_group(required=True)
    role.add_argument("--head", action="store_true", help="start the head of a new cluster")
    role.add_argument("--address", help="HOST:PORT of the head to join (HOST may be a DNS name)")
    start.add_argument("--node-ip", help="address this node's sockets bind (default: 127.0.0.1 for a head, "
                                         "the local address towards the head otherwise; 0.0.0.0 needs "
                                         "--advertise-address)")
    start.add_argument("--advertise-address", help="address (IP or DNS name) other nodes reach this one at, "
                                                   "when it is not --node-ip (a pod's IP, a NAT's address)")
    start.add_argument("--port", type=int, default=DEFAULT_PORT, help="head port (default 6380)")
    start.add_argument("--num-cpus", type=float, help="CPUs this node offers (default: all)")
    start.add_argument("--num-gpus", type=int, help="GPU devices this node offers, as ids 0..N-1 (default: "
                       "detected from CUDA_VISIBLE_DEVICES / NVIDIA_VISIBLE_DEVICES or nvidia-smi -L)")
    start.add_argument("--resources", default="{}", help='custom resources as JSON, e.g. \'{"TPU": 1}\'')
    _token_flags(start, "cluster token (default: a new one for a head)")
    start.add_argument("--block", action="store_true",
                       help="stay in the foreground (for systemd, containers): logs to stdout, SIGTERM drains "
                            "the node and exits 0, a failed node exits non-zero")
    start.add_argument("--grace-period-s", type=float, default=DEFAULT_GRACE_S,
                       help="on SIGTERM, how long the node's workers may take to finish their work (default 30)")
    start.add_argument("--wait-for-head-s", type=float, default=None,
                       help="a joining node waits this long for its head to answer (default: 300 with --block, "
                            "else 0: fail at once)")
    start.add_argument("--state-dir", help="head: keep the head's state in this directory (a volume), so a "
                                           "restarted head keeps named actors, jobs and Serve's deployments")
    start.add_argument("--log-files", action="store_true",
                       help="with --block: also write the head's and agent's logs to the session's log files")
    start.add_argument("--dashboard-port", type=int, help="with --head: serve the dashboard at "
                       "http://NODE_IP:PORT/ (default $ZEROSERVE_DASHBOARD_PORT or 8265, a free port if that one is "
                       "taken; 0: none)")
    start.add_argument("--metrics-port", type=int, help="serve this node's Prometheus metrics at "
                       "http://NODE_IP:PORT/metrics (default $ZEROSERVE_METRICS_PORT or 8080, a free port if "
                       "that one is taken; 0: none)")
    start.add_argument("--log-max-bytes", type=int, help="rotate each log file at this size (default "
                       "$ZEROSERVE_LOG_MAX_BYTES or 100 MiB)")
    start.add_argument("--log-backups", type=int, help="rotated files kept per log (default $ZEROSERVE_LOG_BACKUPS "
                       "or 5)")
    stop = sub.add_parser("stop", help="stop the nodes `start` started on this machine")
    stop.add_argument("--node-ip", help="stop only the node bound to (or advertised at) this address")
    stop.add_argument("--grace-period-s", type=float, default=DEFAULT_GRACE_S,
                      help="how long to wait for a node to drain before killing it (default 30)")
    status = sub.add_parser("status", help="nodes, resources, actors of a cluster")
    status.add_argument("--address", help="HOST:PORT of the head (default: the cluster started on this machine)")
    _token_flags(status, "cluster token (default: the local session's)")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    logs = sub.add_parser("logs", help="list, print and follow the log files of every node")
    logs.add_argument("target", nargs="?", help="an application, deployment, replica id (Deployment#tag), named "
                      "actor, or head/agent/proxy/controller (default: list the log files)")
    logs.add_argument("-f", "--follow", action="store_true", help="print new lines as they come, until Ctrl-C")
    logs.add_argument("--tail", type=int, default=100, help="lines to print from the end of each file (default 100)")
    logs.add_argument("--node", help="only this node's files (its IP)")
    logs.add_argument("--address", help="HOST:PORT of the head (default: the cluster running on this machine)")
    _token_flags(logs, "cluster token (default: the local session's)")
    logs.add_argument("--json", action="store_true", help="list the files as JSON")
    health = sub.add_parser("health", help="exit 0 if the nodes started on this machine answer "
                                           "(a liveness check: local, independent of other nodes)")
    health.add_argument("--node-ip", help="check only the node on this address")
    health.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each answer (default 5)")
    sub.add_parser("serve", help="run, deploy, inspect and shut down Serve applications "
                                 "(see `zeroserve serve --help`)", add_help=False)
    return p


def _token_flags(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--token-file", help=f"read the cluster token from this file ({default})")
    p.add_argument("--token", help="cluster token; visible to every local user in `ps`: prefer --token-file "
                                   "or $ZEROSERVE_TOKEN")


def _serve(argv: list[str], replace_process: bool) -> int:
    """`zeroserve serve ...` is the serve package's command; cluster does not import serve
    (layering), it runs `python -m serve ...` in this process's place (signals go to it)."""
    cmd = [sys.executable, "-m", "serve", *argv]
    if replace_process:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, cmd)
    return subprocess.call(cmd)


def stop(args: argparse.Namespace) -> int:
    records = [r for r in load_records() if args.node_ip is None or r.node_ip == args.node_ip]
    # Agents first (they drain and stop their workers, and a head node's agent its head), then heads.
    records.sort(key=lambda r: r.is_head)
    stopped = 0
    for rec in records:
        procs = rec.processes()
        agent = [p for p in procs if p.pid == rec.pids.get("agent")]
        # SIGTERM to the agent alone: it drains its workers within its grace period, while
        # the head (its child on a head node) still answers; then whatever is left.
        for group, wait_s in ((agent, args.grace_period_s + 5.0), (procs, 10.0)):
            for p in group:
                try:
                    p.terminate()
                except psutil.NoSuchProcess:
                    pass
            _, alive = psutil.wait_procs(group, timeout=wait_s)
        for p in alive:
            p.kill()
        remove_record(rec)
        if procs:
            stopped += 1
            print(f"zeroserve: stopped the {'head node' if rec.is_head else 'node'} on {rec.node_ip} "
                  f"({len(procs)} process{'es' if len(procs) != 1 else ''})")
    if not stopped:
        print("zeroserve: nothing to stop" + (f" on {args.node_ip}" if args.node_ip else ""))
    return 0


def _cluster(args: argparse.Namespace) -> tuple[str, str]:
    """The head address and token `status` and `logs` talk to: --address, else the cluster
    `zeroserve start` runs on this machine, else an embedded cluster running here."""
    given = resolve_token(args)
    if args.address:
        head_address = "tcp://{}:{}".format(*split_address(args.address))
        token = given or local_token(args.address)
    else:
        rec = find_local_head(include_embedded=True)
        if rec is None:
            raise NodeStartError("no cluster is running on this machine; pass --address HOST:PORT")
        head_address = rec["head_address"]
        token = given or read_token(rec["token_file"])
    check_head_verdict(probe(head_address, token, timeout=5.0), head_address)
    return head_address, token


def status(args: argparse.Namespace) -> int:
    head_address, token = _cluster(args)
    data = fetch_status(head_address, token)
    print(json.dumps(data, indent=2) if args.json else render_status(data))
    return 0


def logs(args: argparse.Namespace) -> int:
    if args.tail < 0:
        raise NodeStartError(f"--tail must be >= 0, got {args.tail}")
    head_address, token = _cluster(args)
    return show_logs(head_address, token, args.target, follow=args.follow, tail=args.tail, node_ip=args.node,
                     as_json=args.json)


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    if words[:1] == ["serve"]:
        return _serve(words[1:], replace_process=argv is None)
    args = _parser().parse_args(argv)
    try:
        return {"start": start, "stop": stop, "status": status, "logs": logs, "health": health}[args.command](args)
    except (NodeStartError, InsecureSessionDirError) as e:
        print(f"zeroserve: error: {e}", file=sys.stderr)
        return 1
