"""Validation of `@actors.remote(...)` and `.options(...)` arguments into `ActorOptions`.

Wrong options fail at the call that gave them, with a message saying what to change.
"""

from __future__ import annotations

from typing import Any

from ._logfiles import validate_log_name
from .messages import ActorOptions, NodeId

__all__ = ["validate_actor_options", "ACTOR_OPTION_NAMES"]

ACTOR_OPTION_NAMES = (
    "num_cpus", "resources", "max_concurrency", "max_restarts", "name", "namespace",
    "lifetime", "node_id", "get_if_exists", "num_gpus", "spread_group", "log_name",
)
DEFAULT_ASYNC_CONCURRENCY = 1000


def _number(name: str, value: Any, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise ValueError(f"actor option {name} must be a number >= {minimum}, got {value!r}")
    return float(value)


def validate_actor_options(options: dict[str, Any], *, is_async: bool) -> ActorOptions:
    unknown = sorted(set(options) - set(ACTOR_OPTION_NAMES))
    if unknown:
        raise ValueError(f"unknown actor option(s) {unknown}; valid options are {list(ACTOR_OPTION_NAMES)}")
    num_cpus = _number("num_cpus", options.get("num_cpus", 0))
    resources = options.get("resources") or {}
    if not isinstance(resources, dict):
        raise ValueError(f"actor option resources must be a dict of name -> amount, got {resources!r}")
    for key, amount in resources.items():
        if not isinstance(key, str) or key == "CPU":
            raise ValueError(f"resource names must be strings other than 'CPU' (use num_cpus), got {key!r}")
        _number(f"resources[{key!r}]", amount)
    num_gpus = _number("num_gpus", options.get("num_gpus") or 0)
    if "GPU" in resources:  # the same as num_gpus: GPUs are devices, placed by the scheduler as such
        if num_gpus:
            raise ValueError("give GPUs once: num_gpus, or resources={'GPU': n}, not both")
        num_gpus = _number("resources['GPU']", resources["GPU"])
        resources = {k: v for k, v in resources.items() if k != "GPU"}
    if num_gpus > 1 and num_gpus != int(num_gpus):
        raise ValueError(f"actor option num_gpus must be a fraction of one device (at most 1, such as 0.5) or a "
                         f"whole number of devices, got {num_gpus!r}")
    default_conc = DEFAULT_ASYNC_CONCURRENCY if is_async else 1
    max_concurrency = options.get("max_concurrency", default_conc)
    if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
        raise ValueError(f"actor option max_concurrency must be an int >= 1, got {max_concurrency!r}")
    max_restarts = options.get("max_restarts", 0)
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < -1:
        raise ValueError(f"actor option max_restarts must be an int >= 0 (or -1 for unlimited), got {max_restarts!r}")
    name = options.get("name")
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"actor option name must be a non-empty string, got {name!r}")
    namespace = options.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        raise ValueError(f"actor option namespace must be a string, got {namespace!r}")
    lifetime = options.get("lifetime")
    if lifetime not in (None, "detached", "non_detached"):
        raise ValueError(f"actor option lifetime must be None or 'detached', got {lifetime!r}")
    if lifetime == "detached" and name is None:
        raise ValueError("a detached actor needs a name (options(name=..., lifetime='detached')) to be found again")
    node_id = options.get("node_id")
    if node_id is not None and not isinstance(node_id, NodeId):
        if not isinstance(node_id, str):
            raise ValueError(f"actor option node_id must be a node id string (see actors.nodes()), got {node_id!r}")
        node_id = NodeId(node_id)
    spread_group = options.get("spread_group")
    if spread_group is not None and (not isinstance(spread_group, str) or not spread_group):
        raise ValueError(f"actor option spread_group must be a non-empty string, got {spread_group!r}")
    log_name = options.get("log_name")
    if log_name is not None:
        validate_log_name(log_name)
    return ActorOptions(
        name=name,
        namespace=namespace,
        lifetime="detached" if lifetime == "detached" else None,
        num_cpus=num_cpus,
        resources=tuple(sorted((k, float(v)) for k, v in resources.items())),
        max_concurrency=max_concurrency,
        max_restarts=max_restarts,
        node_id=node_id,
        get_if_exists=bool(options.get("get_if_exists", False)),
        spread_group=spread_group,
        log_name=log_name,
        num_gpus=num_gpus,
    )
