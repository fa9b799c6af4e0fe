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
from .exceptions import RemoteError

__all__ = ["encode_error", "decode_error", "remote_traceback_of"]

_subclasses: dict[type, type] = {}


def encode_error(exc: BaseException) -> tuple[bytes, list]:
    """Serialize an exception raised in this process for a remote caller."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    original = getattr(exc, "_zs_original_type", None)
    if original is not None:
        # Re-raised remote error: forward the original type and the accumulated text.
        tb = exc._zs_remote_tb + "\n" + tb  # type: ignore[attr-defined]
    try:
        return dumps(("exc", _strip(exc), tb))
    except Exception:
        return dumps(("remote", type(exc).__name__, str(exc), tb))


def _strip(exc: BaseException) -> BaseException:
    if type(exc) in _subclasses.values():
        base = type(exc).__mro__[1]
        plain = base.__new__(base)
        plain.__dict__.update({k: v for k, v in exc.__dict__.items() if not k.startswith("_zs_")})
        plain.args = exc.args
        return plain
    exc.__traceback__ = None
    return exc


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
    _, exc, tb = envelope
    if not isinstance(exc, Exception):
        return exc
    from .exceptions import ActorsError

    if isinstance(exc, ActorsError):
        return exc
    sub = _subclass_for(type(exc))
    if sub is None:
        if hasattr(exc, "add_note"):
            exc.add_note("Remote traceback:\n" + tb)
        return exc
    out = sub.__new__(sub)
    out.__dict__.update(exc.__dict__)
    out.args = exc.args
    out._zs_remote_tb = tb
    out._zs_original_type = type(exc)
    return out


def remote_traceback_of(exc: BaseException) -> str | None:
    """The remote traceback text carried by a rebuilt exception, if any."""
    return getattr(exc, "_zs_remote_tb", None) or getattr(exc, "traceback_text", None)
