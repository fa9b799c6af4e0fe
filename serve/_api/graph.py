"""Deployment graphs as users build them: bound deployments and the nodes between them.

`Model.bind(...)` is an `Application` (a class node, or a call of a function deployment);
`with InputNode() as inp:` marks a graph's input, and `inp[0]`, `inp["key"]`, `inp.attr`
pick a part of it; `node.method.bind(...)` (or `node.bind(...)` / `node.__call__.bind(...)`,
for `__call__`) is a call
of one of a class node's methods.

Deploying (`serve.run`): a graph passed to a deployment's constructor (DAGDriver's, or any
other) is compiled by `compile_graph` into a `DAGHandle` (`serve._data.dag`): the plan that
runs in the replica. The deployments it reaches are deployed with the application. As in
Ray, responses inside a list or dict argument arrive as responses: `await` them or
`actors.get` them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .._data.dag import DAGHandle, PlanCall, PlanInput, PlanInputPart
from .._data.handle import DeploymentHandle

__all__ = ["Application", "InputNode", "InputAttributeNode", "MethodNode", "CallNode", "DAGHandle", "is_graph", "compile_graph",
           "check_bind_args"]

_active: list["InputNode"] = []  # the InputNode whose `with` block is open (at most one)


class Application:
    """A bound deployment: the deployment plus its constructor arguments (a graph node)."""

    def __init__(self, deployment: Any, args: tuple, kwargs: dict) -> None:
        self.deployment = deployment  # a serve Deployment
        self.args = args
        self.kwargs = kwargs

    def __repr__(self) -> str:
        return f"Application({self.deployment.name})"

    # -- deployment graphs: `node.method.bind(...)`, `node.bind(...)` or `node.__call__.bind(...)`
    def __getattr__(self, name: str) -> "MethodNode":
        if name.startswith("_") and name != "__call__":
            raise AttributeError(name)
        return MethodNode(self, name)

    def bind(self, *args: Any, **kwargs: Any) -> "CallNode":
        """A graph call of the node's `__call__` (`node.bind(inp)`)."""
        cls = self.deployment.func_or_class
        if inspect.isclass(cls) and not _defines_call(cls):
            name = self.deployment.name
            raise TypeError(f"{name}.bind(...).bind(...): {name} has no __call__ to call in a graph, and a bound "
                            f"deployment is bound once; call one of its methods, {name}.bind(...).method.bind(inp), "
                            f"or pass {name}.bind(...) to serve.run")
        return MethodNode(self, "__call__").bind(*args, **kwargs)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        name = self.deployment.name
        raise TypeError(f"{name}.bind(...) is an application (a bound deployment), not a handle: "
                        f"handle = serve.run({name}.bind(...)) returns its handle; then handle.remote(...)")


class InputNode:
    """The input of a deployment graph: `with InputNode() as inp: ...`.

    Called with one argument (`handle.predict.remote(x)`, an HTTP body), `inp` is that
    value and `inp[k]` / `inp.attr` pick from it (a dict's keys work as attributes too).
    Called with several (`remote(1, 2, key=3)`), `inp[0]` is the first positional
    argument and `inp["key"]` / `inp.key` a keyword argument."""

    def __init__(self) -> None:
        self._entered = False
        self._closed = False

    def __enter__(self) -> "InputNode":
        if _active:
            raise RuntimeError("`with InputNode()` blocks cannot be nested: a deployment graph has one InputNode")
        if self._closed or self._entered:
            raise RuntimeError("this InputNode was already used for a graph; make a new one")
        self._entered = True
        _active.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        _active.remove(self)
        self._entered = False
        self._closed = True

    def _check_open(self, what: str) -> None:
        if not self._entered:
            raise RuntimeError(f"{what}: an InputNode is used only inside its `with InputNode() as inp:` block "
                               "(build the graph there; DAGDriver.bind(graph) may come after)")

    def __getitem__(self, key: Any) -> "InputAttributeNode":
        self._check_open(f"inp[{key!r}]")
        return InputAttributeNode(self, key, "item")

    def __getattr__(self, name: str) -> "InputAttributeNode":
        if name.startswith("_"):
            raise AttributeError(name)
        self._check_open(f"inp.{name}")
        return InputAttributeNode(self, name, "attr")

    def __repr__(self) -> str:
        return "InputNode()"


class InputAttributeNode:
    """A part of the graph's input: `inp[key]` or `inp.attr`."""

    def __init__(self, input_node: InputNode, key: Any, kind: str) -> None:
        self._input = input_node
        self._key = key
        self._kind = kind

    def __repr__(self) -> str:
        return f"inp[{self._key!r}]" if self._kind == "item" else f"inp.{self._key}"


class MethodNode:
    """`class_node.method`: bind it to arguments to make a call node."""

    def __init__(self, app: Application, method: str) -> None:
        self._app = app
        self._method = method

    def bind(self, *args: Any, **kwargs: Any) -> "CallNode":
        if _is_function(self._app):
            name = self._app.deployment.name
            raise TypeError(f"{self!r}.bind(): function deployment {name} has no methods and its node is already "
                            f"a call; bind the function itself, {name}.bind(...)")
        check_bind_args(args, kwargs)
        return CallNode(self._app, self._method, args, kwargs)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{self!r} is a graph node, not a handle: use .bind(...) to build a graph, and call the "
                        "handle serve.run returns")

    def __repr__(self) -> str:
        return f"{self._app.deployment.name}.{self._method}"


class CallNode:
    """A call of a class deployment's method in a graph (`model.predict.bind(inp)`)."""

    def __init__(self, app: Application, method: str, args: tuple, kwargs: dict) -> None:
        self._app = app
        self._method = method
        self._args = args
        self._kwargs = kwargs

    def graph_children(self) -> list[Any]:
        return [self._app, *self._args, *self._kwargs.values()]

    def __repr__(self) -> str:
        return f"{self._app.deployment.name}.{self._method}.bind(...)"


def _defines_call(cls: type) -> bool:
    return any("__call__" in vars(k) for k in cls.__mro__ if k is not object)


def _is_function(app: Application) -> bool:
    return inspect.isfunction(app.deployment.func_or_class)


def _is_node(value: Any) -> bool:
    return isinstance(value, (InputNode, InputAttributeNode, CallNode, MethodNode))


def _contains_node(value: Any) -> bool:
    if _is_node(value):
        return True
    if isinstance(value, Application):
        return _is_function(value) and _contains_node((value.args, value.kwargs))
    if isinstance(value, (list, tuple)):
        return any(_contains_node(v) for v in value)
    if isinstance(value, dict):
        return any(_contains_node(v) for v in value.values())
    return False


def is_graph(value: Any) -> bool:
    """Whether `value` (a bind argument) is a deployment graph rather than a plain value."""
    return _is_node(value) or (isinstance(value, Application) and _contains_node(value))


def check_bind_args(args: tuple, kwargs: dict) -> None:
    """Fail `.bind(...)` of a graph node whose InputNode is not open."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, InputNode):
            value._check_open("binding the InputNode")
        elif isinstance(value, MethodNode):
            raise TypeError(f"{value!r} was passed to .bind() unbound: bind it to its arguments, "
                            f"{value!r}.bind(...)")


def compile_graph(root: Any, deploy: Callable[[Application], DeploymentHandle]) -> "DAGHandle":
    """The plan of the graph `root`; `deploy(app)` adds a deployment to the application and
    returns its handle (class nodes and function deployments)."""
    if isinstance(root, Application) and not _is_function(root):
        raise TypeError(f"a class node ({root.deployment.name}.bind(...)) is not a graph output: call one of its "
                        f"methods, e.g. {root.deployment.name}.bind(...).method.bind(inp), or node.bind(inp) "
                        "for __call__")
    if isinstance(root, MethodNode):
        raise TypeError(f"{root!r} is not bound: use {root!r}.bind(...) as the graph output")
    compiled: dict[int, Any] = {}
    inputs: set[int] = set()
    functions: dict[int, Application] = {}  # one deployment per function, however many calls of it

    def walk(value: Any) -> Any:
        key = id(value)
        if key in compiled:
            return compiled[key]
        if isinstance(value, InputNode):
            inputs.add(id(value))
            out: Any = PlanInput()
        elif isinstance(value, InputAttributeNode):
            inputs.add(id(value._input))
            out = PlanInputPart(value._key, value._kind)
        elif isinstance(value, CallNode):
            if _is_function(value._app):
                raise TypeError(f"{value!r}: function deployment {value._app.deployment.name} has no methods; "
                                f"call it with {value._app.deployment.name}.bind(...)")
            out = PlanCall(deploy(value._app), value._method, walk(value._args), walk(value._kwargs))
        elif isinstance(value, MethodNode):
            raise TypeError(f"{value!r} is in the graph unbound: use {value!r}.bind(...)")
        elif isinstance(value, Application) and _is_function(value):
            fn = functions.setdefault(id(value.deployment), Application(value.deployment, (), {}))
            out = PlanCall(deploy(fn), "__call__", walk(value.args), walk(value.kwargs))
        elif isinstance(value, Application):
            out = deploy(value)  # a class node as a value: its handle
        elif isinstance(value, tuple):
            return tuple(walk(v) for v in value)
        elif isinstance(value, list):
            return [walk(v) for v in value]
        elif isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        else:
            return value
        compiled[key] = out
        return out

    plan = walk(root)
    if len(inputs) > 1:
        raise ValueError("a deployment graph has one InputNode; this one uses several")
    return DAGHandle(plan)
