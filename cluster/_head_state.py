"""The head's durable state: a snapshot file that a restarted head restores.

What is kept: the actor table (records, names, version), the node table, the jobs and
the KV store. Written atomically (temp file + rename), so a crash never leaves a torn
file. KV writes are saved before they are acknowledged; other changes are saved within
`DEBOUNCE_S`. A restored head starts a new epoch, so every watcher resyncs; nodes and
jobs restored get a fresh heartbeat deadline, and those that are really gone time out as
usual, taking their actors with them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import time
from pathlib import Path
from typing import Any

from ._actor_table import ActorRecord
from ._records import JobEntry, NodeEntry

__all__ = ["StateFile", "DEBOUNCE_S"]

log = logging.getLogger(__name__)
DEBOUNCE_S = 0.1
_FORMAT = 1


class StateFile:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def save(self, head: Any) -> None:
        state = {
            "format": _FORMAT,
            "records": [_record_state(r) for r in head.actors.records.values()],
            "names": dict(head.actors.names),
            "version": head.actors.version,
            "nodes": [(n.reg, dict(n.available), n.alive) for n in head.node_table.values()],
            "jobs": [(j.job_id, j.address, j.namespace, j.pid) for j in head.jobs.values()],
            "kv": dict(head.kv),
            "queue": list(head.queue),
        }
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(state, f, protocol=5)
        os.replace(tmp, self.path)

    def restore(self, head: Any) -> bool:
        """Load a snapshot into a fresh head; False if there is none."""
        if not self.path.exists():
            return False
        with open(self.path, "rb") as f:
            state = pickle.load(f)
        if state.get("format") != _FORMAT:
            log.warning("ignoring head state %s of unknown format", self.path)
            return False
        for fields in state["records"]:
            rec = ActorRecord(**fields)
            head.actors.records[rec.actor_id] = rec
        head.actors.names.update(state["names"])
        head.restore_actor_version(state["version"])
        now = time.monotonic()
        for reg, available, alive in state["nodes"]:
            head.node_table[reg.node_id] = NodeEntry(reg, available, alive, now)
        for job_id, address, namespace, pid in state["jobs"]:
            head.jobs[job_id] = JobEntry(job_id, address, namespace, pid, now)
        head.kv.update(state["kv"])
        head.queue.extend(state["queue"])
        log.info("restored %d actors, %d nodes, %d jobs, %d keys from %s", len(state["records"]),
                 len(state["nodes"]), len(state["jobs"]), len(state["kv"]), self.path)
        return True

    async def keep_saved(self, head: Any) -> None:
        """Save whenever the head says it changed, at most every DEBOUNCE_S."""
        while True:
            await head.changed_event().wait()
            await asyncio.sleep(DEBOUNCE_S)
            try:
                self.save(head)
            except OSError as e:
                log.error("could not save the head state to %s: %s", self.path, e)


def _record_state(rec: ActorRecord) -> dict[str, Any]:
    return {
        "spec": rec.spec, "namespace": rec.namespace, "state": rec.state, "incarnation": rec.incarnation,
        "address": rec.address, "node_id": rec.node_id, "pid": rec.pid, "restarts_left": rec.restarts_left,
        "death_cause": rec.death_cause, "version": rec.version, "kill_requested": rec.kill_requested,
    }
