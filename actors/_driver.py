"""A driver's runtime: the event loop on a background thread ("actors-io").

User code in a driver runs on its own threads (and its own event loops); the runtime
keeps one uvloop loop on a daemon thread so sockets are served whatever the user does.
Calls from user threads enter it with one `call_soon_threadsafe`.

Once connected, a driver attaches to the agent of its own node (if it runs on one), so
its metrics (handle calls, user metrics) are on that node's metrics endpoint too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any

from . import _endpoints
from ._output import OutputFollower
from ._runtime import Runtime
from .exceptions import ClusterUnavailableError
from .messages import JobId

__all__ = ["DriverRuntime"]

log = logging.getLogger(__name__)

_HEARTBEAT_S = 1.0
_CONNECT_TIMEOUT_S = float(os.environ.get("ZEROSERVE_CONNECT_TIMEOUT_S", "15"))


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()


class DriverRuntime:
    def __init__(self, *, token: str, node_ip: str, head_address: str, namespace: str | None,
                 echo_logs: bool = True) -> None:
        self.loop = _new_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.rt: Runtime | None = None
        self._token, self._node_ip, self._head_address = token, node_ip, head_address
        self._namespace = namespace
        self._echo = echo_logs
        self._thread = threading.Thread(target=self._run, name="actors-io", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._setup())
        except BaseException as e:  # reported to the thread that called init()
            self._error = e
            self._ready.set()
            self._close_loop()
            return
        self._ready.set()
        try:
            self.loop.run_forever()
        finally:
            self._close_loop()

    async def _setup(self) -> None:
        rt = Runtime(token=self._token, node_ip=self._node_ip, head_address=self._head_address, role="driver")
        self.rt = rt
        _endpoints.install(rt, echo_logs=self._echo)
        try:
            job = await rt.head.register_job(rt.address, self._namespace, os.getpid(), timeout=_CONNECT_TIMEOUT_S)
        except ClusterUnavailableError as e:
            rt.close()
            raise ClusterUnavailableError(
                f"could not reach the head at {self._head_address} within {_CONNECT_TIMEOUT_S:.0f}s: "
                "is the cluster running (`zeroserve status`), and is the token right?"
            ) from e
        rt.job_id = job_id = JobId(job["job_id"])
        rt.namespace = job["namespace"]
        rt.background(self._heartbeat(rt, job_id))
        rt.background(self._attach_to_node(rt))

    @staticmethod
    async def _attach_to_node(rt: Runtime) -> None:
        """Tell this node's agent (if this machine is a node) to scrape this driver's metrics."""
        try:
            for node in await rt.head.nodes():
                if node.alive and node.ip == rt.node_ip:
                    await rt.call_service(node.agent_address, "agent", "attach_process", rt.address, os.getpid(),
                                          "driver", timeout=5.0)
                    return
        except Exception as e:  # metrics are a convenience: the driver works without them
            log.debug("could not attach to this node's agent: %s", e)

    @staticmethod
    async def _heartbeat(rt: Runtime, job_id: JobId) -> None:
        """Tell the head this driver lives; its non-detached actors die with it."""
        while True:
            await asyncio.sleep(_HEARTBEAT_S)
            try:
                await rt.head.job_heartbeat(job_id, timeout=5.0)
            except Exception:
                continue  # the head may be restarting; calls between actors go on

    def _close_loop(self) -> None:
        try:
            if self.rt is not None:
                self.rt.close()
            tasks = asyncio.all_tasks(self.loop)
            for task in tasks:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        finally:
            self.loop.close()

    def cluster_gone(self, reason: str) -> None:
        """From any thread: the cluster is gone, every call fails at once (`Runtime.cluster_gone`)."""
        rt = self.rt
        if rt is not None and self._thread.is_alive():
            try:
                self.loop.call_soon_threadsafe(rt.cluster_gone, reason)
            except RuntimeError:  # the loop closed meanwhile
                pass

    def stop(self, timeout: float = 5.0) -> None:
        rt = self.rt
        if rt is not None and self._thread.is_alive():
            async def finish() -> None:
                if rt.job_id is not None:
                    try:
                        await rt.head.job_finished(rt.job_id, timeout=2.0)
                    except Exception:
                        pass
                follower = rt.attached(OutputFollower)
                if follower is not None:
                    await follower.close()
                rt.directory.close()

            try:
                asyncio.run_coroutine_threadsafe(finish(), self.loop).result(timeout)
            except Exception:
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)

    def run(self, fn: Any, timeout: float | None = None) -> Any:
        assert self.rt is not None
        return self.rt.run_threadsafe(fn, timeout)
