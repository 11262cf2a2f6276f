"""splade-eval: metrics on hand-computed cases, exact search, dataset validation, one end-to-end run."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA
from scipy.sparse import csr_matrix

from splade_rt.errors import DatasetError
from splade_rt.evaluation import (
    document_text,
    load_beir,
    mean_metrics,
    metric_names,
    query_metrics,
    read_records,
    search,
    top_k_rows,
)
from splade_rt.evaluation.cli import main
from splade_rt.evaluation.metrics import (
    accuracy_at_k,
    average_precision_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    reciprocal_rank_at_k,
)

# -- metrics ----------------------------------------------------------------------------------------

RANKING = ["a", "b", "c", "d", "e"]
BINARY = {"b": 1, "d": 1, "z": 1}  # relevant at ranks 2 and 4; "z" never retrieved


def test_accuracy_precision_recall_binary():
    assert [accuracy_at_k(RANKING, BINARY, k) for k in (1, 3, 5, 10)] == [0.0, 1.0, 1.0, 1.0]
    assert precision_at_k(RANKING, BINARY, 1) == 0.0
    assert precision_at_k(RANKING, BINARY, 3) == pytest.approx(1 / 3)
    assert precision_at_k(RANKING, BINARY, 5) == pytest.approx(2 / 5)
    assert precision_at_k(RANKING, BINARY, 10) == pytest.approx(2 / 10)  # over k, not over the 5 retrieved
    assert recall_at_k(RANKING, BINARY, 1) == 0.0
    assert recall_at_k(RANKING, BINARY, 3) == pytest.approx(1 / 3)
    assert recall_at_k(RANKING, BINARY, 10) == pytest.approx(2 / 3)


def test_grade_zero_is_not_relevant():
    grades = {"a": 0, "b": 1}
    assert accuracy_at_k(["a", "b"], grades, 1) == 0.0
    assert recall_at_k(["a", "b"], grades, 2) == 1.0  # one relevant document, not two
    assert reciprocal_rank_at_k(["a", "b"], grades, 10) == 0.5


def test_mrr():
    assert reciprocal_rank_at_k(RANKING, BINARY, 10) == 0.5
    assert reciprocal_rank_at_k(RANKING, BINARY, 1) == 0.0
    ranking = [f"n{i}" for i in range(10)] + ["r"]  # first relevant at rank 11
    assert reciprocal_rank_at_k(ranking, {"r": 1}, 10) == 0.0
    assert query_metrics(ranking, {"r": 1})["mrr@10"] == 0.0
    assert query_metrics(ranking, {"r": 1})["map@100"] == pytest.approx(1 / 11)


def test_ndcg_binary():
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(RANKING, BINARY, 10) == pytest.approx(dcg / ideal)
    assert ndcg_at_k(RANKING, BINARY, 10) == pytest.approx(0.49819, abs=1e-5)
    assert ndcg_at_k(["b", "d", "z"], BINARY, 10) == pytest.approx(1.0)


def test_ndcg_graded():
    grades = {"a": 1, "b": 2, "c": 0, "d": 3}  # "d" (grade 3) is not retrieved
    dcg = 1 / math.log2(2) + 2 / math.log2(3)
    ideal = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(["a", "b", "c"], grades, 10) == pytest.approx(dcg / ideal)
    assert ndcg_at_k(["a", "b", "c"], grades, 10) == pytest.approx(0.47500, abs=1e-5)
    # the grade matters: the same hits in the ideal order score 1, swapped they score less
    assert ndcg_at_k(["d", "b", "a"], grades, 10) == pytest.approx(1.0)
    assert ndcg_at_k(["b", "d", "a"], grades, 10) < 1.0
    # the ideal ranking is cut at k too: the best two of three graded documents fill k=2
    assert ndcg_at_k(["d", "b"], grades, 2) == pytest.approx(1.0)


def test_ndcg_binary_gains_count_every_relevant_document_as_one():
    grades = {"a": 1, "b": 2, "c": 0, "d": 3}
    ones = {"a": 1, "b": 1, "d": 1}
    for ranking in (["a", "b", "c"], ["d", "b", "a"], ["b", "d", "a"], ["c", "x", "a"], []):
        assert ndcg_at_k(ranking, grades, 10, "binary") == pytest.approx(ndcg_at_k(ranking, ones, 10))
    # any order of the relevant documents is ideal in binary nDCG, not in graded
    assert ndcg_at_k(["a", "b", "d"], grades, 10, "binary") == pytest.approx(1.0)
    assert ndcg_at_k(["a", "b", "d"], grades, 10, "graded") < 0.9
    # with binary qrels the conventions agree
    assert ndcg_at_k(RANKING, BINARY, 10, "binary") == ndcg_at_k(RANKING, BINARY, 10, "graded")
    # gains change nDCG only
    graded, binary = (mean_metrics([["a", "b", "c"], ["d"]], [grades, {"d": 2, "e": 1}], g)
                      for g in ("graded", "binary"))
    assert graded["ndcg@10"] != binary["ndcg@10"]
    assert {n: v for n, v in graded.items() if n != "ndcg@10"} == {n: v for n, v in binary.items() if n != "ndcg@10"}
    with pytest.raises(ValueError, match="gains"):
        ndcg_at_k(RANKING, BINARY, 10, "exponential")


def test_map_fewer_relevant_than_k():
    # hits at ranks 2 and 4 of 3 relevant: (1/2 + 2/4) / min(100, 3)
    assert average_precision_at_k(RANKING, BINARY, 100) == pytest.approx(1 / 3)
    # at k=3 only the rank-2 hit counts, still divided by min(3, 3)
    assert average_precision_at_k(RANKING, BINARY, 3) == pytest.approx(0.5 / 3)


def test_map_more_relevant_than_k():
    grades = {f"r{i}": 1 for i in range(5)}
    assert average_precision_at_k(["r0", "x", "r1"], grades, 2) == pytest.approx(1.0 / 2)  # / min(2, 5)
    assert average_precision_at_k(["r0", "r1", "x"], grades, 2) == pytest.approx(1.0)


def test_mean_metrics_averages_per_query():
    result = mean_metrics([["a"], ["b"]], [{"a": 1}, {"a": 1}])
    assert list(result) == metric_names()
    assert result["accuracy@1"] == 0.5 and result["mrr@10"] == 0.5 and result["ndcg@10"] == 0.5
    with pytest.raises(ValueError):
        mean_metrics([["a"]], [])


def test_metrics_match_sentence_transformers_on_the_same_rankings():
    """Same rankings through sentence-transformers' own compute_metrics: every number agrees, on binary
    qrels in either convention, on graded qrels with binary gains."""
    ir = pytest.importorskip("sentence_transformers.sentence_transformer.evaluation")
    rng = np.random.default_rng(0)
    corpus = {f"d{i:03d}": "x" for i in range(150)}
    queries, grades, rankings = {}, {}, []
    for q in range(40):
        qid = f"q{q}"
        queries[qid] = "x"
        relevant = rng.choice(list(corpus), size=int(rng.integers(1, 15)), replace=False).tolist()
        grades[qid] = {d: int(rng.integers(1, 4)) for d in relevant}
        rankings.append(rng.choice(list(corpus), size=100, replace=False).tolist())
    evaluator = ir.InformationRetrievalEvaluator(queries, corpus, {q: set(g) for q, g in grades.items()},
                                                 write_csv=False)
    st = evaluator.compute_metrics(
        [[{"corpus_id": cid, "score": 1000.0 - rank} for rank, cid in enumerate(r)] for r in rankings])
    ones = [{d: 1 for d in grades[q]} for q in queries]
    for qrels, gains in ((ones, "graded"), (ones, "binary"), ([grades[q] for q in queries], "binary")):
        ours = mean_metrics(rankings, qrels, gains)
        for name in metric_names():
            family, k = name.split("@")
            assert ours[name] == pytest.approx(float(st[f"{family}@k"][int(k)]), abs=1e-12), (name, gains)


# -- search -----------------------------------------------------------------------------------------

DOCS = csr_matrix(np.array([[1, 0, 0, 0], [0, 2, 0, 0], [1, 1, 0, 0], [0, 0, 3, 0], [0, 0, 0, 0]], np.float32))
QUERIES = csr_matrix(np.array([[1, 1, 0, 0], [0, 0, 1, 0]], np.float32))


def test_search_exact_top_k_ties_in_doc_order():
    idx, scores = search(QUERIES, DOCS, top_k=3)
    # q0 scores [1, 2, 2, 0, 0]: docs 1 and 2 tie, doc order decides
    assert idx[0].tolist() == [1, 2, 0] and scores[0].tolist() == [2, 2, 1]
    # q1 scores [0, 0, 0, 3, 0]: the zero ties cross the cut, the lowest documents fill it
    assert idx[1].tolist() == [3, 0, 1] and scores[1].tolist() == [3, 0, 0]


def test_search_k_above_corpus_size():
    idx, _ = search(QUERIES, DOCS, top_k=100)
    assert idx.shape == (2, 5)
    assert idx[0].tolist() == [1, 2, 0, 3, 4]


def _brute_force(q: np.ndarray, d: np.ndarray, k: int) -> np.ndarray:
    dense = q @ d.T
    return np.stack([np.lexsort((np.arange(len(row)), -row))[:k] for row in dense])


def test_search_matches_brute_force_for_every_chunk_size():
    rng = np.random.default_rng(1)
    d = (rng.random((300, 50)) < 0.1) * rng.integers(1, 4, (300, 50)).astype(np.float32)  # small ints: many ties
    q = (rng.random((17, 50)) < 0.15) * rng.integers(1, 4, (17, 50)).astype(np.float32)
    expected = _brute_force(q, d, 20)
    for chunk in (1, 4, None):
        idx, scores = search(csr_matrix(q), csr_matrix(d), top_k=20, chunk_size=chunk)
        assert idx.tolist() == expected.tolist()
        assert np.array_equal(scores, np.take_along_axis(q @ d.T, expected, axis=1))


def test_top_k_rows_all_tied():
    idx, values = top_k_rows(np.zeros((2, 10), np.float32), 4)
    assert idx.tolist() == [[0, 1, 2, 3]] * 2 and values.tolist() == [[0.0] * 4] * 2


def test_search_rejects_mismatched_dimensions():
    with pytest.raises(ValueError, match="dimension"):
        search(QUERIES, csr_matrix(np.zeros((3, 5), np.float32)))


# -- datasets ---------------------------------------------------------------------------------------


def write_beir(root: Path, corpus: list[dict] | None = None, queries: list[dict] | None = None,
               qrels: list[tuple[str, str, int]] | None = None) -> Path:
    corpus = corpus if corpus is not None else [
        {"_id": "d1", "title": "Boiling eggs", "text": "Boil an egg in water for nine minutes."},
        {"_id": "d2", "title": "", "text": "The capital city of France is Paris."},
        {"_id": "d3", "title": "Clowns", "text": "Send in the clowns is a song from the musical A Little Night Music."},
        {"_id": "d4", "title": "Vaccines", "text": "A vaccine trains the immune system against a virus."},
        {"_id": "d5", "title": "Rain", "text": "Rain falls when water vapour in clouds condenses."},
        {"_id": "d6", "title": "Bones", "text": "Vitamin D helps the body absorb calcium for bone growth."},
    ]
    queries = queries if queries is not None else [
        {"_id": "q1", "text": "how long to boil an egg"},
        {"_id": "q2", "text": "what is the capital of france"},
        {"_id": "q3", "text": "is send in the clowns from a musical"},
        {"_id": "q4", "text": "how does a vaccine work"},
        {"_id": "q5", "text": "a query without relevant documents"},
    ]
    qrels = qrels if qrels is not None else [
        ("q1", "d1", 1), ("q2", "d2", 2), ("q3", "d3", 1), ("q4", "d4", 1), ("q4", "d6", 0), ("q5", "d5", 0)]
    root.mkdir(parents=True, exist_ok=True)
    (root / "qrels").mkdir(exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus), encoding="utf-8")
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels), encoding="utf-8")
    return root


def test_load_beir(tmp_path):
    data = load_beir(write_beir(tmp_path / "ds"))
    assert data.corpus_ids == ["d1", "d2", "d3", "d4", "d5", "d6"]
    assert data.corpus_texts[0] == "Boiling eggs Boil an egg in water for nine minutes."
    assert data.corpus_texts[1] == "The capital city of France is Paris."  # empty title: no leading space
    assert data.query_ids == ["q1", "q2", "q3", "q4"]  # q5 has only a grade-0 qrel
    assert data.skipped_queries == 1
    assert data.qrels["q2"] == {"d2": 2.0} and data.qrels["q4"] == {"d4": 1.0}


def test_documents_join_title_and_text_in_one_place(tmp_path):
    assert document_text("Title", "text ") == "Title text"
    assert document_text("", " text") == document_text(None, "text") == "text"
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in [
        {"_id": 1, "title": "T", "text": "a"}, {"_id": "2", "title": None, "text": "b"}, {"_id": "3", "text": "c"}]))
    assert read_records(path, with_title=True) == {"1": "T a", "2": "b", "3": "c"}
    assert read_records(path, with_title=False, limit=2) == {"1": "a", "2": "b"}


@pytest.mark.parametrize("missing", ["corpus.jsonl", "queries.jsonl", "qrels/test.tsv"])
def test_missing_file_names_path(tmp_path, missing):
    root = write_beir(tmp_path / "ds")
    (root / missing).unlink()
    with pytest.raises(DatasetError, match="missing") as e:
        load_beir(root)
    assert str(root / missing) in str(e.value)


def test_missing_directory(tmp_path):
    with pytest.raises(DatasetError, match="no such directory"):
        load_beir(tmp_path / "nope")


def test_malformed_json_names_file_and_line(tmp_path):
    root = write_beir(tmp_path / "ds")
    lines = (root / "queries.jsonl").read_text().splitlines()
    lines[2] = '{"_id": "q3", "text": "unterminated'
    (root / "queries.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"queries\.jsonl:3: malformed JSON"):
        load_beir(root)


def test_missing_id_and_text_fields(tmp_path):
    root = write_beir(tmp_path / "a", corpus=[{"_id": "d1", "text": "x"}, {"title": "t", "text": "y"}],
                      qrels=[("q1", "d1", 1)])
    with pytest.raises(DatasetError, match=r"corpus\.jsonl:2: missing '_id'"):
        load_beir(root)
    root = write_beir(tmp_path / "b", queries=[{"_id": "q1", "query": "wrong field"}], qrels=[("q1", "d1", 1)])
    with pytest.raises(DatasetError, match=r"queries\.jsonl:1: 'text' field missing"):
        load_beir(root)


def test_qrels_unknown_query_ids(tmp_path):
    root = write_beir(tmp_path / "ds", qrels=[("q1", "d1", 1), ("q9", "d1", 1), ("q8", "d2", 1)])
    with pytest.raises(DatasetError, match=r"2 query id\(s\) not in queries\.jsonl, e\.g\. 'q9'"):
        load_beir(root)


def test_qrels_unknown_corpus_ids(tmp_path):
    root = write_beir(tmp_path / "ds", qrels=[("q1", "d1", 1), ("q2", "gone", 0)])
    with pytest.raises(DatasetError, match=r"1 corpus id\(s\) not in corpus\.jsonl, e\.g\. 'gone'"):
        load_beir(root)


def test_qrels_malformed_row(tmp_path):
    root = write_beir(tmp_path / "ds")
    with open(root / "qrels" / "test.tsv", "a") as f:
        f.write("q1 d2 1\n")
    with pytest.raises(DatasetError, match=r"test\.tsv:8: expected 3 tab-separated fields"):
        load_beir(root)


def test_no_relevant_query(tmp_path):
    root = write_beir(tmp_path / "ds", qrels=[("q1", "d1", 0)])
    with pytest.raises(DatasetError, match="no query has a relevant document"):
        load_beir(root)


# -- the CLI ----------------------------------------------------------------------------------------


def test_cli_bad_dataset_one_line_exit_2(tmp_path, capsys):
    root = write_beir(tmp_path / "ds", qrels=[("q1", "d1", 1), ("q7", "d1", 1)])
    assert main([str(tmp_path / "no-export"), str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("splade-eval: error: ") and "q7" in err and "\n" not in err


def test_cli_bad_export_dir(tmp_path, capsys):
    assert main([str(tmp_path / "no-export"), str(write_beir(tmp_path / "ds"))]) == 2
    assert "splade-eval: error: " in capsys.readouterr().err


def test_cli_end_to_end_with_reference(export_dir, tmp_path, capsys):
    root = write_beir(tmp_path / "ds")
    out = tmp_path / "report.json"
    code = main([str(export_dir), str(root), "--device", "cpu", "--variant", "fp32", "--max-length", "64",
                 "--batch-size", "4", "--reference", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    report = json.loads(out.read_text())
    assert report["queries"] == 4 and report["documents"] == 6 and report["max_length"] == 64
    assert set(report["metrics"]) == set(metric_names())
    assert all(0.0 <= v <= 1.0 for v in report["metrics"].values())
    assert report["query_active_dims"] > 0 and report["document_active_dims"] > 0
    assert report["docs_per_second"] > 0 and report["encode_seconds"]["documents"] > 0
    assert report["gains"] == "graded" and "ndcg gains: graded" in printed  # the default, said
    # the fp32 graph retrieves what torch retrieves: the same ranking, the same metrics
    ref = report["reference"]
    assert all(abs(d) < 1e-9 for d in ref["diff"].values()), ref["diff"]
    assert ref["document_active_dims"] == pytest.approx(report["document_active_dims"], rel=0.02)
    for name in ("accuracy@1", "ndcg@10", "mrr@10", "map@100"):
        assert any(line.startswith(name) for line in printed.splitlines())
    assert "reference" in printed and "docs/s" in printed


def test_cli_rejects_unknown_gains(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path), str(tmp_path), "--gains", "exponential"])
    assert exit_.value.code == 2 and "--gains" in capsys.readouterr().err


def cranfield_slice(root: Path, n_queries: int = 20, n_documents: int = 60) -> Path:
    """Cranfield's first queries (graded qrels, 1-4), the documents they judge relevant and the first
    documents of the corpus, as a BEIR directory. Documents are renamed d0000, d0001, ... in corpus
    order, so that sentence-transformers' tie-break (by id) and ours (by corpus order) agree."""
    src = DATA / "cranfield"
    if not (src / "corpus.jsonl").is_file():
        pytest.skip(f"Cranfield not found at {src} (set SPLADE_SHARED)")
    queries = [{"_id": q, "text": t} for q, t in list(read_records(src / "queries.jsonl", with_title=False).items())
               [:n_queries]]
    wanted = {q["_id"] for q in queries}
    rows = [line.rstrip("\n").split("\t") for line in (src / "qrels" / "test.tsv").read_text().splitlines()[1:]]
    rows = [(q, d, int(g)) for q, d, g in rows if q in wanted]
    relevant = {d for _, d, g in rows if g > 0}
    corpus = [json.loads(line) for line in (src / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    corpus = [doc for i, doc in enumerate(corpus) if i < n_documents or doc["_id"] in relevant]
    new_id = {doc["_id"]: f"d{i:04d}" for i, doc in enumerate(corpus)}
    return write_beir(root, corpus=[{**doc, "_id": new_id[doc["_id"]]} for doc in corpus], queries=queries,
                      qrels=[(q, new_id[d], g) for q, d, g in rows if d in new_id])


def test_binary_gains_give_sentence_transformers_evaluator_numbers_end_to_end(export_dir, st_dir, tmp_path, capsys):
    """splade-eval --gains binary on an export, and sentence-transformers' SparseInformationRetrievalEvaluator
    on a SparseEncoder of the same model: the same metrics on real graded qrels (Cranfield), where
    graded nDCG differs."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.evaluation import SparseInformationRetrievalEvaluator

    root = cranfield_slice(tmp_path / "cranfield")
    reports = {}
    for gains in ("binary", "graded"):
        out = tmp_path / f"{gains}.json"
        assert main([str(export_dir), str(root), "--device", "cpu", "--gains", gains, "--json", str(out)]) == 0
        reports[gains] = json.loads(out.read_text())
        assert reports[gains]["gains"] == gains and f"ndcg gains: {gains}" in capsys.readouterr().out
    data = load_beir(root)
    evaluator = SparseInformationRetrievalEvaluator(
        queries=dict(zip(data.query_ids, data.query_texts)), corpus=dict(zip(data.corpus_ids, data.corpus_texts)),
        relevant_docs={q: set(docs) for q, docs in data.qrels.items()}, write_csv=False)
    model = SparseEncoder(str(st_dir), device="cpu")
    assert model.max_seq_length == reports["binary"]["max_length"]
    st = evaluator(model)
    binary, graded = reports["binary"]["metrics"], reports["graded"]["metrics"]
    for name in metric_names():
        family, k = name.split("@")
        assert binary[name] == pytest.approx(st[f"dot_{family}@{k}"], abs=1e-9), name
        if name != "ndcg@10":
            assert graded[name] == binary[name], name
    assert abs(graded["ndcg@10"] - binary["ndcg@10"]) > 1e-3  # the slice's grades matter to graded nDCG


def test_evaluation_imports_without_torch():
    code = ("import sys, splade_rt.evaluation, splade_rt.evaluation.cli; "
            "assert not {'torch', 'transformers'} & set(sys.modules), 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
