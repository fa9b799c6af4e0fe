"""Messages of the serving layer: what a deployment should be, where its replicas are, and
the states things are in.

Frozen, slotted values; the controller keeps `DeploymentTarget`s (and checkpoints them),
routers receive `ReplicaSet`s and proxies `RouteTable`s by long poll. States are enums
whose members are their own names as strings, so they print, compare and serialize
(JSON, the status summary) as the plain words users see.
"""

from __future__ import annotations

import enum
from dataclasses import MISSING, dataclass, field, fields

from actors import ActorHandle

from ._config import DeploymentConfig
from ._obs_config import LoggingConfig, TracingConfig

__all__ = [
    "DEFAULT_APP", "HTTP_METHOD", "WEBSOCKET_METHOD", "ApplicationStatus", "DeploymentId", "DeploymentStatus", "DeploymentTarget",
    "ProxyStatus", "ReplicaId", "ReplicaInfo", "ReplicaSet", "ReplicaState", "RouteTable", "ServeSettings",
]

DEFAULT_APP = "default"
HTTP_METHOD = "__serve_http__"  # the replica entry the proxy calls with an HTTPRequest
WEBSOCKET_METHOD = "__serve_websocket__"  # the replica entry the proxy opens a websocket with


class _Word(str, enum.Enum):
    """An enum whose members are strings, printed as their value ("RUNNING"), also inside
    the dicts of `serve.status()` (its repr is the plain string's)."""

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return repr(self.value)

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class ReplicaState(_Word):
    """A replica's life: STARTING --ready--> RUNNING --stop--> STOPPING (draining) --> gone."""

    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"


class DeploymentStatus(_Word):
    UPDATING = "UPDATING"  # replicas are starting, stopping or being reconfigured
    HEALTHY = "HEALTHY"  # the target number of current replicas runs
    UNHEALTHY = "UNHEALTHY"  # it cannot start (the message says why); it waits for a redeploy
    DELETING = "DELETING"


class ApplicationStatus(_Word):
    DEPLOYING = "DEPLOYING"
    RUNNING = "RUNNING"
    UNHEALTHY = "UNHEALTHY"
    DELETING = "DELETING"

    @classmethod
    def of(cls, statuses: set[DeploymentStatus]) -> "ApplicationStatus":
        """An application's status from its deployments'."""
        if DeploymentStatus.UNHEALTHY in statuses:
            return cls.UNHEALTHY
        if statuses == {DeploymentStatus.DELETING}:
            return cls.DELETING
        if statuses == {DeploymentStatus.HEALTHY}:
            return cls.RUNNING
        return cls.DEPLOYING


class ProxyStatus(_Word):
    """An HTTP proxy's life: STARTING --ready--> HEALTHY --fails/dies--> UNHEALTHY --> STARTING."""

    STARTING = "STARTING"
    HEALTHY = "HEALTHY"
    UNHEALTHY = "UNHEALTHY"


@dataclass(frozen=True, slots=True, order=True)
class DeploymentId:
    """A deployment's identity: its application and its name, unique within the
    application (two applications may each have a `Model`, as in Ray). Printed as
    "<app>#<name>" (names may not contain '#'). Its hash is computed once: routers and the
    controller key by it on every request."""

    app: str
    name: str
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.app, self.name)))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple:
        return (DeploymentId, (self.app, self.name))

    def __str__(self) -> str:
        return f"{self.app}#{self.name}"


@dataclass(frozen=True, slots=True, order=True)
class ReplicaId:
    """A replica's identity: its deployment and a tag unique within it. Printed as
    "<app>#<deployment>#<tag>", as Ray names replicas."""

    deployment: DeploymentId
    tag: str
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.deployment, self.tag)))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple:
        return (ReplicaId, (self.deployment, self.tag))

    def __str__(self) -> str:
        return f"{self.deployment}#{self.tag}"

    @classmethod
    def parse(cls, text: str) -> "ReplicaId":
        parts = text.split("#")
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"a replica id looks like 'app#Deployment#tag', got {text!r}")
        return cls(DeploymentId(parts[0], parts[1]), parts[2])


@dataclass(frozen=True, slots=True)
class DeploymentTarget:
    """The desired state of one deployment, as `deploy()` / `serve.run()` sent it."""

    name: str
    app: str
    version: str
    code: bytes  # cloudpickled (function or class, init_args, init_kwargs)
    config: DeploymentConfig
    route_prefix: str | None
    is_function: bool
    version_given: bool = False  # the user set `version` (so redeploying it is a no-op)
    ingress: bool = False  # the application's ingress (what `serve.get_app_handle(app)` calls)
    # Where the application came from, on its ingress only: the config's / `serve run`'s
    # `module:app`, or `module:QualName` of the ingress class for `serve.run(app)` ("" unknown).
    import_path: str = ""

    @property
    def id(self) -> DeploymentId:
        return DeploymentId(self.app, self.name)

    def __setstate__(self, state: list) -> None:
        """Unpickle, also a target pickled before its later fields existed (an older
        controller's checkpoint): those take their defaults."""
        known = fields(self)
        if len(state) > len(known):
            raise TypeError(f"a pickled DeploymentTarget has {len(state)} fields, more than its {len(known)}")
        for i, f in enumerate(known):
            if i < len(state):
                value = state[i]
            elif f.default is MISSING:
                raise TypeError(f"a pickled DeploymentTarget lacks its field {f.name!r}, which has no default")
            else:
                value = f.default
            object.__setattr__(self, f.name, value)


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    """A running replica as routers see it. `model_ids`: the multiplexed models it holds (least
    recently used first), `max_models` how many it can (0: not multiplexed or not reported
    yet, -1: no limit), as it last reported them."""

    replica_id: ReplicaId
    handle: ActorHandle
    max_ongoing_requests: int
    node_id: str | None = None
    model_ids: tuple[str, ...] = ()
    max_models: int = 0


@dataclass(frozen=True, slots=True)
class ReplicaSet:
    """What routers of one deployment need: its running replicas and routing limits."""

    deployment: DeploymentId
    replicas: tuple[ReplicaInfo, ...]
    max_queued_requests: int = -1
    metrics_interval_s: float | None = None  # report load this often (None: no autoscaling)
    methods: tuple[str, ...] | None = None  # what handles may call, as its replicas report (None: unknown)
    unavailable: str = ""  # why none can be served (num_replicas=0, or no replica runs and none can start): calls fail


@dataclass(frozen=True, slots=True)
class RouteTable:
    """What proxies need: {route_prefix: deployment} of the deployments serving HTTP (the
    id carries the application, for request contexts and metrics)."""

    routes: dict[str, DeploymentId]


@dataclass(frozen=True, slots=True)
class ServeSettings:
    """Serve-wide settings given at `serve.start`, which the controller hands to every proxy
    and replica it starts: how they log by default, and how they trace."""

    logging_config: LoggingConfig | None = None
    tracing_config: TracingConfig | None = None
