"""The ASGI lifespan of an ingress replica's app: startup before the replica is ready,
shutdown when it drains.

FastAPI/Starlette run their `on_startup`/`on_shutdown` handlers and a `lifespan=` context
in answer to the ASGI "lifespan" scope; a replica drives that scope as uvicorn would.

Invariants:
- `start()` returns once the app has answered `lifespan.startup.complete`; it raises
  `LifespanError` carrying the app's message (Starlette sends the traceback) if the app
  answered `lifespan.startup.failed` or raised during startup. An app that raises at once,
  without reading the startup event, does not speak lifespan: that is no error.
- The lifespan task lives as long as the replica (a `lifespan=` context stays open between
  startup and shutdown); `stop()` sends `lifespan.shutdown` and waits (bounded) for it.
- State the lifespan yields (`yield {"model": ...}`) is in every request's scope
  (`request.state.model`), as uvicorn provides it: `app` wraps the app to add it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..exceptions import ServeError

__all__ = ["Lifespan", "LifespanError"]

log = logging.getLogger(__name__)


class LifespanError(ServeError):
    """Raised by a replica's start when its ingress app's startup (`on_startup` handlers or
    `lifespan=`) failed; the message holds the app's error and traceback."""


class Lifespan:
    """One app's lifespan: `await start()`, later `await stop(timeout_s)`."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._state: dict[str, Any] = {}
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._stopped: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._read_startup = False
        self._task: asyncio.Task | None = None
        self.supported = True

    @property
    def app(self) -> Any:
        """The app, with the lifespan's state in each request's scope (if it has any, after `start()`)."""
        app, state = self._app, self._state
        if not state:
            return app

        async def with_state(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if state and scope["type"] in ("http", "websocket") and "state" not in scope:
                scope = {**scope, "state": dict(state)}
            await app(scope, receive, send)

        return with_state

    async def start(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self._state}
        self._task = asyncio.get_running_loop().create_task(self._run(scope))
        self._inbox.put_nowait({"type": "lifespan.startup"})
        await asyncio.shield(self._started)

    async def _run(self, scope: dict[str, Any]) -> None:
        try:
            await self._app(scope, self._receive, self._send)
        except BaseException as e:
            if not self._started.done():
                if self._read_startup:
                    self._started.set_exception(LifespanError(f"the ingress app's startup raised {type(e).__name__}: {e}"))
                else:  # it does not speak lifespan
                    self.supported = False
                    self._started.set_result(None)
            elif (self._started.exception() is None and not self._stopped.done()
                  and not isinstance(e, asyncio.CancelledError)):
                log.exception("the ingress app's lifespan raised")
            if isinstance(e, asyncio.CancelledError):
                raise
        finally:
            if not self._started.done():
                self._started.set_result(None)
            if not self._stopped.done():
                self._stopped.set_result(None)

    async def _receive(self) -> dict[str, Any]:
        message = await self._inbox.get()
        if message["type"] == "lifespan.startup":
            self._read_startup = True
        return message

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete" and not self._started.done():
            self._started.set_result(None)
        elif kind == "lifespan.startup.failed" and not self._started.done():
            self._started.set_exception(LifespanError(
                f"the ingress app's startup failed:\n{message.get('message', '')}".rstrip()))
        elif kind == "lifespan.shutdown.complete" and not self._stopped.done():
            self._stopped.set_result(None)
        elif kind == "lifespan.shutdown.failed" and not self._stopped.done():
            log.error("the ingress app's shutdown failed:\n%s", message.get("message", ""))
            self._stopped.set_result(None)

    async def stop(self, timeout_s: float) -> None:
        """Run the app's shutdown (on_shutdown handlers, the rest of `lifespan=`), up to `timeout_s`."""
        task = self._task
        if task is None or task.done() or not self.supported:
            return
        self._inbox.put_nowait({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(asyncio.shield(self._stopped), timeout_s)
        except asyncio.TimeoutError:
            log.warning("the ingress app's shutdown did not finish within %.1f s", timeout_s)
        if not task.done():
            task.cancel()
