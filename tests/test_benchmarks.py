"""The benchmark's --quick smoke run: it runs end to end, every configuration it times is right, and
what it writes says what it measured."""

from __future__ import annotations

import json

import pytest

from benchmarks.run import BASE, REFERENCE, main
from splade_rt.bench.measure import compare_rows
from splade_rt.kernels.native_head import unavailable


def test_quick_benchmark_runs_and_checks_every_configuration(tmp_path):
    assert main(["--quick", "--out", str(tmp_path), "--name", "smoke"]) == 0
    report = json.loads((tmp_path / "smoke.json").read_text())
    table = (tmp_path / "smoke.md").read_text()
    assert (tmp_path / "smoke.png").stat().st_size > 0
    assert report["quick"] and report["repeats"] == 1 and report["passages"] == 32 and report["queries"] == 10
    results = report["results"]
    timed = {name for name, entry in results.items() if "unavailable" not in entry}
    assert {REFERENCE, "rt-fp32", "rt-screened", "rt-screened-serial", "rt-int8"} <= timed
    # the native variants run wherever their kernel does
    assert ({"rt-native", "rt-int8-native"} <= timed) == (unavailable() is None)
    ref = results[REFERENCE]
    assert ref["check_vs_reference"] == SAME  # itself
    for name in sorted(timed):
        entry = results[name]
        assert "error" not in entry, entry
        assert entry["passes_b32"] == 1  # --quick: one timed pass, no minimum duration
        assert entry["passages_per_s_b32"] > 0 and entry["cold_start_s"] > 0
        assert 0 < entry["query_p50_ms"] <= entry["query_p99_ms"]
        # the derived columns are derived from this run's numbers
        assert entry["tokens_per_s_b32"] / entry["passages_per_s_b32"] == pytest.approx(report["mean_passage_tokens"])
        assert entry["speedup_b32"] == pytest.approx(entry["passages_per_s_b32"] / ref["passages_per_s_b32"])
        check = entry["check_vs_reference"]
        # a fast wrong answer shows; the lossy int8 encoder keeps the export's floor on top terms
        if name.startswith("rt-int8"):
            assert 0.8 <= check["top64_overlap"] < 1 and check["active_term_jaccard"] < 1, check
        else:
            assert check["max_abs_diff"] <= 1e-4 and check["top64_overlap"] >= 0.999, (name, check)
        # the table says what the JSON says, one row per configuration
        assert f"| {entry['label']} | {entry['passages_per_s_b32']:.1f} | - | {entry['speedup_b32']:.2f}x |" in table
    for name in set(results) - timed:  # a configuration that could not run says why, in its row
        assert f"| {results[name]['label']} | {results[name]['unavailable']} |" in table
    assert table.count("\n| ") == len(results) + 1  # the header and one row each


SAME = {"max_abs_diff": 0.0, "top64_overlap": 1.0, "active_term_jaccard": 1.0, "same_active_terms": 1.0}


def test_the_vector_check_sees_a_wrong_vector():
    reference = [{str(t): float(100 - t) for t in range(80)}, {"5": 1.0, "9": 0.5}]
    assert compare_rows(reference, reference) == SAME
    off = [dict(reference[0]), {"5": 1.0, "9": 0.75}]  # one weight off by 0.25
    assert compare_rows(reference, off)["max_abs_diff"] == pytest.approx(0.25)
    swapped = [{**{str(t): float(100 - t) for t in range(63)}, "79": 50.0}, reference[1]]  # a top-64 term lost
    assert compare_rows(reference, swapped)["top64_overlap"] == pytest.approx((63 / 64 + 1) / 2)
    changed = compare_rows([{"1": 1.0, "2": 0.5, "3": 0.25}, {"4": 1.0}],
                           [{1: 1.0, 2: 0.5, 9: 0.1}, {4: 1.0}])  # one term of three swapped, int keys
    assert changed["active_term_jaccard"] == pytest.approx((2 / 4 + 1) / 2) and changed["same_active_terms"] == 0.5


def test_repeats_take_the_median_of_numbers_and_keep_labels():
    from benchmarks.run import summarize

    rows = [{"5": 1.0, "9": 0.5}]
    runs = {REFERENCE: [{"passages_per_s_b32": 1.0, "vectors": rows}, {"passages_per_s_b32": 3.0, "vectors": rows}],
            "rt": [{"passages_per_s_b32": 4.0, "provider": "CPUExecutionProvider", "vectors": rows},
                   {"passages_per_s_b32": 8.0, "provider": "CPUExecutionProvider", "vectors": rows}]}
    out = summarize({REFERENCE: {"label": "st"}, "rt": {"label": "rt"}}, runs, {})
    assert out["rt"]["passages_per_s_b32"] == 6.0 and out["rt"]["provider"] == "CPUExecutionProvider"
    assert out["rt"]["speedup_b32"] == 3.0


def test_each_model_is_measured_against_its_own_reference():
    from benchmarks.run import markdown, summarize

    tiny, base = [{"5": 1.0}], [{"7": 2.0}]
    runs = {REFERENCE: [{"passages_per_s_b32": 100.0, "vectors": tiny}], "rt": [{"passages_per_s_b32": 500.0,
                                                                                "vectors": tiny}],
            BASE + REFERENCE: [{"passages_per_s_b32": 2.0, "vectors": base}],
            BASE + "rt": [{"passages_per_s_b32": 3.0, "vectors": base}]}
    labels = {name: {"label": name} for name in runs}
    out = summarize(labels, runs, {})
    assert out["rt"]["speedup_b32"] == 5.0 and out[BASE + "rt"]["speedup_b32"] == 1.5
    assert out[BASE + "rt"]["check_vs_reference"] == SAME == out["rt"]["check_vs_reference"]
    table = markdown({"machine": {"cpu": "x", "cores": 2, "isa": []}, "threads": 2, "date": "d", "repeats": 1,
                      "command": "c", "passages": 1, "queries": 1, "mean_passage_tokens": 9, "results": out})
    tiny_part, base_part = table.split("random BERT-base")
    assert "| rt | 500.0 |" in tiny_part and "| base-rt | 3.0 |" in base_part and "base-rt" not in tiny_part


def test_cpu_fusions_times_the_graph_forms_it_names(tmp_path, default_model_dir):
    """benchmarks.cpu_fusions is the evidence for the CPU graphs' form: each graph it times must be the
    form its name says (an optimizer that stopped fusing would make the comparison silently moot), and
    the int8 forms must still compute the encoder's states."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    from benchmarks.cpu_fusions import _graphs

    names = ["cpu", "int8", "int8 fused (QAttention)", "int8 tanh GELU"]
    graphs, skipped = _graphs(default_model_dir, tmp_path, names)
    assert not skipped and list(graphs) == names
    ops = {name: {n.op_type for n in onnx.load_from_string(blob).graph.node} for name, blob in graphs.items()}
    assert "Attention" not in ops["cpu"] and "MatMulInteger" not in ops["cpu"]
    assert "MatMulInteger" in ops["int8"] and "QAttention" not in ops["int8"]
    assert "QAttention" in ops["int8 fused (QAttention)"]
    assert "FastGelu" in ops["int8 tanh GELU"] and "BiasGelu" not in ops["int8 tanh GELU"]
    ids = np.array([[101, 2054, 2003, 1037, 5736, 3012, 102]], dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    states = {name: ort.InferenceSession(blob, providers=["CPUExecutionProvider"]).run(None, feed)[0]
              for name, blob in graphs.items()}
    for name in names[1:]:
        cosine = (states[name] * states["cpu"]).sum(-1) / (
            np.linalg.norm(states[name], axis=-1) * np.linalg.norm(states["cpu"], axis=-1))
        assert cosine.min() > 0.95, (name, cosine)
