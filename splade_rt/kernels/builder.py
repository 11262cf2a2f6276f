"""GraphBuilder: how our kernels add ONNX nodes and initializers to a graph.

The kernel modules import in a line, never in a circle: builder <- screening <- splade_head
(screening writes the int8-screened max-logits step; splade_head writes the head around it), and
screening <- native_head (the same bound for the C kernel, _head.c).
"""

from __future__ import annotations

import numpy as np


class GraphBuilder:
    """Appends named nodes and initializers under the 'splade/' prefix."""

    def __init__(self, graph) -> None:
        self.graph = graph
        self.nodes: list = []
        self.inits: list = []

    def node(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [output], name=f"splade/{output}", **attrs))
        return output

    def multi(self, op: str, inputs: list[str], outputs: list[str], **attrs) -> list[str]:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, outputs, name=f"splade/{outputs[0]}", **attrs))
        return outputs

    def const(self, name: str, value) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.asarray(value), f"splade.{name}"))
        return f"splade.{name}"

    def commit(self) -> None:
        self.graph.node.extend(self.nodes)
        self.graph.initializer.extend(self.inits)
