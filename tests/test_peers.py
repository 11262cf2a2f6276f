"""benchmarks/peer_worker.py, the process that times each peer inside its own virtual environment,
run here as benchmarks.peers runs it (`python -I`, so it sees only its venv and this checkout's
splade_rt measurement code) on the sentence-transformers torch backend of this venv: its numbers
are the benchmark's, and its vectors must be sentence-transformers' own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from splade_rt import SparseEmbeddings
from splade_rt.bench.measure import compare_rows

REPO = Path(__file__).resolve().parents[1]
PASSAGES = ["The capital of France is Paris, a city on the Seine.",
            "Vitamin D deficiency is linked to bone loss in older adults."]
QUERIES = ["capital of france", "vitamin d bone"]


def peer_worker(mode: str, spec: dict, tmp_path: Path, suffix: str) -> Path:
    (tmp_path / "texts.json").write_text(json.dumps({"passages": PASSAGES, "queries": QUERIES,
                                                     "documents": PASSAGES}))
    (tmp_path / "spec.json").write_text(json.dumps({**spec, "texts_file": str(tmp_path / "texts.json"),
                                                    "spawned_at": time.time()}))
    out = tmp_path / f"out-{mode}{suffix}"
    proc = subprocess.run([sys.executable, "-I", str(REPO / "benchmarks" / "peer_worker.py"), mode,
                           str(tmp_path / "spec.json"), str(out)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert proc.returncode == 0 and out.is_file(), proc.stderr[-3000:]
    return out


def test_the_peer_worker_times_a_configuration_and_its_vectors_are_sentence_transformers(st_dir, tmp_path):
    from sentence_transformers import SparseEncoder

    spec = {"kind": "st", "backend": "torch", "model_dir": str(st_dir), "threads": 1, "passage_tokens": 40,
            "batch_sizes": [2], "check_rows": 2, "min_seconds": 0}
    result = json.loads(peer_worker("run", spec, tmp_path, ".json").read_text())
    assert result["passes_b2"] == 1 and result["passages_per_s_b2"] > 0
    assert result["tokens_per_s_b2"] == pytest.approx(40 / 2 * result["passages_per_s_b2"])
    assert 0 < result["import_s"] < result["cold_start_s"] and result["peak_rss_mib"] > 0
    assert 0 < result["query_p50_ms"] <= result["query_p99_ms"]
    assert result["versions"]["sentence-transformers"]

    expected = SparseEncoder(str(st_dir), device="cpu").encode_document(PASSAGES, convert_to_tensor=True)
    expected = expected.to_dense().numpy()
    rows = [{str(i): float(r[i]) for i in np.flatnonzero(r)} for r in expected]
    check = compare_rows(rows, result["vectors"])
    assert check["max_abs_diff"] < 1e-5 and check["active_term_jaccard"] == 1.0 and check["same_active_terms"] == 1

    # encode mode (the int8 quality run's): the same vectors, as CSR arrays
    with np.load(peer_worker("encode", {**spec, "batch_size": 2}, tmp_path, ".npz")) as z:
        docs = SparseEmbeddings(z["documents_indptr"], z["documents_indices"], z["documents_data"],
                                int(z["documents_shape"][1]))
        assert int(z["queries_shape"][0]) == 2
    np.testing.assert_allclose(docs.to_dense(), expected, atol=1e-5)
