"""A problem with a config or with options, as serve reports it: where (a field path),
what kind, and what to change; and the report of unknown keyword options.

A `Problem` renders as a config-file line (`http_options.port: must be ...`) or in a Python
call's exception (`http_options.port must be ...`). `_model.problems()` makes them from
pydantic's errors.
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Iterable
from dataclasses import dataclass

from ._fields import Loc
from .exceptions import OptionTypeError

__all__ = ["Kind", "Problem", "path_text", "reject_unknown"]


class Kind(enum.Enum):
    TYPE = "type"  # a value of the wrong type
    VALUE = "value"  # a value out of range, or breaking a rule
    UNKNOWN = "unknown"  # a field that does not exist
    MISSING = "missing"  # a required field left out


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a config or with options: where, what kind, and what to change."""

    loc: Loc
    kind: Kind
    message: str  # after the path: "must be an integer >= 0, got -1"; UNKNOWN: "" or " (did you mean 'x'?)"
    valid: tuple[str, ...] = ()  # UNKNOWN: the names valid at that place

    @property
    def path(self) -> str:
        return path_text(self.loc)

    def line(self) -> str:
        """As a config file's error line: `applications[0].deployments[1].num_replicas: must be ...`."""
        if self.kind is Kind.UNKNOWN:
            return f"{self.path}: unknown field{self.message}; valid fields here are {', '.join(self.valid)}"
        return f"{self.path}: {self.message}" if self.loc else self.message

    def sentence(self, noun: str) -> str:
        """As a Python call's error: `http_options.port must be ...`; `noun` names the options
        at the top level, for an unknown one ("unknown deployment option 'replicas'")."""
        if self.kind is Kind.UNKNOWN:
            where = path_text(self.loc[:-1]) or noun
            return f"unknown {where} {self.loc[-1]!r}{self.message}; valid ones are {', '.join(self.valid)}"
        return f"{self.path} {self.message}" if self.loc else self.message

    def moved(self, loc: Loc) -> Problem:
        return Problem(loc, self.kind, self.message, self.valid)


def path_text(loc: Iterable[str | int]) -> str:
    """`("applications", 0, "name")` -> `applications[0].name`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def reject_unknown(given: Iterable[str], known: Iterable[str], where: str) -> None:
    """For a call taking `**options`: OptionTypeError naming each unknown one (with the closest
    known name) and listing the known ones, as an unknown deployment option is reported."""
    valid = tuple(known)
    unknown = [name for name in given if name not in valid]
    if not unknown:
        return
    lines = []
    for name in unknown:
        close = difflib.get_close_matches(name, valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        lines.append(f"{where} got an unknown option {name!r}{hint}; valid ones are {', '.join(valid)}")
    raise OptionTypeError("\n".join(lines))
