"""Exact SPLADE at int8 cost: certified screening of the vocab projection.

Of the 30,522 logits per token only a handful are positive, and only positive ones survive relu.
So the projection runs twice, cheaply:

1. Screen: int8 x uint8 (MatMulInteger, VNNI/AVX2 kernels) over the whole vocab, reduced first
   (max over the sequence's tokens, in int32) to [vocab], one sequence at a time. With the quantization steps
   known, each approximate max gets a rigorous upper bound on the true fp32 max logit:

     h.w - deq(h).deq(w) = h.dw + dh.w - dh.dw
     |.| <= |h|_1 |dw|_inf + |dh|_inf |w|_1 + |dh|_inf |dw|_1

   with |h|_1 and dh measured in the graph (per sequence: the max over its tokens) and dw, |w|_1
   from the export. A relative slack covers fp32 rounding in the exact pass and in the bound itself.
2. Exact: vocab entries whose bound is > 0 (about 2.5x the positives: ~750 of 30,522 for a
   passage) are gathered and recomputed in fp32 over the sequence's tokens; the rest are provably
   <= 0, i.e. 0 after relu. The result is the fp32 result, not an approximation of it.

Everything is standard ONNX, so it runs wherever onnxruntime runs; the fp32 chunked graph stays
the fallback (and the GPU path, where fp16 is already cheap).
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from .splade_head import GraphBuilder

SLACK_REL = 1e-4  # x (|h|_1 |w|_inf + |b|): far above fp32 dot-product rounding (~H * 2^-24)
SLACK_ABS = 1e-6
SCREEN_CHUNK = 2048  # [seq, chunk] int32 tiles of one row: about L2-sized for passage lengths


def quantize_rows(weight: np.ndarray) -> dict[str, np.ndarray]:
    """Symmetric per-vocab-row int8 weights and the row statistics the bound needs (rounded up)."""
    w = weight.astype(np.float64)
    winf = np.abs(w).max(axis=1)
    # the float32 scale is what the graph dequantizes with, so the error is measured against it
    scale = np.where(winf > 0, winf / 127.0, 1.0).astype(np.float32).astype(np.float64)
    q = np.clip(np.rint(w / scale[:, None]), -127, 127)
    dw = np.abs(w - q * scale[:, None])

    def up(x: np.ndarray) -> np.ndarray:  # float32 values never below the float64 statistic
        x32 = x.astype(np.float32)
        return np.where(x32.astype(np.float64) < x, np.nextafter(x32, np.float32(np.inf)), x32).astype(np.float32)

    return {
        "wq": q.astype(np.int8).T.copy(),  # [H, V]
        "scale": scale.astype(np.float32),  # exact float32 used for dequantization below
        "dw_inf": up(dw.max(axis=1)),
        "w1_plus_dw1": up(np.abs(w).sum(axis=1) + dw.sum(axis=1)),
        "w_inf": up(winf),
    }


def screened_max_logits(b: GraphBuilder, states: str, weight_name: str, weight: np.ndarray, bias: np.ndarray,
                        chunk: int = SCREEN_CHUNK) -> str:
    """Biased max logits [B, V], exact for every entry that can be positive; the rest are 0.

    A Loop over the batch rows does the work one sequence at a time: each row gets its own int8
    scale (a tighter bound), its own candidates (not the batch's union), and its [seq, chunk] int32
    tiles stay in cache instead of streaming [batch, seq, chunk] tensors through memory.
    """
    from onnx import helper

    vocab = weight.shape[0]
    stats = quantize_rows(weight)
    c = {name: b.const(name, value) for name, value in (
        ("wq_scale", stats["scale"]), ("dw_inf", stats["dw_inf"]), ("w1_plus_dw1", stats["w1_plus_dw1"]),
        ("slack_w", (SLACK_REL * stats["w_inf"]).astype(np.float32)),
        ("slack_b", (SLACK_REL * np.abs(bias) + SLACK_ABS).astype(np.float32)),
        ("vocab_dim", np.array([vocab], np.int64)),
    )}
    wq = [(start, min(start + chunk, vocab)) for start in range(0, vocab, chunk)]
    for start, stop in wq:
        b.const(f"wq_{start}_{stop}", stats["wq"][:, start:stop])

    r = GraphBuilder(None)  # the loop body: one row
    row = r.node("Unsqueeze", ["row", "splade.axis0"], "row1")
    tokens = r.node("Squeeze", [r.node("Gather", [states, row], "row_states2", axis=0), "splade.axis0"],
                    "row_states")  # [S, H]

    # 1. screen: uint8 tokens x int8 weights, max over tokens in int32, per vocab chunk
    hq, h_scale, h_zero = r.multi("DynamicQuantizeLinear", [tokens], ["hq", "hq_scale", "hq_zero"])
    maxima = []
    for start, stop in wq:
        acc = r.multi("MatMulInteger", [hq, f"splade.wq_{start}_{stop}", h_zero], [f"acc_{start}_{stop}"])[0]
        maxima.append(r.node("ReduceMax", [acc], f"accmax_{start}_{stop}", axes=[0], keepdims=0))  # [C]
    acc = r.node("Concat", maxima, "accmax", axis=0) if len(maxima) > 1 else maxima[0]
    approx = r.node("Cast", [acc], "accmax_f", to=TensorProto.FLOAT)  # exact: |acc| < 2^24
    approx = r.node("Mul", [approx, r.node("Mul", [c["wq_scale"], h_scale], "deq_scale")], "approx_max")  # [V]

    # the bound's per-row terms: max over tokens of |h|_1, and |dh|_inf (padding holds real tokens' states)
    h1 = r.node("ReduceMax", [r.node("ReduceSum", [r.node("Abs", [tokens], "abs_h"), "splade.axis1"], "h1",
                                     keepdims=0)], "h1_max", keepdims=0)  # scalar
    deq = r.node("Sub", [r.node("Cast", [hq], "hq_f", to=TensorProto.FLOAT),
                         r.node("Cast", [h_zero], "hq_zero_f", to=TensorProto.FLOAT)], "hq_centered")
    dh = r.node("Sub", [tokens, r.node("Mul", [deq, h_scale], "h_deq")], "dh")
    dh_inf = r.node("ReduceMax", [r.node("Abs", [dh], "abs_dh")], "dh_inf", keepdims=0)  # scalar
    bound = r.node("Add", [r.node("Mul", [h1, c["dw_inf"]], "err_h_dw"),
                           r.node("Mul", [dh_inf, c["w1_plus_dw1"]], "err_dh_w")], "err")
    slack = r.node("Add", [r.node("Mul", [h1, c["slack_w"]], "slack_hw"), c["slack_b"]], "slack")
    upper = r.node("Add", [r.node("Add", [approx, bound], "upper0"),
                           r.node("Add", ["splade.decoder_bias", slack], "bias_slack")], "upper")  # [V]

    # 2. exact: this row's candidates in fp32 over its tokens, scattered into a row of zeros
    cols = r.node("Squeeze", [r.node("NonZero", [r.node("Greater", [upper, "splade.zero"], "candidate")],
                                     "row_nz"), "splade.axis0"], "row_cols")  # [J]
    w_sel = r.node("Transpose", [r.node("Gather", [weight_name, cols], "row_w", axis=0)], "row_wt", perm=[1, 0])
    exact = r.node("ReduceMax", [r.node("MatMul", [tokens, w_sel], "row_logits")], "row_max", axes=[0],
                   keepdims=0)  # [J]
    exact = r.node("Add", [exact, r.node("Gather", ["splade.decoder_bias", cols], "row_bias", axis=0)],
                   "row_max_biased")
    zeros = r.node("ConstantOfShape", [c["vocab_dim"]], "row_zeros")
    r.node("ScatterElements", [zeros, cols, exact], "row_out", axis=0)  # [V]; the rest: provably <= 0
    r.node("Identity", ["cond_in"], "cond_out")
    loop_body = helper.make_graph(
        r.nodes, "splade_screened_row",
        [helper.make_tensor_value_info("row", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("row_out", TensorProto.FLOAT, [vocab])],
    )
    shape = b.node("Shape", [states], "states_shape")
    rows = b.node("Squeeze", [b.node("Slice", [shape, "splade.axis0", "splade.axis1", "splade.axis0"], "rows1"),
                              "splade.axis0"], "rows")
    return b.node("Loop", [rows, ""], "max_logits_biased", body=loop_body)
