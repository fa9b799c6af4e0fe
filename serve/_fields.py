"""The words a serve option or config field says about itself, and the errors its
validators raise.

A field says what a good value is with a `Must("an integer >= 0")` annotation; a validator
raises `invalid()` (the value breaks the field's `Must`) or `wrong("message")` (its own
words, after the field's path; `of_type=True` for a wrong type). A `Rule` is a broken rule
over several fields that a model's `_rules` finds. The error types these raise
(`TYPE_ERROR`, `VALUE_ERROR`, `INVALID_ERROR`) are read back by `_model.problems`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field
from pydantic_core import InitErrorDetails, PydanticCustomError

__all__ = ["FILE_CONTEXT", "INVALID_ERROR", "Loc", "Must", "NonNegativeSeconds", "PositiveSeconds", "Rule", "TYPE_ERROR",
           "VALUE_ERROR", "invalid", "wrong"]

Loc = tuple[str | int, ...]

# Error types our validators raise: with their own message (a wrong type / a wrong value), or
# without one (`invalid()`: the field's `Must` text says what it should have been).
TYPE_ERROR = "zeroserve_type"
VALUE_ERROR = "zeroserve_value"
INVALID_ERROR = "zeroserve_invalid"

FILE_CONTEXT = "config_file"  # validation context key: the values come from a config file


@dataclass(frozen=True, slots=True)
class Must:
    """What a field's value must be, as the words after "must be" ("an integer >= 0").
    `hint(value)` adds words for some wrong values; `show_default` appends "(default X)"."""

    text: str
    hint: Callable[[Any], str] | None = None
    show_default: bool = False


PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False), Must("a number of seconds > 0")]
NonNegativeSeconds = Annotated[float, Field(ge=0, allow_inf_nan=False), Must("a number of seconds >= 0")]


def invalid() -> PydanticCustomError:
    """For a validator to raise: the value breaks the field's `Must`."""
    return PydanticCustomError(INVALID_ERROR, "invalid value")


def wrong(message: str, *, of_type: bool = False) -> PydanticCustomError:
    """For a validator to raise: `message` follows the field's path ("must not end with '/'...")."""
    return PydanticCustomError(TYPE_ERROR if of_type else VALUE_ERROR, message)


@dataclass(frozen=True, slots=True)
class Rule:
    """A broken rule over several fields, found by a model's `_rules` (loc relative to the model)."""

    loc: Loc
    message: str
    of_type: bool = False

    def detail(self, value: Any = None) -> InitErrorDetails:
        return {"type": wrong(self.message, of_type=self.of_type), "loc": self.loc, "input": value}
