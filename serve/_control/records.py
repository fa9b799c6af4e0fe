"""Keeping the controller's checkpoint in the head's KV: which records are due, writing
them, retrying what failed.

A deployment's record (`checkpoint.DeploymentRecord`) is due when what it follows
(`record_members`) differs from what was last written, and deleted once the deployment is
gone; the settings record is written after every deployment record is; an older
controller's single value, if the checkpoint was recovered from one, is deleted after that.

Invariants:
- A record stays due if the deployment changed while it was written (the next save writes
  it again); a deploy is acknowledged (`unsaved` says nothing) once a record with its
  target (generation) and deletion is saved, whatever its replicas did since.
- `save` never raises: a write that failed stays due and is tried again after RETRY_S
  (at once when a deploy asks); each key's failure is logged once per distinct error,
  and its success after a failure once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping

from .._names import CHECKPOINT_KEY, SETTINGS_KEY, deployment_record_key
from ..messages import DeploymentId
from .checkpoint import DeploymentRecord, record_members
from .deployment_state import DeploymentState
from .io import ControllerIO

__all__ = ["RETRY_S", "RecordKeeper"]

log = logging.getLogger(__name__)
RETRY_S = 1.0  # a record write that failed is tried again after this


class RecordKeeper:
    def __init__(self, io: ControllerIO) -> None:
        self.io = io
        self.due: set[DeploymentId] = set()  # records to write (or delete: the deployment is gone)
        self.settings_due = True  # the settings record
        self.legacy = False  # an older controller's single value to delete once converted
        self._saved: dict[DeploymentId, tuple] = {}  # each record as last written (record_members)
        self.failed: dict[str, str] = {}  # KV key -> the error last logged for it
        self._retry_at = float("-inf")
        self._lock = asyncio.Lock()

    def recovered(self, deployments: Mapping[DeploymentId, DeploymentState], *, legacy: bool,
                  settings_found: bool, stale_legacy: bool = False) -> None:
        """What a restarted controller found: records (already saved), or an old single value
        (every record is due, then its deletion; `stale_legacy`: only its deletion)."""
        for dep_id, s in deployments.items():
            if legacy:
                self.due.add(dep_id)
            else:
                self._saved[dep_id] = record_members(s)
        self.legacy = legacy or stale_legacy
        self.settings_due = legacy or not settings_found

    def changed(self, ids: Iterable[DeploymentId], deployments: Mapping[DeploymentId, DeploymentState]) -> None:
        """These deployments' records may have changed (or they went)."""
        for dep_id in ids:
            s = deployments.get(dep_id)
            if s is None or self._saved.get(dep_id) != record_members(s):
                self.due.add(dep_id)

    def dropped(self) -> None:
        """Serve shut down and every record was deleted: write nothing more unless it changes."""
        self.settings_due = self.legacy = False

    async def save(self, now: float, deployments: Mapping[DeploymentId, DeploymentState],
                   settings_blob: Callable[[], bytes], *, retry: bool = False) -> None:
        """Write what is due (`retry`: even before RETRY_S has passed since a failure)."""
        if not (self.due or self.settings_due or self.legacy) or (now < self._retry_at and not retry):
            return
        async with self._lock:
            failed = False
            for dep_id in list(self.due):
                s = deployments.get(dep_id)
                members = record_members(s) if s is not None else None
                blob = DeploymentRecord.of(s).dumps() if s is not None else None
                if not await self._write(deployment_record_key(dep_id), blob):
                    failed = True
                    continue
                if members is None:
                    self._saved.pop(dep_id, None)
                else:
                    self._saved[dep_id] = members
                s = deployments.get(dep_id)
                if (record_members(s) if s is not None else None) == members:  # no change during the write
                    self.due.discard(dep_id)
            if self.settings_due and not self.due:
                self.settings_due = not await self._write(SETTINGS_KEY, settings_blob())
                failed |= self.settings_due
            if self.legacy and not (self.due or self.settings_due):
                self.legacy = not await self._write(CHECKPOINT_KEY, None)
                failed |= self.legacy
            self._retry_at = now + RETRY_S if failed else float("-inf")

    def unsaved(self, ids: Iterable[DeploymentId],
                deployments: Mapping[DeploymentId, DeploymentState]) -> dict[DeploymentId, str]:
        """Those of `ids` whose saved record lacks their current target or deletion (for one
        gone: neither deleted nor saved as deleting), with the last error writing it."""
        out = {}
        for dep_id in ids:
            s, saved = deployments.get(dep_id), self._saved.get(dep_id)
            if s is None:
                durable = saved is None or saved[1]  # a restarted controller would finish the deletion
            else:
                durable = saved is not None and saved[:2] == record_members(s)[:2]
            if not durable:
                out[dep_id] = self.failed.get(deployment_record_key(dep_id), "")
        return out

    async def _write(self, key: str, blob: bytes | None) -> bool:
        """Put (None: delete) one record; False if the head refused it or did not answer."""
        try:
            if blob is None:
                await self.io.kv_delete(key)
            else:
                await self.io.kv_put(key, blob)
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
            if self.failed.get(key) != error:
                self.failed[key] = error
                log.error("could not save %s in the head's KV (retried every %g s; a controller restart before "
                          "it is saved loses that change): %s", key, RETRY_S, error)
            return False
        if self.failed.pop(key, None) is not None:
            log.info("saved %s in the head's KV", key)
        return True
