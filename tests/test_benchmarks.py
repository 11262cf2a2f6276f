"""The benchmark's --quick smoke run: it runs end to end and every configuration it times is right."""

from __future__ import annotations

import json

from benchmarks.run import main


def test_quick_benchmark_runs_and_checks_every_configuration(tmp_path):
    assert main(["--quick", "--out", str(tmp_path), "--name", "smoke"]) == 0
    report = json.loads((tmp_path / "smoke.json").read_text())
    assert (tmp_path / "smoke.md").read_text().count("\n") >= 4 and (tmp_path / "smoke.png").stat().st_size > 0
    results = report["results"]
    for name in ("st-torch", "rt-fp32", "rt-screened"):
        entry = results[name]
        assert "error" not in entry, entry
        assert entry["passages_per_s_b32"] > 0 and entry["query_p50_ms"] > 0 and entry["cold_start_s"] > 0
    for name in ("rt-fp32", "rt-screened"):  # a fast wrong answer must show
        check = results[name]["check_vs_reference"]
        assert check["max_abs_diff"] <= 1e-4 and check["top64_overlap"] >= 0.999
    assert "unavailable" in results["st-onnx"] or "error" not in results["st-onnx"]
