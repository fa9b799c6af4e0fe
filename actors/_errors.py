"""How a user exception crosses a process boundary and comes back as its own type.

The callee pickles the exception object with its formatted traceback. The caller rebuilds
an instance of a subclass of the original type (cached per type, same `__name__` and
module) whose `str()` appends the remote traceback, so `except ValueError` and
`pytest.raises(ValueError)` work and the message shows where it failed remotely.
"""

from __future__ import annotations

import traceback
from typing import Any

from ._serialization import dumps, loads
from .exceptions import ActorsError, RemoteError

__all__ = ["encode_error", "decode_error", "remote_traceback_of"]

_subclasses: dict[type, type] = {}


def encode_error(exc: BaseException) -> tuple[bytes, list]:
    """Serialize an exception raised in this process for a remote caller."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    original = getattr(exc, "_zs_original_type", None)
    if original is not None:
        # Re-raised remote error: forward the original type and the accumulated text.
        tb = exc._zs_remote_tb + "\n" + tb  # type: ignore[attr-defined]
    cls = original if original is not None else type(exc)
    state = {k: v for k, v in getattr(exc, "__dict__", {}).items() if not k.startswith("_zs_")}
    try:
        # Class, args and attributes, not the object: rebuilt with __new__, so exception
        # classes whose __init__ takes other arguments than `args` survive the trip.
        return dumps(("exc", cls, exc.args, state, tb))
    except Exception:
        return dumps(("remote", cls.__name__, str(exc), tb))


def _subclass_for(cls: type) -> type | None:
    sub = _subclasses.get(cls)
    if sub is None:
        try:
            sub = type(cls.__name__, (cls,), {"__str__": _remote_str, "__module__": cls.__module__})
        except TypeError:
            return None
        sub.__qualname__ = cls.__qualname__
        _subclasses[cls] = sub
    return sub


def _remote_str(self: BaseException) -> str:
    base = type(self).__mro__[1]
    try:
        text = base.__str__(self)
    except Exception:
        text = repr(self.args)
    return f"{text}\n\nRemote traceback:\n{self._zs_remote_tb}"  # type: ignore[attr-defined]


def decode_error(payload: Any, buffers: Any = ()) -> BaseException:
    """Rebuild the exception a remote callee sent."""
    envelope = loads(payload, buffers)
    if envelope[0] == "remote":
        _, name, message, tb = envelope
        return RemoteError(name, message, tb)
    _, cls, args, state, tb = envelope
    if issubclass(cls, ActorsError) or not issubclass(cls, Exception):
        return _rebuild(cls, args, state)
    sub = _subclass_for(cls)
    if sub is None:
        exc = _rebuild(cls, args, state)
        if hasattr(exc, "add_note"):
            exc.add_note("Remote traceback:\n" + tb)
        return exc
    out = _rebuild(sub, args, state)
    out._zs_remote_tb = tb
    out._zs_original_type = cls
    return out


def _rebuild(cls: type, args: tuple, state: dict) -> BaseException:
    exc = cls.__new__(cls, *args)
    exc.args = args
    exc.__dict__.update(state)
    return exc


def remote_traceback_of(exc: BaseException) -> str | None:
    """The remote traceback text carried by a rebuilt exception, if any."""
    return getattr(exc, "_zs_remote_tb", None) or getattr(exc, "traceback_text", None)
