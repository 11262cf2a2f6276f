"""The benchmark's --quick smoke run: it runs end to end, every configuration it times is right, and
what it writes says what it measured."""

from __future__ import annotations

import json

import pytest

from benchmarks.run import REFERENCE, main
from splade_rt.bench.measure import compare_rows


def test_quick_benchmark_runs_and_checks_every_configuration(tmp_path):
    assert main(["--quick", "--out", str(tmp_path), "--name", "smoke"]) == 0
    report = json.loads((tmp_path / "smoke.json").read_text())
    table = (tmp_path / "smoke.md").read_text()
    assert (tmp_path / "smoke.png").stat().st_size > 0
    assert report["quick"] and report["repeats"] == 1 and report["passages"] == 32 and report["queries"] == 10
    results = report["results"]
    timed = {name for name, entry in results.items() if "unavailable" not in entry}
    assert {REFERENCE, "rt-fp32", "rt-screened", "rt-screened-serial"} <= timed
    ref = results[REFERENCE]
    assert ref["check_vs_reference"] == {"max_abs_diff": 0.0, "top64_overlap": 1.0}  # itself
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
        # a fast wrong answer shows
        assert check["max_abs_diff"] <= 1e-4 and check["top64_overlap"] >= 0.999, (name, check)
        # the table says what the JSON says, one row per configuration
        assert f"| {entry['label']} | {entry['passages_per_s_b32']:.1f} | - | {entry['speedup_b32']:.2f}x |" in table
    for name in set(results) - timed:  # a configuration that could not run says why, in its row
        assert f"| {results[name]['label']} | {results[name]['unavailable']} |" in table
    assert table.count("\n| ") == len(results) + 1  # the header and one row each


def test_the_vector_check_sees_a_wrong_vector():
    reference = [{str(t): float(100 - t) for t in range(80)}, {"5": 1.0, "9": 0.5}]
    assert compare_rows(reference, reference) == {"max_abs_diff": 0.0, "top64_overlap": 1.0}
    off = [dict(reference[0]), {"5": 1.0, "9": 0.75}]  # one weight off by 0.25
    assert compare_rows(reference, off)["max_abs_diff"] == pytest.approx(0.25)
    swapped = [{**{str(t): float(100 - t) for t in range(63)}, "79": 50.0}, reference[1]]  # a top-64 term lost
    assert compare_rows(reference, swapped)["top64_overlap"] == pytest.approx((63 / 64 + 1) / 2)


def test_repeats_take_the_median_of_numbers_and_keep_labels():
    from benchmarks.run import summarize

    rows = [{"5": 1.0, "9": 0.5}]
    runs = {REFERENCE: [{"passages_per_s_b32": 1.0, "vectors": rows}, {"passages_per_s_b32": 3.0, "vectors": rows}],
            "rt": [{"passages_per_s_b32": 4.0, "provider": "CPUExecutionProvider", "vectors": rows},
                   {"passages_per_s_b32": 8.0, "provider": "CPUExecutionProvider", "vectors": rows}]}
    out = summarize({REFERENCE: {"label": "st"}, "rt": {"label": "rt"}}, runs, {})
    assert out["rt"]["passages_per_s_b32"] == 6.0 and out["rt"]["provider"] == "CPUExecutionProvider"
    assert out["rt"]["speedup_b32"] == 3.0
