"""The head's durable state: an SQLite database written one change at a time.

A table per record kind (actor specs, actor states, nodes, jobs, KV pairs, and a few
meta values). The head marks what it changed (`Changes`) and `write()` puts it in one
transaction, before the head replies to the call that made the change: whatever the
head acknowledged survives a SIGKILL of the head. The spec of an actor (its class and
constructor arguments, the large part) is written once, at creation; later changes of
the actor rewrite only its small state row. So a write costs what changed, not what the
store holds.

WAL journal, `synchronous=NORMAL`: a committed transaction survives the head process
dying at any point (it is in the OS's hands); a power cut may lose the last ones.
The database lives in the session directory (mode 0700, ours), so what it holds is
trusted: it is unpickled at restore.
"""

from __future__ import annotations

import logging
import pickle
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.messages import ActorId, ActorSpec, JobId, NodeId

from .messages import NodeRegistration

__all__ = ["HeadStore", "Changes", "Snapshot"]

log = logging.getLogger(__name__)
# 3: actor options carry num_gpus, actor records the GPU devices they hold, node
# registrations their devices (records pickled by schema 2 lack those fields).
_SCHEMA = 3
_TABLES = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB)",
    "CREATE TABLE IF NOT EXISTS actor_specs (actor_id TEXT PRIMARY KEY, spec BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS actors (actor_id TEXT PRIMARY KEY, state BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS nodes (node_id TEXT PRIMARY KEY, reg BLOB NOT NULL, alive INTEGER NOT NULL, "
    "dead_at REAL)",
    "CREATE TABLE IF NOT EXISTS jobs (job_id TEXT PRIMARY KEY, address TEXT, namespace TEXT, pid INTEGER)",
    "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
)


@dataclass
class Changes:
    """What one unit of the head's work changed. None as a value means "delete"."""

    specs: dict[ActorId, ActorSpec] = field(default_factory=dict)
    actors: dict[ActorId, dict[str, Any] | None] = field(default_factory=dict)
    nodes: dict[NodeId, tuple[NodeRegistration, bool, float | None] | None] = field(default_factory=dict)
    jobs: dict[JobId, tuple[str, str, int] | None] = field(default_factory=dict)
    kv: dict[str, bytes | None] = field(default_factory=dict)
    version: int | None = None

    def __bool__(self) -> bool:
        return bool(self.specs or self.actors or self.nodes or self.jobs or self.kv or self.version is not None)


@dataclass
class Snapshot:
    actors: list[tuple[ActorSpec, dict[str, Any]]]
    nodes: list[tuple[NodeRegistration, bool, float | None]]
    jobs: list[tuple[JobId, str, str, int]]
    kv: dict[str, bytes]
    version: int


class HeadStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._tx():
            for ddl in _TABLES:
                self._db.execute(ddl)
            row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (_SCHEMA,))
            elif row[0] != _SCHEMA:
                raise RuntimeError(f"the head state {self.path} has schema {row[0]}, this head reads {_SCHEMA}: "
                                   "remove it (the cluster's actors are then forgotten) or run the matching version")

    def _tx(self) -> Any:
        return _Transaction(self._db)

    def write(self, changes: Changes) -> None:
        """Apply `changes` in one transaction (raises on failure: nothing was written)."""
        if not changes:
            return
        db = self._db
        with self._tx():
            if changes.specs:
                db.executemany("INSERT OR REPLACE INTO actor_specs VALUES (?, ?)",
                               [(a.hex, pickle.dumps(s, protocol=5)) for a, s in changes.specs.items()])
            gone = [(a.hex,) for a, v in changes.actors.items() if v is None]
            if gone:
                db.executemany("DELETE FROM actors WHERE actor_id=?", gone)
                db.executemany("DELETE FROM actor_specs WHERE actor_id=?", gone)
            rows = [(a.hex, pickle.dumps(v, protocol=5)) for a, v in changes.actors.items() if v is not None]
            if rows:
                db.executemany("INSERT OR REPLACE INTO actors VALUES (?, ?)", rows)
            for node_id, n in changes.nodes.items():
                if n is None:
                    db.execute("DELETE FROM nodes WHERE node_id=?", (node_id.hex,))
                else:
                    reg, alive, dead_at = n
                    db.execute("INSERT OR REPLACE INTO nodes VALUES (?, ?, ?, ?)",
                               (node_id.hex, pickle.dumps(reg, protocol=5), int(alive), dead_at))
            for job_id, j in changes.jobs.items():
                if j is None:
                    db.execute("DELETE FROM jobs WHERE job_id=?", (job_id.hex,))
                else:
                    db.execute("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?)", (job_id.hex, *j))
            for key, value in changes.kv.items():
                if value is None:
                    db.execute("DELETE FROM kv WHERE key=?", (key,))
                else:
                    db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, value))
            if changes.version is not None:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('version', ?)", (changes.version,))

    def load(self) -> Snapshot | None:
        """Everything stored; None if the store is empty (a first start)."""
        db = self._db
        specs = {a: pickle.loads(s) for a, s in db.execute("SELECT actor_id, spec FROM actor_specs")}
        actors = []
        for actor_id, state in db.execute("SELECT actor_id, state FROM actors"):
            spec = specs.get(actor_id)
            if spec is None:
                log.warning("the head state has actor %s without its spec; dropping it", actor_id)
                continue
            actors.append((spec, pickle.loads(state)))
        nodes = [(pickle.loads(reg), bool(alive), dead_at) for reg, alive, dead_at in
                 db.execute("SELECT reg, alive, dead_at FROM nodes")]
        jobs = [(JobId(j), address, ns, pid) for j, address, ns, pid in db.execute("SELECT * FROM jobs")]
        kv = dict(db.execute("SELECT key, value FROM kv").fetchall())
        row = db.execute("SELECT value FROM meta WHERE key='version'").fetchone()
        if row is None and not (actors or nodes or jobs or kv):
            return None
        return Snapshot(actors, nodes, jobs, kv, int(row[0]) if row else 0)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())

    def close(self) -> None:
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass
        self._db.close()


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN")

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
