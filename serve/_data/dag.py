"""A compiled deployment graph and running it: what travels to the replica that runs it.

`compile_graph` (in `serve._api.graph`) turns the nodes users bind into a plan of `_Call`,
`_Input` and `_InputPart` values in which every deployment is a `DeploymentHandle`.
`DAGHandle.remote(x)`, in the replica holding it, starts every call of the plan at once; a
call whose arguments are other calls' responses gets those responses as they are (the
handle layer resolves top-level ones before routing), so independent branches run in
parallel and nothing waits on user code. A node used by two others runs once per execution.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from .handle import DeploymentHandle
from .outcomes import ignore_outcome

__all__ = ["DAGHandle", "PLAN_NODES", "PlanCall", "PlanInput", "PlanInputPart"]


@dataclass(frozen=True, slots=True, eq=False)
class PlanInput:
    pass


@dataclass(frozen=True, slots=True, eq=False)
class PlanInputPart:
    key: Any
    kind: str  # "item" | "attr"


@dataclass(frozen=True, slots=True, eq=False)
class PlanCall:
    handle: DeploymentHandle
    method: str
    args: tuple
    kwargs: dict


PLAN_NODES = (PlanInput, PlanInputPart, PlanCall)


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
        if isinstance(node, PLAN_NODES):
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

    def _part(self, node: PlanInputPart) -> Any:
        if len(self._args) == 1 and not self._kwargs:
            obj = self._args[0]
            if node.kind == "item" or isinstance(obj, dict):
                return obj[node.key]
            return getattr(obj, node.key)
        if isinstance(node.key, int) and node.kind == "item":
            return self._args[node.key]
        return self._kwargs[node.key]

    def _evaluate(self, node: Any) -> Any:
        if isinstance(node, PlanInput):
            return self._input()
        if isinstance(node, PlanInputPart):
            return self._part(node)
        handle = node.handle if node.method == "__call__" else getattr(node.handle, node.method)
        # Responses as top-level arguments are resolved by the handle layer before routing;
        # inside lists and dicts they travel as responses (`await` them, or actors.get), as in Ray.
        return handle.remote(*self.value(node.args), **self.value(node.kwargs))
