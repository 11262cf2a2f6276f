"""Exact SPLADE at int8 cost: certified screening of the vocab projection.

Of the 30,522 logits per token only a handful are positive, and only positive ones survive relu.
So the projection runs twice, cheaply:

1. Screen: int8 x uint8 (MatMulInteger, VNNI/AVX2 kernels; tokens in 7 bits, see TOKEN_Q_MAX) over
   the whole vocab, reduced first (max over each sequence's tokens, in int32) to [batch, vocab].
   With the quantization steps known, each approximate max gets a rigorous upper bound on the true fp32 max logit:

     h.w - deq(h).deq(w) = h.dw + dh.w - dh.dw
     |.| <= |h|_1 |dw|_inf + |dh|_inf |w|_1 + |dh|_inf |dw|_1

   with |h|_1 and dh measured in the graph (per sequence: the max over its tokens) and dw, |w|_1
   from the export. A relative slack covers fp32 rounding in the exact pass and in the bound itself.
   The states are screened centred, h - mu, with mu.w folded into the bias: BERT's hidden states
   share a large mean (most of their squared norm), so centring shrinks the quantization step and
   with it the bound. Any mu keeps the result exact; the export's mean over real text keeps
   the bound tight.
2. Exact: vocab entries whose bound is > 0 (a small multiple of the positives: how many is measured
   by benchmarks/screening_check.py) are gathered and recomputed in fp32 over the sequence's
   tokens; the rest are provably <= 0, i.e. 0 after relu. The result is the fp32 result, not an
   approximation of it.

Everything is standard ONNX, so it runs wherever onnxruntime runs; the fp32 chunked graph stays
the fallback (and the GPU path, where fp16 is already cheap).
"""

from __future__ import annotations

import numpy as np

from .builder import GraphBuilder

SLACK_REL = 1e-4  # x (|h|_1 |w|_inf + |b|): far above fp32 dot-product rounding (~H * 2^-24)
SLACK_ABS = 1e-6
# The tokens' int8 range in the graph's screen. onnxruntime's u8 x s8 kernels on CPUs without VNNI
# (AVX2's vpmaddubsw) add pairs of products in int16 with saturation: 2 x 255 x 127 overflows, and a
# saturated sum breaks the bound (terms were dropped on an AVX2 EPYC). 2 x 255 x 63 = 32,130 fits, so
# the screen stays exact on every CPU, at a step twice as coarse (a looser bound, a few more candidates).
# The native head (kernels/_head.c) accumulates in int32 (vpdpbusd) and keeps 127.
TOKEN_Q_MAX = 63.0


ROW_BLOCK = 8192  # vocab rows per float64 block in the export-time statistics (a block: 8192 x H x 8 bytes)


def quantize_rows(weight: np.ndarray) -> dict[str, np.ndarray]:
    """Symmetric per-vocab-row int8 weights and the row statistics the bound needs (rounded up).
    Row by row arithmetic, done in blocks of ROW_BLOCK rows: the float64 temporaries of a 250k
    vocabulary would be gigabytes each."""
    vocab = weight.shape[0]
    out = {"wq": np.empty(weight.shape, np.int8), "scale": np.empty(vocab, np.float32),
           **{key: np.empty(vocab, np.float32) for key in ("dw_inf", "w1_plus_dw1", "w_inf")}}
    for start in range(0, vocab, ROW_BLOCK):
        rows = slice(start, min(start + ROW_BLOCK, vocab))
        w = weight[rows].astype(np.float64)
        winf = np.abs(w).max(axis=1)
        # the float32 scale is what the graph dequantizes with, so the error is measured against it
        scale = np.where(winf > 0, winf / 127.0, 1.0).astype(np.float32).astype(np.float64)
        q = np.clip(np.rint(w / scale[:, None]), -127, 127)
        dw = np.abs(w - q * scale[:, None])
        out["wq"][rows] = q.astype(np.int8)  # [V, H]
        out["scale"][rows] = scale.astype(np.float32)  # exact float32 used for dequantization below
        out["dw_inf"][rows] = round_up(dw.max(axis=1))
        out["w1_plus_dw1"][rows] = round_up(np.abs(w).sum(axis=1) + dw.sum(axis=1))
        out["w_inf"][rows] = round_up(winf)
    return out


def round_up(x: np.ndarray) -> np.ndarray:
    """float32 values never below the float64 ones: a bound stays a bound when stored."""
    x32 = x.astype(np.float32)
    return np.where(x32.astype(np.float64) < x, np.nextafter(x32, np.float32(np.inf)), x32).astype(np.float32)


def screen_bound(weight: np.ndarray, bias: np.ndarray, center: np.ndarray | None) -> dict:
    """Everything the bound needs from the export, shared by the graph below and the native kernel
    (kernels/_head.c): the int8 rows and their statistics, the centre, and the bound's per-vocab
    coefficients of |h - mu|_1 and |dh|_inf ([2, V]) and its constant term ([V])."""
    hidden = weight.shape[1]
    stats = quantize_rows(weight)
    mu = np.zeros(hidden, np.float32) if center is None else np.asarray(center, np.float32)
    mu_w = np.empty(weight.shape[0], np.float64)  # [V]: the centre's share of every logit
    for start in range(0, weight.shape[0], ROW_BLOCK):
        mu_w[start:start + ROW_BLOCK] = weight[start:start + ROW_BLOCK].astype(np.float64) @ mu.astype(np.float64)
    # rounding the exact pass and the centring can't exceed: |h|_1 <= |h - mu|_1 + 2 |mu|_1 (one fp32 Sub)
    slack_w = SLACK_REL * stats["w_inf"].astype(np.float64)
    slack_b = SLACK_REL * (np.abs(bias) + np.abs(mu_w)) + SLACK_ABS + 2 * np.abs(mu).sum() * slack_w
    coeff = np.stack([round_up(stats["dw_inf"].astype(np.float64) + slack_w), stats["w1_plus_dw1"]])
    return {"rows": stats, "center": mu, "coeff": coeff,
            "const": round_up(bias.astype(np.float64) + mu_w + slack_b)}


def screened_max_logits(b: GraphBuilder, states: str, states_t: str, weight_name: str, weight: np.ndarray,
                        bias: np.ndarray, bias_name: str, chunk: int, center: np.ndarray | None = None) -> str:
    """Biased max logits [B, V], exact for every entry that can be positive; the rest are 0.
    center: the mean hidden state over real text (tightens the screen; None screens uncentred)."""
    from onnx import TensorProto, helper

    vocab, hidden = weight.shape
    bound = screen_bound(weight, bias, center)
    stats, mu = bound["rows"], bound["center"]
    c = {name: b.const(name, value) for name, value in (
        ("wq_scale", stats["scale"]), ("bound_coeff", bound["coeff"]), ("bound_const", bound["const"]),
        ("center", mu),
        ("vocab_dim", np.array([vocab], np.int64)), ("q_max", np.array(TOKEN_Q_MAX, np.float32)),
        ("q_min", np.array(-TOKEN_Q_MAX, np.float32)), ("tiny", np.array(1e-30, np.float32)),
        ("w_zero", np.array(128, np.uint8)), ("h_cols", np.array([hidden, -1], np.int64)),
        ("keep_dim", np.array([0], np.int64)), ("infer_dim", np.array([-1], np.int64)),
    )}

    # 1. screen. Tokens: symmetric int8 with one scale per sequence; weights: uint8 = int8 + 128 (zero
    # point 128), the operand order onnxruntime's fast u8 x s8 kernels take.
    centred = b.node("Sub", [states, c["center"]], "centred")  # [B, S, H]
    abs_h = b.node("Abs", [centred], "abs_h")
    h_scale = b.node("Div", [b.node("Max", [b.node("ReduceMax", [abs_h], "h_absmax", axes=[1, 2], keepdims=1),
                                           c["tiny"]], "h_absmax_safe"), c["q_max"]], "h_scale")  # [B, 1, 1]
    hq_f = b.node("Clip", [b.node("Round", [b.node("Div", [centred, h_scale], "h_scaled")], "h_round"),
                           c["q_min"], c["q_max"]], "hq_f")  # [B, S, H], integers in float
    # all the batch's tokens as the columns of one 2-D product, faster than a batch of per-sequence
    # ones (timed by benchmarks/screen_layouts.py); the max stays innermost
    hq_t = b.node("Cast", [b.node("Reshape", [b.node("Transpose", [hq_f], "hq_f_t", perm=[2, 0, 1]), c["h_cols"]],
                                  "hq_f_2d")], "hq_t", to=TensorProto.INT8)  # [H, B * S]
    batch = b.node("Slice", [b.node("Shape", [states], "states_shape"), "splade.axis0", "splade.axis1",
                             "splade.axis0"], "batch1")
    acc_shape = b.node("Concat", [c["keep_dim"], batch, c["infer_dim"]], "acc_shape", axis=0)  # [C, B, S]
    maxima = []
    for start in range(0, vocab, chunk):
        stop = min(start + chunk, vocab)
        w_u8 = b.const(f"wq_{start}_{stop}", (stats["wq"][start:stop].astype(np.int16) + 128).astype(np.uint8))
        acc = b.node("MatMulInteger", [w_u8, hq_t, c["w_zero"]], f"acc_{start}_{stop}")  # [C, B * S] int32
        acc = b.node("Reshape", [acc, acc_shape], f"acc3_{start}_{stop}")
        maxima.append(b.node("ReduceMax", [acc], f"accmax_{start}_{stop}", axes=[2], keepdims=0))  # [C, B]
    acc = b.node("Concat", maxima, "accmax_vb", axis=0) if len(maxima) > 1 else maxima[0]
    acc = b.node("Transpose", [acc], "accmax", perm=[1, 0])  # [B, V]
    approx = b.node("Cast", [acc], "accmax_f", to=TensorProto.FLOAT)  # exact: |acc| < 2^24
    row_scale = b.node("Squeeze", [h_scale, "splade.axis2"], "h_scale2")  # [B, 1]
    approx = b.node("Mul", [approx, b.node("Mul", [row_scale, c["wq_scale"]], "approx_scale")], "approx_max")

    # the bound's per-sequence terms: max over tokens of |h - mu|_1 and |dh|_inf (padding holds real
    # tokens' states)
    h1 = b.node("ReduceMax", [b.node("ReduceSum", [abs_h, "splade.axis2"], "h1", keepdims=0)], "h1_max", axes=[1],
                keepdims=1)  # [B, 1]
    dh = b.node("Sub", [centred, b.node("Mul", [hq_f, h_scale], "h_deq")], "dh")
    dh_inf = b.node("ReduceMax", [b.node("Abs", [dh], "abs_dh")], "dh_inf", axes=[1, 2], keepdims=0)  # [B]
    dh_inf = b.node("Unsqueeze", [dh_inf, "splade.axis1"], "dh_inf2")  # [B, 1]
    # upper = approx + |h - mu|_1 (dw_inf + slack_w) + |dh|_inf w1_plus_dw1 + bias + mu.w + slack_b, the
    # terms after approx as one Gemm ([B, 2] x [2, V] + [V]): fewer passes over [B, V]
    terms = b.node("Concat", [h1, dh_inf], "bound_terms", axis=1)  # [B, 2]
    upper = b.node("Add", [approx, b.node("Gemm", [terms, c["bound_coeff"], c["bound_const"]], "bound")],
                   "upper")  # [B, V]
    candidate = b.node("Greater", [upper, "splade.zero"], "candidate")  # [B, V]

    # 2. exact, row by row in a Loop: each row's own candidates (not the batch's union) in fp32 over its
    # tokens, scattered into a row of zeros
    r = GraphBuilder(None)
    row = r.node("Unsqueeze", ["row", "splade.axis0"], "row1")
    cand = r.node("Squeeze", [r.node("Gather", [candidate, row], "row_cand2", axis=0), "splade.axis0"], "row_cand")
    cols = r.node("Squeeze", [r.node("NonZero", [cand], "row_nz"), "splade.axis0"], "row_cols")  # [J]
    tokens_t = r.node("Squeeze", [r.node("Gather", [states_t, row], "row_states2", axis=0), "splade.axis0"],
                      "row_states_t")  # [H, S]
    w_sel = r.node("Gather", [weight_name, cols], "row_w", axis=0)  # [J, H]
    exact = r.node("ReduceMax", [r.node("MatMul", [w_sel, tokens_t], "row_logits")], "row_max", axes=[1],
                   keepdims=0)  # [J]
    exact = r.node("Add", [exact, r.node("Gather", [bias_name, cols], "row_bias", axis=0)],
                   "row_max_biased")
    zeros = r.node("ConstantOfShape", [c["vocab_dim"]], "row_zeros")
    r.node("ScatterElements", [zeros, cols, exact], "row_out", axis=0)  # [V]; the rest: provably <= 0
    r.node("Identity", ["cond_in"], "cond_out")
    loop_body = helper.make_graph(
        r.nodes, "splade_exact_row",
        [helper.make_tensor_value_info("row", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("row_out", TensorProto.FLOAT, [vocab])],
    )
    rows = b.node("Squeeze", [batch, "splade.axis0"], "rows")
    return b.node("Loop", [rows, ""], "max_logits_biased", body=loop_body)
