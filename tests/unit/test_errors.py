"""Unit tests of how exceptions cross a process boundary (`actors._errors`).

Contract: `decode_error(*encode_error(e))` is an instance of `type(e)` (a cached
subclass with the same name) whose `str()` carries the remote traceback; attributes
survive; an exception that cannot be pickled comes back as `actors.RemoteError`; the
runtime's own errors (`ActorsError`) come back as exactly their type.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

import actors
from actors._errors import decode_error, encode_error, remote_traceback_of
from actors.exceptions import (
    ActorDiedError,
    ActorsError,
    ActorUnschedulableError,
    GetTimeoutError,
    MessageTooLargeError,
)
from cluster.exceptions import NameTakenError


class QuotaError(Exception):
    """A user exception whose __init__ does not take the message."""

    def __init__(self, user: str, limit: int) -> None:
        super().__init__(f"{user} is over the limit of {limit}")
        self.user = user
        self.limit = limit


class FancyStrError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code

    def __str__(self) -> str:
        return f"failed with code {self.code}"


class LockHolderError(Exception):
    """Cannot be pickled: it holds a lock."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class NoSubclassError(Exception):
    """Refuses to be subclassed, so the runtime cannot wrap it."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        raise TypeError("final class")


def _raised(exc: BaseException) -> BaseException:
    """`exc` with a real traceback, as the callee catches it."""

    def failing_user_method() -> None:
        raise exc

    try:
        failing_user_method()
    except BaseException as e:
        return e
    raise AssertionError("unreachable")


def _cross(exc: BaseException) -> BaseException:
    data, buffers = encode_error(exc)
    assert isinstance(data, bytes)
    return decode_error(data, [bytes(memoryview(b)) for b in buffers])


def test_value_error_comes_back_as_value_error() -> None:
    out = _cross(_raised(ValueError("bad input 42")))
    assert isinstance(out, ValueError)
    assert type(out).__name__ == "ValueError"
    assert type(out).__qualname__ == "ValueError"
    assert type(out).__module__ == "builtins"
    assert out.args == ("bad input 42",)
    with pytest.raises(ValueError, match="bad input 42"):
        raise out


def test_str_has_message_and_remote_traceback() -> None:
    out = _cross(_raised(ValueError("bad input 42")))
    text = str(out)
    assert text.startswith("bad input 42")
    assert "Remote traceback" in text
    assert "failing_user_method" in text  # the remote frame where it was raised
    assert "ValueError: bad input 42" in text
    tb = remote_traceback_of(out)
    assert tb is not None
    assert "failing_user_method" in tb


@pytest.mark.parametrize("exc", [
    KeyError("missing"), TypeError("wrong type"), RuntimeError("boom"), ZeroDivisionError("division by zero"),
    AttributeError("no attr"), IndexError("out of range"), NotImplementedError(), TimeoutError("slow"),
    PermissionError(13, "denied"),
], ids=lambda e: type(e).__name__)
def test_builtin_exceptions_keep_type_and_args(exc: Exception) -> None:
    out = _cross(_raised(exc))
    assert isinstance(out, type(exc))
    assert type(out).__name__ == type(exc).__name__
    assert out.args == exc.args
    assert "Remote traceback" in str(out)


def test_subclass_is_cached_per_type() -> None:
    first = _cross(_raised(ValueError("a")))
    second = _cross(_raised(ValueError("b")))
    assert type(first) is type(second)
    assert type(first) is not ValueError
    assert type(first).__mro__[1] is ValueError


def test_custom_exception_keeps_attributes_without_calling_init() -> None:
    out = _cross(_raised(QuotaError("alice", 3)))
    assert isinstance(out, QuotaError)
    assert type(out).__name__ == "QuotaError"
    assert type(out).__module__ == __name__
    assert (out.user, out.limit) == ("alice", 3)
    assert out.args == ("alice is over the limit of 3",)
    assert "alice is over the limit of 3" in str(out)
    with pytest.raises(QuotaError):
        raise out


def test_custom_str_is_used() -> None:
    out = _cross(_raised(FancyStrError(7)))
    assert out.code == 7  # type: ignore[attr-defined]
    assert str(out).startswith("failed with code 7")
    assert "Remote traceback" in str(out)


def test_exception_class_defined_in_a_function_round_trips() -> None:
    class LocalError(Exception):
        def __init__(self, detail: dict[str, int]) -> None:
            super().__init__("local failure")
            self.detail = detail

    out = _cross(_raised(LocalError({"k": 1})))
    assert isinstance(out, LocalError)
    assert out.detail == {"k": 1}
    assert "local failure" in str(out)


def test_oserror_keeps_errno_and_strerror() -> None:
    out = _cross(_raised(FileNotFoundError(2, "No such file or directory")))
    assert isinstance(out, FileNotFoundError)
    assert out.errno == 2
    assert out.strerror == "No such file or directory"


def test_oserror_keeps_filename() -> None:
    out = _cross(_raised(FileNotFoundError(2, "No such file or directory", "/data/model.bin")))
    assert out.filename == "/data/model.bin"  # type: ignore[attr-defined]
    assert "/data/model.bin" in str(out).split("Remote traceback")[0]


def test_unicode_error_keeps_its_fields() -> None:
    exc = _raised(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"))
    out = _cross(exc)
    assert out.reason == "invalid start byte"  # type: ignore[attr-defined]
    assert str(out).startswith(str(exc))


def test_reraised_remote_error_keeps_original_type_and_both_tracebacks() -> None:
    first = _cross(_raised(QuotaError("bob", 1)))
    first_tb = remote_traceback_of(first)
    second = _cross(_raised(first))  # an actor re-raises what its callee raised
    assert type(second) is type(first)  # not a subclass of the subclass
    assert type(second).__mro__[1] is QuotaError
    assert (second.user, second.limit) == ("bob", 1)  # type: ignore[attr-defined]
    second_tb = remote_traceback_of(second)
    assert first_tb is not None and second_tb is not None
    assert first_tb in second_tb
    assert len(second_tb) > len(first_tb)
    assert str(second).startswith("bob is over the limit of 1\n\nRemote traceback:\n")


def test_remote_traceback_accumulates_across_reraise_hops() -> None:
    exc: BaseException = ValueError("boom")
    sizes = []
    for _ in range(6):  # a chain of actors, each re-raising what its callee raised
        exc = _cross(_raised(exc))
        tb = remote_traceback_of(exc)
        assert tb is not None
        sizes.append(len(tb))
    assert isinstance(exc, ValueError)
    assert sizes == sorted(sizes)


def test_remote_traceback_is_not_duplicated_across_hops() -> None:
    exc: BaseException = ValueError("boom")
    hops = 6
    for _ in range(hops):
        exc = _cross(_raised(exc))
    tb = remote_traceback_of(exc)
    assert tb is not None
    assert tb.count("ValueError: boom") <= hops  # one exception line per hop, not 2**hops - 1


def test_unpicklable_exception_becomes_remote_error() -> None:
    out = _cross(_raised(LockHolderError("cannot ship this")))
    assert isinstance(out, actors.RemoteError)
    assert not isinstance(out, LockHolderError)
    assert out.type_name == "LockHolderError"
    assert out.remote_message == "cannot ship this"
    text = str(out)
    assert "LockHolderError" in text
    assert "cannot ship this" in text
    assert "Remote traceback" in text
    assert "failing_user_method" in out.traceback_text
    assert remote_traceback_of(out) == out.traceback_text


def test_unpicklable_args_become_remote_error() -> None:
    out = _cross(_raised(RuntimeError("with a lock", threading.Lock())))
    assert isinstance(out, actors.RemoteError)
    assert out.type_name == "RuntimeError"


def test_remote_error_round_trips_as_itself() -> None:
    first = _cross(_raised(LockHolderError("x")))
    again = _cross(_raised(first))
    assert type(again) is actors.RemoteError
    assert again.type_name == "LockHolderError"
    assert again.remote_message == "x"


@pytest.mark.parametrize("exc", [
    ActorDiedError("the actor died"), ActorUnschedulableError("no node"), GetTimeoutError("too slow"),
    MessageTooLargeError("too big"), NameTakenError("name taken"),
], ids=lambda e: type(e).__name__)
def test_runtime_errors_come_back_as_is(exc: ActorsError) -> None:
    out = _cross(_raised(exc))
    assert type(out) is type(exc)
    assert out.args == exc.args
    assert str(out) == str(exc)
    assert remote_traceback_of(out) is None


def test_base_exception_that_is_not_an_exception_comes_back_as_is() -> None:
    out = _cross(_raised(KeyboardInterrupt("stop")))
    assert type(out) is KeyboardInterrupt
    assert out.args == ("stop",)


def test_class_refusing_subclasses_comes_back_with_a_note() -> None:
    out = _cross(_raised(NoSubclassError("final")))
    assert type(out) is NoSubclassError
    assert out.args == ("final",)
    notes = getattr(out, "__notes__", [])
    assert any("Remote traceback" in n and "failing_user_method" in n for n in notes)
