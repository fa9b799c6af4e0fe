"""Deployment graphs: the nodes users bind, their compiled plans, and running a plan.

Building (in the driver): `with InputNode() as inp:` marks the graph's input; `inp[0]`,
`inp["key"]` and `inp.attr` pick a part of it. `Model.bind(...)` is a class node;
`node.method.bind(...)` (or `node.bind(...)`, for `__call__`) a call of one of its
methods; `fn.bind(...)` of a function deployment inside a graph is a call of the function.

Deploying (`serve.run`): a graph passed to a deployment's constructor (DAGDriver's, or any
other) is compiled into a `DAGHandle`: a picklable plan in which every deployment is a
`DeploymentHandle` and every node a `_Call`, `_Input` or `_InputPart`. The deployments it
reaches are deployed with the application.

Running (`await dag_handle.remote(x)`, in the replica holding the handle): every call of
the graph is started at once; a call whose arguments are other calls' responses gets those
responses as they are (the handle layer resolves top-level ones before routing), so
independent branches run in parallel and nothing in the graph waits on user code. As in
Ray, responses inside a list or dict argument arrive as responses: `await` them or
`actors.get` them. A node used by two others runs once per execution.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._deployment import Application
from ._handle import DeploymentHandle
from ._router import ignore_outcome

__all__ = ["InputNode", "InputAttributeNode", "MethodNode", "CallNode", "DAGHandle", "is_graph", "compile_graph",
           "check_bind_args"]

_active: list["InputNode"] = []  # the InputNode whose `with` block is open (at most one)


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

    def _graph_children(self) -> list[Any]:
        return [self._app, *self._args, *self._kwargs.values()]

    def __repr__(self) -> str:
        return f"{self._app.deployment.name}.{self._method}.bind(...)"


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


# -- the compiled plan (what travels to the replica) ---------------------------------------
@dataclass(frozen=True, slots=True, eq=False)
class _Input:
    pass


@dataclass(frozen=True, slots=True, eq=False)
class _InputPart:
    key: Any
    kind: str  # "item" | "attr"


@dataclass(frozen=True, slots=True, eq=False)
class _Call:
    handle: DeploymentHandle
    method: str
    args: tuple
    kwargs: dict


_PLAN_NODES = (_Input, _InputPart, _Call)


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
            out: Any = _Input()
        elif isinstance(value, InputAttributeNode):
            inputs.add(id(value._input))
            out = _InputPart(value._key, value._kind)
        elif isinstance(value, CallNode):
            if _is_function(value._app):
                raise TypeError(f"{value!r}: function deployment {value._app.deployment.name} has no methods; "
                                f"call it with {value._app.deployment.name}.bind(...)")
            out = _Call(deploy(value._app), value._method, walk(value._args), walk(value._kwargs))
        elif isinstance(value, MethodNode):
            raise TypeError(f"{value!r} is in the graph unbound: use {value!r}.bind(...)")
        elif isinstance(value, Application) and _is_function(value):
            fn = functions.setdefault(id(value.deployment), Application(value.deployment, (), {}))
            out = _Call(deploy(fn), "__call__", walk(value.args), walk(value.kwargs))
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


# -- running a plan -----------------------------------------------------------------------
class DAGHandle:
    """A compiled deployment graph, as a deployment's constructor receives it.
    `await dag.remote(x)` runs the graph on `x` (from async code)."""

    def __init__(self, plan: Any) -> None:
        self._plan = plan

    def __repr__(self) -> str:
        return "DAGHandle()"

    def remote(self, *args: Any, **kwargs: Any) -> asyncio.Future:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError("DAGHandle.remote() runs the graph on the calling event loop: call it from async "
                               "code (an async method of the deployment)") from None
        run = _Run(args, kwargs)
        value = run.value(self._plan)
        run.retrieve_errors()
        if isinstance(value, asyncio.Future):
            return value
        done = loop.create_future()
        done.set_result(value)
        return done


class _Run:
    """One execution of a plan: each node's value (a plain value or a pending future)."""

    def __init__(self, args: tuple, kwargs: dict) -> None:
        self._args = args
        self._kwargs = kwargs
        self._memo: dict[int, Any] = {}

    def value(self, node: Any) -> Any:
        if isinstance(node, _PLAN_NODES):
            key = id(node)
            if key not in self._memo:
                self._memo[key] = self._evaluate(node)
            return self._memo[key]
        if isinstance(node, tuple):
            return tuple(self.value(v) for v in node)
        if isinstance(node, list):
            return [self.value(v) for v in node]
        if isinstance(node, dict):
            return {k: self.value(v) for k, v in node.items()}
        return node

    def retrieve_errors(self) -> None:
        """A branch that fails after the output already failed is nobody's to await: mark its
        error retrieved, so the replica's log does not fill with 'never retrieved' warnings."""
        for value in self._memo.values():
            if isinstance(value, asyncio.Future):
                value.add_done_callback(ignore_outcome)

    def _input(self) -> Any:
        if len(self._args) == 1 and not self._kwargs:
            return self._args[0]
        if not self._args and not self._kwargs:
            return None
        raise TypeError(f"the graph was called with {len(self._args)} positional and {len(self._kwargs)} keyword "
                        "arguments: its InputNode is used whole, so pass one value (or pick parts with inp[i] / "
                        "inp.key)")

    def _part(self, node: _InputPart) -> Any:
        if len(self._args) == 1 and not self._kwargs:
            obj = self._args[0]
            if node.kind == "item" or isinstance(obj, dict):
                return obj[node.key]
            return getattr(obj, node.key)
        if isinstance(node.key, int) and node.kind == "item":
            return self._args[node.key]
        return self._kwargs[node.key]

    def _evaluate(self, node: Any) -> Any:
        if isinstance(node, _Input):
            return self._input()
        if isinstance(node, _InputPart):
            return self._part(node)
        handle = node.handle if node.method == "__call__" else getattr(node.handle, node.method)
        # Responses as top-level arguments are resolved by the handle layer before routing;
        # inside lists and dicts they travel as responses (`await` them, or actors.get), as in Ray.
        return handle.remote(*self.value(node.args), **self.value(node.kwargs))


