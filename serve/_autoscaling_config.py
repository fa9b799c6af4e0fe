"""`autoscaling_config`: the options of a deployment's autoscaling (validated once, a
frozen strict model; see `_model`), and the cap on the replicas one deployment may ask for
(`replica_cap`, `$ZEROSERVE_MAX_REPLICAS_PER_DEPLOYMENT`).

The policy that acts on these options is the controller's (`_control.autoscaling`); this
module is apart from it because the options are validated where they are given (the API,
config files), which do not import the control plane.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, ClassVar, TypeGuard

from pydantic import AliasChoices, Field

from ._model import Loc, Model, Must, NonNegativeSeconds, PositiveSeconds, Rule

__all__ = ["AutoscalingConfig", "REPLICA_CAP_ENV", "over_cap", "replica_cap"]


class AutoscalingConfig(Model):
    """Autoscaling of one deployment's replicas by the requests in flight (Ray Serve's
    `autoscaling_config`); `target_num_ongoing_requests_per_replica` (Ray 1.x) is accepted
    for `target_ongoing_requests`."""

    # A strict, frozen model (see `_model`): validated on construction, by `from_dict`, or as a
    # deployment option.

    must: ClassVar[str] = "a dict such as {'min_replicas': 1, 'max_replicas': 4}"
    where: ClassVar[Loc] = ("autoscaling_config",)
    noun: ClassVar[str] = "autoscaling_config"

    min_replicas: Annotated[int, Field(ge=0), Must("an integer >= 0")] = 1
    """The fewest replicas to run (0: scale to zero when idle)."""
    max_replicas: Annotated[int, Field(ge=1), Must("an integer >= 1")] = 1
    """The most replicas to run."""
    initial_replicas: Annotated[int | None, Field(ge=0), Must("an integer >= 0, or omitted")] = None
    """The replicas a new deployment starts with (default: min_replicas)."""
    target_ongoing_requests: Annotated[
        float, Field(gt=0, allow_inf_nan=False,
                     validation_alias=AliasChoices("target_ongoing_requests", "target_num_ongoing_requests_per_replica")),
        Must("a number > 0")] = 2.0
    """Requests in flight per replica that autoscaling aims at."""
    upscale_delay_s: NonNegativeSeconds = 30.0
    """How long the load must call for more replicas before they are added."""
    downscale_delay_s: NonNegativeSeconds = 600.0
    """How long the load must call for fewer replicas before they are removed."""
    metrics_interval_s: NonNegativeSeconds = 10.0
    """How often load is reported."""
    look_back_period_s: PositiveSeconds = 30.0
    """The window the load is averaged over."""
    upscale_smoothing_factor: Annotated[float, Field(gt=0, allow_inf_nan=False),
                                        Must("a number > 0 (1.0 = no smoothing)")] = 1.0
    """How much of an upscale decision is taken at once."""
    downscale_smoothing_factor: Annotated[float, Field(gt=0, allow_inf_nan=False),
                                          Must("a number > 0 (1.0 = no smoothing)")] = 1.0
    """How much of a downscale decision is taken at once."""

    @classmethod
    def _rules(cls, values: Mapping[str, Any], given: set[str]) -> Iterator[Rule]:
        lo, hi, init = values.get("min_replicas"), values.get("max_replicas"), values.get("initial_replicas")
        if not (_int(lo) and _int(hi)):
            return
        cap = replica_cap()
        if hi > cap:
            yield Rule(("max_replicas",), over_cap(hi))
        if lo > hi:
            yield Rule(("min_replicas",), f"must be <= max_replicas ({hi}), got {lo}: raise max_replicas or lower "
                                          "min_replicas")
        elif _int(init) and not lo <= init <= hi:
            yield Rule(("initial_replicas",), f"must be within [min_replicas, max_replicas] = [{lo}, {hi}], got "
                                              f"{init}; or leave it out to start at min_replicas")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AutoscalingConfig:
        """A validated config from user options; raises naming the wrong field (see `_model`)."""
        return cls.parse(d)


def _int(value: Any) -> TypeGuard[int]:
    return type(value) is int


REPLICA_CAP_ENV = "ZEROSERVE_MAX_REPLICAS_PER_DEPLOYMENT"


def replica_cap() -> int:
    """The most replicas one deployment may ask for (num_replicas, max_replicas):
    `$ZEROSERVE_MAX_REPLICAS_PER_DEPLOYMENT`, 1,000 by default. A bound on what one typo
    (num_replicas=100000) can make the controller and the head hold."""
    value = os.environ.get(REPLICA_CAP_ENV, "1000")
    try:
        return max(1, int(value))
    except ValueError:
        raise ValueError(f"${REPLICA_CAP_ENV} must be an integer, got {value!r}") from None


def over_cap(n: int) -> str:
    return (f"{n} is over the cap of {replica_cap()} replicas per deployment; ask for fewer, or raise the cap "
            f"with ${REPLICA_CAP_ENV} if you mean it")
