"""The `zeroserve serve ...` commands (also `python -m serve ...`): run, deploy, status, shutdown.

    serve run MODULE:APP [key=value ...] | CONFIG.yaml [--address H:P] [--host H] [--port P] [--route-prefix /x]
              [--name N]
    serve deploy CONFIG.yaml [--address H:P] [--timeout S]
    serve status [--address H:P] [--format table|json|yaml] [--json]
    serve shutdown [--address H:P] [-y]
    serve config-schema            # the JSON Schema of config files, for editors

Everything a command is given (config file, import path, options) is checked and the
applications are imported before the command connects to a cluster, so a bad input
changes nothing; every problem found is listed at once. `run` uses `--address`, else the cluster `zeroserve start` runs on this
machine, else an embedded one; it blocks until SIGINT/SIGTERM, then removes what it
deployed (and the embedded cluster). `deploy` is declarative: the config's applications
are brought to the given state (unchanged deployments are left alone, changed ones are
updated or rolled) and applications not in it are deleted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import actors
from actors.system import PROBE_BUSY, PROBE_OK, find_local_head, probe, read_token

from ._api.startup import base_url, follow_replica_output, start
from ._api.startup import shutdown as serve_shutdown
from ._api.status import ServeStatus
from ._build import BuiltApp, build_config, load_and_build
from ._config import DEFAULT
from ._data.client import Progress, ServeClient, deploy_timeout_s, deployments_in, describe
from ._schema import ServeConfig, app_data, config_json_schema, read_config
from .exceptions import ConfigError
from .messages import DeploymentId, DeploymentStatus, DeploymentTarget

__all__ = ["main"]

_POLL_S = 0.2
_MESSAGE_LINES = 20  # of a message's traceback, in `serve status`


class CommandError(Exception):
    """A command cannot go on; the message says what to change."""


def _say(text: str) -> None:
    print(text, flush=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zeroserve serve", description="Deploy and inspect Serve applications.")
    sub = p.add_subparsers(dest="command", required=True)

    def connection(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("--address", help="HOST:PORT of the cluster's head (default: $ZEROSERVE_ADDRESS, "
                                           "or the cluster `zeroserve start` runs on this machine)")
        cmd.add_argument("--token", help="cluster token (default: $ZEROSERVE_TOKEN or the local session's)")

    run = sub.add_parser("run", help="deploy an application (or a config file) and serve it until Ctrl-C")
    run.add_argument("target", help="MODULE:APP (a bound deployment, importable from here) or a CONFIG.yaml")
    run.add_argument("app_args", nargs="*", metavar="key=value", help="args for an application builder "
                                                                      "`def app(args: dict)` named by MODULE:APP")
    connection(run)
    run.add_argument("--host", help="HTTP host of the proxy (default 127.0.0.1)")
    run.add_argument("--port", type=int, help="HTTP port of the proxy (default 8000)")
    run.add_argument("--route-prefix", help="route of the application (default: its ingress deployment's)")
    run.add_argument("--name", default="default", help="application name (default 'default')")

    deploy = sub.add_parser("deploy", help="bring a running cluster to the state of a config file")
    deploy.add_argument("config", help="CONFIG.yaml")
    connection(deploy)
    deploy.add_argument("--timeout", type=float, help="seconds to wait for the roll-out (default: the config's "
                                                      "deploy_timeout_s, else $ZEROSERVE_DEPLOY_TIMEOUT_S, else 300)")

    status = sub.add_parser("status", help="applications, deployments and replicas")
    connection(status)
    status.add_argument("--format", choices=("table", "json", "yaml"), default="table",
                        help="tables (default); the full summary as JSON; or Ray Serve's YAML shape "
                             "(proxies, applications, deployments with replica_states)")
    status.add_argument("--json", action="store_true", help="the same as --format json")

    shutdown = sub.add_parser("shutdown", help="delete every application and stop Serve on the cluster")
    connection(shutdown)
    shutdown.add_argument("-y", "--yes", action="store_true", help="(accepted for Ray Serve compatibility)")

    schema = sub.add_parser("config-schema", help="print the JSON Schema of Serve config files (for editors)")
    schema.add_argument("--indent", type=int, default=2, help="JSON indentation (default 2)")
    return p


# -- connecting ----------------------------------------------------------------------------
def _local_cluster_alive(token: str | None) -> bool:
    rec = find_local_head()
    if rec is None:
        return False
    try:
        tok = token or os.environ.get("ZEROSERVE_TOKEN") or read_token(rec["token_file"])
    except OSError:
        return False
    verdict = probe(rec["head_address"], tok, timeout=3.0)
    if verdict == PROBE_BUSY:  # there, but not answering: neither "no cluster" nor a second one
        raise CommandError(f"the cluster's head at {rec['head_address']} is busy or unresponsive (it took the "
                           "connection but did not answer within 3s); try again, and see its log")
    return verdict == PROBE_OK


def _connect(args: argparse.Namespace, embedded_ok: bool = False, echo_logs: bool = False) -> bool:
    """Connect this process as a driver; True if that started an embedded cluster."""
    address = args.address or os.environ.get("ZEROSERVE_ADDRESS")
    try:
        if address:
            actors.init(address=address, token=args.token, log_to_driver=echo_logs)
        elif _local_cluster_alive(args.token):
            actors.init(address="auto", token=args.token, log_to_driver=echo_logs)
        elif embedded_ok:
            _say("serve: no cluster running on this machine; starting a local one")
            actors.init(log_to_driver=echo_logs)
            return True
        else:
            raise CommandError("no cluster is running on this machine: start one with `zeroserve start --head`, "
                               "or pass --address HOST:PORT")
    except (actors.ActorsError, ValueError, OSError) as e:
        raise CommandError(f"cannot connect to the cluster{f' at {address}' if address else ''}: {e}") from None
    return False


def _client() -> ServeClient:
    return ServeClient.current()


def _deployments(st: dict[str, Any]) -> dict[DeploymentId, dict[str, Any]]:
    return {d: {**s, "app": d.app} for d, s in deployments_in(st).items()}


def _check_http(running: dict[str, Any], wanted: dict[str, Any]) -> None:
    differ = {k: v for k, v in wanted.items() if running.get(k) != v}
    if differ:
        _say(f"serve: warning: Serve is already running with http_options "
             f"{ {k: running.get(k) for k in differ} }; {differ} take effect only after `zeroserve serve shutdown`")


# -- deploying -----------------------------------------------------------------------------
def _targets(apps: list[BuiltApp]) -> list:
    return [t for app in apps for t in app.targets]


def _roll_out(client: ServeClient, apps: list[BuiltApp], stale: list[DeploymentId], timeout_s: float,
              stop: threading.Event | None = None) -> bool:
    """Print progress until every deployment of `apps` is HEALTHY and `stale` ones are gone."""
    names = [t.id for t in _targets(apps)]
    progress = Progress(lambda line: _say(f"serve: {line}"))
    failed = [False]

    def done(st: dict[str, Any]) -> bool:
        deps = _deployments(st)
        parts = [describe(n.name, deps[n]) if n in deps else f"{n.name} pending" for n in names]
        gone = [n for n in stale if n not in deps]
        if stale:
            parts.append(f"deleted {len(gone)}/{len(stale)}")
        progress.line("; ".join(parts))
        unhealthy = [n for n in names if n in deps and DeploymentStatus(deps[n]["status"]) is DeploymentStatus.UNHEALTHY]
        if unhealthy:
            for n in unhealthy:
                print(f"serve: error: deployment {n.name} is UNHEALTHY (application {n.app!r}): "
                      f"{deps[n]['message']}", file=sys.stderr, flush=True)
            failed[0] = True
            return True
        return all(n in deps and DeploymentStatus(deps[n]["status"]) is DeploymentStatus.HEALTHY
                   for n in names) and len(gone) == len(stale)

    if client.watch_status(done, timeout_s, stop):
        return not failed[0]
    if stop is None or not stop.is_set():
        print(f"serve: error: the roll-out did not finish within {timeout_s:g} s (the deploy deadline: --timeout, "
              f"the config's deploy_timeout_s or $ZEROSERVE_DEPLOY_TIMEOUT_S): {progress.last} (see `zeroserve serve "
              "status`)", file=sys.stderr, flush=True)
    return False


def _by_app(apps: list[BuiltApp]) -> dict[str, list[DeploymentTarget]]:
    return {app.config.name: list(app.targets) for app in apps}


def _report(apps: list[BuiltApp], changed: dict[DeploymentId, bool]) -> None:
    for app in apps:
        for t in app.targets:
            _say(f"serve: {app.config.name}/{t.name}: {'updating' if changed.get(t.id) else 'unchanged'}")


def _where(apps: list[BuiltApp], st: dict[str, Any]) -> None:
    base = base_url(st.get("http_options") or {}, st.get("proxies"))
    for app in apps:
        where = f"{base}{app.route_prefix}" if base and app.route_prefix is not None else "no HTTP route (handles only)"
        _say(f"serve: application {app.config.name!r} is serving at {where}")


def deploy_cmd(args: argparse.Namespace) -> int:
    config, apps = load_and_build(args.config)
    timeout_s = args.timeout if args.timeout is not None else (config.deploy_timeout_s or deploy_timeout_s())
    _connect(args)
    start(detached=True, http_options=config.http_options, logging_config=config.logging_config,
          tracing_config=config.tracing_config)
    client = _client()
    _check_http(client.status().get("http_options", {}), config.http_options.given())
    wanted = {t.id for t in _targets(apps)}
    current = client.targets()
    changed = client.deploy_apps(_by_app(apps), exclusive=True, wait=False)  # the rest is deleted
    _report(apps, changed)
    stale = sorted(n for n in current if n not in wanted)
    if stale:
        by_app: dict[str, list[str]] = {}
        for d in stale:
            by_app.setdefault(d.app, []).append(d.name)
        _say("serve: deleting deployments not in the config: "
             + "; ".join(f"{', '.join(names)} (application {app!r})" for app, names in sorted(by_app.items())))
    if not _roll_out(client, apps, stale, timeout_s):
        return 1
    _where(apps, client.status())
    return 0


def _run_config(args: argparse.Namespace) -> tuple[ServeConfig, list[BuiltApp]]:
    http = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    route_prefix = DEFAULT if args.route_prefix is None else (None if args.route_prefix in ("", "none", "None")
                                                               else args.route_prefix)
    if not (args.target.endswith((".yaml", ".yml")) or os.path.isfile(args.target)):
        bad = [a for a in args.app_args if "=" not in a]
        if bad:
            raise CommandError(f"application args must be key=value, got {bad}")
        data = app_data(args.target, args.name, route_prefix, http, dict(a.split("=", 1) for a in args.app_args))
        return build_config(data, args.target)
    if args.route_prefix is not None or args.name != "default" or args.app_args:
        raise CommandError("--route-prefix, --name and key=value args apply to MODULE:APP; set them in the config file")
    data = read_config(args.target)
    if http and isinstance(data, Mapping) and isinstance(data.get("http_options") or {}, Mapping):
        data = {**data, "http_options": {**(data.get("http_options") or {}), **http}}  # --host/--port win
    return build_config(data, args.target)


def run_cmd(args: argparse.Namespace) -> int:
    config, apps = _run_config(args)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # a second Ctrl-C: stop waiting for the clean-up
        _say(f"serve: {signal.Signals(signum).name}: shutting down")
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    embedded = _connect(args, embedded_ok=True, echo_logs=True)
    started = _client().controller_or_none() is None
    ok = False
    deployed: list[DeploymentId] = []
    try:
        start(detached=False, http_options=config.http_options, logging_config=config.logging_config,
              tracing_config=config.tracing_config)
        follow_replica_output()
        client = _client()
        if not started:
            _check_http(client.status().get("http_options", {}), config.http_options.given())
        deployed = [t.id for t in _targets(apps)]
        changed = client.deploy_apps(_by_app(apps), wait=False)
        _report(apps, changed)
        ok = _roll_out(client, apps, [], config.deploy_timeout_s or deploy_timeout_s(), stop)
        if ok:
            _where(apps, client.status())
            _say("serve: Ctrl-C to stop")
            while not stop.wait(1.0):
                pass
    finally:
        if embedded:
            pass  # the cluster is ours and goes with actors.shutdown() (a terminal's Ctrl-C reached it too)
        elif started:  # Serve is ours: all of it goes
            serve_shutdown()
        elif deployed:  # Serve was there before: only what this command deployed goes
            _client().delete(deployed)
        actors.shutdown()
        _say("serve: stopped")
    return 0 if ok or stop.is_set() else 1


def status_cmd(args: argparse.Namespace) -> int:
    _connect(args)
    controller = _client().controller_or_none()
    st = _client().status() if controller is not None else {"applications": {}, "http_options": None}
    if args.json or args.format == "json":
        print(json.dumps(st, indent=2, sort_keys=True))
    elif args.format == "yaml":
        print(ServeStatus(st))
    elif controller is None:
        _say("Serve is not running on this cluster")
    else:
        _say(render(st))
    return 0


def schema_cmd(args: argparse.Namespace) -> int:
    print(json.dumps(config_json_schema(), indent=args.indent))
    return 0


def shutdown_cmd(args: argparse.Namespace) -> int:
    _connect(args)
    if _client().controller_or_none() is None:
        _say("serve: Serve is not running on this cluster; nothing to shut down")
        return 0
    apps = sorted(_client().status()["applications"])
    serve_shutdown()
    _say(f"serve: shut down ({len(apps)} application{'s' if len(apps) != 1 else ''} deleted"
         f"{': ' + ', '.join(apps) if apps else ''})")
    return 0


# -- rendering -------------------------------------------------------------------------------
def render(st: dict[str, Any]) -> str:
    http = st.get("http_options") or {}
    proxies = st.get("proxies") or {}
    base = base_url(http, proxies)
    lines = [f"Serve: HTTP at {base} ({http.get('location', 'HeadOnly')})" if base else "Serve: no HTTP proxy", ""]
    rows: list[tuple[str, ...]]
    if proxies:
        rows = [("PROXY NODE", "IP", "STATE", "URL", "MESSAGE")]
        rows += [(p["node_id"], p["node_ip"], p["state"], p["url"] or "-", (p["message"] or "").split("\n", 1)[0][:60])
                 for p in sorted(proxies.values(), key=lambda p: p["node_ip"])]
        lines += [*_table(rows), ""]
    apps = st["applications"]
    if not apps:
        return "\n".join([*lines, "No applications."])
    rows = [("APPLICATION", "STATUS", "ROUTES", "DEPLOYMENTS", "IMPORT PATH")]
    for name, app in sorted(apps.items()):
        routes = sorted(d["route_prefix"] for d in app["deployments"].values() if d["route_prefix"] is not None)
        rows.append((name, app["status"], ", ".join(routes) or "-", str(len(app["deployments"])),
                     app.get("import_path") or "-"))
    lines += [*_table(rows), ""]
    rows = [("DEPLOYMENT", "APPLICATION", "STATUS", "RUNNING/TARGET", "REPLICA STATES", "VERSION", "MESSAGE")]
    for dep_id, d in sorted(_deployments(st).items()):
        states = ", ".join(f"{s} {c}" for s, c in sorted(d["replicas"].items())) or "-"
        rows.append((dep_id.name, d["app"], d["status"], f"{d['replicas'].get('RUNNING', 0)}/{d['target_replicas']}",
                     states, str(d["version"])[:12], (d["message"] or d.get("progress") or "").split("\n", 1)[0][:60]))
    lines += _table(rows)
    messages = [(n.name, d["message"]) for n, d in sorted(_deployments(st).items()) if d["message"]]
    if messages:
        lines += ["", "Messages:"]
        for name, message in messages:
            text = message.rstrip().splitlines()
            lines += [f"  {name}: {text[0]}", *(f"    {t}" for t in text[1:][-_MESSAGE_LINES:])]
    return "\n".join(lines)


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = {"run": run_cmd, "deploy": deploy_cmd, "status": status_cmd, "shutdown": shutdown_cmd,
               "config-schema": schema_cmd}[args.command]
    try:
        return command(args)
    except (ConfigError, CommandError, RuntimeError, actors.ActorsError) as e:
        print(f"zeroserve serve {args.command}: error: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        actors.shutdown()
