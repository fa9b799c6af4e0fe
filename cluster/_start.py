"""`zeroserve start`: bring a node up, as a daemon or in the foreground (`--block`).

A node is one agent process (on the head node it also runs the head as its child). As a
daemon (the default) the agent is detached in its own session, writes its log under the
session directory, and `start` returns once the node is registered. With `--block` the
agent is this process's child, tied to it by a lifeline (if this process dies, SIGKILL
included, the node goes with it), writing to this process's stdout, so a supervisor
(systemd, a container runtime, Kubernetes) runs and watches it: SIGTERM/SIGINT drain the
node's workers within `--grace-period-s` and exit 0; a node that fails exits non-zero.

The cluster token comes from `--token-file`, `$ZEROSERVE_TOKEN` or `--token` (which every
local user can read in `ps`); a head without one makes a new one. A token that was given
is never printed. The flags are checked (and become the agent's arguments) in `_start_flags`.
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from actors.system import (
    PROBE_BUSY,
    PROBE_OK,
    PROBE_REFUSED,
    PROBE_UNREACHABLE,
    Child,
    ProbeResult,
    Session,
    find_local_head,
    new_token,
    probe,
    read_token,
    spawn,
)

from ._nodes import NodeRecord, live_record, load_records, remove_record, start_times
from ._start_flags import (
    check_flags,
    check_state_dir,
    dashboard_args,
    log_env,
    metrics_args,
    resolve_token,
    split_address,
)
from .exceptions import NodeStartError

__all__ = ["start", "check_head_verdict", "health", "local_token", "DEFAULT_PORT", "DEFAULT_GRACE_S"]

DEFAULT_PORT = 6380
DEFAULT_GRACE_S = 30.0
_READY_TIMEOUT_S = 60.0


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
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, port))
            return s.getsockname()[0]
    except OSError as e:  # socket.gaierror included: a name that does not resolve
        raise NodeStartError(f"cannot find a route to the head at {host}:{port} ({e}); is the name right?") from None


def check_head_verdict(verdict: object, address: str, whose: str = "our") -> None:
    """Raise the NodeStartError that says what to do about a head `probe` did not answer OK
    (wrong token, busy, unreachable); `whose`: whose token it refused, for the message."""
    if verdict == PROBE_OK:
        return
    if verdict == PROBE_REFUSED:
        raise NodeStartError(f"the head at {address} refused {whose} token: pass the token of its cluster "
                             "(--token-file, $ZEROSERVE_TOKEN or --token)")
    if verdict == PROBE_BUSY:
        raise NodeStartError(f"the head at {address} is busy or unresponsive: it took the connection but did "
                             "not answer within 5s (overloaded, or stopped); try again, and see its log")
    raise NodeStartError(f"cannot reach the head at {address}: is it running, and is the address reachable "
                         "from this machine?")


def _reach_head(head_address: str, token: str, wait_s: float) -> ProbeResult:
    """Probe the head; while it does not answer (or is busy), retry for up to `wait_s` (a
    supervisor starts a cluster's nodes together: the agents wait for the head to come up)."""
    deadline = time.monotonic() + wait_s
    said = 0.0
    while True:
        verdict = probe(head_address, token, timeout=5.0)
        now = time.monotonic()
        if verdict not in (PROBE_UNREACHABLE, PROBE_BUSY) or now >= deadline:
            return verdict
        if now - said >= 10.0:
            say(f"waiting for the head at {head_address.removeprefix('tcp://')} "
                f"(up to {deadline - now:.0f}s more; --wait-for-head-s)")
            said = now
        time.sleep(min(1.0, max(0.0, deadline - now)))  # a retry interval, not a synchronisation


def start(args: argparse.Namespace) -> int:
    check_flags(args)
    t0 = time.monotonic()
    if args.head:
        node_ip = args.node_ip or "127.0.0.1"
    else:
        host, port = split_address(args.address)
        node_ip = args.node_ip or _ip_towards(host, port)
    known_as = args.advertise_address or node_ip
    running = live_record(known_as)
    if running is not None:
        raise NodeStartError(f"a node is already running on {known_as} (head {running.head_address}); "
                             f"run `zeroserve stop --node-ip {known_as}` first")
    given = resolve_token(args)
    if args.head:
        state_dir = check_state_dir(args.state_dir) if args.state_dir else None
        if not _port_free(node_ip, args.port):
            raise NodeStartError(f"port {args.port} on {node_ip} is in use (another head?); "
                                 "pick another with --port or stop what holds it")
        token = given or new_token()
        session = Session.create(token)
        head_address = None
        say(f"starting the head and the agent on {known_as}:{args.port} (session {session.path}"
            + (f", state in {state_dir}" if state_dir else "") + ")")
    else:
        state_dir = None
        token = given or local_token(args.address)
        head_address = "tcp://{}:{}".format(*split_address(args.address))
        verdict = _reach_head(head_address, token, args.wait_for_head_s)
        check_head_verdict(verdict, args.address, "this node's")
        session = Session.create(token)
        say(f"starting the agent on {known_as}")
    agent, ready = _start_agent(session, node_ip, head_address, args, state_dir)
    # Before anything says the node is up: a supervisor may send SIGTERM as soon as it reads that.
    stop_at = _forward_signals(agent, args.grace_period_s) if args.block else []
    head_address = ready["head_address"]
    pids = {"agent": agent.proc.pid}
    if ready.get("head_pid"):
        pids["head"] = ready["head_pid"]
    record = NodeRecord(known_as, head_address, args.head, str(session.path), str(session.token_file), pids,
                        ready["node_id"], pid_started=start_times(pids), agent_address=ready["address"])
    record.save()
    say(f"node {ready['node_id']} up on {known_as} in {time.monotonic() - t0:.1f}s with "
        f"{_fmt_resources(ready['resources'])}")
    if ready.get("metrics_url"):
        say(f"metrics at {ready['metrics_url']}")
    if ready.get("dashboard_url"):
        say(f"dashboard at {ready['dashboard_url']}")
    if args.head:
        _print_join(head_address, None if given else token, session, args.block)
    if args.block:
        return _foreground(agent, record, args.grace_period_s, stop_at)
    return 0


def say(text: str) -> None:
    print(f"zeroserve: {text}", flush=True)


def _print_join(head_address: str, new: str | None, session: Session, block: bool) -> None:
    hp = head_address.removeprefix("tcp://")
    # A token on a command line is visible to every local user in `ps`: pass it by the
    # environment or a file. A token the user gave is theirs already and is not echoed.
    where = (f"the token is in {session.token_file}" if new is None
             else f"the token of this new cluster is {new} (also in {session.token_file})")
    print(f"\nCluster address: {hp}; {where}\n\nTo add a node, run on it:\n"
          f"    ZEROSERVE_TOKEN=<token> zeroserve start --address {hp}\n"
          f"    (or --token-file FILE: keep the token off command lines, where `ps` shows it)\n\n"
          f"To connect a driver on this machine:  actors.init(address=\"auto\")\n"
          f"From elsewhere:  actors.init(address=\"{hp}\") with $ZEROSERVE_TOKEN set\n"
          + ("To stop:  Ctrl-C or SIGTERM (drains the workers first)" if block else "To stop:  zeroserve stop"),
          flush=True)


def _start_agent(session: Session, node_ip: str, head_address: str | None, args: argparse.Namespace,
                 state_dir: str | None) -> tuple[Child, dict[str, Any]]:
    where = ["--run-head", "--head-port", str(args.port)] if head_address is None else ["--head", head_address]
    agent_args = ["-m", "cluster", "agent", *where, "--node-ip", node_ip,
                  "--session-dir", str(session.path), "--token-file", str(session.token_file),
                  "--resources", args.resources, "--grace-period-s", str(args.grace_period_s), *metrics_args(args)]
    if args.num_cpus is not None:
        agent_args += ["--num-cpus", str(args.num_cpus)]
    if args.num_gpus is not None:
        agent_args += ["--num-gpus", str(args.num_gpus)]
    if args.head:
        agent_args += dashboard_args(args)
    if args.advertise_address:
        agent_args += ["--advertise-address", args.advertise_address]
    if state_dir:
        agent_args += ["--state-dir", state_dir]
    if args.head:
        agent_args.append("--is-head-node")
    name = f"agent-{args.advertise_address or node_ip}"
    log_path = str(session.logs / f"{name}.log")
    env = log_env(args)
    if args.block:
        # Tied to this process (lifeline), in its own process group so that a terminal's
        # Ctrl-C reaches only this process, which forwards it: one orderly drain.
        agent_args.append("--foreground")
        if args.log_files:
            agent_args += ["--log-file", log_path]
        agent = spawn(agent_args, new_session=True, stdout=sys.stdout.fileno(), stderr=sys.stderr.fileno(), env=env)
    else:
        # Its records to the rotated log file; its raw output (start-up failures) beside it.
        agent = spawn([*agent_args, "--log-file", log_path], log_path=str(session.logs / f"{name}.out"),
                      lifeline=False, new_session=True, env=env, also_tail=(log_path,))
    try:
        return agent, agent.wait_ready(_READY_TIMEOUT_S, f"the agent on {node_ip}")
    except RuntimeError as e:
        agent.stop(timeout=5.0)
        raise NodeStartError(str(e)) from None


def _forward_signals(agent: Child, grace_s: float) -> list[float]:
    """From now on SIGTERM/SIGINT/SIGHUP drain the node (a second one kills it); returns
    the list that gets the time of the first."""
    stop_at: list[float] = []

    def forward(signum: int, _frame: Any) -> None:
        if stop_at:
            agent.proc.kill()
            return
        stop_at.append(time.monotonic())
        say(f"{signal.Signals(signum).name}: stopping the node (its workers have {grace_s:g}s to finish)")
        agent.proc.send_signal(signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    return stop_at


def _foreground(agent: Child, record: NodeRecord, grace_s: float, stop_at: list[float]) -> int:
    """Wait for the node (signals forwarded by `_forward_signals`)."""
    try:
        while True:
            try:
                code = agent.proc.wait(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                if stop_at and time.monotonic() - stop_at[0] > grace_s + 10.0:
                    agent.proc.kill()  # the agent kills its workers at the grace period: it is stuck
    finally:
        agent.stop(timeout=5.0)
        remove_record(record)
    if code == 0:  # drained: after our signal, or `zeroserve stop` from another shell
        say("node stopped")
        return 0
    how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
    print(f"zeroserve: error: the node on {record.node_ip} stopped unexpectedly ({how}); "
          f"see the lines above", file=sys.stderr, flush=True)
    return 1


def local_token(address: str) -> str:
    head = "tcp://{}:{}".format(*split_address(address))
    rec = find_local_head()
    if rec is not None and rec.get("head_address") == head:
        return read_token(rec["token_file"])
    if probe(head, new_token(), timeout=3.0) != PROBE_REFUSED:
        raise NodeStartError(f"cannot reach the head at {address}: is it running, and is the address reachable?")
    raise NodeStartError("no token given: pass --token-file FILE or set $ZEROSERVE_TOKEN "
                         "(`zeroserve start --head` printed where the token is)")


def _fmt_resources(res: dict[str, float]) -> str:
    return ", ".join(f"{k}={v / 2**30:.1f}GiB" if k == "memory" else f"{k}={v:g}" for k, v in res.items())


def health(args: argparse.Namespace) -> int:
    """Exit 0 if the node(s) started on this machine answer: the agent (and, on a head node,
    the head) takes a ping with the cluster's token. Local only: a liveness check that
    does not depend on other nodes."""
    records = [r for r in load_records() if args.node_ip is None or r.node_ip == args.node_ip]
    if not records:
        raise NodeStartError("no node was started on this machine" + (f" on {args.node_ip}" if args.node_ip else ""))
    for rec in records:
        if not rec.processes():
            raise NodeStartError(f"the node on {rec.node_ip} is not running (its processes are gone)")
        token = read_token(rec.token_file)
        targets = [("agent", rec.agent_address)] + ([("head", rec.head_address)] if rec.is_head else [])
        for what, address in targets:
            if not address:
                continue
            verdict = probe(address, token, timeout=args.timeout)
            if verdict != PROBE_OK:
                raise NodeStartError(f"the {what} of the node on {rec.node_ip} ({address}) is {verdict.value}")
        print(f"ok: node {rec.node_id} on {rec.node_ip}" + (" (head)" if rec.is_head else ""))
    return 0
