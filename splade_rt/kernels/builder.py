"""GraphBuilder: how our kernels add ONNX nodes and initializers to a graph.

The kernel modules import in a line, never in a circle: builder <- screening <- splade_head
(screening writes the int8-screened max-logits step; splade_head writes the head around it),
screening <- native_head (the same bound for the C kernel, _head.c), and builder <- token_head
(bge-m3's head). set_sparse_outputs is the graph interface every fused head ends with.
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


def set_sparse_outputs(model, vocab: int, dense_size: int | None = None):
    """The graph interface of every fused head (manifest.py): top_k in; the dense vector, its top-k and
    its non-zeros out (and the dense embedding, where the head gives one)."""
    from onnx import TensorProto, helper

    from ..manifest import OUT_DENSE, OUT_NZ_INDEX, OUT_NZ_VALUE, OUT_SPARSE, OUT_TOP_INDICES, OUT_TOP_VALUES, TOP_K

    graph = model.graph
    graph.input.append(helper.make_tensor_value_info(TOP_K, TensorProto.INT64, [1]))
    del graph.output[:]
    graph.output.extend([
        helper.make_tensor_value_info(OUT_SPARSE, TensorProto.FLOAT, ["batch", vocab]),
        helper.make_tensor_value_info(OUT_TOP_VALUES, TensorProto.FLOAT, ["batch", "k"]),
        helper.make_tensor_value_info(OUT_TOP_INDICES, TensorProto.INT64, ["batch", "k"]),
        helper.make_tensor_value_info(OUT_NZ_INDEX, TensorProto.INT64, [2, "nnz"]),
        helper.make_tensor_value_info(OUT_NZ_VALUE, TensorProto.FLOAT, ["nnz"]),
    ])
    if dense_size is not None:
        graph.output.append(helper.make_tensor_value_info(OUT_DENSE, TensorProto.FLOAT, ["batch", dense_size]))
    return model  # checked once saved, by path (export.graph.save_graph): no second copy in memory
