"""The fused SPLADE head, written as ONNX nodes after the exported encoder.

Why by hand: every other exporter pulls [batch, seq, vocab] logits out of the graph to pool them.
Here the pooling is reduced first and the projection is cut in vocab chunks, so the largest live
tensor is one [batch, chunk, seq] slice of the logits:

  * log1p(relu(.)) (and its log1p_relu variant) is monotone, so max over tokens commutes with it:
    max the raw logits, then activate a [batch, vocab] tensor.
  * The decoder bias is constant along tokens, so it is added after the max (exact: rounding of
    x + b is monotone in x).
  * Padding is masked without touching the big tensor: a padded token's hidden state is replaced
    by a real token's of the same row, so its logits repeat ones already in the max. Rows with no
    real token are zeroed at the end, as sentence-transformers' masked pooling gives.
  * Each chunk's weight is a Slice of the tied embedding: the file stores the tied weight once;
    onnxruntime folds the slices into constants when the session loads.
  * log1p is computed as log(u) * x / (u - 1), u = 1 + x (Goldberg), so tiny activations are not
    rounded to zero: the non-zero set matches torch.log1p.
  * The activation runs only on the positive max logits (gathered by their coordinates), not on the
    whole [batch, vocab] tensor: it maps zero to zero and positives to positives, so those
    coordinates are the output's non-zeros, and the dense vector is a scatter of them.

Outputs: the dense [batch, vocab] vector, a TopK with k fed at run time, and the non-zeros in
coordinate form, so a caller on a GPU can bring back only batch x k or nnz numbers.

The "screened" variant (kernels.screening) replaces only the max-logits step.
"""

from __future__ import annotations

import numpy as np

from .builder import GraphBuilder, set_sparse_outputs
from .screening import screened_max_logits

DEFAULT_VOCAB_CHUNK = 2048

_ACTIVATIONS = ("relu", "log1p_relu")


def append_splade_head(
    model,  # onnx.ModelProto whose single output is the MLM-transformed hidden state [batch, seq, hidden]
    decoder_weight: np.ndarray,
    decoder_bias: np.ndarray,
    *,
    activation: str = "relu",
    vocab_chunk: int = DEFAULT_VOCAB_CHUNK,
    screened: bool = False,
    screen_center: np.ndarray | None = None,
):
    """Replace the model's hidden-state output with the SPLADE outputs (see module docstring).
    screen_center: mean hidden state on real text, for the screened variant (kernels.screening)."""
    from onnx import TensorProto, numpy_helper

    from ..manifest import (
        ATTENTION_MASK,
        OUT_NZ_INDEX,
        OUT_NZ_VALUE,
        OUT_SPARSE,
        OUT_TOP_INDICES,
        OUT_TOP_VALUES,
        TOP_K,
    )

    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation {activation!r} not supported (expected one of {_ACTIVATIONS})")
    graph = model.graph
    if len(graph.output) != 1:
        raise ValueError("the encoder graph must have exactly one output (the hidden state)")
    hidden = graph.output[0].name
    vocab = decoder_weight.shape[0]
    weight_name = _find_initializer(graph, decoder_weight)
    if weight_name is None:  # untied decoder: store it
        weight_name = "splade.decoder_weight"
        graph.initializer.append(numpy_helper.from_array(decoder_weight.astype(np.float32), weight_name))

    b = GraphBuilder(graph)
    for i in range(3):
        b.const(f"axis{i}", np.array([i], dtype=np.int64))
    b.const("one", np.array(1.0, dtype=np.float32))
    b.const("zero", np.array(0.0, dtype=np.float32))
    bias = b.const("decoder_bias", decoder_bias.astype(np.float32))

    # Padding: swap each padded token's hidden state for a real token's (first one in the row).
    # The mask is made float first: CUDA's ArgMax/ReduceMax kernels take no int64.
    mask_f = b.node("Cast", [ATTENTION_MASK], "mask_f", to=TensorProto.FLOAT)
    first = b.node("ArgMax", [mask_f], "first_token", axis=1, keepdims=1)  # [B, 1]
    anchor = b.node("GatherND", [hidden, first], "anchor_hidden", batch_dims=1)  # [B, H]
    anchor = b.node("Unsqueeze", [anchor, "splade.axis1"], "anchor_hidden3")  # [B, 1, H]
    real = b.node("Cast", [ATTENTION_MASK], "mask_bool", to=TensorProto.BOOL)
    real = b.node("Unsqueeze", [real, "splade.axis2"], "mask_bool3")  # [B, S, 1]
    states = b.node("Where", [real, hidden, anchor], "pooled_hidden")  # [B, S, H]
    states_t = b.node("Transpose", [states], "pooled_hidden_t", perm=[0, 2, 1])  # [B, H, S]

    if screened:
        top = screened_max_logits(b, states, states_t, weight_name, decoder_weight, decoder_bias, bias,
                                  vocab_chunk, screen_center)
    else:
        top = b.node("Add", [chunked_max_logits(b, states_t, weight_name, vocab, vocab_chunk), bias],
                     "max_logits_biased")
    # Rows without any real token pool to zero, as masked pooling in torch gives.
    any_real = b.node("ReduceMax", [mask_f], "any_token", axes=[1], keepdims=1)  # [B, 1]
    top = b.node("Mul", [top, any_real], "max_logits_masked")
    # The activation runs on the positive entries only (a few hundred of the batch x vocab): it keeps
    # zero at zero and the positives positive, so their coordinates are the output's non-zeros.
    nz = b.node("NonZero", [b.node("Greater", [top, "splade.zero"], "active")], OUT_NZ_INDEX)  # [2, nnz], row-major
    nz_t = b.node("Transpose", [nz], "nonzero_index_t", perm=[1, 0])
    value = _log1p(b, b.node("GatherND", [top, nz_t], "active_logits"), "log1p")
    if activation == "log1p_relu":
        value = _log1p(b, value, "log1p2")
    b.node("Identity", [value], OUT_NZ_VALUE)
    zeros = b.node("ConstantOfShape", [b.node("Shape", [top], "sparse_shape")], "sparse_zeros")
    sparse = b.node("ScatterND", [zeros, nz_t, value], OUT_SPARSE)
    b.multi("TopK", [sparse, TOP_K], [OUT_TOP_VALUES, OUT_TOP_INDICES], axis=-1, largest=1, sorted=1)
    b.commit()
    return set_sparse_outputs(model, vocab)


def chunked_max_logits(b: GraphBuilder, states_t: str, weight_name: str, vocab: int, chunk: int) -> str:
    """max over tokens of W @ states^T, one [B, chunk, S] slice of the logits alive at a time.

    The logits are laid out [B, vocab, seq] so the max runs over the innermost axis: onnxruntime
    reduces a contiguous last axis several times faster than a middle one.
    """
    maxima = []
    for start in range(0, vocab, chunk):
        stop = min(start + chunk, vocab)
        tag = f"{start}_{stop}"
        lo = b.const(f"start_{tag}", np.array([start], np.int64))
        hi = b.const(f"stop_{tag}", np.array([stop], np.int64))
        rows = b.node("Slice", [weight_name, lo, hi, "splade.axis0"], f"w_{tag}")  # [C, H]
        logits = b.node("MatMul", [rows, states_t], f"logits_{tag}")  # [B, C, S]
        maxima.append(b.node("ReduceMax", [logits], f"max_{tag}", axes=[2], keepdims=0))  # [B, C]
    return b.node("Concat", maxima, "max_logits", axis=1) if len(maxima) > 1 else maxima[0]


def _log1p(b: GraphBuilder, x: str, tag: str) -> str:
    """log1p without rounding tiny x to zero: log(u) * x / (u - 1) where u = 1 + x != 1, else x."""
    u = b.node("Add", [x, "splade.one"], f"{tag}_u")
    d = b.node("Sub", [u, "splade.one"], f"{tag}_d")
    exact = b.node("Equal", [d, "splade.zero"], f"{tag}_tiny")
    ratio = b.node("Div", [b.node("Mul", [b.node("Log", [u], f"{tag}_log"), x], f"{tag}_num"), d], f"{tag}_ratio")
    return b.node("Where", [exact, x, ratio], tag)


def _find_initializer(graph, array: np.ndarray) -> str | None:
    from onnx import numpy_helper

    for init in graph.initializer:
        if tuple(init.dims) == array.shape and np.array_equal(numpy_helper.to_array(init), array):
            return init.name
    return None
