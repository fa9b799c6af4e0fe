"""`Signals`: an actor holding events a test sets and its deployments wait for, and a log
the test reads (the streaming tests pace generators with it)."""

from __future__ import annotations

import asyncio

import actors


@actors.remote
class Signals:
    def __init__(self) -> None:
        self.events: dict[str, asyncio.Event] = {}
        self.log: list[str] = []

    def _event(self, key: str) -> asyncio.Event:
        return self.events.setdefault(key, asyncio.Event())

    async def wait(self, key: str) -> None:
        await self._event(key).wait()

    async def send(self, key: str) -> None:
        self._event(key).set()

    async def record(self, what: str) -> None:
        self.log.append(what)

    async def recorded(self) -> list[str]:
        return list(self.log)
