"""How a user exception crosses a process boundary and comes back as its own type.

The callee pickles the exception object with its formatted traceback. The caller rebuilds
an instance of a subclass of the original type (cached per type, same `__name__` and
module) whose `str()` appends the remote traceback, so `except ValueError` and
`pytest.raises(ValueError)` work and the message shows where it failed remotely.
"""

from __future__ import annotations

import traceback
import types
from typing import Any

from ._serialization import dumps, loads
from .exceptions import ActorsError, RemoteError

__all__ = ["encode_error", "decode_error", "remote_traceback_of"]

_subclasses: dict[type, type] = {}


def encode_error(exc: BaseException) -> tuple[bytes, list]:
    """Serialize an exception raised in this process for a remote caller."""
    original = getattr(exc, "_zs_original_type", None)
    cls = original if original is not None else type(exc)
    # This process's frames, ending in the plain message (not str(exc), which for a
    # re-raised remote error already holds the earlier traceback).
    tb = "".join(traceback.format_tb(exc.__traceback__)) + f"{cls.__qualname__}: {_plain_str(exc, cls)}\n"
    if original is not None:
        tb = exc._zs_remote_tb + "\nRe-raised:\n" + tb  # type: ignore[attr-defined]
    else:
        tb = "Traceback (most recent call last):\n" + tb
    state = {k: v for k, v in getattr(exc, "__dict__", {}).items() if not k.startswith("_zs_")}
    try:
        # Class, constructor args and attributes, not the object: rebuilt without calling
        # a Python __init__, so classes whose __init__ takes other arguments survive.
        return dumps(("exc", cls, _reduce_args(exc), state, tb))
    except Exception:
        return dumps(("remote", cls.__name__, _plain_str(exc, cls), tb))


def _plain_str(exc: BaseException, cls: type[BaseException]) -> str:
    try:
        return cls.__str__(exc)
    except Exception:
        return repr(exc.args)


def _reduce_args(exc: BaseException) -> tuple:
    """The arguments that rebuild `exc` (OSError keeps `filename` there, not in args)."""
    reduced = exc.__reduce__()
    args = reduced[1] if len(reduced) > 1 else None
    return args if type(args) is tuple else exc.args


def _python_init(cls: type) -> bool:
    """Whether the nearest __init__ of `cls` is Python code (which may take anything)."""
    for klass in cls.__mro__:
        if "__init__" in klass.__dict__:
            return isinstance(klass.__dict__["__init__"], types.FunctionType)
    return False


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
    base: type[BaseException] = type(self).__mro__[1]
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
    out._zs_remote_tb = tb  # type: ignore[attr-defined]
    out._zs_original_type = cls  # type: ignore[attr-defined]
    return out


def _rebuild(cls: type, args: tuple, state: dict) -> BaseException:
    exc = cls.__new__(cls, *args)
    if _python_init(cls):
        exc.args = args
    else:
        # Built-in initialisers set fields (OSError.filename, UnicodeError.reason...).
        cls.__init__(exc, *args)  # type: ignore[misc]
    exc.__dict__.update(state)
    return exc


def remote_traceback_of(exc: BaseException) -> str | None:
    """The remote traceback text carried by a rebuilt exception, if any."""
    return getattr(exc, "_zs_remote_tb", None) or getattr(exc, "traceback_text", None)
