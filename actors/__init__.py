"""actors: zeroserve's async-native actor runtime over asyncio, uvloop and ZeroMQ.

    import actors
    actors.init()                      # embedded local cluster, or address="auto" / "H:P"

    @actors.remote
    class Counter:
        def __init__(self): self.n = 0
        def incr(self, k=1): self.n += k; return self.n

    c = Counter.remote()
    assert actors.get(c.incr.remote(2)) == 2
"""

from ._api import (
    available_resources,
    cluster_resources,
    get,
    get_actor,
    get_gpu_ids,
    init,
    is_initialized,
    kill,
    nodes,
    remote,
    shutdown,
    wait,
)
from ._handles import ActorClass, ActorHandle
from ._host import unqueued
from ._refs import ObjectRef
from .exceptions import (
    ActorDiedError,
    ActorsError,
    ActorUnavailableError,
    ActorUnschedulableError,
    ClusterUnavailableError,
    GetTimeoutError,
    InsecureSessionDirError,
    MessageTooLargeError,
    NotInitializedError,
    RemoteError,
    RuntimeShutDownError,
)

__all__ = [
    "init",
    "shutdown",
    "is_initialized",
    "remote",
    "unqueued",
    "get",
    "wait",
    "get_actor",
    "kill",
    "nodes",
    "get_gpu_ids",
    "cluster_resources",
    "available_resources",
    "ActorClass",
    "ActorHandle",
    "ObjectRef",
    "ActorsError",
    "ActorDiedError",
    "ActorUnavailableError",
    "ActorUnschedulableError",
    "ClusterUnavailableError",
    "GetTimeoutError",
    "InsecureSessionDirError",
    "MessageTooLargeError",
    "NotInitializedError",
    "RemoteError",
    "RuntimeShutDownError",
]
