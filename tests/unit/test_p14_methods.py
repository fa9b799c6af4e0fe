"""Issue 14 item 8: a handle call of a method the deployment does not have fails at once,
before it is routed, with the list of its methods.

Replicas report their public methods when ready (`public_methods`); the controller keeps
those of the current code's replicas (`DeploymentState.methods`, reset by a code change)
and sends them in the `ReplicaSet`; routers refuse other methods (the HTTP entry always
passes). Routers of a set without methods (none reported yet) send the call, and the
replica raises the same error."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from actors.system import Update
from serve._data.dispatch import public_methods
from serve.exceptions import MethodNotFoundError, ServeError
from serve.messages import HTTP_METHOD, WEBSOCKET_METHOD, ReplicaSet

from .test_router import DEPLOYMENT, make_env, outcome, run, settle, via  # noqa: F401  (a fixture)


class Model:
    limit = 3

    def __init__(self) -> None:
        self.state = {}

    def __call__(self, x: Any) -> Any:
        return x

    def predict(self, x: Any) -> Any:
        return x

    async def apredict(self, x: Any) -> Any:
        return x

    @staticmethod
    def helper() -> None: ...

    @classmethod
    def build(cls) -> None: ...

    @property
    def expensive(self) -> Any:
        raise AssertionError("listing methods must not run properties")

    def _private(self) -> None: ...

    def __getattr__(self, name: str) -> Any:
        raise AssertionError("listing methods must not call __getattr__")


class NoCall:
    def run(self) -> None: ...


def test_public_methods_of_a_class_instance() -> None:
    assert public_methods(Model(), False) == ["__call__", "apredict", "build", "helper", "predict"]
    assert public_methods(NoCall(), False) == ["run"]


def test_public_methods_of_a_function_deployment() -> None:
    assert public_methods(lambda x: x, True) == ["__call__"]


def test_the_error_lists_the_methods_and_is_an_attribute_error() -> None:
    e = MethodNotFoundError.of("Model", "predcit", ["__call__", "predict"])
    assert isinstance(e, AttributeError) and isinstance(e, ServeError)
    assert str(e) == ("tried to call method 'predcit' of deployment 'Model', which does not exist; "
                      "its methods: __call__, predict")
    assert "which is private" in str(MethodNotFoundError.of("Model", "_private", ["predict"]))


def with_methods(update: Update, methods: tuple[str, ...] | None) -> Update:
    rs: ReplicaSet = update.value
    return Update(update.version, dataclasses.replace(rs, methods=methods), update.exists)


def test_an_unknown_method_fails_at_once_without_reaching_a_replica(via: str) -> None:  # noqa: F811
    async def main() -> None:
        env = make_env("a")
        await env.apply(with_methods(env.replica_set(), ("__call__", "predict")))
        task = env.call(1, method="predcit")
        with pytest.raises(MethodNotFoundError, match="its methods: __call__, predict"):
            await outcome(task)
        assert env.log == [] and env.router.load == 0
        ok = env.call(2, method="predict")
        await settle()
        env.log[0].succeed("fine")
        assert await outcome(ok) == "fine"
        env.router.close()

    run(main())


def test_a_call_waiting_for_the_first_replica_set_is_checked_against_it() -> None:
    async def main() -> None:
        env = make_env("a")
        task = asyncio.get_running_loop().create_task(env.router.call("nope", (), {}))
        await settle()
        assert not task.done()
        await env.apply(with_methods(env.replica_set(), ("predict",)))
        with pytest.raises(MethodNotFoundError, match="'nope'"):
            await outcome(task)
        assert env.log == []
        env.router.close()

    run(main())


def test_without_reported_methods_calls_go_through(via: str) -> None:  # noqa: F811
    async def main() -> None:
        env = make_env("a")
        await env.apply(env.replica_set())
        task = env.call(1, method="anything")
        await settle()
        assert [r.method for r in env.log] == ["anything"]
        env.log[0].succeed(None)
        await outcome(task)
        env.router.close()

    run(main())


def test_the_http_entry_is_never_refused() -> None:
    async def main() -> None:
        env = make_env("a")
        await env.apply(with_methods(env.replica_set(), ("predict",)))
        task = asyncio.get_running_loop().create_task(env.router.call(HTTP_METHOD, ("req",), {}))
        await settle()
        assert [r.method for r in env.log] == [HTTP_METHOD]
        env.log[0].succeed("ok")
        assert await outcome(task) == "ok"
        env.router.close()

    run(main())


# -- websockets: only a replica that reports the websocket entry (an ASGI ingress) takes them ---------
def test_a_websocket_to_a_deployment_that_reports_no_websocket_entry_is_refused_without_routing() -> None:
    async def main() -> None:
        env = make_env("a")
        await env.apply(with_methods(env.replica_set(), ("__call__", "predict")))
        task = asyncio.get_running_loop().create_task(env.router.call_holding(WEBSOCKET_METHOD, ("req",), {}, None))
        with pytest.raises(MethodNotFoundError, match="takes no websockets"):
            await outcome(task)
        assert env.log == [] and env.router.load == 0
        unknown = asyncio.get_running_loop().create_task(env.router.call(HTTP_METHOD, ("req",), {}))
        await settle()
        env.log[0].succeed("ok")
        assert await outcome(unknown) == "ok"
        env.router.close()

    run(main())


def test_a_websocket_goes_to_a_deployment_that_reports_the_entry_or_whose_methods_are_unknown() -> None:
    async def main() -> None:
        for methods in ((WEBSOCKET_METHOD, "__call__"), None):
            env = make_env("a")
            await env.apply(with_methods(env.replica_set(), methods))
            task = asyncio.get_running_loop().create_task(env.router.call(WEBSOCKET_METHOD, ("req",), {}))
            await settle()
            assert [r.method for r in env.log] == [WEBSOCKET_METHOD]
            env.log[0].succeed("start")
            assert await outcome(task) == "start"
            env.router.close()

    run(main())


def test_the_proxy_entries_are_not_listed_as_methods_in_the_error() -> None:
    async def main() -> None:
        env = make_env("a")
        await env.apply(with_methods(env.replica_set(), (WEBSOCKET_METHOD, "__call__", "predict")))
        with pytest.raises(MethodNotFoundError) as raised:
            await outcome(asyncio.get_running_loop().create_task(env.router.call("predcit", (), {})))
        assert str(raised.value).endswith("its methods: __call__, predict")
        env.router.close()

    run(main())


# -- the controller keeps the methods of the current code's replicas --------------------------
def test_deployment_state_keeps_reported_methods_until_the_code_changes() -> None:
    from serve._control.deployment_state import DeploymentState
    from serve._control.status import replica_set_of

    from .test_deployment_state import FakeIO, make_target

    io = FakeIO()
    state = DeploymentState(make_target("v1", 1), io)
    state.step(0.0)
    assert state.methods is None and replica_set_of(state).methods is None
    io.pending("ready")[0].succeed({"pid": 1, "methods": ["__call__", "predict"]})
    assert state.step(0.0) is True  # the routing set changed: published with the methods
    assert replica_set_of(state).methods == ("__call__", "predict")
    assert "methods" not in state.running()[0].meta  # not repeated in every status

    same_code = dataclasses.replace(make_target("v2", 1), code=b"")
    state.update(same_code)
    assert state.methods == ("__call__", "predict")
    state.update(dataclasses.replace(make_target("v3", 1), code=b"new code"))
    assert state.methods is None  # unknown until a replica of the new code reports
