"""Issue 14, handles: `serve.get_app_handle` / `get_deployment_handle` / 1.x `get_handle`,
1.x async handles, ObjectRefs as handle arguments, and unknown methods failing at once
(Ray Serve's documentation examples ported by the renaming rule where there is one)."""

from __future__ import annotations

import asyncio
import pickle

import pytest

import actors
import serve
from serve.handle import DeploymentHandle, DeploymentResponse, RayServeHandle, RayServeSyncHandle

pytestmark = [pytest.mark.usefixtures("cluster", "fresh_serve"), pytest.mark.timeout(120)]


# -- Ray 2.x: get_app_handle / get_deployment_handle (the API reference's examples) --------
@serve.deployment
class Ingress:
    def __call__(self, *args):
        return "hello"


@serve.deployment
class Deployment:
    def __call__(self, *args):
        return "hello"


def test_get_app_handle_doc_example() -> None:
    serve.run(Ingress.bind(), name="my_app", route_prefix="/my_app")
    handle: DeploymentHandle = serve.get_app_handle("my_app")
    assert isinstance(handle, DeploymentHandle)
    assert handle.remote().result() == "hello"


def test_get_deployment_handle_doc_example() -> None:
    serve.run(Deployment.bind(), name="my_app", route_prefix="/my_app")
    handle: DeploymentHandle = serve.get_deployment_handle("Deployment", app_name="my_app")
    assert handle.remote().result() == "hello"
    # Without app_name: the one application that has it.
    assert serve.get_deployment_handle("Deployment").remote().result() == "hello"


@serve.deployment
class Adder:
    def __init__(self, n):
        self.n = n

    def add(self, x):
        return x + self.n


@serve.deployment
class Composed:
    def __init__(self, adder):
        self.adder = adder

    async def __call__(self, x):
        # Inside a replica, without app_name: the replica's own application.
        other = serve.get_deployment_handle("Adder")
        return await self.adder.add.remote(x) + await other.add.remote(0)


def test_app_handle_is_the_ingress_of_a_composed_app() -> None:
    serve.run(Composed.bind(Adder.bind(10)), name="calc", route_prefix="/calc")
    assert serve.get_app_handle("calc").remote(1).result() == 21
    assert serve.get_deployment_handle("Adder", "calc").add.remote(5).result() == 15


def test_lookups_of_missing_things_name_what_exists() -> None:
    serve.run(Adder.bind(1), name="a1", route_prefix="/a1")
    with pytest.raises(serve.ApplicationNotFoundError, match=r"there is no application 'nope'.*a1") as e:
        serve.get_app_handle("nope")
    assert isinstance(e.value, KeyError) and isinstance(e.value, serve.RayServeException)
    with pytest.raises(serve.DeploymentNotFoundError, match=r"no deployment 'Nope' in application 'a1'.*Adder"):
        serve.get_deployment_handle("Nope", app_name="a1")
    with pytest.raises(KeyError, match="no deployment named 'Nope'"):
        serve.get_handle("Nope")


def test_two_apps_with_one_deployment_name_need_app_name() -> None:
    serve.run(Adder.bind(1), name="x", route_prefix="/x")
    serve.run(Adder.bind(2), name="y", route_prefix="/y")
    assert serve.get_deployment_handle("Adder", "x").add.remote(0).result() == 1
    assert serve.get_deployment_handle("Adder", "y").add.remote(0).result() == 2
    with pytest.raises(serve.DeploymentNotFoundError, match=r"several applications \(\['x', 'y'\]\)"):
        serve.get_deployment_handle("Adder")


# -- Ray 1.x: serve.get_handle(name, sync=...) and async handles ------------------------------
@serve.deployment
class Echo:
    def __call__(self, x=None):
        return x

    def twice(self, x):
        return 2 * x


def test_get_handle_sync_1x() -> None:
    Echo.deploy()
    handle = serve.get_handle("Echo")
    assert isinstance(handle, RayServeSyncHandle)
    assert actors.get(handle.remote(3)) == 3
    assert actors.get(handle.twice.remote(4)) == 8


def test_async_handle_1x_ref_then_result() -> None:
    """The 1.x docs: `handle = serve.get_handle(name, sync=False)`, `ref = await
    handle.remote()`, `result = await ref` (and `ray.get(ref)` from sync code)."""
    Echo.deploy()

    async def main():
        handle = serve.get_handle("Echo", sync=False)
        assert isinstance(handle, RayServeHandle)
        ref = await handle.remote(5)
        assert isinstance(ref, DeploymentResponse)
        result = await ref
        refs = await asyncio.gather(*[handle.twice.remote(i) for i in range(10)])
        doubled = await asyncio.gather(*refs)
        via_options = await (await handle.options(method_name="twice").remote(7))
        via_deployment = await (await Echo.get_handle(sync=False).twice.remote(21))
        return result, doubled, via_options, via_deployment

    result, doubled, via_options, via_deployment = asyncio.run(main())
    assert result == 5 and doubled == [2 * i for i in range(10)] and via_options == 14 and via_deployment == 42


@serve.deployment
class UsesAsyncHandle:
    def __init__(self, echo):
        self.echo = echo  # a 1.x async handle, pickled into the replica

    async def __call__(self, x):
        ref = await self.echo.twice.remote(x)
        return await ref


def test_async_handle_travels_to_a_replica() -> None:
    Echo.deploy()
    handle = serve.get_handle("Echo", sync=False)
    assert isinstance(pickle.loads(pickle.dumps(handle)), RayServeHandle)
    UsesAsyncHandle.deploy(handle)
    assert UsesAsyncHandle.get_handle().remote(6).result() == 12


def test_get_handle_sync_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="sync"):
        serve.get_handle("Echo", sync="no")  # type: ignore[arg-type]


# -- ObjectRefs as handle arguments are resolved before the call (as in Ray) -------------------
@actors.remote
class Source:
    def value(self, x):
        return x * 100


@serve.deployment
class Receiver:
    def __call__(self, a, *, b=0):
        # Top-level refs arrive as their values; one inside a list arrives as a ref.
        return {"a": a, "b": b}

    def nested(self, items):
        return [type(i).__name__ for i in items]


def test_object_ref_arguments_are_resolved() -> None:
    handle = serve.run(Receiver.bind(), name="refs", route_prefix=None)
    source = Source.remote()
    try:
        assert handle.remote(source.value.remote(1), b=source.value.remote(2)).result() == {"a": 100, "b": 200}
        assert handle.nested.remote([source.value.remote(3)]).result() == ["ObjectRef"]

        async def from_async():  # an async driver, and a ref of a call that is still running
            return await handle.remote(source.value.remote(4))

        assert asyncio.run(from_async()) == {"a": 400, "b": 0}
    finally:
        actors.kill(source)


@serve.deployment
class Forwarder:
    """Inside a replica (the runtime's own loop): an actor's ref passed on to a handle."""

    def __init__(self, receiver):
        self.receiver = receiver
        self.source = Source.remote()

    async def __call__(self, x):
        return await self.receiver.remote(self.source.value.remote(x))

    def source_actor(self):
        return self.source


def test_object_ref_argument_from_a_replica() -> None:
    handle = serve.run(Forwarder.bind(Receiver.bind()), name="fwd", route_prefix=None)
    try:
        assert handle.remote(5).result() == {"a": 500, "b": 0}
    finally:
        actors.kill(handle.source_actor.remote().result())


# -- a method the deployment does not have fails at once, listing its methods --------------------
@serve.deployment
class Model:
    def __call__(self, x):
        return x

    def predict(self, x):
        return x + 1


@serve.deployment
def add_one(x):
    return x + 1


def test_unknown_method_fails_at_once_with_the_methods() -> None:
    handle = serve.run(Model.bind(), name="m", route_prefix=None)
    assert handle.predict.remote(1).result() == 2
    with pytest.raises(serve.MethodNotFoundError, match=r"'predcit'.*its methods: __call__, predict") as e:
        handle.predcit.remote(1).result(timeout_s=10)
    assert isinstance(e.value, AttributeError)
    with pytest.raises(serve.MethodNotFoundError, match="which is private"):
        handle.options(method_name="_secret").remote().result(timeout_s=10)

    async def from_async():
        with pytest.raises(AttributeError, match="its methods: __call__, predict"):
            await handle.nope.remote()
        return await handle.predict.remote(2)

    assert asyncio.run(from_async()) == 3


def test_unknown_method_of_a_function_deployment() -> None:
    handle = serve.run(add_one.bind(), name="f", route_prefix=None)
    assert handle.remote(1).result() == 2
    with pytest.raises(serve.MethodNotFoundError, match="its methods: __call__"):
        handle.predict.remote(1).result(timeout_s=10)
