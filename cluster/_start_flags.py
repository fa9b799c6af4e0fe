"""`zeroserve start`'s flags, checked before anything starts (each wrong one is a
`NodeStartError` saying what to give instead), and the agent arguments and environment
they become: the head's address, the token (`--token-file`, `--token`, `$ZEROSERVE_TOKEN`),
resources, the state directory (it must be safe: the head's state holds pickled classes
that workers load), the metrics and dashboard ports, log rotation.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from pathlib import Path

from actors.system import LogRotation, dashboard_port_from_env, metrics_port_from_env, read_token

from .exceptions import NodeStartError

__all__ = ["DEFAULT_WAIT_FOR_HEAD_S", "check_flags", "check_resources", "check_state_dir", "dashboard_args",
           "log_env", "metrics_args", "resolve_token", "split_address"]

DEFAULT_WAIT_FOR_HEAD_S = 300.0  # with --block: supervisors start the nodes of a cluster together
_ANY = ("0.0.0.0", "*")


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.removeprefix("tcp://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise NodeStartError(f"--address must be HOST:PORT (as `zeroserve start --head` printed), got {address!r}")
    return host, int(port)


def _token_from_file(path: str) -> str:
    try:
        token = read_token(path)
    except FileNotFoundError:
        raise NodeStartError(f"--token-file {path}: no such file") from None
    except PermissionError:
        raise NodeStartError(f"--token-file {path}: not readable by this user (uid {os.getuid()})") from None
    except ValueError as e:
        raise NodeStartError(f"--token-file: {e}") from None
    mode = os.stat(path).st_mode
    if mode & stat.S_IROTH:
        print(f"zeroserve: warning: the token file {path} is readable by every user (chmod o-r it)",
              file=sys.stderr)
    return token


def resolve_token(args: argparse.Namespace) -> str | None:
    """The token the user gave, by `--token-file`, `--token` or `$ZEROSERVE_TOKEN` (in that
    order); None if none was given."""
    if getattr(args, "token_file", None):
        return _token_from_file(args.token_file)
    return args.token or os.environ.get("ZEROSERVE_TOKEN") or None


def check_resources(text: str) -> None:
    try:
        value = json.loads(text)
    except ValueError as e:
        raise NodeStartError(f"--resources must be a JSON object such as '{{\"GPU\": 1}}': {e}") from None
    if not isinstance(value, dict) or not all(isinstance(v, (int, float)) for v in value.values()):
        raise NodeStartError("--resources must be a JSON object of name -> number, e.g. '{\"GPU\": 1}'")


def check_state_dir(path: str) -> str:
    p = Path(path).expanduser().resolve()
    try:
        p.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise NodeStartError(f"--state-dir {path}: cannot create it: {e.strerror}") from None
    if not p.is_dir():
        raise NodeStartError(f"--state-dir {path} is not a directory")
    if not os.access(p, os.W_OK | os.X_OK):
        raise NodeStartError(f"--state-dir {path} is not writable by this user (uid {os.getuid()}); "
                             "give it to this user (on Kubernetes: securityContext.fsGroup)")
    problem = _unsafe_state_dir(p)
    if problem is not None:
        raise NodeStartError(f"--state-dir {path} {problem}: the head's state holds the pickled classes of "
                             "actors, which workers load, so whoever can write there can run code as you. "
                             "Use a directory you own that others cannot write (chmod 700)")
    return str(p)


def _unsafe_state_dir(p: Path) -> str | None:
    """Why the head's state directory is not safe, or None. Group-writable is accepted for
    a group of this process (Kubernetes' fsGroup makes a volume so, again at every mount)."""
    st = os.stat(p)
    if st.st_uid != os.getuid():
        return f"belongs to uid {st.st_uid}, not to you (uid {os.getuid()})"
    if st.st_mode & stat.S_IWOTH:
        return f"is writable by every user (mode {stat.S_IMODE(st.st_mode):04o})"
    if st.st_mode & stat.S_IWGRP and st.st_gid not in {os.getgid(), *os.getgroups()}:
        return f"is writable by group {st.st_gid}, which this user is not in"
    return None


def metrics_args(args: argparse.Namespace) -> list[str]:
    """The agent's metrics flags: a port given here must be free; the default may move."""
    if args.metrics_port is not None:
        if not 0 <= args.metrics_port <= 65535:
            raise NodeStartError(f"--metrics-port must be a port number (0 for none), got {args.metrics_port}")
        return ["--metrics-port", str(args.metrics_port), "--metrics-port-strict"]
    try:
        return ["--metrics-port", str(metrics_port_from_env())]
    except ValueError as e:
        raise NodeStartError(str(e)) from None


def dashboard_args(args: argparse.Namespace) -> list[str]:
    """The head's dashboard flags: a port given here must be free; the default may move."""
    if args.dashboard_port is not None:
        if not 0 <= args.dashboard_port <= 65535:
            raise NodeStartError(f"--dashboard-port must be a port number (0 for none), got {args.dashboard_port}")
        return ["--dashboard-port", str(args.dashboard_port), "--dashboard-port-strict"]
    try:
        return ["--dashboard-port", str(dashboard_port_from_env())]
    except ValueError as e:
        raise NodeStartError(str(e)) from None


def log_env(args: argparse.Namespace) -> dict[str, str]:
    """The node's environment, with the log rotation of --log-max-bytes / --log-backups."""
    try:
        env_rotation = LogRotation.from_env()
        rotation = LogRotation(args.log_max_bytes if args.log_max_bytes is not None else env_rotation.max_bytes,
                               args.log_backups if args.log_backups is not None else env_rotation.backups)
    except ValueError as e:
        raise NodeStartError(str(e)) from None
    return {**os.environ, **rotation.env()}


def check_flags(args: argparse.Namespace) -> None:
    check_resources(args.resources)
    if args.num_gpus is not None and args.num_gpus < 0:
        raise NodeStartError(f"--num-gpus must be a number of devices >= 0, got {args.num_gpus}")
    metrics_args(args)
    dashboard_args(args)
    if args.dashboard_port is not None and not args.head:
        raise NodeStartError("--dashboard-port is for the head (`zeroserve start --head`): the head serves the "
                             "dashboard for the whole cluster")
    log_env(args)  # wrong values fail before anything starts
    if args.grace_period_s < 0:
        raise NodeStartError("--grace-period-s must be >= 0")
    if args.wait_for_head_s is None:
        args.wait_for_head_s = DEFAULT_WAIT_FOR_HEAD_S if args.block else 0.0
    if args.wait_for_head_s < 0:
        raise NodeStartError("--wait-for-head-s must be >= 0")
    if args.state_dir and not args.head:
        raise NodeStartError("--state-dir is where the head keeps its state: give it with --head")
    if args.log_files and not args.block:
        raise NodeStartError("--log-files is for --block (a daemon always writes its log files)")
    node_ip = args.node_ip or ""
    if node_ip in _ANY and not args.advertise_address:
        raise NodeStartError(f"--node-ip {node_ip} binds every interface: give the address other nodes reach "
                             "this one at with --advertise-address (on Kubernetes: the pod IP)")

