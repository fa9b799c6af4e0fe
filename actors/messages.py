"""Value types and control-plane messages shared by the runtime and the cluster processes.

The runtime (drivers, workers, and the agents through `HeadClient`) talks to the head and
the agents with these; `cluster` implements the servers. Every message is a frozen, slotted dataclass; ids are value
types with a readable `str`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from enum import Enum

__all__ = [
    "ActorId",
    "NodeId",
    "JobId",
    "ActorState",
    "ActorOptions",
    "ActorSpec",
    "ActorInfo",
    "NodeInfo",
    "Assignment",
    "WatchReply",
    "NodeRegistration",
    "WorkerExit",
]


@dataclass(frozen=True, slots=True, order=True)
class ActorId:
    hex: str

    @classmethod
    def new(cls) -> "ActorId":
        return cls(secrets.token_hex(8))

    def __str__(self) -> str:
        return self.hex


@dataclass(frozen=True, slots=True, order=True)
class NodeId:
    hex: str

    @classmethod
    def new(cls) -> "NodeId":
        return cls(secrets.token_hex(6))

    def __str__(self) -> str:
        return self.hex


@dataclass(frozen=True, slots=True, order=True)
class JobId:
    hex: str

    @classmethod
    def new(cls) -> "JobId":
        return cls(secrets.token_hex(4))

    def __str__(self) -> str:
        return self.hex


class ActorState(str, Enum):
    PENDING = "PENDING"  # accepted, waiting for resources or for its worker to start
    ALIVE = "ALIVE"  # its worker answers calls at `address`
    RESTARTING = "RESTARTING"  # its worker died; a new incarnation is being started
    DEAD = "DEAD"  # final; `death_cause` says why


@dataclass(frozen=True, slots=True)
class ActorOptions:
    """Placement and lifetime options of one actor (validated by `actors.remote`)."""

    name: str | None = None
    namespace: str | None = None
    lifetime: str | None = None  # None (owned by the creating job) or "detached"
    num_cpus: float = 0.0
    resources: tuple[tuple[str, float], ...] = ()
    max_concurrency: int = 1
    max_restarts: int = 0
    node_id: NodeId | None = None
    get_if_exists: bool = False
    spread_group: str | None = None  # actors of one group are spread over the nodes first
    log_name: str | None = None  # its worker's log files: <log_name>.out/.err (default <Class>-<actor id>)
    num_gpus: float = 0.0  # a fraction (< 1) of one device, or a whole number of devices

    def demand(self) -> dict[str, float]:
        d = dict(self.resources)
        if self.num_cpus:
            d["CPU"] = self.num_cpus
        if self.num_gpus:
            d["GPU"] = self.num_gpus
        return d


@dataclass(frozen=True, slots=True)
class ActorSpec:
    """Everything a worker needs to host an actor. `payload` is the cloudpickled
    (class, args, kwargs); it is opened only in the worker."""

    actor_id: ActorId
    class_name: str
    module: str
    payload: bytes
    options: ActorOptions
    owner_address: str
    job_id: JobId | None
    methods: tuple[str, ...]
    async_methods: tuple[str, ...] = ()
    sys_path: tuple[str, ...] = ()  # the creator's import path, so workers find its modules


@dataclass(frozen=True, slots=True)
class ActorInfo:
    """The head's record of an actor, as callers see it."""

    actor_id: ActorId
    class_name: str
    state: ActorState
    incarnation: int = 0
    address: str | None = None
    node_id: NodeId | None = None
    pid: int | None = None
    name: str | None = None
    namespace: str | None = None
    detached: bool = False
    methods: tuple[str, ...] = ()
    async_methods: tuple[str, ...] = ()
    restarts_left: int = 0
    death_cause: str | None = None
    version: int = 0
    gpu_ids: tuple[str, ...] = ()  # the devices of its node it holds (a share of each if fractional)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A node as the head sees it."""

    node_id: NodeId
    ip: str
    agent_address: str
    alive: bool
    is_head: bool
    resources_total: dict[str, float] = field(default_factory=dict)
    resources_available: dict[str, float] = field(default_factory=dict)
    hostname: str = ""
    metrics_url: str = ""  # the node's Prometheus endpoint ("" when it serves none)
    gpu_free: dict[str, float] = field(default_factory=dict)  # per GPU device: the share not held


@dataclass(frozen=True, slots=True)
class Assignment:
    """What an agent gives a started worker: the actor to host and its incarnation."""

    spec: ActorSpec
    incarnation: int
    node_id: NodeId
    head_address: str
    gpu_ids: tuple[str, ...] = ()  # its devices: the worker sets CUDA_VISIBLE_DEVICES to them



@dataclass(frozen=True, slots=True)
class WatchReply:
    """Answer to a long poll on the head: actors changed since the caller's version."""

    version: int
    actors: tuple[ActorInfo, ...]
    head_epoch: str


@dataclass(frozen=True, slots=True)
class NodeRegistration:
    """Sent by an agent when it starts (and again after the head restarts)."""

    node_id: NodeId
    ip: str
    agent_address: str
    resources: dict[str, float] = field(default_factory=dict)
    is_head: bool = False
    hostname: str = ""
    running: tuple[tuple[ActorId, int], ...] = ()  # actors (and incarnations) already hosted
    metrics_url: str = ""  # the node's Prometheus endpoint ("" when it serves none)
    gpu_ids: tuple[str, ...] = ()  # its GPU devices (resources["GPU"] is their number)
    draining: bool = False  # it is stopping gracefully: place nothing more there (told again after a head restart)


@dataclass(frozen=True, slots=True)
class WorkerExit:
    """Sent by an agent the moment one of its worker processes exits."""

    actor_id: ActorId
    incarnation: int
    exit_code: int | None
    reason: str
