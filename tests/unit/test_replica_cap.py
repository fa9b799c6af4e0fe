"""The per-deployment replica cap (issue 16, item 5): an absurd num_replicas or max_replicas
fails at the call that gave it, naming the option and how to raise the cap."""

from __future__ import annotations

import pytest

import serve
from serve._autoscaling_config import REPLICA_CAP_ENV


def _cls() -> type:
    return type("Model", (), {"__call__": lambda self: None})


def test_num_replicas_over_the_cap_fails_at_the_decorator() -> None:
    with pytest.raises(ValueError, match=r"num_replicas 100000 is over the cap of 1000 replicas per deployment.*"
                                         + REPLICA_CAP_ENV):
        serve.deployment(num_replicas=100_000)(_cls())
    with pytest.raises(ValueError, match=r"autoscaling_config.max_replicas 5000 is over the cap"):
        serve.deployment(autoscaling_config={"max_replicas": 5000})(_cls())
    serve.deployment(num_replicas=1000)(_cls())  # at the cap: fine


def test_the_cap_is_configurable(monkeypatch) -> None:
    monkeypatch.setenv(REPLICA_CAP_ENV, "5")
    with pytest.raises(ValueError, match="over the cap of 5 replicas"):
        serve.deployment(_cls()).options(num_replicas=6)
    monkeypatch.setenv(REPLICA_CAP_ENV, "20000")
    serve.deployment(num_replicas=10_000)(_cls())
