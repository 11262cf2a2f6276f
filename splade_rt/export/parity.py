"""The parity check every export runs: ONNX graphs against the torch reference on real text.

Reference: export.reference (the family's transformers masked-LM model, its AutoTokenizer, and the
pooling exactly as sentence-transformers' SpladePooling computes it). The exported tokenizer.json
must give the reference's ids. An inference-free model's query table is checked against
SparseStaticEmbedding's computation, through the exported query tokenizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..machine import release_freed_memory
from ..manifest import ATTENTION_MASK, INPUT_IDS, OUT_DENSE, OUT_SPARSE, OUT_TOP_INDICES, OUT_TOP_VALUES, TOP_K
from ..variants import DENSE_BAR, VARIANTS, ParityBar
from .heads import export_head
from .reference import reference_static_queries, reference_tokenize, tokenizer_max_length
from .texts import QUERIES, parity_texts

TOP = 64
# the screened graph's bar against the fp32 graph (the variant table's), for the benchmarks' own checks
SCREENED_MAX_ABS_DIFF = VARIANTS["fp32-screened"].bar.vs_max_abs_diff
CPU_METHOD = "onnxruntime CPUExecutionProvider"


def run_graph(path: Path, input_ids: np.ndarray, attention_mask: np.ndarray, top: int = TOP, dense: bool = False):
    """sparse, top values, top indices (and the dense vectors, where asked) of a fused graph."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    outputs = session.run(
        [OUT_SPARSE, OUT_TOP_VALUES, OUT_TOP_INDICES] + ([OUT_DENSE] if dense else []),
        {INPUT_IDS: input_ids, ATTENTION_MASK: attention_mask, TOP_K: np.array([top], dtype=np.int64)},
    )
    # copies: onnxruntime's arrays keep its allocator alive, so the session's memory would outlive it
    # (measured: 0.56 GiB per kept graph for a 250k-term vocabulary at 18 x 512)
    return [np.array(out) for out in outputs]


def run_native(path: Path, input_ids: np.ndarray, attention_mask: np.ndarray, activation: str, top: int = TOP):
    """A native variant: the states graph, pooled by the native kernel where it runs here, else
    by the same exact pooling written in numpy (which still checks the states graph and the arrays)."""
    import onnxruntime as ort

    from ..kernels.native_head import HEAD_ARRAYS, NativeHead, unavailable
    from .graph import NATIVE_HEAD

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    (states,) = session.run(None, {INPUT_IDS: input_ids, ATTENTION_MASK: attention_mask})
    with np.load(path.parent / NATIVE_HEAD) as data:
        arrays = {name: data[name] for name in HEAD_ARRAYS}
    weight, bias = arrays["weight"], arrays["bias"]
    why_not = unavailable()
    if why_not is None:
        head = NativeHead(arrays, activation)
        sparse = head.dense(len(states), *head(states, attention_mask))
        method = "onnxruntime states graph + kernels/_head.c"
    else:  # row by row: [tokens, vocab] logits at a time
        sparse = np.zeros((len(states), len(bias)), np.float32)
        for r, (row, mask) in enumerate(zip(states, attention_mask)):
            if mask.any():
                sparse[r] = np.log1p(np.maximum((row[mask > 0] @ weight.T).max(axis=0) + bias, 0))
        if activation == "log1p_relu":
            sparse = np.log1p(sparse)
        method = f"onnxruntime states graph + numpy pooling ({why_not})"
    indices = np.argsort(-sparse, axis=1, kind="stable")[:, :top]
    return sparse, np.take_along_axis(sparse, indices, axis=1), indices, method


def compare(reference: np.ndarray, candidate: np.ndarray, top: int = TOP) -> dict[str, Any]:
    """Numbers a user can check a claim of 'identical results' against."""
    diff = np.abs(reference - candidate)
    overlaps, argmax_same, jaccard = [], [], []
    for ref, cand in zip(reference, candidate):
        k = min(top, int((ref > 0).sum()))
        if k:
            ref_top = set(np.argsort(-ref, kind="stable")[:k].tolist())
            cand_top = set(np.argsort(-cand, kind="stable")[:k].tolist())
            overlaps.append(len(ref_top & cand_top) / k)
        argmax_same.append(int(np.argmax(ref)) == int(np.argmax(cand)))
        nz_ref, nz_cand = set(np.flatnonzero(ref).tolist()), set(np.flatnonzero(cand).tolist())
        union = nz_ref | nz_cand
        jaccard.append(len(nz_ref & nz_cand) / len(union) if union else 1.0)
    scale = float(np.abs(reference).max())
    return {
        "texts": len(reference),
        "max_abs_diff": float(diff.max()),
        "max_rel_diff": float(diff.max() / scale) if scale else float(diff.max()),
        "reference_max_value": scale,
        f"top{top}_overlap_mean": float(np.mean(overlaps)),
        f"top{top}_overlap_min": float(np.min(overlaps)),
        "argmax_same": bool(all(argmax_same)),
        "nonzero_jaccard_min": float(np.min(jaccard)),
    }


def check_parity(mlm, source, graphs: dict[str, Path], tokenizer_json: Path,
                 query_table: tuple[Path, Path] | None = None) -> dict[str, Any]:
    """Run every graph on the parity texts and decide pass/fail for each against the bars."""
    from tokenizers import Tokenizer

    texts = parity_texts()
    input_ids, attention_mask = reference_tokenize(source.directory, texts, source.max_length, source.lowercase)
    ours = Tokenizer.from_file(str(tokenizer_json))
    ours.no_padding()
    ours.enable_truncation(source.max_length)
    ids_match = all(
        enc.ids == row[mask.astype(bool)].tolist()
        for enc, row, mask in zip(ours.encode_batch([t.lower() if source.lowercase else t for t in texts]),
                                  input_ids, attention_mask)
    )
    head = export_head(source)
    reference, dense_reference = head.reference(mlm, source, input_ids, attention_mask)
    release_freed_memory()  # the reference's buffers, before the first graph (and each graph's, after it)
    report: dict[str, Any] = {
        "texts": len(texts),
        "padded_shape": list(input_ids.shape),
        "tokenizer_ids_match": ids_match,
        "reference": head.reference_name(source),
    }
    ok = ids_match
    if query_table is not None:
        report["query_table"] = check_query_table(source.query_route, *query_table)
        ok = ok and report["query_table"]["passed"]
    outputs: dict[str, np.ndarray] = {}
    # the graphs another is held to first (fp32 before the screened and fp32-native graphs, int8 before
    # int8-native), in the table's order otherwise
    for precision, path in sorted(graphs.items(), key=lambda item: VARIANTS[item[0]].bar.vs is not None):
        variant = VARIANTS[precision]
        if variant.native:
            sparse, values, indices, method = run_native(path, input_ids, attention_mask, source.activation)
        else:
            sparse, values, indices, *dense = run_graph(path, input_ids, attention_mask,
                                                        dense=dense_reference is not None)
            method = CPU_METHOD
        outputs[precision] = sparse
        stats = held_to_bar(variant.bar, compare(reference, sparse), sparse, values, indices, outputs)
        if dense_reference is not None:
            stats["dense"] = dense_held_to_bar(variant, dense_reference, dense[0])
            stats["passed"] = stats["passed"] and stats["dense"]["passed"]
        stats["method"] = variant.bar.note or method
        ok = ok and stats["passed"]
        report[precision] = stats
        release_freed_memory()
    report["passed"] = bool(ok)
    return report


def held_to_bar(bar: ParityBar, stats: dict[str, Any], sparse: np.ndarray, values: np.ndarray,
                indices: np.ndarray, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """The numbers of one graph against the torch reference (stats) and against the graph its bar names
    (from outputs), with the bar in words and whether it passed."""
    # The TopK output must pick the dense output's largest values, in order. Not bit-equal on the CPU
    # EP for fp16: it removes cast pairs, so TopK sees fp32 values while `sparse` is rounded to fp16.
    expect_top = np.take_along_axis(sparse, indices, axis=1)
    stats["topk_output_consistent"] = bool(
        np.allclose(expect_top, values, rtol=2e-3, atol=1e-3) and np.all(np.diff(values, axis=1) <= 0)
    )
    passed = stats["topk_output_consistent"]
    if bar.max_rel_diff is not None:
        passed = passed and stats["max_rel_diff"] <= bar.max_rel_diff
    if bar.min_top_overlap is not None:
        passed = passed and stats[f"top{TOP}_overlap_mean"] >= bar.min_top_overlap
    if bar.same_argmax:
        passed = passed and stats["argmax_same"]
    if bar.vs is not None and bar.vs in outputs:
        # over the same encoder: the screened head is exact by construction on onnxruntime's own kernels;
        # the native head's fp32 sums run in another order than MLAS's, so a logit within rounding of zero
        # may be a tiny non-zero in one and not the other (the Jaccard says how often)
        same = compare(outputs[bar.vs], sparse)
        stats[f"vs_{bar.vs}_graph"] = {key: same[key] for key in ("max_abs_diff", "max_rel_diff",
                                                                  "nonzero_jaccard_min")}
        if bar.vs_max_abs_diff is not None:
            passed = passed and same["max_abs_diff"] <= bar.vs_max_abs_diff
        if bar.vs_max_rel_diff is not None:
            passed = passed and same["max_rel_diff"] <= bar.vs_max_rel_diff
        if bar.vs_same_nonzero:
            passed = passed and same["nonzero_jaccard_min"] == 1.0
    stats["bar"] = bar.describe(TOP)
    stats["passed"] = bool(passed)
    return stats


def dense_held_to_bar(variant, reference: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
    """The dense vectors against the reference's: within DENSE_BAR for an exact variant, a cosine floor
    (the variant's bar) for a lossy one."""
    cosine = np.sum(reference * candidate, axis=1) / np.maximum(
        np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1), 1e-12)
    stats = {"max_abs_diff": float(np.abs(reference - candidate).max()), "cosine_min": float(cosine.min())}
    if variant.exact:
        stats["bar"], stats["passed"] = f"max abs diff <= {DENSE_BAR}", stats["max_abs_diff"] <= DENSE_BAR
    else:
        floor = variant.bar.dense_min_cosine
        stats["bar"], stats["passed"] = f"cosine min >= {floor}", stats["cosine_min"] >= floor
    return stats


def check_query_table(query_dir: Path, table: Path, tokenizer_json: Path) -> dict[str, Any]:
    """The runtime's lookup (exported tokenizer, no special tokens, each present token once) equals
    SparseStaticEmbedding's output on the parity texts and their queries repeated (repeated tokens)."""
    from tokenizers import Tokenizer

    texts = parity_texts() + [f"{q} {q}" for q in QUERIES]
    weights = np.load(table)
    reference = reference_static_queries(query_dir, weights, texts)
    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.no_padding()
    limit = tokenizer_max_length(query_dir)
    tok.enable_truncation(limit) if limit else tok.no_truncation()
    ours = np.zeros_like(reference)
    for r, enc in enumerate(tok.encode_batch(texts, add_special_tokens=False)):
        present = np.unique(np.asarray(enc.ids, dtype=np.int64))
        ours[r, present] = weights[present]
    same = bool(np.array_equal(reference, ours))
    return {"texts": len(texts), "identical": same, "passed": same,
            "reference": "sentence-transformers SparseStaticEmbedding math (AutoTokenizer, no special tokens)"}


def summary_lines(report: dict[str, Any]) -> list[str]:
    lines = [f"parity on {report['texts']} texts (padded batch {report['padded_shape']}), "
             f"tokenizer ids match: {report['tokenizer_ids_match']}"]
    if "query_table" in report:
        q = report["query_table"]
        lines.append(f"  query table: identical to SparseStaticEmbedding on {q['texts']} texts: {q['identical']} "
                     f"-> {'PASS' if q['passed'] else 'FAIL'}")
    for precision in VARIANTS:
        if precision in report:
            s = report[precision]
            lines.append(
                f"  {precision}: max abs diff {s['max_abs_diff']:.2e} ({s['max_rel_diff']:.2e} of max), "
                f"top-{TOP} overlap mean {s[f'top{TOP}_overlap_mean']:.4f} min {s[f'top{TOP}_overlap_min']:.4f}, "
                f"argmax same {s['argmax_same']}, non-zero Jaccard min {s['nonzero_jaccard_min']:.4f} "
                f"-> {'PASS' if s['passed'] else 'FAIL'} ({s['bar']})"
            )
            if "dense" in s:
                d = s["dense"]
                lines.append(f"    dense: max abs diff {d['max_abs_diff']:.2e}, cosine min {d['cosine_min']:.6f} "
                             f"-> {'PASS' if d['passed'] else 'FAIL'} ({d['bar']})")
            for key in (k for k in s if k.startswith("vs_")):
                v = s[key]
                lines.append(f"    {key.replace('_', ' ')}: max abs diff {v['max_abs_diff']:.2e}, "
                             f"non-zero Jaccard min {v['nonzero_jaccard_min']:.4f}")
    return lines
