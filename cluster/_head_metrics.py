"""The head's metrics: the cluster's actors by state and their restarts (`actors_*`).

`HeadCollector` reads the head's actor table when the head process is scraped (through
its node's metrics endpoint); nothing is counted on the head's own paths.

Families:
    actors_actors{state}                gauge    actors in the head's table by state
    actors_actor_restarts_total         counter  restarts of actors since this head started
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from actors.messages import ActorState
from actors.system import metrics_registry

from ._head import Head

__all__ = ["HeadCollector", "install"]


class HeadCollector:
    def __init__(self, head: Head) -> None:
        self._head = head

    def collect(self) -> Iterator[Metric]:
        table = self._head.actors
        states = Counter(r.state for r in list(table.records.values()))
        by_state = GaugeMetricFamily("actors_actors", "Actors in the head's table, by state", labels=("state",))
        for state in ActorState:
            by_state.add_metric((state.value,), states.get(state, 0))
        yield by_state
        yield CounterMetricFamily("actors_actor_restarts", "Actor restarts (a worker died and the actor had "
                                  "restarts left) since this head started", value=table.restarts)

    def describe(self) -> Iterator[Metric]:
        return iter(())


def install(head: Head) -> HeadCollector:
    collector = HeadCollector(head)
    metrics_registry().register(collector)
    return collector
