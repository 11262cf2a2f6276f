"""benchmarks.peers without making a venv or reaching a registry: the worker (run in this venv on the
torch backend), the venv cache and its pins, the fastembed directory, the checks and what a peer
that could not be set up reports."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import peers
from benchmarks.peers import PeerError
from splade_rt.bench.measure import compare_rows

PASSAGES = ["The capital of France is Paris, a city on the Seine.",
            "Vitamin D deficiency is linked to bone loss in older adults."]
QUERIES = ["capital of france", "vitamin d bone"]


def test_worker_runs_a_configuration_and_its_vectors_are_sentence_transformers(st_dir):
    from sentence_transformers import SparseEncoder

    from splade_rt import SparseEmbeddings

    spec = peers.reference_configuration(st_dir)  # sentence-transformers torch, in this venv
    common = {"threads": 1, "passages": PASSAGES, "queries": QUERIES, "passage_tokens": 40, "batch_sizes": [2],
              "check_rows": 2, "min_seconds": 0}
    result = peers.run_peer({**common, **spec}, timeout=300)
    assert "error" not in result, result
    assert result["passes_b2"] == 1 and result["passages_per_s_b2"] > 0
    assert result["tokens_per_s_b2"] == pytest.approx(40 / 2 * result["passages_per_s_b2"])
    assert 0 < result["import_s"] < result["cold_start_s"] and result["peak_rss_mib"] > 0
    assert 0 < result["query_p50_ms"] <= result["query_p99_ms"]
    assert "versions" not in result  # every key but vectors is a number: benchmarks.run takes their median

    expected = SparseEncoder(str(st_dir), device="cpu").encode_document(PASSAGES, convert_to_tensor=True)
    expected = expected.to_dense().numpy()
    expected_rows = [{str(i): float(r[i]) for i in np.flatnonzero(r)} for r in expected]
    check = compare_rows(expected_rows, result["vectors"])
    assert check["max_abs_diff"] < 1e-5 and check["active_term_jaccard"] == 1.0 and check["same_active_terms"] == 1

    # encode mode (the int8 quality run's): the same vectors, as CSR arrays
    path = peers.call_worker(sys.executable, "encode", {k: spec[k] for k in ("kind", "backend", "model_dir")}
                             | {"threads": 1, "batch_size": 2}, 1, 300, ".npz",
                             {"documents": PASSAGES, "queries": QUERIES})
    with np.load(path) as z:
        docs = SparseEmbeddings(z["documents_indptr"], z["documents_indices"], z["documents_data"],
                                int(z["documents_shape"][1]))
        assert int(z["queries_shape"][0]) == 2
    np.testing.assert_allclose(docs.to_dense(), expected, atol=1e-5)
    assert peers.jaccard(docs.to_csr(), docs.to_csr()) == 1.0


def test_a_failing_worker_says_why_in_one_line(tmp_path):
    result = peers.run_peer({"python": sys.executable, "kind": "st", "backend": "torch", "threads": 1,
                             "model_dir": str(tmp_path / "missing"), "passages": PASSAGES, "queries": QUERIES,
                             "batch_sizes": [2], "check_rows": 2}, timeout=300)
    assert set(result) == {"error"} and "\n" not in result["error"] and result["error"]


def fake_install(calls: list):
    """Stands in for pip_install: a venv whose python is a script that prints a freeze."""

    def install(python: Path, target: Path, requirements, log_file: Path) -> None:
        calls.append(tuple(requirements))
        if "broken==1" in requirements:
            target.mkdir(parents=True)
            raise PeerError("pip install failed")
        exe = peers.venv_python(target)
        exe.parent.mkdir(parents=True)
        exe.write_text("#!/bin/sh\n" + "".join(f"echo {r}\n" for r in requirements))
        exe.chmod(exe.stat().st_mode | stat.S_IEXEC)

    return install


def test_a_venv_is_kept_until_its_pins_change(tmp_path):
    calls: list = []
    kw = {"root": tmp_path, "python": Path("/usr/bin/python3"), "install": fake_install(calls), "log": lambda _: None}
    exe = peers.ensure_venv("peer", ["a==1", "b==2"], **kw)
    assert calls == [("a==1", "b==2")] and exe == peers.venv_python(tmp_path / "peer")
    assert peers.installed(exe) == {"a": "1", "b": "2"}
    (tmp_path / "peer" / "stale").write_text("from the old pins")
    assert peers.ensure_venv("peer", ["a==1", "b==2"], **kw) == exe and len(calls) == 1  # cached
    peers.ensure_venv("peer", ["a==1", "b==3"], **kw)  # a pin changed: made again from nothing
    assert calls[-1] == ("a==1", "b==3") and not (tmp_path / "peer" / "stale").exists()
    assert peers.installed(exe) == {"a": "1", "b": "3"}
    peers.ensure_venv("peer", ["a==1", "b==3"], **{**kw, "python": Path("/usr/bin/python3.12")})  # another Python
    assert len(calls) == 3
    marker = json.loads((tmp_path / "peer" / peers.MARKER).read_text())
    assert marker["requirements"] == ["a==1", "b==3"] and marker["python"] == "/usr/bin/python3.12"


def test_a_failed_install_is_not_taken_for_a_venv(tmp_path):
    calls: list = []
    kw = {"root": tmp_path, "python": Path("/usr/bin/python3"), "install": fake_install(calls), "log": lambda _: None}
    for _ in range(2):
        with pytest.raises(PeerError, match="pip install failed"):
            peers.ensure_venv("peer", ["broken==1"], **kw)
    assert len(calls) == 2 and not (tmp_path / "peer" / peers.MARKER).exists()


def test_the_venv_key_covers_pins_order_and_python():
    base = peers.venv_key(["torch==2.13.0", "x==1"], "/py", "3.11.7")
    assert base == peers.venv_key(("torch==2.13.0", "x==1"), "/py", "3.11.7")
    others = {peers.venv_key(["torch==2.13.0", "x==2"], "/py", "3.11.7"),
              peers.venv_key(["x==1", "torch==2.13.0"], "/py", "3.11.7"),  # install order matters (torch first)
              peers.venv_key(["torch==2.13.0", "x==1"], "/py2", "3.11.7"),
              peers.venv_key(["torch==2.13.0", "x==1"], "/py", "3.12.1")}
    assert base not in others and len(others) == 4
    for pins in peers.REQUIREMENTS.values():  # every pin exact, so a venv is the same wherever it is made
        assert all("==" in p for p in pins)
    assert peers.REQUIREMENTS["st-onnx"][0] == peers.TORCH  # the CPU wheel goes in first


def test_the_fastembed_directory_links_the_export_and_truncates(tmp_path):
    st = tmp_path / "st"
    (st / "onnx").mkdir(parents=True)
    (st / "onnx" / "model.onnx").write_bytes(b"graph")
    for name in ("tokenizer.json", "config.json", "special_tokens_map.json"):
        (st / name).write_text("{}")
    (st / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 512, "max_length": 512}))
    out = peers.fastembed_dir(st, 256)
    assert (out / "model.onnx").read_bytes() == b"graph" and (out / "tokenizer.json").is_file()
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["model_max_length"] == config["max_length"] == 256
    assert peers.fastembed_dir(st, 256) == out and peers.fastembed_dir(st, 512) != out


def test_the_quantization_config_follows_the_cpu_flags():
    assert peers.quantization_config(["avx2", "avx512f", "avx512_vnni"]) in ("avx512_vnni", "arm64")
    if peers.platform.machine().lower() not in ("arm64", "aarch64"):
        assert peers.quantization_config(["avx2", "avx512f"]) == "avx512"
        assert peers.quantization_config(["avx2"]) == "avx2"


def test_a_peer_that_cannot_be_set_up_says_why(monkeypatch):
    def no_venv(name, *args, **kwargs):
        raise PeerError(f"{name}: no registry")

    monkeypatch.setattr(peers, "ensure_venv", no_venv)
    results = peers.peer_configurations(Path("model"), log=lambda _: None)
    assert set(results) == set(peers.PEERS)
    for entry in results.values():
        assert set(entry) == {"label", "unavailable"} and "st-onnx: no registry" in entry["unavailable"]
    assert "optimum export" in results["fastembed"]["unavailable"]
