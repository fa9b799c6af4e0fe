"""Exceptions raised by the actor runtime to its callers.

Every class says who raises it and when. User exceptions raised inside actor methods are
not wrapped in these: they reach the caller as their own type (see `_errors.py`).
"""

from __future__ import annotations

__all__ = [
    "ActorsError",
    "ActorDiedError",
    "ActorUnavailableError",
    "ActorUnschedulableError",
    "GetTimeoutError",
    "MessageTooLargeError",
    "NotInitializedError",
    "RemoteError",
    "ClusterUnavailableError",
    "RuntimeShutDownError",
    "LongPollClosedError",
    "InsecureSessionDirError",
]


class ActorsError(Exception):
    """Base class of every error the runtime raises itself."""


class ActorDiedError(ActorsError):
    """Raised by a call (or by `actors.get` on its ref) when the actor's process is dead.

    Pending calls fail with it as soon as the death is known (the agent reports the
    worker's exit at once); later calls fail at once. An actor that is restarting
    (`max_restarts`) does not raise it for calls made after the restart began.

    Raised as this class itself, the call had been sent to the actor and was in flight
    when it died (or the connection to it dropped): it may have run, in part or whole.
    A call that never reached the actor raises the subclass `ActorUnavailableError`.
    """


class ActorUnavailableError(ActorDiedError):
    """The call never reached the actor: it did not run, so retrying elsewhere is safe.

    Raised (instead of plain `ActorDiedError`) when
    - the call is made to an actor already known DEAD;
    - the call was queued (the actor was pending, restarting, or not yet known in this
      process) and the actor then turned out DEAD or unknown to the cluster;
    - the call was queued when this process's runtime shut down;
    - the call's message could not be handed to the transport of an actor's process
      (dropped before it left this process);
    - the call was sent to an address whose connection never completed its handshake
      (the process there was already gone) and the actor was then reported dead.
    A call in flight when the actor died raises plain `ActorDiedError`.
    """


class ActorUnschedulableError(ActorsError):
    """Raised by `Cls.remote()` when no node of the cluster could ever satisfy the
    actor's resource request, or the requested node does not exist."""


class GetTimeoutError(ActorsError, TimeoutError):
    """Raised by `actors.get(..., timeout=)` and `ref.result(timeout=)` when the result
    is not ready in time. The call itself goes on; only the wait gave up."""


class MessageTooLargeError(ActorsError):
    """Raised by a call whose serialized arguments or result exceed the transport's
    `max_message_bytes` (env `ZEROSERVE_MAX_MESSAGE_BYTES`). Nothing is sent."""


class NotInitializedError(ActorsError):
    """Raised by runtime calls made before `actors.init()` in a process that cannot
    initialise itself implicitly."""


class ClusterUnavailableError(ActorsError):
    """Raised when the head cannot be reached in time: cluster start failed, the
    address is wrong, the token is wrong, or the head is down. Calls between
    existing actors do not need the head and keep working."""


class RuntimeShutDownError(ActorsError):
    """Raised by a call made in (or still pending in) a process whose runtime is shutting
    down or shut down (`actors.shutdown()`, or the process's node going away). The call's
    target may be fine: the caller is the one going away."""


class LongPollClosedError(ActorsError):
    """Raised by `LongPollClient.first()` (and `start()`) once the client is closed: no
    update will come."""


class InsecureSessionDirError(ActorsError):
    """Raised by `actors.init()` (embedded or `address="auto"`), `zeroserve start/stop/
    status` and `serve` commands when the zeroserve base directory (`$ZEROSERVE_TMPDIR`,
    default `/tmp/zeroserve-<uid>`) or its `nodes/` directory is not a directory owned by
    this user and writable by no one else: another local user could plant records there."""


class RemoteError(ActorsError):
    """Raised in place of a user exception that could not be pickled back to the
    caller. Its message holds the original type name, message and remote traceback."""

    def __init__(self, type_name: str, message: str, traceback_text: str) -> None:
        super().__init__(f"{type_name}: {message}\n\nRemote traceback:\n{traceback_text}")
        self.type_name = type_name
        self.remote_message = message
        self.traceback_text = traceback_text

    def __reduce__(self):
        return (RemoteError, (self.type_name, self.remote_message, self.traceback_text))
