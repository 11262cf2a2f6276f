"""The benchmarks' smoke runs, as subprocesses (the tests import nothing from benchmarks/): they run
end to end, every configuration they time is right, and what they write says what they measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from splade_rt.bench.measure import compare_rows
from splade_rt.kernels.native_head import unavailable

REPO = Path(__file__).resolve().parents[1]
REFERENCE = "st-torch"  # benchmarks.run's sentence-transformers torch fp32 configuration


def benchmark(module: str, *args: str, timeout: float = 900) -> None:
    proc = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_quick_benchmark_runs_and_checks_every_configuration(tmp_path):
    benchmark("run", "--quick", "--out", str(tmp_path), "--name", "smoke")
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


def test_cpu_fusions_times_the_graph_forms_it_names(tmp_path):
    """benchmarks.cpu_fusions is the evidence for the CPU graphs' form; it stops where a graph is not the
    form its name says (an optimizer that stopped fusing would make the comparison moot)."""
    benchmark("cpu_fusions", "--quick", "--out", str(tmp_path))
    (result,) = tmp_path.glob("cpu-fusions-*.json")
    report = json.loads(result.read_text())
    timed = {row["graph"] for row in report["rows"] if row["passages_per_s"] > 0}
    assert timed | set(report["skipped"].get("tiny", {})) == {
        "fused", "cpu", "int8", "int8 fused (QAttention)", "int8 tanh GELU", "int8 block-wise (MatMulNBits)"}
    assert {"fused", "cpu", "int8", "int8 fused (QAttention)", "int8 tanh GELU"} <= timed
