"""Unit tests of the placement policy (`cluster._scheduler`).

Contract: only alive nodes whose totals cover the demand are feasible (none: raise
ActorUnschedulableError naming the demand); among those with the demand free now, the
fewest actors wins, then the most free CPU, then the lowest id; none free: None.
"""

from __future__ import annotations

import itertools

import pytest

from actors import ActorUnschedulableError
from actors.messages import NodeId
from cluster._scheduler import NodeLoad, fits, pick_node


def node(name: str, cpu: float = 4.0, free: float | None = None, actors: int = 0, alive: bool = True,
         group: int = 0, **custom: float) -> NodeLoad:
    """A node with `cpu` CPUs (`free` of them available) and custom resources, all free."""
    total = {"CPU": cpu, **custom}
    available = {"CPU": cpu if free is None else free, **custom}
    return NodeLoad(NodeId(name), alive, total, available, actors, group)


# -- fits -------------------------------------------------------------------------------------


def test_fits_basic() -> None:
    assert fits({"CPU": 2.0}, {"CPU": 2.0})
    assert fits({"CPU": 2.0, "GPU": 1.0}, {"CPU": 1.0})
    assert not fits({"CPU": 2.0}, {"CPU": 2.5})
    assert not fits({"CPU": 2.0}, {"GPU": 1.0})


def test_fits_ignores_zero_and_negative_demands() -> None:
    assert fits({}, {})
    assert fits({}, {"CPU": 0.0, "GPU": 0.0})
    assert fits({}, {"GPU": -1.0})


def test_fits_tolerates_float_rounding() -> None:
    have = 0.3 - 0.1 - 0.1
    assert have < 0.1  # 0.09999999999999998
    assert fits({"CPU": have}, {"CPU": 0.1})
    assert not fits({"CPU": 0.1 - 1e-6}, {"CPU": 0.1})


# -- feasibility --------------------------------------------------------------------------------


def test_feasible_and_free_node_is_picked() -> None:
    assert pick_node([node("a")], {"CPU": 2.0}) == NodeId("a")


def test_empty_demand_fits_any_alive_node() -> None:
    assert pick_node([node("a", cpu=0.0)], {}) == NodeId("a")


def test_busy_but_feasible_returns_none() -> None:
    nodes = [node("a", cpu=4.0, free=1.0), node("b", cpu=2.0, free=0.5)]
    assert pick_node(nodes, {"CPU": 2.0}) is None


def test_infeasible_raises_naming_the_demand() -> None:
    with pytest.raises(ActorUnschedulableError) as info:
        pick_node([node("a", cpu=4.0), node("b", cpu=2.0)], {"CPU": 8.0})
    text = str(info.value)
    assert "{'CPU': 8.0}" in text
    assert "'a': {'CPU': 4.0}" in text  # and the node totals, to act on


def test_infeasible_custom_resource_raises() -> None:
    with pytest.raises(ActorUnschedulableError, match="GPU"):
        pick_node([node("a", cpu=64.0)], {"GPU": 1.0})


def test_no_nodes_is_infeasible() -> None:
    with pytest.raises(ActorUnschedulableError):
        pick_node([], {})


def test_dead_nodes_are_not_feasible() -> None:
    with pytest.raises(ActorUnschedulableError):
        pick_node([node("big", cpu=64.0, alive=False), node("small", cpu=1.0)], {"CPU": 8.0})
    assert pick_node([node("a", alive=False, actors=0), node("b", actors=5)], {"CPU": 1.0}) == NodeId("b")


def test_unschedulable_error_is_an_actors_error() -> None:
    import actors

    with pytest.raises(actors.ActorsError):
        pick_node([node("a", cpu=1.0)], {"CPU": 2.0})


# -- choice -------------------------------------------------------------------------------------


def test_spread_fewest_actors_wins_over_more_free_cpu() -> None:
    nodes = [node("a", cpu=16.0, actors=3), node("b", cpu=2.0, free=1.0, actors=1), node("c", cpu=8.0, actors=2)]
    assert pick_node(nodes, {"CPU": 1.0}) == NodeId("b")


def test_the_spread_group_comes_before_other_actors() -> None:
    # the head runs few actors but already one of this group: the group goes elsewhere first
    nodes = [node("a", actors=1, group=1), node("b", actors=4), node("c", actors=3, group=1)]
    assert pick_node(nodes, {"CPU": 1.0}) == NodeId("b")
    nodes = [node("a", actors=1, group=1), node("b", actors=4, group=1)]
    assert pick_node(nodes, {"CPU": 1.0}) == NodeId("a")  # a tie in the group: fewest actors


def test_spread_skips_nodes_without_free_resources() -> None:
    nodes = [node("a", cpu=4.0, free=0.0, actors=0), node("b", cpu=4.0, actors=10)]
    assert pick_node(nodes, {"CPU": 1.0}) == NodeId("b")


def test_tie_on_actors_goes_to_most_free_cpu() -> None:
    nodes = [node("a", cpu=8.0, free=2.0, actors=1), node("b", cpu=8.0, free=6.0, actors=1),
             node("c", cpu=8.0, free=4.0, actors=1)]
    assert pick_node(nodes, {"CPU": 1.0}) == NodeId("b")


def test_full_tie_goes_to_lowest_id_whatever_the_order() -> None:
    nodes = [node("0c"), node("0a"), node("0b")]
    for order in itertools.permutations(nodes):
        assert pick_node(list(order), {"CPU": 1.0}) == NodeId("0a")


def test_choice_is_deterministic_across_input_orders() -> None:
    nodes = [node("n1", cpu=4.0, free=2.0, actors=1), node("n2", cpu=4.0, free=2.0, actors=1),
             node("n3", cpu=4.0, free=3.0, actors=2), node("n4", cpu=4.0, free=0.5, actors=0)]
    picks = {pick_node(list(order), {"CPU": 1.0}) for order in itertools.permutations(nodes)}
    assert picks == {NodeId("n1")}


# -- affinity -----------------------------------------------------------------------------------


def test_node_affinity_overrides_spread() -> None:
    nodes = [node("a", actors=0), node("b", actors=9)]
    assert pick_node(nodes, {"CPU": 1.0}, node_id=NodeId("b")) == NodeId("b")


def test_node_affinity_busy_waits_rather_than_going_elsewhere() -> None:
    nodes = [node("a"), node("b", cpu=4.0, free=0.0)]
    assert pick_node(nodes, {"CPU": 1.0}, node_id=NodeId("b")) is None


def test_node_affinity_to_dead_node_raises() -> None:
    with pytest.raises(ActorUnschedulableError, match="dead1"):
        pick_node([node("a"), node("dead1", alive=False)], {"CPU": 1.0}, node_id=NodeId("dead1"))


def test_node_affinity_to_unknown_node_raises() -> None:
    with pytest.raises(ActorUnschedulableError, match="nowhere"):
        pick_node([node("a")], {}, node_id=NodeId("nowhere"))


def test_node_affinity_with_infeasible_demand_raises() -> None:
    with pytest.raises(ActorUnschedulableError):
        pick_node([node("a", cpu=64.0), node("b", cpu=2.0)], {"CPU": 8.0}, node_id=NodeId("b"))


# -- fractional and custom resources --------------------------------------------------------------


def test_fractional_cpus() -> None:
    assert pick_node([node("a", cpu=1.0, free=0.5)], {"CPU": 0.5}) == NodeId("a")
    assert pick_node([node("a", cpu=1.0, free=0.5)], {"CPU": 0.6}) is None
    with pytest.raises(ActorUnschedulableError):
        pick_node([node("a", cpu=0.5)], {"CPU": 0.75})


def test_fractional_cpus_after_many_subtractions() -> None:
    free = 1.0
    for _ in range(3):  # three actors of 0.3 CPU placed
        free -= 0.3
    assert free < 0.1  # 0.09999999999999998, yet a 0.1 CPU actor must still fit
    assert pick_node([node("a", cpu=1.0, free=free)], {"CPU": 0.1}) == NodeId("a")


def test_custom_resource_selects_the_node_that_has_it() -> None:
    nodes = [node("a", cpu=8.0), node("b", cpu=8.0, actors=5, GPU=2.0)]
    assert pick_node(nodes, {"GPU": 1.0}) == NodeId("b")
    assert pick_node(nodes, {"CPU": 1.0, "GPU": 2.0}) == NodeId("b")


def test_custom_resource_busy_returns_none() -> None:
    gpu_node = NodeLoad(NodeId("g"), True, {"CPU": 4.0, "GPU": 1.0}, {"CPU": 4.0, "GPU": 0.0}, 1)
    assert pick_node([node("a"), gpu_node], {"GPU": 1.0}) is None


def test_combined_demand_needs_every_resource_on_one_node() -> None:
    nodes = [node("cpu-only", cpu=8.0), node("gpu-small", cpu=1.0, GPU=1.0)]
    with pytest.raises(ActorUnschedulableError):
        pick_node(nodes, {"CPU": 4.0, "GPU": 1.0})
