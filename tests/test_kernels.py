"""The SPLADE head kernels on their own: reduce-first pooling and the certified int8 screening.

The head is appended to a graph whose 'encoder' is the identity, so hidden states can be chosen
adversarially: near the relu threshold, with large norms, with outliers that coarsen the int8
scale. The screened head must never miss a positive logit: same non-zero set, same values.
"""

from __future__ import annotations

import ast
import itertools
import zlib
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from splade_rt.kernels import append_splade_head
from splade_rt.kernels.native_head import NativeHead, head_arrays, unavailable
from splade_rt.kernels.screening import quantize_rows

needs_native = pytest.mark.skipif(unavailable() is not None, reason=f"native head: {unavailable()}")


def head_session(weight: np.ndarray, bias: np.ndarray, *, screened: bool, chunk: int = 97,
                 activation: str = "relu", center: np.ndarray | None = None) -> ort.InferenceSession:
    hidden = weight.shape[1]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["hidden_in"], ["mlm_hidden"])], "head",
        [helper.make_tensor_value_info("hidden_in", TensorProto.FLOAT, ["batch", "seq", hidden]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("mlm_hidden", TensorProto.FLOAT, ["batch", "seq", hidden])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model = append_splade_head(model, weight, bias, activation=activation, vocab_chunk=chunk, screened=screened,
                               screen_center=center)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def run(session, states: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return session.run(["sparse"], {"hidden_in": states.astype(np.float32), "attention_mask": mask,
                                    "top_k": np.array([4], np.int64)})[0]


def numpy_reference(weight, bias, states, mask, activation="relu") -> np.ndarray:
    """sentence-transformers' pooling in float64: mask, relu, log1p, max over tokens."""
    logits = states.astype(np.float64) @ weight.T.astype(np.float64) + bias
    values = np.log1p(np.maximum(logits * mask[..., None], 0))
    if activation == "log1p_relu":
        values = np.log1p(values)
    return values.max(axis=1)


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(7)
    weight = (rng.standard_normal((503, 48)) * 0.2).astype(np.float32)
    weight[5] *= 40  # a row with a large norm
    bias = (rng.standard_normal(503) - 3.0).astype(np.float32)  # most logits negative, as in SPLADE
    return weight, bias


def test_reduce_first_head_matches_pooling_with_padding(model):
    weight, bias = model
    rng = np.random.default_rng(1)
    states = rng.standard_normal((4, 9, 48)).astype(np.float32) * 3
    mask = np.ones((4, 9), np.int64)
    mask[1, 3:] = 0
    mask[2, 1:] = 0
    mask[3, :] = 0  # no real token at all: a zero vector, as masked pooling gives
    states[1, 3:] = 50.0  # padding with huge values must not leak into the max
    for activation in ("relu", "log1p_relu"):
        got = run(head_session(weight, bias, screened=False, activation=activation), states, mask)
        np.testing.assert_allclose(got, numpy_reference(weight, bias, states, mask, activation), atol=2e-5)
        assert not got[3].any()


@pytest.mark.parametrize("centring", ["none", "offset", "wrong"])
@pytest.mark.parametrize("case", ["random", "near_threshold", "large_norm", "outlier", "all_negative"])
def test_screened_head_never_misses_a_positive_logit(model, case, centring):
    """centring: states share a large mean offset (as BERT's do) and the screen subtracts it
    ("offset"), a mean far from the states ("wrong": looser, still exact), or nothing ("none")."""
    weight, bias = model
    rng = np.random.default_rng(zlib.crc32(f"{case}/{centring}".encode()))  # str hash() varies by process
    offset = np.zeros(48, np.float32) if centring == "none" else (rng.standard_normal(48) * 4).astype(np.float32)
    center = {"none": None, "offset": offset + 0.1, "wrong": -3 * offset}[centring]
    chunked = head_session(weight, bias, screened=False)
    screened = head_session(weight, bias, screened=True, center=center)
    for trial in range(12):
        rows = 3 if trial % 2 else 6
        states = rng.standard_normal((rows, 11, 48)).astype(np.float32) + offset
        mask = np.ones((rows, 11), np.int64)
        mask[0, 7:] = 0
        b = bias.copy()
        if case == "near_threshold":
            # shift each vocab entry's max logit to just above or below zero, inside the int8 error
            exact = (states.astype(np.float64) @ weight.T.astype(np.float64)).max(axis=(0, 1))
            shift = rng.choice([-1, 1], size=exact.shape) * rng.uniform(1e-4, 2e-2, exact.shape)
            b = (-exact + shift).astype(np.float32)
        elif case == "large_norm":
            states *= 1e3
        elif case == "outlier":
            states[rng.integers(rows), rng.integers(7), rng.integers(48)] = 500.0  # coarse activation scale
        elif case == "all_negative":
            b = np.full_like(bias, -1e3)
        sess_c, sess_s = (chunked, screened) if b is bias else (head_session(weight, b, screened=False),
                                                                 head_session(weight, b, screened=True, center=center))
        want, got = run(sess_c, states, mask), run(sess_s, states, mask)
        assert ((want > 0) == (got > 0)).all(), (case, trial)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-6)
        if unavailable() is None:  # the native kernel: the same bound, so the same guarantee
            native = native_dense(NativeHead(head_arrays(weight, b, center), "relu"), states, mask)
            assert ((want > 0) == (native > 0)).all(), (case, trial)
            # its fp32 dot products sum in another order than MLAS's: equal to within their rounding
            rounding = 48 * 2.0**-24 * float(np.abs(states.reshape(-1, 48) @ weight.T).max())
            np.testing.assert_allclose(native, want, atol=max(1e-5, rounding), rtol=1e-6)
        if case == "all_negative":
            assert not got.any()
        if case in ("random", "near_threshold"):
            assert (want > 0).any()  # the case has positives to miss


def native_dense(head: NativeHead, states: np.ndarray, mask: np.ndarray, threads: int = 1) -> np.ndarray:
    return head.dense(len(states), *head(states, mask, threads))


@needs_native
@pytest.mark.parametrize("hidden", [48, 50])  # 50: not a multiple of 4, the kernel pads it
def test_native_head_matches_pooling_on_any_mask_and_thread_count(hidden):
    """Token counts around the kernel's 12-token tiles and 16-token exact blocks, masks with holes,
    rows with no real token; the vocab (503) is not a multiple of the 32-entry tile. Every thread
    count gives the same vectors: the threads split the vocab, not the sums."""
    rng = np.random.default_rng(11)
    weight = (rng.standard_normal((503, hidden)) * 0.2).astype(np.float32)
    bias = (rng.standard_normal(503) - 2.0).astype(np.float32)
    offset = (rng.standard_normal(hidden) * 3).astype(np.float32)
    states = rng.standard_normal((6, 37, hidden)).astype(np.float32) + offset
    mask = np.ones((6, 37), np.int64)
    mask[0, 1:] = 0  # one token
    mask[1, 13:] = 0  # one full tile and one token
    mask[2, ::3] = 0  # holes: real tokens after padding
    mask[3, :] = 0  # no real token: a zero vector
    mask[4, 17:] = 0
    states[mask == 0] = 40.0  # padding must not leak into the max
    for activation in ("relu", "log1p_relu"):
        head = NativeHead(head_arrays(weight, bias, offset), activation)
        want = numpy_reference(weight, bias, states, mask, activation)
        for threads in (1, 2, 5):
            got = native_dense(head, states, mask, threads)
            assert ((want > 0) == (got > 0)).all(), (activation, threads)
            np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)
        assert not got[3].any() and (got[[0, 1, 2, 4, 5]] > 0).any(axis=1).all()
        indptr, cols, _ = head(states, mask, 2)
        assert all((np.diff(cols[a:b]) > 0).all() for a, b in itertools.pairwise(indptr))  # CSR, ascending
    arrays = (head.center, head.packed, head.correction, head.scale, head.coeff[0], head.coeff[1], head.const,
              head.weight, head.bias)
    with pytest.raises(ValueError, match="bad shapes"):  # no thread
        head.kernel.run(states, mask, *arrays, 6, 37, hidden, head.k, 503, 0, 0)
    with pytest.raises(ValueError, match="states holds"):  # more rows than the buffer holds
        head.kernel.run(states, mask, *arrays, 7, 37, hidden, head.k, 503, 0, 1)
    with pytest.raises(ValueError, match="mask"):
        head(states, mask[:, :20])


def test_screening_bound_is_sound_against_the_int8_approximation():
    """The error bound, checked directly in float64 with the graph's quantization (symmetric int8,
    one scale per row of tokens): |h.w - deq(h).deq(w)| <= bound for every token and vocab entry."""
    rng = np.random.default_rng(3)
    weight = (rng.standard_normal((300, 64)) * rng.uniform(0.01, 2.0, (300, 1))).astype(np.float32)
    stats = quantize_rows(weight)
    deq_w = stats["wq"].astype(np.float64) * stats["scale"].astype(np.float64)[:, None]
    for _ in range(20):
        h = (rng.standard_normal((40, 64)) * rng.uniform(0.1, 100)).astype(np.float32)
        if rng.random() < 0.5:
            h[rng.integers(40), rng.integers(64)] *= 50  # an outlier that coarsens the scale
        scale = np.float32(np.abs(h).max() / np.float32(127))
        deq_h = np.clip(np.rint(h / scale), -127, 127).astype(np.float64) * scale
        err = np.abs(h.astype(np.float64) @ weight.T.astype(np.float64) - deq_h @ deq_w.T)
        h1 = np.abs(h.astype(np.float64)).sum(axis=1, keepdims=True)
        dh_inf = np.abs(h - deq_h).max()
        bound = h1 * stats["dw_inf"] + dh_inf * stats["w1_plus_dw1"]
        assert (err <= bound).all()


def test_kernel_modules_import_in_a_line_not_a_circle():
    """builder <- screening <- splade_head, screening <- native_head, builder <- token_head: each kernel
    module imports only the ones before it."""
    folder = Path(append_splade_head.__code__.co_filename).parent
    kernels = {path.stem for path in folder.glob("*.py")} - {"__init__"}
    imports = {}
    for name in kernels:
        names = set()
        for node in ast.walk(ast.parse((folder / f"{name}.py").read_text(encoding="utf-8"))):  # lazy imports too
            if isinstance(node, ast.ImportFrom):  # from .x import y, from . import x, from splade_rt.kernels.x ...
                names.add((node.module or "").rpartition(".")[2])
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.Import):
                names.update(alias.name.rpartition(".")[2] for alias in node.names)
        imports[name] = names & kernels
    assert imports == {"builder": set(), "screening": {"builder"}, "splade_head": {"builder", "screening"},
                       "native_head": {"screening"}, "token_head": {"builder"}}
