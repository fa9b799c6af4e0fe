"""Deployment options: validated once, at the call that gave them, into
frozen pydantic models (strict; see `_model` for the rules and the messages).

- `DeploymentConfig` is what the controller needs to run a deployment's replicas; each
  option's default lives on its field here and nowhere else. `DeploymentOptions` adds what
  `@serve.deployment(...)` takes beyond it (name, version, init args, route_prefix).
- Renamed options keep their old names (`max_concurrent_queries` for `max_ongoing_requests`,
  `ray_actor_options` for `actor_options`); giving both with different values is an error.
- `HTTPOptions` (where and how the HTTP proxies listen) lives in `_http_options`; it is
  re-exported here, beside the deployment options.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import cache
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    AliasChoices,
    BeforeValidator,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
)

from ._autoscaling_config import AutoscalingConfig, over_cap, replica_cap
from ._http_options import HTTPOptions, Middlewares
from ._model import Model, Must, NonNegativeSeconds, PositiveSeconds, Rule, invalid, python_error, wrong
from ._obs_config import LoggingConfig

__all__ = ["AUTO_AUTOSCALING", "AUTO_MAX_ONGOING_REQUESTS", "ActorOptions", "DEFAULT", "DeploymentConfig", "DeploymentOptions", "HTTPOptions", "Middlewares",
           "OPTION_NAMES", "RoutePrefix", "config_from", "validate_options", "validate_route_prefix"]


class _Default:
    """Marks an option the user did not give (None is a meaningful value for some)."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Any = _Default()


# -- route prefixes ----------------------------------------------------------------------------


def _route_prefix(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.startswith("/"):
        raise invalid()
    if value != "/" and value.endswith("/"):
        raise wrong(f"must not end with '/' (except '/' itself): use {value.rstrip('/')!r}")
    if any(c in value for c in "{}?#") or "//" in value:
        raise wrong(f"{value!r} may not contain '{{', '}}', '?', '#' or '//'")
    return value


RoutePrefix = Annotated[str | None, AfterValidator(_route_prefix),
                        Must("None or a string starting with '/', such as '/api'")]
@cache
def _route_prefix_adapter() -> TypeAdapter[str | None]:
    return TypeAdapter(RoutePrefix)


def validate_route_prefix(value: Any) -> str | None:
    """`value` if it is a valid route prefix (None: no HTTP route); ValueError/TypeError otherwise."""
    try:
        return _route_prefix_adapter().validate_python(value, strict=True)
    except ValidationError as e:
        raise python_error(e, RoutePrefix, ("route_prefix",)) from None


# -- deployment options ------------------------------------------------------------------------


class ActorOptions(Model):
    """Resources each replica's actor asks for; what is left out (or null) is the runtime's default."""

    must: ClassVar[str] = "a dict such as {'num_cpus': 1}"
    schema_defaults: ClassVar[bool] = False

    num_cpus: Annotated[float | None, Field(ge=0, allow_inf_nan=False), Must("a number of CPUs >= 0, such as 0.5")] \
        = None
    """CPUs each replica takes from its node."""
    resources: dict[str, Annotated[float, Field(ge=0, allow_inf_nan=False), Must("a number >= 0")]] | None = None
    """Custom resources each replica takes, such as {'TPU': 1} (nodes offer them with --resources)."""
    num_gpus: Annotated[float | None, Field(ge=0, allow_inf_nan=False),
                        Must("a number of GPUs >= 0: a fraction of one device such as 0.5, or a whole number")] = None
    """GPUs each replica takes: a share of one device (0.5, 0.25) or whole devices (nodes offer them with
    --num-gpus, or have them detected); the replica sees its devices in CUDA_VISIBLE_DEVICES."""

    @classmethod
    def _rules(cls, values: Mapping[str, Any], given: set[str]) -> Iterator[Rule]:
        gpus, resources = values.get("num_gpus"), values.get("resources")
        if isinstance(gpus, (int, float)) and not isinstance(gpus, bool) and gpus > 1 and gpus != int(gpus):
            yield Rule(("num_gpus",), "must be a fraction of one device (at most 1, such as 0.5) or a whole "
                                      "number of devices")
        if isinstance(resources, Mapping) and "CPU" in resources:
            yield Rule(("resources", "CPU"), "is not a custom resource: give CPUs as num_cpus")


def _actor_options(value: Any) -> dict[str, Any]:
    """actor_options as the dict the actor runtime takes: the options given, without nulls and `num_gpus: 0`."""
    if value is None:
        return {}
    options = ActorOptions.model_validate(value)
    return {k: v for k, v in options if v is not None and not (k == "num_gpus" and v == 0)}


def _auto_hint(value: Any) -> str:
    return "; or 'auto' for autoscaling with Ray Serve's defaults" if isinstance(value, str) else ""


def _or_auto(schema: dict[str, Any]) -> None:
    """num_replicas in the JSON Schema: an integer >= 0, or "auto" (see `_expand_auto`)."""
    number = {k: schema.pop(k) for k in ("type", "minimum") if k in schema}
    schema["anyOf"] = [number, {"const": "auto"}]


class DeploymentConfig(Model):
    """What the controller needs to run a deployment's replicas (its defaults are Serve's)."""

    noun: ClassVar[str] = "deployment option"
    # Options as the user gives them (not the controller's config, which holds both): giving
    # num_replicas and autoscaling_config together is an error.
    replicas_or_autoscaling: ClassVar[bool] = False

    num_replicas: Annotated[int, Field(ge=0, json_schema_extra=_or_auto), Must("an integer >= 0", hint=_auto_hint)] = 1
    """Replicas to run (without autoscaling)."""
    max_ongoing_requests: Annotated[
        int, Field(ge=1, validation_alias=AliasChoices("max_ongoing_requests", "max_concurrent_queries")),
        Must("an integer >= 1")] = 100
    """The most requests a replica runs at once; more wait at the caller."""
    max_queued_requests: Annotated[int, Field(ge=-1), Must("-1 (no limit) or an integer >= 0")] = -1
    """The most requests a caller queues for the deployment before failing fast (-1: no limit)."""
    user_config: Any = None
    """Passed to the replicas' `reconfigure(config)`, at start and on every change (no restart)."""
    autoscaling_config: AutoscalingConfig | None = None
    """Scale the replicas with the load (instead of num_replicas)."""
    health_check_period_s: PositiveSeconds = 10.0
    """How often each replica's `check_health()` runs."""
    health_check_timeout_s: PositiveSeconds = 30.0
    """How long a health check may take before the replica is replaced."""
    graceful_shutdown_wait_loop_s: NonNegativeSeconds = 2.0
    """How often a stopping replica checks whether its requests are done."""
    graceful_shutdown_timeout_s: PositiveSeconds = 20.0
    """How long a stopping replica may take to finish its requests."""
    actor_options: Annotated[
        dict[str, Any], PlainValidator(_actor_options, json_schema_input_type=ActorOptions),
        Field(validation_alias=AliasChoices("actor_options", "ray_actor_options"))] = {}
    """Resources of each replica's actor, such as {'num_cpus': 0.5}."""
    logging_config: LoggingConfig | None = None
    """How the replicas log (default: the application's, else Serve's); changed without a restart."""

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> tuple[dict[str, Any], list[Rule]]:
        data, broken = super()._prepare(data)
        return _expand_auto(data), broken

    @classmethod
    def _rules(cls, values: Mapping[str, Any], given: set[str]) -> Iterator[Rule]:
        n = values.get("num_replicas")
        if type(n) is int and n > replica_cap():
            yield Rule(("num_replicas",), over_cap(n))
        if (cls.replicas_or_autoscaling and {"num_replicas", "autoscaling_config"} <= given
                and values.get("num_replicas") is not None and values.get("autoscaling_config") is not None):
            yield Rule((), "give either num_replicas or autoscaling_config, not both: autoscaling decides the number "
                           "of replicas")


AUTO_AUTOSCALING = {"min_replicas": 1, "max_replicas": 100, "target_ongoing_requests": 2.0}
"""`num_replicas="auto"`: the autoscaling_config Ray Serve 2.x uses (fields given in autoscaling_config win)."""
AUTO_MAX_ONGOING_REQUESTS = 5
"""`num_replicas="auto"`: max_ongoing_requests unless given (Ray Serve 2.x's value)."""


def _expand_auto(data: dict[str, Any]) -> dict[str, Any]:
    """Raw options with `num_replicas="auto"` turned into what it means: an autoscaling_config
    of Ray's defaults under the fields given, and max_ongoing_requests 5 unless given."""
    if data.get("num_replicas") != "auto":
        return data
    given = data.get("autoscaling_config")
    if isinstance(given, AutoscalingConfig):
        given = {k: v for k, v in given if k in given.model_fields_set}
    if given is not None and not isinstance(given, Mapping):
        return {k: v for k, v in data.items() if k != "num_replicas"}  # let autoscaling_config's check fail
    names = AutoscalingConfig.renamed()
    own = {names.get(k, k) for k in (given or {})}
    autoscaling = {**{k: v for k, v in AUTO_AUTOSCALING.items() if k not in own}, **(given or {})}
    out = {k: v for k, v in data.items() if k != "num_replicas"}
    out["autoscaling_config"] = autoscaling
    if not {"max_ongoing_requests", "max_concurrent_queries"} & data.keys():
        out["max_ongoing_requests"] = AUTO_MAX_ONGOING_REQUESTS
    return out


class DeploymentOptions(DeploymentConfig):
    """Everything `@serve.deployment(...)` / `.options(...)` take; None or absent means not given."""

    must: ClassVar[str] = "keyword options"
    replicas_or_autoscaling: ClassVar[bool] = True

    name: Annotated[str, Field(min_length=1, pattern=r"^[^#]*$"), Must("a non-empty string without '#'")] = None  # type: ignore[assignment]
    """The deployment's name (default: the class or function name)."""
    version: Annotated[str | None, Must("a string (or None)")] = None
    """Redeploying an unchanged version changes nothing; a new one rolls the replicas."""
    init_args: Annotated[tuple[Any, ...], BeforeValidator(lambda v: tuple(v) if isinstance(v, list) else v),
                         Must("a tuple or list of constructor arguments")] = ()
    """Positional arguments of the class's constructor."""
    init_kwargs: Annotated[dict[str, Any], Must("a dict of constructor keyword arguments")] = {}
    """Keyword arguments of the class's constructor."""
    route_prefix: RoutePrefix = None
    """The HTTP route (default: /{name}; None: no route)."""


OPTION_NAMES = (*DeploymentOptions.model_fields, *DeploymentOptions.renamed())


def validate_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Check `@serve.deployment(...)`/`.options(...)` arguments; return those given (DEFAULT
    and `num_replicas=None` are "not given"), validated, under their current names.
    Raises OptionTypeError (a TypeError) for a wrong type or name, ValueError for a wrong value."""
    given = {k: v for k, v in options.items() if v is not DEFAULT and not (k == "num_replicas" and v is None)}
    checked = DeploymentOptions.parse(given)
    return {k: v for k, v in checked if k in checked.model_fields_set}


def config_from(options: Mapping[str, Any]) -> DeploymentConfig:
    """The DeploymentConfig of validated options (each field's default for what is not given)."""
    return DeploymentConfig.parse({k: v for k, v in options.items() if k in DeploymentConfig.model_fields})
