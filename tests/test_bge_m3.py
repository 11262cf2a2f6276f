"""bge-m3's sparse head (heads.HEADS "token-max"): exports of a random model in both of bge-m3's layouts
give FlagEmbedding's lexical weights and dense vectors, through the encoder, splade-eval, the corpus
command and the Qdrant writer; wrong layouts are one line.

FlagEmbedding itself is the reference (BGEM3FlagModel, fp32 on the CPU): the model is random (no hub
here), with a sparse linear that gives about a third of the tokens a weight (tests/random_models.py).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from random_models import make_bge_m3

from splade_rt import SparseAndDense, SpladeEncoder
from splade_rt.errors import ModelSourceError
from splade_rt.export.pipeline import export_model
from splade_rt.manifest import read_manifest

MAX_LENGTH = 64
FlagEmbedding = pytest.importorskip("FlagEmbedding")


@pytest.fixture(scope="module")
def texts(real_pairs) -> tuple[list[str], list[str]]:
    """Held-out SciFact queries and passages (not the parity texts), with repeated words and case."""
    queries, docs = real_pairs
    return (list(queries[20:40]) + ["rain rain RAIN river river", "What IS the Capital of AUSTRALIA"],
            list(docs[20:40]) + ["Send In The Clowns " * 10])


@pytest.fixture(scope="module", params=["hub", "flagembedding"])
def m3(request, tmp_path_factory):
    """(model directory, export directory) for each of bge-m3's layouts."""
    root = tmp_path_factory.mktemp(f"m3-{request.param}")
    model = make_bge_m3(root / "model", layout=request.param, max_length=MAX_LENGTH, seed=3)
    export_model(str(model), root / "onnx", int8=True, log=lambda _: None)
    return model, root / "onnx"


def flag_embedding(model_dir, texts: list[str]) -> dict:
    from FlagEmbedding import BGEM3FlagModel

    model = BGEM3FlagModel(str(model_dir), use_fp16=False, devices="cpu")
    return model.encode(texts, return_dense=True, return_sparse=True, max_length=MAX_LENGTH, batch_size=8)


def assert_lexical_equal(ours, theirs: list[dict], tolerance: float = 1e-4) -> None:
    """Same terms, values within tolerance (a term within 1e-5 of zero may be on one side only)."""
    for row, lexical in enumerate(theirs):
        want = {int(k): float(v) for k, v in lexical.items()}
        got = ours[row].to_dict()
        for term in set(want) ^ set(got):
            assert max(want.get(term, 0.0), got.get(term, 0.0)) <= 1e-5, (row, term)
        for term in set(want) & set(got):
            assert abs(want[term] - got[term]) <= tolerance, (row, term, want[term], got[term])


def test_lexical_weights_and_dense_vectors_equal_flag_embedding(m3, texts):
    model_dir, onnx_dir = m3
    manifest = read_manifest(onnx_dir)
    assert manifest.model.heads == {"document": "token-max", "query": "token-max"}
    assert {g.precision for g in manifest.graphs} == {"fp32", "fp16", "int8"}  # no vocab projection to screen
    assert manifest.parity["passed"] and manifest.parity["fp32"]["dense"]["max_abs_diff"] <= 1e-5
    encoder = SpladeEncoder(onnx_dir, device="cpu")
    assert encoder.placement.precision == "fp32"
    for group in texts:
        theirs = flag_embedding(model_dir, group)
        ours = encoder.encode_document(group, dense=True)
        assert isinstance(ours, SparseAndDense) and len(ours) == len(group)
        assert ours.sparse.nnz > 2 * len(group)  # the random head weights several terms per text
        assert_lexical_equal(ours.sparse, theirs["lexical_weights"])
        np.testing.assert_allclose(ours.dense, theirs["dense_vecs"], atol=1e-5)
        # queries take the same route; without dense=True the sparse vectors alone
        assert_lexical_equal(encoder.encode_query(group), theirs["lexical_weights"])


def test_top_k_keeps_flag_embeddings_largest_weights(m3, texts):
    model_dir, onnx_dir = m3
    docs = texts[1][:8]
    theirs = flag_embedding(model_dir, docs)["lexical_weights"]
    ours = SpladeEncoder(onnx_dir, device="cpu").encode_document(docs, top_k=3)
    for row, lexical in enumerate(theirs):
        want = sorted(((float(v), int(k)) for k, v in lexical.items()), reverse=True)[:3]
        assert sorted(ours[row].indices.tolist()) == sorted(k for _, k in want)


def test_lossy_variants_keep_the_top_terms(m3, texts):
    _, onnx_dir = m3
    exact = SpladeEncoder(onnx_dir, device="cpu", variant="fp32").encode_document(texts[1], dense=True)
    for variant in ("fp16", "int8"):
        got = SpladeEncoder(onnx_dir, device="cpu", variant=variant).encode_document(texts[1], dense=True)
        cosine = np.sum(exact.dense * got.dense, axis=1)
        assert cosine.min() >= 0.99, variant
        for row in range(len(texts[1])):
            top = {i for i, _ in exact.sparse[row].top(5)}
            assert len(top & {i for i, _ in got.sparse[row].top(5)}) >= 4, (variant, row)


def test_empty_text_has_no_terms_and_a_zero_dense_vector(m3):
    result = SpladeEncoder(m3[1], device="cpu").encode_document(["", "rain in spain"], dense=True)
    assert len(result.sparse[0]) == 0 and not result.dense[0].any() and result.dense[1].any()


def test_dense_on_a_splade_export_is_one_clear_error(export_dir):
    with pytest.raises(ValueError, match=r"head \(splade-max\) gives no dense vector"):
        SpladeEncoder(export_dir, device="cpu").encode(["rain"], dense=True)


def test_splade_eval_scores_flag_embeddings_lexical_matching(m3, tmp_path, capsys):
    """splade-eval's metrics on the export equal those of FlagEmbedding's own lexical matching scores
    (compute_lexical_matching_score) ranked by the same metric code."""
    from test_eval import cranfield_slice

    from splade_rt.evaluation.cli import main
    from splade_rt.evaluation.dataset import load_beir
    from splade_rt.evaluation.metrics import MAX_K, mean_metrics

    model_dir, onnx_dir = m3
    root = cranfield_slice(tmp_path / "cranfield", n_queries=10, n_documents=30)
    out = tmp_path / "report.json"
    assert main([str(onnx_dir), str(root), "--device", "cpu", "--json", str(out)]) == 0
    capsys.readouterr()
    report = json.loads(out.read_text())
    data = load_beir(root)
    from FlagEmbedding import BGEM3FlagModel

    flag = BGEM3FlagModel(str(model_dir), use_fp16=False, devices="cpu")
    lexical = lambda texts: flag.encode(texts, return_dense=False, return_sparse=True, max_length=MAX_LENGTH,  # noqa: E731
                                        batch_size=16)["lexical_weights"]
    docs, queries = lexical(data.corpus_texts), lexical(data.query_texts)
    rankings = []
    for q in queries:
        scores = np.array([flag.compute_lexical_matching_score(q, d) for d in docs])
        order = sorted(range(len(docs)), key=lambda i: (-scores[i], i))
        rankings.append([data.corpus_ids[i] for i in order[:MAX_K]])
    want = mean_metrics(rankings, [data.qrels.get(q, {}) for q in data.query_ids])
    for name, value in want.items():
        assert report["metrics"][name] == pytest.approx(value, abs=1e-6), name


def test_corpus_command_and_qdrant_writer_store_flag_embeddings_weights(m3, texts, tmp_path):
    qdrant_client = pytest.importorskip("qdrant_client")
    from splade_rt.bulk import encode_corpus, point_id

    model_dir, onnx_dir = m3
    docs = texts[1]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(docs)))
    location = tmp_path / "qdrant"
    encode_corpus(onnx_dir, corpus, tmp_path / "out", device="cpu", qdrant=str(location), collection="m3",
                  shard_size=8)
    theirs = flag_embedding(model_dir, docs)["lexical_weights"]
    client = qdrant_client.QdrantClient(path=str(location))
    try:
        assert client.count("m3").count == len(docs)
        for i, lexical in enumerate(theirs):
            (point,) = client.retrieve("m3", [point_id(f"d{i}")], with_vectors=True)
            vector = point.vector["splade"]
            got = dict(zip(vector.indices, vector.values))
            want = {int(k): float(v) for k, v in lexical.items()}
            assert set(got) == set(want)
            assert max(abs(got[k] - want[k]) for k in want) <= 1e-4
    finally:
        client.close()


def test_splade_bench_compares_with_flag_embedding(m3, tmp_path):
    import subprocess
    import sys

    if not (m3[0] / "modules.json").is_file():
        pytest.skip("the hub layout's run covers it: splade-bench reads the export and the source directory alike")

    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "splade_rt.bench.cli", str(m3[1]), "--limit", "16", "--batch-size",
                           "8", "--min-seconds", "0", "--threads", "1", "--compare", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["reference"] == "FlagEmbedding"
    assert report["results"]["reference"]["label"].startswith("FlagEmbedding BGEM3FlagModel fp32")
    assert report["results"]["splade-rt"]["check_vs_reference"]["max_abs_diff"] <= 1e-4
    assert "x FlagEmbedding" in proc.stdout


def test_a_hub_id_downloads_the_weights_file_the_repository_has_and_the_sparse_head(tmp_path, monkeypatch):
    """bge-m3's repository publishes pytorch_model.bin only: the download takes it, and sparse_linear.pt."""
    import huggingface_hub

    model = make_bge_m3(tmp_path / "model", layout="hub", max_length=MAX_LENGTH)
    asked = {}

    def snapshot_download(repo_id, allow_patterns):
        asked[repo_id] = allow_patterns
        return str(model)

    monkeypatch.setattr(huggingface_hub, "list_repo_files",
                        lambda repo_id: ["config.json", "pytorch_model.bin", "sparse_linear.pt", "colbert_linear.pt",
                                         "tokenizer.json", "onnx/model.onnx", "1_Pooling/config.json"])
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    manifest = export_model("BAAI/bge-m3", tmp_path / "onnx", fp16=False, log=lambda _: None)
    patterns = asked["BAAI/bge-m3"]
    assert "pytorch_model.bin" in patterns and "sparse_linear.pt" in patterns
    assert "model.safetensors" not in patterns and not any(p.endswith(".onnx") for p in patterns)
    assert manifest["source"]["model"] == "BAAI/bge-m3" and manifest["model"]["heads"]["document"] == "token-max"


def test_a_missing_sparse_head_is_one_line(tmp_path):
    model = make_bge_m3(tmp_path / "model", layout="hub", max_length=MAX_LENGTH)
    (model / "sparse_linear.pt").unlink()
    with pytest.raises(ModelSourceError, match=r"no sparse_linear\.pt: bge-m3's sparse head") as error:
        export_model(str(model), tmp_path / "onnx", log=lambda _: None)
    assert "\n" not in str(error.value) and not (tmp_path / "onnx").exists()


def test_a_sparse_head_of_the_wrong_shape_is_one_line(tmp_path):
    import torch

    model = make_bge_m3(tmp_path / "model", layout="flagembedding", max_length=MAX_LENGTH)
    torch.save(torch.nn.Linear(16, 1).state_dict(), model / "sparse_linear.pt")
    with pytest.raises(ModelSourceError, match=r"sparse_linear\.pt: expected bge-m3's sparse head, a Linear\(32, 1\)"):
        export_model(str(model), tmp_path / "onnx", log=lambda _: None)


def test_a_tokenizer_of_another_vocabulary_is_one_line(tmp_path):
    model = make_bge_m3(tmp_path / "model", layout="flagembedding", max_length=MAX_LENGTH)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "vocab_size": 100}))
    with pytest.raises(ModelSourceError, match=r"tokenizer has token ids up to \d+ but the model's vocabulary is 100"):
        export_model(str(model), tmp_path / "onnx", log=lambda _: None)


def test_a_dense_model_without_its_sparse_head_names_it(tmp_path):
    model = make_bge_m3(tmp_path / "model", layout="hub", max_length=MAX_LENGTH)
    for name in ("sparse_linear.pt", "colbert_linear.pt"):
        (model / name).unlink()
    with pytest.raises(ModelSourceError, match=r"dense sentence-transformers model .*sparse_linear\.pt"):
        export_model(str(model), tmp_path / "onnx", log=lambda _: None)

