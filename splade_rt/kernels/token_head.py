"""The fused token-max head (bge-m3's lexical weights), written as ONNX nodes after the encoder.

FlagEmbedding computes a weight per token, relu(w . h + b) on its last hidden state h, then in
Python keeps, per token id, the largest weight of its occurrences, dropping the special tokens
(cls, eos, pad, unk). Here that runs in the graph, so the output is the same interface as the
SPLADE head's (dense [batch, vocab], top-k, non-zeros) and the runtime needs nothing new:

  * special tokens and padding: a [vocab] table of 0/1, gathered by the ids, times the mask;
  * the max per id without a scatter-max (ScatterND's max reduction needs opset 18, and
    ScatterND with repeated indices is undefined): a [batch, seq, seq] equality of the ids gives
    each token the max over its id's occurrences, and only each id's first occurrence keeps it, so
    the scatter into [batch, vocab] has no repeated coordinate. The [seq, seq] step is small beside
    the encoder at search lengths (256 x 256 per text); at 8,192 tokens it is 64M entries per text.
  * the dense vector: the first token's state, L2-normalized (torch.nn.functional.normalize's eps).
"""

from __future__ import annotations

import numpy as np

from .builder import GraphBuilder, set_sparse_outputs

NORMALIZE_EPS = 1e-12  # torch.nn.functional.normalize's default, which FlagEmbedding uses


def append_token_head(model, weight: np.ndarray, bias: np.ndarray, *, vocab: int, dropped: list[int],
                      dense: bool = True):
    """Replace the encoder's hidden-state output ([batch, seq, hidden]) with the token-max outputs.
    weight [hidden], bias [1]: the Linear(hidden, 1); dropped: token ids that never get a weight."""
    from onnx import TensorProto

    from .. import manifest as io  # the graph interface's names

    graph = model.graph
    if len(graph.output) != 1:
        raise ValueError("the encoder graph must have exactly one output (the hidden state)")
    hidden = graph.output[0].name
    keep_table = np.ones(vocab, np.float32)
    keep_table[[i for i in dropped if 0 <= i < vocab]] = 0.0

    b = GraphBuilder(graph)
    b.const("tok.axis1", np.array([1], np.int64))
    b.const("tok.axis2", np.array([2], np.int64))
    b.const("tok.zero", np.array(0.0, np.float32))
    w = b.const("tok.weight", weight.reshape(-1, 1).astype(np.float32))  # [H, 1]
    bias_c = b.const("tok.bias", bias.reshape(1).astype(np.float32))
    keep = b.const("tok.keep", keep_table)

    # relu(h . w + b) per token, zero for padding and the dropped ids: [B, S]
    logit = b.node("Add", [b.node("MatMul", [hidden, w], "tok_logit3"), bias_c], "tok_logit3b")  # [B, S, 1]
    logit = b.node("Squeeze", [logit, "splade.tok.axis2"], "tok_logit")
    mask_f = b.node("Cast", [io.ATTENTION_MASK], "tok_mask_f", to=TensorProto.FLOAT)
    kept = b.node("Mul", [b.node("Gather", [keep, io.INPUT_IDS], "tok_keep_ids"), mask_f], "tok_kept")
    weights = b.node("Mul", [b.node("Relu", [logit], "tok_relu"), kept], "tok_weights")

    # the max over each id's occurrences, kept at its first occurrence only: [B, S]; same: [B, S, S]
    same = b.node("Equal", [b.node("Unsqueeze", [io.INPUT_IDS, "splade.tok.axis2"], "tok_ids_col"),
                            b.node("Unsqueeze", [io.INPUT_IDS, "splade.tok.axis1"], "tok_ids_row")], "tok_same")
    others = b.node("Unsqueeze", [weights, "splade.tok.axis1"], "tok_weights_row")  # [B, 1, S]: token t's weight
    best = b.node("ReduceMax", [b.node("Where", [same, others, "splade.tok.zero"], "tok_same_w")], "tok_best",
                  axes=[2], keepdims=0)
    seq = b.node("Shape", [io.INPUT_IDS], "tok_shape")
    positions = b.node("Range", [b.const("tok.i0", np.array(0, np.int64)),
                                 b.node("Gather", [seq, b.const("tok.i1", np.array(1, np.int64))], "tok_seq"),
                                 b.const("tok.step", np.array(1, np.int64))], "tok_positions")  # [S]
    earlier = b.node("Less", [b.node("Unsqueeze", [positions, b.const("tok.axis0", np.array([0], np.int64))],
                                     "tok_pos_row"),
                              b.node("Unsqueeze", [positions, "splade.tok.axis1"], "tok_pos_col")],
                     "tok_earlier")  # [S, S]: t < s
    repeat = b.node("And", [same, earlier], "tok_repeat")  # [B, S, S]: token t, earlier, has s's id
    seen = b.node("ReduceMax", [b.node("Cast", [repeat], "tok_repeat_f", to=TensorProto.FLOAT)], "tok_seen",
                  axes=[2], keepdims=0)
    first = b.node("Sub", [b.const("tok.one", np.array(1.0, np.float32)), seen], "tok_first")
    value = b.node("Mul", [best, first], "tok_value")  # [B, S]

    # scatter the positive ones into [B, vocab]: their (row, id) coordinates are distinct
    where = b.node("NonZero", [b.node("Greater", [value, "splade.tok.zero"], "tok_positive")], "tok_where")
    where_t = b.node("Transpose", [where], "tok_where_t", perm=[1, 0])  # [n, 2] (row, position)
    ids_at = b.node("GatherND", [io.INPUT_IDS, where_t], "tok_ids_at")  # [n]
    rows = b.node("Gather", [where, b.const("tok.row", np.array(0, np.int64))], "tok_rows")  # [n]
    coords = b.node("Concat", [b.node("Unsqueeze", [rows, "splade.tok.axis1"], "tok_rows2"),
                               b.node("Unsqueeze", [ids_at, "splade.tok.axis1"], "tok_ids2")], "tok_coords", axis=1)
    shape = b.node("Concat", [b.node("Slice", [b.node("Shape", [io.INPUT_IDS], "tok_shape2"),
                                               b.const("tok.s0", np.array([0], np.int64)),
                                               b.const("tok.s1", np.array([1], np.int64))], "tok_batch"),
                              b.const("tok.vocab", np.array([vocab], np.int64))], "tok_out_shape", axis=0)
    zeros = b.node("ConstantOfShape", [shape], "tok_zeros")
    sparse = b.node("ScatterND", [zeros, coords, b.node("GatherND", [value, where_t], "tok_values")], io.OUT_SPARSE)
    nz = b.node("NonZero", [b.node("Greater", [sparse, "splade.tok.zero"], "tok_active")], io.OUT_NZ_INDEX)
    b.node("GatherND", [sparse, b.node("Transpose", [nz], "tok_nz_t", perm=[1, 0])], io.OUT_NZ_VALUE)
    b.multi("TopK", [sparse, io.TOP_K], [io.OUT_TOP_VALUES, io.OUT_TOP_INDICES], axis=-1, largest=1, sorted=1)
    hidden_size = weight.size
    if dense:
        cls = b.node("Gather", [hidden, b.const("tok.cls", np.array(0, np.int64))], "tok_cls", axis=1)  # [B, H]
        norm = b.node("ReduceL2", [cls], "tok_norm", axes=[1], keepdims=1)
        norm = b.node("Max", [norm, b.const("tok.eps", np.array(NORMALIZE_EPS, np.float32))], "tok_norm_eps")
        b.node("Div", [cls, norm], io.OUT_DENSE)
    b.commit()
    return set_sparse_outputs(model, vocab, dense_size=hidden_size if dense else None)
