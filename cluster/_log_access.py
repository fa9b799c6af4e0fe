"""Reading a node's log files for `zeroserve logs`: list them, tail one, follow one.

The agent serves these through its `@rpc` methods; every read is bounded
(`MAX_READ_BYTES` per call), and only plain files directly in the node's logs directory
can be named (no paths). A reader follows a file by (offset, inode): when the file was
rotated (its inode changed) the rest of the old file is read from `<name>.1` first, then
the new file from its start, so a follower loses nothing across a rotation.

`follow` is a long poll: it answers as soon as the file has new bytes, or after `hold_s`.
Files the agent writes itself (worker output) wake it at once (`touched`); the files of
other processes (the head's log) are looked at every `STAT_INTERVAL_S` while it waits.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

__all__ = ["LogDirectory", "MAX_READ_BYTES", "LogNameError"]

MAX_READ_BYTES = 256 * 1024
MAX_TAIL_LINES = 10_000
MAX_HOLD_S = 30.0
STAT_INTERVAL_S = 0.5


class LogNameError(ValueError):
    """Raised by the agent's log reads when a name is not a log file of this node."""


class LogDirectory:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._waiters: dict[str, asyncio.Event] = {}

    def _file(self, name: str) -> Path:
        if not isinstance(name, str) or not name or name != Path(name).name or name.startswith("."):
            raise LogNameError(f"{name!r} is not a log file name (names come from `zeroserve logs`)")
        path = self.path / name
        if not path.is_file():
            raise LogNameError(f"there is no log file {name!r} on this node")
        return path

    def list(self) -> list[dict[str, Any]]:
        """Every log file here (rotated ones too): name, size, modification time."""
        out = []
        try:
            entries = list(os.scandir(self.path))
        except FileNotFoundError:
            return []
        for entry in entries:
            try:
                if entry.is_file() and not entry.name.startswith("."):
                    st = entry.stat()
                    out.append({"name": entry.name, "size": st.st_size, "mtime": st.st_mtime})
            except FileNotFoundError:
                continue  # rotated away meanwhile
        return sorted(out, key=lambda e: e["name"])

    def tail(self, name: str, lines: int) -> dict[str, Any]:
        """The last `lines` lines (within MAX_READ_BYTES), and where to follow from."""
        path = self._file(name)
        lines = max(0, min(int(lines), MAX_TAIL_LINES))
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            start = max(0, st.st_size - MAX_READ_BYTES)
            f.seek(start)
            data = f.read(st.st_size - start)
        end = start + len(data)
        if start > 0:  # the first line read is probably cut: drop it
            data = data.partition(b"\n")[2]
        kept = data.split(b"\n")
        if kept and kept[-1] == b"":
            kept.pop()
        text = b"\n".join(kept[-lines:]) + b"\n" if lines and kept else b""
        return {"data": text, "offset": end, "inode": st.st_ino}

    def read(self, name: str, offset: int, inode: int | None) -> dict[str, Any]:
        """Bytes of `name` from `offset` (at most MAX_READ_BYTES): {data, offset, inode} to
        continue from. `inode` is the file the offset is in (None: the current one)."""
        path = self._file(name)
        st = path.stat()
        if inode is not None and st.st_ino != inode:
            older = path.with_name(f"{name}.1")
            try:
                if older.stat().st_ino == inode:
                    data = _read_at(older, offset)
                    if data:
                        return {"data": data, "offset": offset + len(data), "inode": inode}
            except FileNotFoundError:
                pass
            offset = 0  # the old file is read to its end (or gone): the new one from its start
        elif offset > st.st_size:
            offset = 0  # truncated
        data = _read_at(path, offset)
        return {"data": data, "offset": offset + len(data), "inode": st.st_ino}

    async def follow(self, name: str, offset: int, inode: int | None, hold_s: float) -> dict[str, Any]:
        """`read`, waiting up to `hold_s` for new bytes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, min(float(hold_s), MAX_HOLD_S))
        while True:
            chunk = self.read(name, offset, inode)
            left = deadline - loop.time()
            if chunk["data"] or left <= 0:
                return chunk
            offset, inode = chunk["offset"], chunk["inode"]
            event = self._waiters.setdefault(name, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), min(STAT_INTERVAL_S, left))
            except asyncio.TimeoutError:
                pass

    def touched(self, name: str) -> None:
        """`name` was just written by this process: wake its followers."""
        event = self._waiters.pop(name, None)
        if event is not None:
            event.set()


def _read_at(path: Path, offset: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(MAX_READ_BYTES)
