"""The `zeroserve` command: start, stop and inspect the nodes of a cluster.

    zeroserve start --head [--node-ip IP] [--port 6380] [--num-cpus N] [--num-gpus N] [--resources JSON] [--token T]
    zeroserve start --address H:P [--node-ip IP] [--num-cpus N] [--num-gpus N] [--resources JSON] [--token T]
        also: [--metrics-port 8080] [--log-max-bytes N] [--log-backups N]
    zeroserve stop [--node-ip IP]
    zeroserve status [--address H:P] [--json]
    zeroserve logs [TARGET] [-f] [--tail N] [--node IP] [--address H:P]
    zeroserve serve run|deploy|status|shutdown ...   (handed over to `python -m serve`)

`start` daemonizes the node's processes, returns once the node is registered with the
head, and prints how to join and connect. Errors are immediate and say what to change.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

import psutil

from actors import InsecureSessionDirError
from actors.system import (
    PROBE_BUSY,
    PROBE_OK,
    PROBE_REFUSED,
    LogRotation,
    Session,
    dashboard_port_from_env,
    find_local_head,
    metrics_port_from_env,
    new_token,
    probe,
    read_token,
    spawn,
)

from ._logs import logs as show_logs
from ._nodes import NodeRecord, live_record, load_records, remove_record, start_times
from ._status import fetch_status, render_status
from .exceptions import NodeStartError

__all__ = ["main"]

DEFAULT_PORT = 6380
_READY_TIMEOUT_S = 60.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zeroserve", description="Start, stop and inspect zeroserve clusters.")
    sub = p.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start a head node, or a node that joins one")
    role = start.add_mutually_exclusive_group(required=True)
    role.add_argument("--head", action="store_true", help="start the head of a new cluster")
    role.add_argument("--address", help="HOST:PORT of the head to join")
    start.add_argument("--node-ip", help="address this node's sockets bind (default: 127.0.0.1 for a head, "
                                         "the local address towards the head otherwise)")
    start.add_argument("--port", type=int, default=DEFAULT_PORT, help="head port (default 6380)")
    start.add_argument("--num-cpus", type=float, help="CPUs this node offers (default: all)")
    start.add_argument("--num-gpus", type=int, help="GPU devices this node offers, as ids 0..N-1 (default: "
                       "detected from CUDA_VISIBLE_DEVICES / NVIDIA_VISIBLE_DEVICES or nvidia-smi -L)")
    start.add_argument("--resources", default="{}", help='custom resources as JSON, e.g. \'{"TPU": 1}\'')
    start.add_argument("--token", help="cluster token (default: $ZEROSERVE_TOKEN, or a new one for a head)")
    start.add_argument("--metrics-port", type=int, help="serve this node's Prometheus metrics at "
                       "http://NODE_IP:PORT/metrics (default $ZEROSERVE_METRICS_PORT or 8080, a free port if "
                       "that one is taken; 0: none)")
    start.add_argument("--dashboard-port", type=int, help="with --head: serve the dashboard at "
                       "http://NODE_IP:PORT/ (default $ZEROSERVE_DASHBOARD_PORT or 8265, a free port if that one is "
                       "taken; 0: none)")
    start.add_argument("--log-max-bytes", type=int, help="rotate each log file at this size (default "
                       "$ZEROSERVE_LOG_MAX_BYTES or 100 MiB)")
    start.add_argument("--log-backups", type=int, help="rotated files kept per log (default $ZEROSERVE_LOG_BACKUPS "
                       "or 5)")
    stop = sub.add_parser("stop", help="stop the nodes `start` started on this machine")
    stop.add_argument("--node-ip", help="stop only the node bound to this IP")
    status = sub.add_parser("status", help="nodes, resources, actors of a cluster")
    status.add_argument("--address", help="HOST:PORT of the head (default: the cluster started on this machine)")
    status.add_argument("--token", help="cluster token (default: $ZEROSERVE_TOKEN or the local session's)")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    logs = sub.add_parser("logs", help="list, print and follow the log files of every node")
    logs.add_argument("target", nargs="?", help="an application, deployment, replica id (Deployment#tag), named "
                      "actor, or head/agent/proxy/controller (default: list the log files)")
    logs.add_argument("-f", "--follow", action="store_true", help="print new lines as they come, until Ctrl-C")
    logs.add_argument("--tail", type=int, default=100, help="lines to print from the end of each file (default 100)")
    logs.add_argument("--node", help="only this node's files (its IP)")
    logs.add_argument("--address", help="HOST:PORT of the head (default: the cluster running on this machine)")
    logs.add_argument("--token", help="cluster token (default: $ZEROSERVE_TOKEN or the local session's)")
    logs.add_argument("--json", action="store_true", help="list the files as JSON")
    sub.add_parser("serve", help="run, deploy, inspect and shut down Serve applications "
                                 "(see `zeroserve serve --help`)", add_help=False)
    return p


def _serve(argv: list[str], replace_process: bool) -> int:
    """`zeroserve serve ...` is the serve package's command; cluster does not import serve
    (layering), it runs `python -m serve ...` in this process's place (signals go to it)."""
    cmd = [sys.executable, "-m", "serve", *argv]
    if replace_process:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, cmd)
    return subprocess.call(cmd)


def _port_free(ip: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
        except OSError:
            return False
    return True


def _ip_towards(host: str, port: int) -> str:
    if host.startswith("127."):
        return "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, port))
        return s.getsockname()[0]


def _split(address: str) -> tuple[str, int]:
    host, sep, port = address.removeprefix("tcp://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise NodeStartError(f"--address must be HOST:PORT (as `zeroserve start --head` printed), got {address!r}")
    return host, int(port)


def _check_resources(text: str) -> None:
    try:
        value = json.loads(text)
    except ValueError as e:
        raise NodeStartError(f"--resources must be a JSON object such as '{{\"GPU\": 1}}': {e}") from None
    if not isinstance(value, dict) or not all(isinstance(v, (int, float)) for v in value.values()):
        raise NodeStartError("--resources must be a JSON object of name -> number, e.g. '{\"GPU\": 1}'")


def _start_agent(session: Session, node_ip: str, head_address: str | None, args: argparse.Namespace,
                 is_head: bool) -> Any:
    where = ["--run-head", "--head-port", str(args.port)] if head_address is None else ["--head", head_address]
    agent_log = str(session.logs / f"agent-{node_ip}.log")
    agent_args = ["-m", "cluster", "agent", *where, "--node-ip", node_ip,
                  "--session-dir", str(session.path), "--token-file", str(session.token_file),
                  "--resources", args.resources, "--log-file", agent_log, *_metrics_args(args),
                  *(_dashboard_args(args) if is_head else [])]
    if args.num_cpus is not None:
        agent_args += ["--num-cpus", str(args.num_cpus)]
    if args.num_gpus is not None:
        agent_args += ["--num-gpus", str(args.num_gpus)]
    if is_head:
        agent_args.append("--is-head-node")
    agent = spawn(agent_args, log_path=str(session.logs / f"agent-{node_ip}.out"), lifeline=False,
                  new_session=True, env=_log_env(args), also_tail=(agent_log,))
    try:
        return agent, agent.wait_ready(_READY_TIMEOUT_S, f"the agent on {node_ip}")
    except RuntimeError as e:
        raise NodeStartError(str(e)) from None


def _metrics_args(args: argparse.Namespace) -> list[str]:
    """The agent's metrics flags: a port given here must be free; the default may move."""
    if args.metrics_port is not None:
        if not 0 <= args.metrics_port <= 65535:
            raise NodeStartError(f"--metrics-port must be a port number (0 for none), got {args.metrics_port}")
        return ["--metrics-port", str(args.metrics_port), "--metrics-port-strict"]
    try:
        return ["--metrics-port", str(metrics_port_from_env())]
    except ValueError as e:
        raise NodeStartError(str(e)) from None


def _dashboard_args(args: argparse.Namespace) -> list[str]:
    """The head's dashboard flags: a port given here must be free; the default may move."""
    if args.dashboard_port is not None:
        if not 0 <= args.dashboard_port <= 65535:
            raise NodeStartError(f"--dashboard-port must be a port number (0 for none), got {args.dashboard_port}")
        return ["--dashboard-port", str(args.dashboard_port), "--dashboard-port-strict"]
    try:
        return ["--dashboard-port", str(dashboard_port_from_env())]
    except ValueError as e:
        raise NodeStartError(str(e)) from None


def _log_env(args: argparse.Namespace) -> dict[str, str]:
    """The node's environment, with the log rotation of --log-max-bytes / --log-backups."""
    try:
        env_rotation = LogRotation.from_env()
        rotation = LogRotation(args.log_max_bytes if args.log_max_bytes is not None else env_rotation.max_bytes,
                               args.log_backups if args.log_backups is not None else env_rotation.backups)
    except ValueError as e:
        raise NodeStartError(str(e)) from None
    return {**os.environ, **rotation.env()}


def start(args: argparse.Namespace) -> int:
    _check_resources(args.resources)
    if args.num_gpus is not None and args.num_gpus < 0:
        raise NodeStartError(f"--num-gpus must be a number of devices >= 0, got {args.num_gpus}")
    _metrics_args(args)
    _dashboard_args(args)
    if args.dashboard_port is not None and not args.head:
        raise NodeStartError("--dashboard-port is for the head (`zeroserve start --head`): the head serves the "
                             "dashboard for the whole cluster")
    _log_env(args)  # wrong values fail before anything starts
    t0 = time.monotonic()
    if args.head:
        node_ip = args.node_ip or "127.0.0.1"
    else:
        host, port = _split(args.address)
        node_ip = args.node_ip or _ip_towards(host, port)
    running = live_record(node_ip)
    if running is not None:
        raise NodeStartError(f"a node is already running on {node_ip} (head {running.head_address}); "
                             f"run `zeroserve stop --node-ip {node_ip}` first")
    if args.head:
        if not _port_free(node_ip, args.port):
            raise NodeStartError(f"port {args.port} on {node_ip} is in use (another head?); "
                                 "pick another with --port or stop what holds it")
        token = args.token or os.environ.get("ZEROSERVE_TOKEN") or new_token()
        session = Session.create(token)
        head_address = None
        print(f"zeroserve: starting the head and the agent on {node_ip}:{args.port} (session {session.path})",
              flush=True)
    else:
        token = args.token or os.environ.get("ZEROSERVE_TOKEN") or _local_token(args.address)
        head_address = "tcp://{}:{}".format(*_split(args.address))
        verdict = probe(head_address, token, timeout=5.0)
        if verdict == PROBE_REFUSED:
            raise NodeStartError(f"the head at {args.address} refused this node's token: pass the token "
                                 "`zeroserve start --head` printed (--token or $ZEROSERVE_TOKEN)")
        if verdict != PROBE_OK:
            raise NodeStartError(f"cannot reach the head at {args.address}: is it running, and is the "
                                 "address reachable from this machine?")
        session = Session.create(token)
        print(f"zeroserve: starting the agent on {node_ip}", flush=True)
    agent, ready = _start_agent(session, node_ip, head_address, args, is_head=args.head)
    head_address = ready["head_address"]
    pids = {"agent": agent.proc.pid}
    if ready.get("head_pid"):
        pids["head"] = ready["head_pid"]
    NodeRecord(node_ip, head_address, args.head, str(session.path), str(session.token_file), pids,
               ready["node_id"], pid_started=start_times(pids)).save()
    hp = head_address.removeprefix("tcp://")
    print(f"zeroserve: node {ready['node_id']} up on {node_ip} in {time.monotonic() - t0:.1f}s with "
          f"{_fmt_resources(ready['resources'])}")
    if ready.get("metrics_url"):
        print(f"zeroserve: metrics at {ready['metrics_url']}")
    if ready.get("dashboard_url"):
        print(f"zeroserve: dashboard at {ready['dashboard_url']}")
    if args.head:
        print(f"\nCluster address: {hp}\n\nTo add a node, run on it:\n"
              f"    zeroserve start --address {hp} --token {token}\n\n"
              f"To connect a driver on this machine:  actors.init(address=\"auto\")\n"
              f"From elsewhere:  actors.init(address=\"{hp}\", token=\"{token}\")\n"
              f"To stop:  zeroserve stop")
    return 0


def _local_token(address: str) -> str:
    head = "tcp://{}:{}".format(*_split(address))
    rec = find_local_head()
    if rec is not None and rec.get("head_address") == head:
        return read_token(rec["token_file"])
    if probe(head, new_token(), timeout=3.0) != PROBE_REFUSED:
        raise NodeStartError(f"cannot reach the head at {address}: is it running, and is the address reachable?")
    raise NodeStartError("no token given: pass --token (printed by `zeroserve start --head`) or set $ZEROSERVE_TOKEN")


def _fmt_resources(res: dict[str, float]) -> str:
    return ", ".join(f"{k}={v / 2**30:.1f}GiB" if k == "memory" else f"{k}={v:g}" for k, v in res.items())


def stop(args: argparse.Namespace) -> int:
    records = [r for r in load_records() if args.node_ip is None or r.node_ip == args.node_ip]
    # Agents first (they kill their workers), then heads.
    records.sort(key=lambda r: r.is_head)
    stopped = 0
    for rec in records:
        procs = rec.processes()
        order = sorted(procs, key=lambda p: p.pid != rec.pids.get("agent"))
        for p in order:
            try:
                p.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(order, timeout=10)
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
    if args.address:
        head_address = "tcp://{}:{}".format(*_split(args.address))
        token = args.token or os.environ.get("ZEROSERVE_TOKEN") or _local_token(args.address)
    else:
        rec = find_local_head(include_embedded=True)
        if rec is None:
            raise NodeStartError("no cluster is running on this machine; pass --address HOST:PORT")
        head_address = rec["head_address"]
        token = args.token or os.environ.get("ZEROSERVE_TOKEN") or read_token(rec["token_file"])
    verdict = probe(head_address, token, timeout=5.0)
    if verdict == PROBE_REFUSED:
        raise NodeStartError(f"the head at {head_address} is refusing our token: pass the cluster's "
                             "(--token or $ZEROSERVE_TOKEN)")
    if verdict == PROBE_BUSY:
        raise NodeStartError(f"the head at {head_address} is busy or unresponsive: it took the connection but "
                             "did not answer within 5s (overloaded, or stopped); try again, and see its log")
    if verdict != PROBE_OK:
        raise NodeStartError(f"the head at {head_address} is not reachable: is the cluster running?")
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
        return {"start": start, "stop": stop, "status": status, "logs": logs}[args.command](args)
    except (NodeStartError, InsecureSessionDirError) as e:
        print(f"zeroserve: error: {e}", file=sys.stderr)
        return 1
