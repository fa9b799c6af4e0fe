"""The runtime's interface for zeroserve's own layers (cluster, proxy, serve).

User programs need only `actors`; the head, the agents, the controller and the proxies
host services and start processes through these names, so no other package reaches into
`actors`' private modules.
"""

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from ._api import current_runtime, local_cluster, runtime_or_init
from ._directory import ActorDirectory
from ._endpoints import install as install_endpoints
from ._futures import CallFuture, copy_state
from ._head_client import ENV_TIMEOUT, HeadClient, Timeout
from ._host import ServiceTarget, rpc, rpc_methods
from ._inbox import LoopInbox
from ._local import dashboard_port_from_env, metrics_port_from_env
from ._log_ship import ShippedLogReader, push, ship, shipping
from ._log_ship import drain as drain_shipped
from ._log_ship import install as ship_logs_to
from ._logfiles import (
    LOG_FORMAT,
    LogRotation,
    RotatingWriter,
    check_rotation,
    configure_process_logging,
    rotate_files,
    safe_log_name,
    validate_log_name,
)
from ._longpoll import MISSING_VERSION, UNKNOWN_VERSION, Backoff, LongPollClient, LongPollHost, Update
from ._metrics import metrics_registry
from ._metrics_export import CONTENT_TYPE, Family, families_of, merge_families, render, sample_value
from ._output import OutputFollower, follow_output
from ._probe import PROBE_BUSY, PROBE_OK, PROBE_REFUSED, PROBE_UNREACHABLE, ProbeResult, probe
from ._process import Child, signal_ready, spawn, watch_parent
from ._request_lines import RECORD, LineSpec, asctime, render_text
from ._runtime import DEFAULT_MAX_MESSAGE_BYTES, Inbound, Runtime
from ._security import CurveKeys, new_token
from ._serialization import PreparedCall, dumps, dumps_code, loads, prepare_call
from ._session import (
    Session,
    base_dir,
    find_local_head,
    node_files,
    pid_alive,
    read_token,
    secure_base,
    secure_dir,
    trusted_token_file,
    write_token,
)
from ._worker import GRACE_ENV
from ._zygote import PRELOAD_ENV, ForkServer

T = TypeVar("T")

#: A custom resource (1.0) that only the head node's agent offers: an actor that must live
#: on the head node asks for a little of it (`resources={HEAD_NODE_RESOURCE: 0.001}`), and
#: restarts on the head node that replaces it (a node id would pin it to one that is gone).
HEAD_NODE_RESOURCE = "node:head"


def node_logs_dir() -> Path | None:
    """The directory where this node keeps its logs: a worker's from its agent
    (`$ZEROSERVE_LOGS_DIR`), a driver's from the embedded cluster it started; None otherwise."""
    given = os.environ.get("ZEROSERVE_LOGS_DIR")
    if given:
        return Path(given)
    local = local_cluster()
    return local.session.logs if local is not None else None


def run_client(head_address: str, token: str, fn: Callable[[Runtime], Awaitable[T]], *,
               node_ip: str = "127.0.0.1") -> T:
    """Run `await fn(runtime)` on a short-lived runtime (for command-line tools that
    talk to the head without registering as a driver)."""
    import uvloop

    async def main() -> T:
        rt = Runtime(token=token, node_ip=node_ip, head_address=head_address, role="client")
        try:
            return await fn(rt)
        finally:
            rt.close()

    return uvloop.run(main())


__all__ = [
    "metrics_registry",
    "node_logs_dir",
    "CONTENT_TYPE",
    "Family",
    "families_of",
    "merge_families",
    "render",
    "sample_value",
    "LOG_FORMAT",
    "LogRotation",
    "RotatingWriter",
    "check_rotation",
    "rotate_files",
    "configure_process_logging",
    "safe_log_name",
    "validate_log_name",
    "RECORD",
    "LineSpec",
    "ShippedLogReader",
    "asctime",
    "render_text",
    "drain_shipped",
    "ship_logs_to",
    "push",
    "ship",
    "shipping",
    "OutputFollower",
    "metrics_port_from_env",
    "dashboard_port_from_env",
    "follow_output",
    "GRACE_ENV",
    "PRELOAD_ENV",
    "HEAD_NODE_RESOURCE",
    "ActorDirectory",
    "Backoff",
    "CallFuture",
    "ENV_TIMEOUT",
    "HeadClient",
    "LongPollClient",
    "LongPollHost",
    "MISSING_VERSION",
    "ProbeResult",
    "Timeout",
    "UNKNOWN_VERSION",
    "Update",
    "rpc",
    "rpc_methods",
    "PROBE_BUSY",
    "PROBE_OK",
    "PROBE_REFUSED",
    "PROBE_UNREACHABLE",
    "probe",
    "run_client",
    "Child",
    "ForkServer",
    "CurveKeys",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "Inbound",
    "LoopInbox",
    "Runtime",
    "ServiceTarget",
    "Session",
    "base_dir",
    "copy_state",
    "current_runtime",
    "dumps",
    "dumps_code",
    "PreparedCall",
    "prepare_call",
    "find_local_head",
    "install_endpoints",
    "loads",
    "local_cluster",
    "new_token",
    "node_files",
    "read_token",
    "pid_alive",
    "secure_base",
    "secure_dir",
    "trusted_token_file",
    "runtime_or_init",
    "signal_ready",
    "spawn",
    "watch_parent",
    "write_token",
]
