"""The public functions of `actors`: init/shutdown, get/wait, named actors, cluster info.

Process state is one `_Process` record: either a driver (runtime thread + maybe an
embedded local cluster) or a worker (its runtime runs on the main loop).
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from . import _context
from ._blocking import head_blocking
from ._driver import DriverRuntime
from ._handles import ActorClass, ActorHandle
from ._local import LocalCluster
from ._refs import ObjectRef
from ._runtime import Runtime
from ._session import find_local_head, read_token
from .exceptions import ActorDiedError, ClusterUnavailableError
from .messages import ActorState

__all__ = [
    "init", "shutdown", "is_initialized", "remote", "get", "wait", "get_actor", "kill",
    "nodes", "get_gpu_ids", "cluster_resources", "available_resources", "runtime_or_init", "current_runtime",
]

_lock = threading.RLock()
_driver: DriverRuntime | None = None
_local: LocalCluster | None = None


def current_runtime() -> Runtime | None:
    return _context.current()


def runtime_or_init() -> Runtime:
    return _context.current_or_init()


def is_initialized() -> bool:
    return current_runtime() is not None


def _parse_address(address: str) -> str:
    if address.startswith("tcp://"):
        return address
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"address must be 'auto', 'HOST:PORT' or None (a new local cluster), got {address!r}")
    return f"tcp://{host}:{port}"


def init(address: str | None = None, *, namespace: str | None = None, token: str | None = None,
         num_cpus: float | None = None, num_gpus: int | None = None, resources: dict[str, float] | None = None,
         log_to_driver: bool = True, ignore_reinit_error: bool = True) -> dict[str, Any]:
    """Connect this process to a cluster, or start an embedded local one (address None).

    address: None starts a local cluster (head + agent as child processes, torn down at
    exit); "auto" joins the cluster `zeroserve start` runs on this machine; "HOST:PORT"
    joins that head. The token comes from `token=`, `$ZEROSERVE_TOKEN`, or the local
    session file. Returns a dict describing the connection.
    """
    global _driver, _local
    with _lock:
        if is_initialized():
            if not ignore_reinit_error:
                raise RuntimeError("actors.init() was already called; call actors.shutdown() first")
            return _connection_info()
        if address is None:
            address = os.environ.get("ZEROSERVE_ADDRESS") or None
        node_ip = "127.0.0.1"
        if address is None:
            _local = LocalCluster(num_cpus=num_cpus, num_gpus=num_gpus, resources=resources, token=token).start()
            assert _local.head_address is not None  # start() returns once the head is up
            head_address = _local.head_address
            tok = read_token(_local.token_file)
        else:
            if address == "auto":
                rec = find_local_head()
                if rec is None:
                    raise ClusterUnavailableError(
                        "address='auto' found no cluster started on this machine; run "
                        "`zeroserve start --head` first, or pass address='HOST:PORT'"
                    )
                head_address = rec["head_address"]
                node_ip = rec.get("node_ip", node_ip)
                tok = token or os.environ.get("ZEROSERVE_TOKEN") or read_token(rec["token_file"])
            else:
                head_address = _parse_address(address)
                tok = token or os.environ.get("ZEROSERVE_TOKEN") or _token_from_local_session(head_address)
                node_ip = os.environ.get("ZEROSERVE_NODE_IP", _local_ip_towards(head_address))
        try:
            _driver = DriverRuntime(token=tok, node_ip=node_ip, head_address=head_address,
                                    namespace=namespace, echo_logs=log_to_driver)
            _context.set_current(_driver.rt)
            if _local is not None:
                _local.on_gone = _driver.cluster_gone
        except BaseException:
            if _local is not None:
                _local.stop()
                _local = None
            raise
        return _connection_info()


def _token_from_local_session(head_address: str) -> str:
    rec = find_local_head()
    if rec is not None and rec.get("head_address") == head_address:
        return read_token(rec["token_file"])
    raise ClusterUnavailableError(
        f"no token for the cluster at {head_address}: pass token=... or set $ZEROSERVE_TOKEN "
        "(`zeroserve start --head` printed it)"
    )


def _local_ip_towards(head_address: str) -> str:
    import socket

    host, port = head_address[len("tcp://"):].rsplit(":", 1)
    if host.startswith("127."):
        return "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, int(port)))
        return s.getsockname()[0]


def _connection_info() -> dict[str, Any]:
    rt = current_runtime()
    assert rt is not None
    return {"address": rt.head_address, "node_ip": rt.node_ip, "namespace": rt.namespace,
            "session_dir": str(_local.session.path) if _local else None}


def shutdown() -> None:
    """Disconnect; stop the embedded cluster if this process started one."""
    global _driver, _local
    with _lock:
        d, _driver = _driver, None
        if d is not None:
            _context.set_current(None)
            d.stop()
        loc, _local = _local, None
        if loc is not None:
            loc.stop()


atexit.register(shutdown)
_context.set_auto_init(lambda: init())


def local_cluster() -> LocalCluster | None:
    return _local


# -- decorators ------------------------------------------------------------------------
def remote(*args: Any, **options: Any) -> Any:
    """`@actors.remote` or `@actors.remote(num_cpus=..., max_concurrency=..., ...)`."""
    if len(args) == 1 and not options and isinstance(args[0], type):
        return ActorClass(args[0], {})
    if args:
        raise TypeError("@actors.remote takes a class, or keyword options only")
    return lambda cls: ActorClass(cls, options)


# -- waiting ---------------------------------------------------------------------------
def _as_ref(obj: Any) -> ObjectRef:
    if isinstance(obj, ObjectRef):
        return obj
    to_ref = getattr(obj, "_to_object_ref", None)
    if to_ref is not None:
        return to_ref()
    raise TypeError(f"actors.get expects ObjectRefs (or a list of them), got {type(obj).__name__}")


def get(refs: Any, timeout: float | None = None) -> Any:
    """The value of a ref, or the values of a list of refs, waiting up to `timeout` s."""
    if isinstance(refs, (list, tuple)):
        deadline = None if timeout is None else time.monotonic() + timeout
        out = []
        for r in refs:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            out.append(_as_ref(r).result(left))
        return out
    return _as_ref(refs).result(timeout)


def wait(refs: Sequence[Any], num_returns: int = 1, timeout: float | None = None) -> tuple[list, list]:
    """Wait until `num_returns` refs are ready or `timeout` passes: (ready, not_ready)."""
    refs = list(refs)
    if not 0 <= num_returns <= len(refs):
        raise ValueError(f"num_returns must be between 0 and len(refs)={len(refs)}, got {num_returns}")
    rt = runtime_or_init()
    if rt.in_loop_thread():
        raise RuntimeError("actors.wait() blocks; on the runtime's event loop use asyncio.wait on the refs")
    as_refs = [_as_ref(r) for r in refs]
    cond = threading.Condition()
    done_count = [0]

    def one_done(_: ObjectRef) -> None:
        with cond:
            done_count[0] += 1
            cond.notify()

    for r in as_refs:
        r.on_done(one_done)
    with cond:
        cond.wait_for(lambda: done_count[0] >= num_returns, timeout)
    ready = [r for r, a in zip(refs, as_refs, strict=True) if a.done()][:num_returns]
    ready_ids = {id(r) for r in ready}
    return ready, [r for r in refs if id(r) not in ready_ids]


# -- actors and cluster ----------------------------------------------------------------
def get_actor(name: str, namespace: str | None = None) -> ActorHandle:
    """The handle of a named actor; ValueError if there is none alive by that name. Works in
    async code too (it blocks the loop for one round trip to the head, as in Ray)."""
    rt = runtime_or_init()
    ns = namespace if namespace is not None else rt.namespace
    if rt.in_loop_thread():  # async code (an async actor method): a direct round trip, not via the loop
        info = head_blocking(rt, lambda head: head.get_named_actor(name, ns))
    else:
        info = rt.run_threadsafe(lambda: rt.head.get_named_actor(name, ns))
    if info is None or info.state is ActorState.DEAD:
        raise ValueError(f"no actor named {name!r} in namespace {ns!r}")
    rt.loop.call_soon_threadsafe(rt.directory.update, info)
    return ActorHandle(info.actor_id, info.class_name, info.methods, info.async_methods, info)


def kill(handle: ActorHandle, *, no_restart: bool = True) -> None:
    """Kill the actor's process now. With no_restart=False it restarts if it has restarts left."""
    if not isinstance(handle, ActorHandle):
        raise TypeError(f"actors.kill expects an ActorHandle, got {type(handle).__name__}")
    rt = runtime_or_init()
    found = rt.run_threadsafe(lambda: rt.head.kill_actor(handle.actor_id, no_restart))
    if not found:
        raise ActorDiedError(f"{handle!r} is unknown to the cluster or already dead")


def nodes() -> list[dict[str, Any]]:
    """The nodes of the cluster: id, IP, alive, resources (Ray's keys too), and the free
    share of each GPU device (`gpu_free`, {} without GPUs)."""
    rt = runtime_or_init()
    infos = rt.run_threadsafe(lambda: rt.head.nodes())
    return [{"NodeID": n.node_id.hex, "node_id": n.node_id.hex, "NodeManagerAddress": n.ip, "ip": n.ip,
             "Alive": n.alive, "alive": n.alive, "is_head": n.is_head, "Resources": dict(n.resources_total),
             "resources_total": dict(n.resources_total), "resources_available": dict(n.resources_available),
             "agent_address": n.agent_address, "hostname": n.hostname, "metrics_url": n.metrics_url,
             "gpu_free": dict(n.gpu_free)} for n in infos]


def get_gpu_ids() -> list[int | str]:
    """The GPU devices the calling actor holds (ints, or the names its node gave them);
    [] outside an actor or for an actor without `num_gpus`."""
    rt = current_runtime()
    ids = rt.gpu_ids if rt is not None else ()
    return [int(i) if i.isdigit() else i for i in ids]


def cluster_resources() -> dict[str, float]:
    rt = runtime_or_init()
    return rt.run_threadsafe(lambda: rt.head.cluster_resources())


def available_resources() -> dict[str, float]:
    rt = runtime_or_init()
    return rt.run_threadsafe(lambda: rt.head.available_resources())

