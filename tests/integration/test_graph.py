"""Deployment graphs: InputNode, method and function nodes, DAGDriver over handles and HTTP,
the Ray Serve 1.x key-concepts graph ported by the porting rule, and misuse errors."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from pydantic import BaseModel

import actors
import serve
from serve.dag import InputNode
from serve.drivers import DAGDriver
from serve.http_adapters import json_request, starlette_request

from ..conftest import free_port, wait_until

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def http(cluster):
    port = free_port()
    serve.start(http_options={"port": port})
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        yield client
    serve.shutdown()


def _wait_route(client: httpx.Client, prefix: str) -> None:
    wait_until(lambda: prefix in client.get("/-/routes").json(), timeout=30, what=f"route {prefix} at the proxy")


# -- Ray Serve 1.x key concepts, "Deployment Graph": imports renamed, nothing else ----------
@serve.deployment
def preprocess(inp: int):
    return inp + 1


@serve.deployment
class Model:
    def __init__(self, increment: int):
        self.increment = increment

    def __call__(self, inp: int):
        return inp + self.increment


def test_key_concepts_deployment_graph_over_handle_and_http(http) -> None:
    with InputNode() as inp:
        model = Model.bind(increment=2)
        output = model.bind(preprocess.bind(inp))
        serve_dag = DAGDriver.bind(output)

    handle = serve.run(serve_dag)
    assert actors.get(handle.predict.remote(1)) == 4
    # the same graph over HTTP (the driver's default adapter reads a JSON body)
    _wait_route(http, "/")
    assert http.post("/", json=1).json() == 4
    assert http.request("GET", "/", content=b"10").json() == 13
    assert set(serve.list_deployments()) == {"DAGDriver", "Model", "preprocess"}


# -- Ray Serve 1.x "Deployment Graph" over HTTP with a pydantic adapter, ported the same way --
class ModelInputData(BaseModel):
    model_input1: int
    model_input2: str


@serve.deployment
class InputModel:
    def __init__(self, weight):
        self.weight = weight

    def forward(self, input: ModelInputData):
        return input.model_input1 + len(input.model_input2) + self.weight


@serve.deployment
def combine_refs(value_refs):
    return sum(actors.get(value_refs))


def test_dag_over_http_with_a_pydantic_adapter(http) -> None:
    with InputNode() as user_input:
        model1 = InputModel.bind(0)
        model2 = InputModel.bind(1)
        output1 = model1.forward.bind(user_input)
        output2 = model2.forward.bind(user_input)
        dag = combine_refs.bind([output1, output2])
        serve_dag = DAGDriver.options(route_prefix="/my-dag").bind(dag, http_adapter=ModelInputData)

    dag_handle = serve.run(serve_dag)
    assert actors.get(dag_handle.predict.remote(ModelInputData(model_input1=1, model_input2="test"))) == 11
    _wait_route(http, "/my-dag")
    assert http.post("/my-dag", json={"model_input1": 1, "model_input2": "test"}).text == "11"
    invalid = http.post("/my-dag", json={"model_input1": "one"})
    assert invalid.status_code == 400 and "model_input2" in invalid.json()["error"]
    # the deployment bound twice is two deployments (Ray names the second Name_1)
    assert set(serve.list_deployments()) == {"DAGDriver", "InputModel", "InputModel_1", "combine_refs"}


# -- input parts, methods, functions, a shared node, parallel branches ----------------------
@serve.deployment
class Weighted:
    def __init__(self, weight):
        self.weight = weight
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x * self.weight

    def count(self):
        return self.calls


@serve.deployment
def combine(a, b, extra=0):
    return a + b + extra


@serve.deployment
async def total(values, scale):
    assert all(isinstance(v, serve.DeploymentResponse) for v in values), values  # in a list: responses, as in Ray
    return sum(await asyncio.gather(*values)) * scale["factor"]


def test_input_parts_methods_functions_and_a_node_used_twice(cluster) -> None:
    with InputNode() as inp:
        m1 = Weighted.options(name="times2").bind(2)
        m2 = Weighted.options(name="times10").bind(10)
        shared = m1.forward.bind(inp[0])  # used by two nodes below: runs once per request
        left = combine.bind(shared, m2.forward.bind(inp.x))
        right = combine.bind(shared, inp["y"], extra=100)  # the same function: one deployment
        dag = total.bind([left, right], {"factor": inp.factor})
    handle = serve.run(DAGDriver.bind(dag))
    # inp[0] is the first positional argument, inp.x / inp["y"] keyword arguments
    assert handle.predict.remote(1, x=3, y=5, factor=2).result() == ((2 + 30) + (2 + 5 + 100)) * 2
    assert serve.get_deployment("times2").get_handle().count.remote().result() == 1
    assert serve.get_deployment("times10").get_handle().count.remote().result() == 1
    assert set(serve.list_deployments()) == {"DAGDriver", "times2", "times10", "combine", "total"}
    serve.shutdown()

    with InputNode() as inp:  # one value: parts are picked from it (a dict's keys as attributes too)
        dag = combine.bind(Weighted.bind(3).forward.bind(inp["a"]), inp.b)
    handle = serve.run(DAGDriver.bind(dag))
    assert handle.predict.remote({"a": 2, "b": 1}).result() == 7
    assert handle.remote({"a": 1, "b": 0}).result() == 3  # __call__ from a handle is predict


@actors.remote
class Rendezvous:
    """Lets a call finish only once `n` calls have arrived (a deadlock if they run in turn)."""

    def __init__(self, n):
        self.n = n
        self.arrived = 0
        self.all_here = asyncio.Event()

    async def arrive(self):
        self.arrived += 1
        if self.arrived >= self.n:
            self.all_here.set()
        await asyncio.wait_for(self.all_here.wait(), 60)


@serve.deployment
class Branch:
    def __init__(self, rendezvous, tag):
        self.rendezvous = rendezvous
        self.tag = tag

    async def run(self, x):
        await self.rendezvous.arrive.remote()
        return f"{self.tag}{x}"


@serve.deployment
def join(*parts):
    return "+".join(parts)


def test_independent_branches_run_at_the_same_time(cluster) -> None:
    meet = Rendezvous.remote(2)
    with InputNode() as inp:
        a = Branch.options(name="branch_a").bind(meet, "a").run.bind(inp)
        b = Branch.options(name="branch_b").bind(meet, "b").run.bind(inp)
        dag = join.bind(a, b)
    handle = serve.run(DAGDriver.bind(dag))
    assert handle.predict.remote(7).result(timeout_s=90) == "a7+b7"
    serve.shutdown()


@serve.deployment
class Failing:
    def check(self, x):
        if x < 0:
            raise ValueError(f"negative input {x}")
        return x


def test_an_error_in_the_graph_reaches_the_caller_and_http_gets_500(http) -> None:
    with InputNode() as inp:
        dag = combine.bind(Failing.bind().check.bind(inp), 1)
    handle = serve.run(DAGDriver.bind(dag))
    assert handle.predict.remote(1).result() == 2
    with pytest.raises(ValueError, match="negative input -5"):
        handle.predict.remote(-5).result()
    _wait_route(http, "/")
    assert http.post("/", json=-5).status_code == 500
    assert http.post("/", json=5).json() == 6  # the driver goes on


# -- HTTP: adapters, several routes ------------------------------------------------------------
def body_length(request) -> int:
    return len(request.query_params.get("text", ""))


@serve.deployment
def describe(value):
    return {"got": value}


@serve.deployment
async def request_info(request):
    return {"method": request.method, "body": (await request.body()).decode()}


def test_http_adapters_and_routes(http) -> None:
    with InputNode() as inp:
        as_json = describe.bind(inp)
    with InputNode() as inp:
        length = describe.options(name="describe_len").bind(inp)
    with InputNode() as inp:
        raw = request_info.bind(inp)
    serve.run(DAGDriver.bind(as_json, http_adapter=json_request), name="json")
    _wait_route(http, "/")
    assert http.post("/", json={"k": [1, 2]}).json() == {"got": {"k": [1, 2]}}
    assert http.get("/?a=1").json() == {"got": {"a": "1"}}  # no body: the query parameters
    bad = http.post("/", content=b"{not json")
    assert bad.status_code == 400 and "not JSON" in bad.json()["error"]

    handle = serve.run(DAGDriver.options(name="lengths", route_prefix="/len").bind(
        length, http_adapter="tests.integration.test_graph.body_length"), name="lengths")
    _wait_route(http, "/len")
    assert http.get("/len", params={"text": "hello"}).json() == {"got": 5}
    assert handle.predict.remote("abc").result() == {"got": "abc"}

    routes = DAGDriver.options(name="routed", route_prefix="/r").bind({"/describe": as_json, "/raw": raw},
                                                                      http_adapter=starlette_request)
    handle = serve.run(routes, name="routed")
    _wait_route(http, "/r")
    assert http.post("/r/raw", content=b"payload").json() == {"method": "POST", "body": "payload"}
    assert http.get("/r/nothing").status_code == 404
    assert handle.predict_with_route.remote("/describe", 3).result() == {"got": 3}
    with pytest.raises(KeyError, match="no graph at '/elsewhere'"):
        handle.predict_with_route.remote("/elsewhere", 3).result()


# -- a graph handed to any deployment's constructor -----------------------------------------
@serve.deployment
class Ingress:
    def __init__(self, dag):
        self.dag = dag

    async def __call__(self, x):
        return {"result": await self.dag.remote(x)}


def test_a_graph_passed_to_a_deployment_arrives_as_a_dag_handle(cluster) -> None:
    with InputNode() as inp:
        dag = combine.bind(preprocess.bind(inp), Weighted.bind(5).forward.bind(inp))
    handle = serve.run(Ingress.bind(dag))
    assert handle.remote(2).result() == {"result": 3 + 10}
    serve.shutdown()


# -- misuse fails at once, in the driver program ------------------------------------------
def test_misuse_errors() -> None:
    with InputNode() as inp:
        node = Weighted.bind(1).forward.bind(inp)
    with pytest.raises(RuntimeError, match="only inside its `with InputNode"):
        inp[0]
    with pytest.raises(RuntimeError, match="only inside its `with InputNode"):
        _ = inp.x
    with pytest.raises(RuntimeError, match="only inside its `with InputNode"):
        preprocess.bind(inp)
    with pytest.raises(RuntimeError, match="already used"):
        with inp:
            pass
    with InputNode(), pytest.raises(RuntimeError, match="cannot be nested"):
        with InputNode():
            pass
    with pytest.raises(TypeError, match="must be a deployment graph"):
        DAGDriver.bind(42)
    with pytest.raises(TypeError, match="must be a deployment graph"):
        DAGDriver.bind(lambda x: x)
    with pytest.raises(TypeError, match="class node"):
        DAGDriver.bind(Weighted.bind(1))
    with pytest.raises(TypeError, match="takes the graph"):
        DAGDriver.bind()
    with pytest.raises(ValueError, match="starting with '/'"):
        DAGDriver.bind({"nope": node})
    with pytest.raises(TypeError, match="http_adapter must be"):
        DAGDriver.bind(node, http_adapter=3)
    with pytest.raises(TypeError, match="needs an ingress"):
        serve.run(node)
    with pytest.raises(TypeError, match="graph node, not a handle"):
        Weighted.bind(1).forward.remote(1)
    with InputNode() as inp, pytest.raises(TypeError, match="unbound"):
        combine.bind(Weighted.bind(1).forward, inp)
    with InputNode() as inp, pytest.raises(TypeError, match="has no methods"):
        preprocess.bind(inp).forward.bind(inp)


@serve.deployment
class Tagged:
    def __init__(self, tag):
        self.tag = tag

    def __call__(self, *_):
        return self.tag


@serve.deployment
class Both:
    def __init__(self, first, second, again):
        self.handles = (first, second, again)

    async def __call__(self):
        return [await h.remote() for h in self.handles]


def test_a_deployment_bound_twice_is_two_deployments_and_a_node_passed_twice_is_one(cluster) -> None:
    one = Tagged.bind("one")
    handle = serve.run(Both.bind(one, Tagged.bind("two"), one))
    assert handle.remote().result() == ["one", "two", "one"]
    assert set(serve.list_deployments()) == {"Both", "Tagged", "Tagged_1"}
    serve.shutdown()


def test_a_graph_has_one_input_node() -> None:
    from serve._api.application import app_targets  # builds the targets without deploying anything

    with InputNode() as first:
        a = preprocess.bind(first)
    with InputNode() as second:
        b = combine.bind(a, second)
    with pytest.raises(ValueError, match="one InputNode"):
        app_targets(DAGDriver.bind(b), "two_inputs")
    _, targets = app_targets(DAGDriver.bind(a), "one_input")
    assert sorted(t.name for t in targets) == ["DAGDriver", "preprocess"]
