"""Serialization of call arguments and results: pickle protocol 5 with out-of-band buffers.

- Objects exporting buffers (numpy arrays, PickleBuffer) go out-of-band as their own frames.
- Large `bytes`/`bytearray` (>= OOB_THRESHOLD) go out-of-band too, through `persistent_id`
  (pickle 5 keeps them in-band): the sender never copies them; the receiver builds the
  object from the received frame (bytes must own their memory: that is the one copy).
- Code travels by value only where it must: objects whose class or function lives in
  `__main__` or cannot be found by name are pickled with cloudpickle; everything else
  with the C pickler. Code sent by value keeps its file name (cloudpickle would make it
  `<dynamic-code>`), so a traceback in a worker names the script's real file and line.
"""

from __future__ import annotations

import copyreg
import io
import pickle
import threading
import types
from collections import ChainMap
from dataclasses import dataclass
from typing import Any

import cloudpickle

__all__ = ["dumps", "loads", "dumps_code", "loads_code", "OOB_THRESHOLD", "PreparedCall", "dumps_args", "prepare_call"]

OOB_THRESHOLD = 64 * 1024
_CODE_TYPES = (type, types.FunctionType, types.BuiltinFunctionType, types.MethodType)


class _NeedsCloudpickle(Exception):
    pass


def _is_main_code(obj: Any) -> bool:
    return getattr(obj, "__module__", None) == "__main__" or "<locals>" in getattr(obj, "__qualname__", "")


class _FastPickler(pickle.Pickler):
    """The C pickler, with large byte strings out-of-band and `__main__` code detected."""

    def __init__(self, file: io.BytesIO, buffers: list) -> None:
        super().__init__(file, protocol=5, buffer_callback=buffers.append)
        self._buffers = buffers

    def persistent_id(self, obj: Any) -> Any:
        t = type(obj)
        if (t is bytes or t is bytearray) and len(obj) >= OOB_THRESHOLD:
            self._buffers.append(pickle.PickleBuffer(obj))
            return t is bytearray
        return None

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, _CODE_TYPES) and _is_main_code(obj):
            raise _NeedsCloudpickle
        return NotImplemented


def _code_with_filename(code: types.CodeType) -> Any:
    """cloudpickle's reduction of a code object, with its real `co_filename`."""
    rebuild, args = cloudpickle.cloudpickle._code_reduce(code)
    return _rebuild_code, (rebuild, args, code.co_filename)


def _rebuild_code(rebuild: Any, args: tuple, filename: str) -> types.CodeType:
    return rebuild(*args).replace(co_filename=filename)


# cloudpickle's reducers (and copyreg's), with ours for code objects first.
_CODE_DISPATCH = ChainMap({types.CodeType: _code_with_filename}, cloudpickle.Pickler.dispatch_table,
                          copyreg.dispatch_table)


class _ByValuePickler(cloudpickle.Pickler):
    """cloudpickle, keeping code objects' file names (for tracebacks)."""

    dispatch_table = _CODE_DISPATCH


class _CodePickler(_ByValuePickler):
    """cloudpickle, with the same out-of-band handling of large byte strings."""

    def __init__(self, file: io.BytesIO, buffers: list) -> None:
        super().__init__(file, protocol=5, buffer_callback=buffers.append)
        self._buffers = buffers

    persistent_id = _FastPickler.persistent_id


class _Unpickler(pickle.Unpickler):
    """Pickle's own out-of-band buffers and ours were appended to one list in stream
    order, so both are taken from one cursor, in stream order."""

    def __init__(self, data: Any, buffers: list) -> None:
        self._cursor = iter(buffers)
        super().__init__(io.BytesIO(data), buffers=self._cursor)

    def persistent_load(self, is_bytearray: Any) -> Any:
        buf = next(self._cursor)
        return bytearray(buf) if is_bytearray else bytes(buf)


class _Reusable(threading.local):
    """This thread's pickler, kept between calls (building one costs more than a small dump)."""

    def __init__(self) -> None:
        self.file = io.BytesIO()
        self.buffers: list = []
        self.pickler = _FastPickler(self.file, self.buffers)
        self.busy = False


_reusable = _Reusable()


def dumps(obj: Any) -> tuple[bytes, list[pickle.PickleBuffer]]:
    """Serialize `obj`; return the pickle stream and the out-of-band buffers."""
    r = _reusable
    if r.busy:  # a dumps() inside a dumps() (a __reduce__ that serializes): use a fresh one
        return _dumps_fresh(obj)
    r.busy = True
    f, buffers = r.file, r.buffers
    try:
        r.pickler.dump(obj)
        return f.getvalue(), buffers[:]
    except (_NeedsCloudpickle, pickle.PicklingError, AttributeError, TypeError):
        r.pickler = _FastPickler(f, buffers)  # a failed dump may leave it mid-frame
        return _dumps_code(obj)
    except BaseException:
        r.pickler = _FastPickler(f, buffers)
        raise
    finally:
        r.pickler.clear_memo()
        f.seek(0)
        f.truncate()
        buffers.clear()
        r.busy = False


@dataclass(frozen=True, slots=True)
class PreparedCall:
    """A call's arguments, serialized in the caller's thread (see `prepare_call`)."""

    payload: bytes
    buffers: tuple[Any, ...]


_NO_CALL = PreparedCall(b"", ())


def dumps_args(args: tuple, kwargs: dict[str, Any] | None, what: str) -> tuple[bytes, Any]:
    """A call's arguments as (payload, buffers). Arguments that cannot be serialized raise a
    TypeError naming the first such argument (`what` names the call); deep nesting
    (RecursionError) and a `__reduce__` that raises count as such too."""
    if not args and not kwargs:
        return b"", ()
    try:
        return dumps((args, kwargs or None))
    except Exception as e:
        raise _unserializable(args, kwargs, what, e) from e


def prepare_call(args: tuple, kwargs: dict[str, Any] | None, what: str = "the call") -> PreparedCall:
    """Serialize a call's arguments now, in the calling thread, so that one that cannot be
    serialized fails this call at its call site and nothing else (see `dumps_args`)."""
    if not args and not kwargs:
        return _NO_CALL
    payload, buffers = dumps_args(args, kwargs, what)
    return PreparedCall(payload, tuple(buffers))


def _unserializable(args: tuple, kwargs: dict[str, Any] | None, what: str, error: Exception) -> TypeError:
    """The TypeError for a call whose arguments did not serialize, naming the first that does not."""
    named = [(f"argument {i}", a) for i, a in enumerate(args)] + [(f"keyword argument {k!r}", v)
                                                                  for k, v in (kwargs or {}).items()]
    for name, value in named:
        try:
            _dumps_fresh(value)
        except Exception as e:
            return TypeError(f"{what}: {name} (a {type(value).__name__}) cannot be serialized: "
                             f"{type(e).__name__}: {e}")
    return TypeError(f"{what}: its arguments cannot be serialized: {type(error).__name__}: {error}")


def _dumps_fresh(obj: Any) -> tuple[bytes, list[pickle.PickleBuffer]]:
    buffers: list = []
    f = io.BytesIO()
    try:
        _FastPickler(f, buffers).dump(obj)
    except (_NeedsCloudpickle, pickle.PicklingError, AttributeError, TypeError):
        return _dumps_code(obj)
    return f.getvalue(), buffers


def _dumps_code(obj: Any) -> tuple[bytes, list[pickle.PickleBuffer]]:
    buffers: list = []
    f = io.BytesIO()
    _CodePickler(f, buffers).dump(obj)
    return f.getvalue(), buffers


def loads(data: Any, buffers: Any = ()) -> Any:
    """Inverse of `dumps`; `buffers` are the received out-of-band frames, in order."""
    if not buffers:
        return pickle.loads(data)
    return _Unpickler(data, list(buffers)).load()


def dumps_code(obj: Any) -> bytes:
    """Serialize an object that carries code (an actor class with its arguments, a
    deployment), by value where it must, keeping its file names."""
    f = io.BytesIO()
    _ByValuePickler(f, protocol=5).dump(obj)
    return f.getvalue()


def loads_code(data: bytes) -> Any:
    return pickle.loads(data)
