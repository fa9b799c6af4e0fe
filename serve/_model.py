"""The base of serve's option and config models, and the one place where pydantic's
validation errors become serve's messages.

Every model here (deployment options, `HTTPOptions`, `AutoscalingConfig`, the config-file
models) is a pydantic v2 model that is
- strict: the string "8000" is no port, a bool is no number, 1.5 is no integer; an int is
  fine where a float is expected;
- frozen and closed: a field cannot be set after validation; an unknown field is an error;
- complete in its complaints: one `ValidationError` carries every problem, the rules over
  several fields (`min_replicas <= max_replicas`) included; when some field is wrong, those
  rules still run on the raw input (on the values they can use), so one run shows them all.

A field says what a good value is with a `Must("an integer >= 0")` annotation (a model, with
its `must` class attribute). `problems()` turns each pydantic error into a `Problem` (field
path, `Kind`, message) from that text, the value given and a hint ("give the number 8000, not
the string '8000'", "did you mean 'EveryNode'?"); a `Problem` renders as a config-file line
(`http_options.port: must be ...`) or in a Python call's exception (`http_options.port must
be ...`), where a wrong type or an unknown name raises `OptionTypeError` (a TypeError, also a
ValueError) and anything else ValueError.

This module owns the `Model` base and the translation of pydantic's errors (`problems`,
`python_error`); the field vocabulary (`Must`, `invalid`, `wrong`, `Rule`) is in `_fields` and
the `Problem` itself in `_problems`. It re-exports both, so a model module imports its kit
from here.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import itertools
import textwrap
import types
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from typing import Annotated, Any, ClassVar, Union, get_args, get_origin

from pydantic import AliasChoices, BaseModel, ConfigDict, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic.functional_validators import PlainValidator
from pydantic_core import InitErrorDetails, PydanticCustomError
from typing_extensions import Self

from ._fields import (
    TYPE_ERROR,
    VALUE_ERROR,
    Loc,
    Must,
    NonNegativeSeconds,
    PositiveSeconds,
    Rule,
    invalid,
    wrong,
)
from ._problems import Kind, Problem, path_text, reject_unknown
from .exceptions import OptionTypeError

__all__ = ["Kind", "Loc", "Model", "Must", "NonNegativeSeconds", "PositiveSeconds", "Problem", "Rule", "invalid",
           "path_text", "problems", "python_error", "reject_unknown", "wrong"]


class Model(BaseModel):
    """Base of serve's option and config models (see the module docstring)."""

    # defer_build: a model's validator is built at its first validation, not at import (every
    # replica process imports serve, and mostly only unpickles these).
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", defer_build=True)

    must: ClassVar[str] = "a mapping"  # what a value of this model must be, after "must be"
    where: ClassVar[Loc] = ()  # the path of this model's fields in a Python call's errors
    noun: ClassVar[str] = "option"  # "unknown <noun> 'x'" in a Python call's errors
    schema_defaults: ClassVar[bool] = True  # False: no "default" in the JSON Schema (overrides)

    def __init__(self, /, **data: Any) -> None:
        """`Model(field=...)`: a wrong value raises as at a Python call (`python_error`)."""
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise python_error(e, type(self), type(self).where, type(self).noun) from None

    # Pydantic calls a model's own __init__ for every validation (nested ones too) unless it is
    # marked as its base __init__; this one only turns errors into ours at the outermost call.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    def __setstate__(self, state: dict[Any, Any]) -> None:
        """Unpickling (checkpoints, the head's records) fills a field the pickle lacks with its
        default: a checkpoint written before a field was added still loads, and reads as if
        the field had been left unset then."""
        fields = state.get("__dict__")
        if isinstance(fields, dict):
            missing = {name: info.get_default(call_default_factory=True)
                       for name, info in type(self).model_fields.items()
                       if name not in fields and not info.is_required()}
            if missing:
                state = {**state, "__dict__": {**fields, **missing}}
        super().__setstate__(state)

    @classmethod
    def parse(cls, value: Any) -> Self:
        """`value` (a mapping, or an instance) validated; errors raised as at a Python call."""
        try:
            return cls.model_validate(value)
        except ValidationError as e:
            raise python_error(e, cls, cls.where, cls.noun) from None

    @classmethod
    def renamed(cls) -> dict[str, str]:
        """Old option names still accepted: {old: new} (a field's further AliasChoices)."""
        return _renamed(cls)

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> tuple[dict[str, Any], list[Rule]]:
        """Raw input -> the input to validate, and rules it already breaks. Here: an option
        given under both its names keeps the new one (two different values are a problem)."""
        broken = []
        for old, new in cls.renamed().items():
            if old in data and new in data:
                if data[old] != data[new]:
                    broken.append(Rule((old,), f"is the old name of {new}; give only one of them "
                                               f"(they disagree: {data[old]!r} and {data[new]!r})"))
                data = {k: v for k, v in data.items() if k != old}
        return data, broken

    @classmethod
    def _rules(cls, values: Mapping[str, Any], given: set[str]) -> Iterator[Rule]:
        """Rules over several fields. `values` holds every field (defaults for those not
        given); after a field error they are the raw input, so check a value's type before use."""
        return iter(())

    @model_validator(mode="wrap")
    @classmethod
    def _validate_all(cls, data: Any, handler: Callable[[Any], Any]) -> Any:
        if not isinstance(data, Mapping):
            return handler(data)  # an instance, or a wrong type that the handler reports
        data, broken = cls._prepare(dict(data))
        failed: ValidationError | None = None
        try:
            model = handler(data)
        except ValidationError as e:
            failed = e
            names = cls.renamed()
            raw = {names.get(k, k): v for k, v in data.items()}
            values, given = {**_defaults(cls), **raw}, set(raw)
        else:
            values, given = dict(model), set(model.model_fields_set)
        broken += list(cls._rules(values, given))
        if failed is None and not broken:
            return model
        details: list[InitErrorDetails] = [] if failed is None else [
            {"type": PydanticCustomError(e["type"], e["msg"], e.get("ctx")), "loc": e["loc"], "input": e["input"]}
            for e in failed.errors()]
        details += [rule.detail(values.get(rule.loc[0]) if rule.loc else None) for rule in broken]
        raise ValidationError.from_exception_data(cls.__name__, details)

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        schema = handler.resolve_ref_schema(handler(core_schema))
        props = schema.get("properties", {})
        for old, new in cls.renamed().items():
            if new in props:
                props[old] = {**props[new], "title": old, "deprecated": True, "description": f"The old name of {new}."}
        docs = _field_docs(cls)
        for name, prop in props.items():
            if name in docs:
                prop.setdefault("description", docs[name])
            if not cls.schema_defaults:
                prop.pop("default", None)
        return schema


@cache
def _renamed(model: type[Model]) -> dict[str, str]:
    out = {}
    for name, info in model.model_fields.items():
        if isinstance(info.validation_alias, AliasChoices):
            out.update({alias: name for alias in info.validation_alias.choices if alias != name})
    return out  # type: ignore[return-value]


@cache
def _field_docs(model: type[Model]) -> dict[str, str]:
    """Each field's docstring (the string literal under it), for the JSON Schema. Read from the
    source only when a schema is made: pydantic's `use_attribute_docstrings` does it for every
    model at import, which costs a replica process ~0.2 s."""
    docs: dict[str, str] = {}
    for klass in reversed(model.__mro__):
        if not (isinstance(klass, type) and issubclass(klass, Model)) or klass is Model:
            continue
        try:
            (tree,) = ast.parse(textwrap.dedent(inspect.getsource(klass))).body
        except (OSError, TypeError, SyntaxError, ValueError):
            continue
        body = getattr(tree, "body", [])
        for node, after in itertools.pairwise(body):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
                docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def _defaults(model: type[Model]) -> dict[str, Any]:
    return {name: info.get_default(call_default_factory=True)
            for name, info in model.model_fields.items() if not info.is_required()}


# -- from pydantic's errors to ours ------------------------------------------------------------


def problems(error: ValidationError, root: Any, at: Loc = ()) -> list[Problem]:
    """Every error of `error` (raised validating `root`, a model or an annotated type) as a
    Problem, its location prefixed with `at`."""
    out = []
    for e in error.errors():
        loc, kind = tuple(e["loc"]), _kind(e["type"])
        if kind is Kind.UNKNOWN:
            owner = _model_of(_locate(root, loc[:-1])[0])
            valid = tuple(owner.model_fields) + tuple(owner.renamed()) if owner is not None else ()
            name = loc[-1] if loc else ""
            close = difflib.get_close_matches(name, valid, n=1) if isinstance(name, str) else []
            out.append(Problem(at + loc, kind, f" (did you mean {close[0]!r}?)" if close else "", valid))
            continue
        if e["type"] == "value_error":  # a ValueError from outside validation (a default factory's)
            out.append(Problem((), kind, str((e.get("ctx") or {}).get("error", e["msg"]))))
            continue
        tp, info = _locate(root, loc)
        out.append(Problem(at + loc, kind, _message(e, tp, info)))
    return out


def python_error(error: ValidationError, root: Any, at: Loc = (), noun: str = "option") -> Exception:
    """The exception a Python call raises for `error`: OptionTypeError if some value has the
    wrong type or some name is unknown, else ValueError; one line per problem."""
    found = problems(error, root, at)
    text = "\n".join(p.sentence(noun) for p in found)
    return OptionTypeError(text) if any(p.kind in (Kind.TYPE, Kind.UNKNOWN) for p in found) else ValueError(text)


def _kind(error_type: str) -> Kind:
    if error_type == "extra_forbidden":
        return Kind.UNKNOWN
    if error_type == "missing":
        return Kind.MISSING
    if error_type == TYPE_ERROR or (error_type.endswith("_type") and error_type != VALUE_ERROR):
        return Kind.TYPE
    return Kind.VALUE


def _message(e: Any, tp: Any, info: FieldInfo | None) -> str:
    error_type, value = e["type"], e.get("input")
    if error_type in (TYPE_ERROR, VALUE_ERROR):
        return e["msg"]
    must = _must(tp)
    if error_type == "missing":
        return "required" + (f": {must.text}" if must else "")
    text = must.text if must else e["msg"].removeprefix("Input should be ").rstrip(".")
    if must is not None and must.show_default and info is not None:
        text += f" (default {info.get_default(call_default_factory=True)!r})"
    hint = ""
    if isinstance(value, str) and error_type in ("int_type", "float_type"):
        try:
            hint = f": give the number {int(value) if error_type == 'int_type' else f'{float(value):g}'}, " \
                   f"not the string {value!r}"
        except ValueError:
            pass
    elif error_type == "literal_error" and isinstance(value, str):
        close = difflib.get_close_matches(value, [str(c) for c in get_args(_strip(tp))], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
    if must is not None and must.hint is not None:
        hint += must.hint(value)
    return f"must be {text}, got {_show(value)}{hint}"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _unwrap(tp: Any) -> tuple[Any, list[Any]]:
    """The type under `Annotated[...]` and `X | None`, and the Annotated metadata on the way."""
    metadata: list[Any] = []
    while True:
        if get_origin(tp) is Annotated:
            metadata += tp.__metadata__
            tp = get_args(tp)[0]
        elif get_origin(tp) in (Union, types.UnionType) and len(args := [a for a in get_args(tp)
                                                                         if a is not type(None)]) == 1:
            tp = args[0]
        else:
            return tp, metadata


def _strip(tp: Any) -> Any:
    return _unwrap(tp)[0]


def _model_of(tp: Any) -> type[Model] | None:
    """The model a value of annotated type `tp` is validated as (also through a PlainValidator
    whose `json_schema_input_type` is a model, as `actor_options`)."""
    for meta in _unwrap(tp)[1]:
        if isinstance(meta, PlainValidator) and _is_model(meta.json_schema_input_type):
            return meta.json_schema_input_type
    base = _strip(tp)
    return base if _is_model(base) else None


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Model)


def _must(tp: Any) -> Must | None:
    for meta in _unwrap(tp)[1]:
        if isinstance(meta, Must):
            return meta
    model = _model_of(tp)
    return Must(model.must) if model is not None else None


def _locate(root: Any, loc: Loc) -> tuple[Any, FieldInfo | None]:
    """The annotated type (and field) at `loc` under `root`; (None, None) where it is unknown."""
    tp, info = root, None
    for part in loc:
        if isinstance(part, str) and (model := _model_of(tp)) is not None:
            name = model.renamed().get(part, part)
            if name not in model.model_fields:
                return None, None
            info = model.model_fields[name]
            tp = info.rebuild_annotation()
            continue
        base, info = _strip(tp), None
        args = get_args(base)
        if isinstance(part, int) and get_origin(base) in (tuple, list) and args:
            tp = args[0]  # tuple[X, ...] / list[X]
        elif isinstance(part, str) and get_origin(base) is dict and len(args) == 2:
            tp = args[1]
        else:
            return None, None
    return tp, info

