"""serve.dag: building deployment graphs (Ray Serve 1.x `ray.serve.dag`).

    from serve.dag import InputNode
    from serve.drivers import DAGDriver

    with InputNode() as inp:
        model = Model.bind(weight=2)
        out = combine.bind(model.forward.bind(inp[0]), preprocess.bind(inp.text))
    handle = serve.run(DAGDriver.bind(out))
"""

from ._api.graph import CallNode, DAGHandle, InputAttributeNode, InputNode, MethodNode

__all__ = ["CallNode", "DAGHandle", "InputAttributeNode", "InputNode", "MethodNode"]
