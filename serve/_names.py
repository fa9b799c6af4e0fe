"""The names Serve's actors and records go by in the cluster, in one place.

The controller is found by name; replicas and proxies are named actors so that a
restarted controller (or a driver cleaning up after a failed shutdown) finds them in the
head's actor table; the controller's checkpoint (one record per deployment, and its settings) and status
summary are KV keys.
"""

from __future__ import annotations

from .messages import DeploymentId, ReplicaId

__all__ = ["CHECKPOINT_KEY", "CONTROLLER_NAME", "DEPLOYMENT_RECORD_PREFIX", "PROXY_PREFIX", "RECORDS_PREFIX",
           "REPLICA_PREFIX", "SERVE_NAMESPACE", "SETTINGS_KEY", "STATUS_KEY", "deployment_record_key", "proxy_actor_name", "proxy_node_of", "proxy_serial", "proxy_worker_of", "replica_actor_name"]

CONTROLLER_NAME = "SERVE_CONTROLLER"
SERVE_NAMESPACE = "serve"
CHECKPOINT_KEY = "serve/controller-checkpoint"  # the old single-value checkpoint (still read, for upgrades)
RECORDS_PREFIX = "serve/checkpoint/"  # the controller's records: its settings, and one per deployment
SETTINGS_KEY = RECORDS_PREFIX + "settings"
DEPLOYMENT_RECORD_PREFIX = RECORDS_PREFIX + "deployment/"
STATUS_KEY = "serve/status.json"  # a plain summary for `zeroserve status` (no serve import needed)
REPLICA_PREFIX = "SERVE_REPLICA::"
PROXY_PREFIX = "SERVE_PROXY::"


def deployment_record_key(deployment: DeploymentId) -> str:
    """The KV key of a deployment's record in the controller's checkpoint."""
    return f"{DEPLOYMENT_RECORD_PREFIX}{deployment}"


def replica_actor_name(replica_id: ReplicaId) -> str:
    return f"{REPLICA_PREFIX}{replica_id}"


def proxy_actor_name(node_id: str, serial: str) -> str:
    """Named per node and incarnation, so a replacement never waits for its predecessor's name."""
    return f"{PROXY_PREFIX}{node_id}::{serial}"


def proxy_serial(worker: int, token: str) -> str:
    """A proxy's serial: its token, after `w<worker>-` for a node's workers after the first."""
    return f"w{worker}-{token}" if worker else token


def proxy_worker_of(actor_name: str) -> int:
    """Which of its node's proxy workers a proxy actor's name says it is (0 for the first)."""
    serial = actor_name.rsplit("::", 1)[-1]
    if serial.startswith("w") and "-" in serial:
        number = serial[1:].split("-", 1)[0]
        if number.isdigit():
            return int(number)
    return 0


def proxy_node_of(actor_name: str) -> str | None:
    """The node id in a proxy actor's name; None if it is not a proxy's name."""
    if not actor_name.startswith(PROXY_PREFIX):
        return None
    return actor_name[len(PROXY_PREFIX):].split("::", 1)[0]
