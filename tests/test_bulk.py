"""splade-encode-corpus / encode_corpus: vectors equal to encode_document by id for both engines,
exactly-once after a SIGKILL and after a killed Ray actor, bad input named by file and line (as a
flag from the CLI, as an argument from Python), resume and its guard rails, every output format,
output directories that pyarrow, pandas, DuckDB and Anserini read as they are, Anserini queries
quantized as its documents, and a Ray pipeline that cannot starve its read tasks."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA

from splade_rt.bulk import record_path
from splade_rt.errors import CorpusError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

SCIFACT = DATA / "scifact" / "corpus.jsonl"
N_DOCS = 120
MAX_LENGTH = 128  # shorter than the export's: keeps the runs quick, and tests that the option reaches the encoder
BASE = {"device": "cpu", "max_length": MAX_LENGTH, "progress": False}
CLI = [sys.executable, "-m", "splade_rt.bulk.cli"]


# -- fixtures and helpers ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def docs() -> list[dict]:
    if not SCIFACT.is_file():
        pytest.skip(f"real corpus not found at {SCIFACT} (set SPLADE_SHARED)")
    with open(SCIFACT, encoding="utf-8") as f:
        return [json.loads(line) for _, line in zip(range(N_DOCS), f)]


@pytest.fixture(scope="module")
def corpus(docs, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    write_jsonl(path, docs)
    return path


@pytest.fixture(scope="module")
def encoder(export_dir):
    from splade_rt import SpladeEncoder

    return SpladeEncoder(export_dir, device="cpu", max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def reference(docs, encoder) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """id -> (indices, values) from SpladeEncoder.encode_document of the same joined texts."""
    from splade_rt.evaluation.dataset import document_text

    vectors = encoder.encode_document([document_text(d.get("title"), d["text"]) for d in docs])
    return {d["_id"]: (v.indices, v.values) for d, v in zip(docs, vectors)}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def read_parquet_output(out: Path) -> tuple[list[str], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """(ids in shard order, id -> vector) of a Parquet output directory."""
    ids, vectors = [], {}
    for part in sorted(out.glob("part-*.parquet")):
        table = pq.read_table(part)
        for rid, idx, val in zip(table["id"].to_pylist(), table["indices"].to_pylist(), table["values"].to_pylist()):
            ids.append(rid)
            vectors[rid] = (np.array(idx, np.int32), np.array(val, np.float32))
    return ids, vectors


def assert_same_vectors(got: dict, reference: dict) -> None:
    """The bar: same non-zero terms and max abs diff <= 1e-6, compared by id."""
    for rid, (indices, values) in got.items():
        ref_indices, ref_values = reference[rid]
        np.testing.assert_array_equal(indices, ref_indices, err_msg=f"id {rid}: different terms")
        assert np.max(np.abs(values - ref_values), initial=0.0) <= 1e-6, rid


def assert_exactly_once(out: Path, reference: dict, expected_ids: list[str]) -> None:
    ids, vectors = read_parquet_output(out)
    assert ids == expected_ids  # every id once, in input order
    assert_same_vectors(vectors, reference)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary file or fragment left


def encode(export_dir, corpus, out, **options):
    from splade_rt.bulk import encode_corpus

    return encode_corpus(export_dir, corpus, out, **{**BASE, **options})


def state(out: Path) -> dict:
    return json.loads(record_path(out).read_text(encoding="utf-8"))


# -- the runtime stays light --------------------------------------------------------------------------------------

def test_import_splade_rt_loads_no_ray_pyarrow_or_qdrant():
    code = ("import sys, splade_rt; splade_rt.encode_corpus; import splade_rt.bulk.cli; "
            "print(sorted(m for m in ('ray', 'pyarrow', 'qdrant_client', 'tqdm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- local engine ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def parquet_run(export_dir, corpus, tmp_path_factory):
    """One finished Parquet run of the corpus in 3 shards: (output directory, summary)."""
    out = tmp_path_factory.mktemp("parquet") / "out"
    return out, encode(export_dir, corpus, out, shard_size=50)


def test_local_parquet_equals_encode_document(export_dir, parquet_run, docs, reference):
    out, summary = parquet_run
    assert (summary.documents, summary.encoded, summary.shards) == (N_DOCS, N_DOCS, 3)
    assert sorted(p.name for p in out.iterdir()) == ["part-00000.parquet", "part-00001.parquet",
                                                      "part-00002.parquet"]  # the shards, nothing else
    assert record_path(out) == out.parent / ".out.splade-corpus.json"
    schema = pq.read_schema(out / "part-00000.parquet")
    assert schema.field("id").type == pa.string()
    assert schema.field("indices").type.value_type == pa.int32()
    assert schema.field("values").type.value_type == pa.float32()
    assert pq.read_metadata(out / "part-00002.parquet").num_rows == 20
    assert_exactly_once(out, reference, [d["_id"] for d in docs])

    record = state(out)
    manifest = json.loads((export_dir / "splade.json").read_text())
    assert record["status"] == "complete" and record["documents"] == N_DOCS and record["shards"] == 3
    assert record["export"]["files"] == {name: f["sha256"] for name, f in manifest["files"].items()}
    assert record["export"]["weights_sha256"] == manifest["source"]["weights_sha256"]
    assert record["config"]["max_length"] == MAX_LENGTH
    assert record["runs"][-1]["documents"] == N_DOCS and record["runs"][-1]["documents_per_s"] > 0


def test_output_directory_opens_as_it_is_in_pyarrow_pandas_and_duckdb(parquet_run, docs, reference):
    """No extra arguments: the directory itself is the dataset (nothing in it but shards)."""
    import pyarrow.dataset as ds

    out, _ = parquet_run
    ids = [d["_id"] for d in docs]
    table = ds.dataset(out).to_table()
    assert table.schema.names == ["id", "indices", "values"] and sorted(table["id"].to_pylist()) == sorted(ids)
    frame = pytest.importorskip("pandas").read_parquet(out)
    assert len(frame) == N_DOCS and set(frame["id"]) == set(ids)
    row = frame.set_index("id").loc[ids[7]]
    np.testing.assert_array_equal(np.asarray(row["indices"]), reference[ids[7]][0])
    duckdb = pytest.importorskip("duckdb")
    for glob in (f"{out}/*.parquet", f"{out}/**/*.parquet"):
        assert duckdb.sql(f"select count(distinct id) from read_parquet('{glob}')").fetchall() == [(N_DOCS,)]


def test_csv_tsv_parquet_and_jsonl_directory_in_sorted_order(export_dir, docs, encoder, tmp_path):
    from splade_rt.evaluation.dataset import document_text

    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    rows = [{"doc_id": d["_id"], "heading": d.get("title", ""), "body": " ".join(d["text"].split())} for d in docs[:32]]
    rows[20]["body"] = 'a bare " in a TSV field is text, not a quote'
    with open(src / "a.csv", "w", encoding="utf-8", newline="") as f:
        import csv

        writer = csv.DictWriter(f, fieldnames=["doc_id", "heading", "body"])
        writer.writeheader()
        writer.writerows(rows[:8])
    pq.write_table(pa.Table.from_pylist([{**r, "doc_id": int(r["doc_id"])} for r in rows[8:16]]), src / "b.parquet")
    (src / "b2.tsv").write_text("doc_id\theading\tbody\n" + "".join(
        f"{r['doc_id']}\t{r['heading']}\t{r['body']}\n" for r in rows[16:24]), encoding="utf-8")
    write_jsonl(src / "sub" / "c.jsonl", rows[24:])
    (src / ".hidden.jsonl").write_text("not read\n")

    out = tmp_path / "out"
    encode(export_dir, src, out, id_field="doc_id", text_field="body", title_field="heading", shard_size=12)
    ids, vectors = read_parquet_output(out)
    assert ids == [r["doc_id"] for r in rows]  # a.csv, b.parquet (integer ids as strings), b2.tsv, sub/c.jsonl
    reference = encoder.encode_document([document_text(r["heading"], r["body"]) for r in rows])
    assert_same_vectors(vectors, {r["doc_id"]: (v.indices, v.values) for r, v in zip(rows, reference)})


def test_top_k_and_threshold_reach_the_encoder(export_dir, corpus, docs, encoder, tmp_path):
    from splade_rt.evaluation.dataset import document_text

    out = tmp_path / "out"
    encode(export_dir, corpus, out, top_k=16, threshold=0.1)
    _, vectors = read_parquet_output(out)
    reference = encoder.encode_document([document_text(d.get("title"), d["text"]) for d in docs], top_k=16,
                                        threshold=0.1)
    assert all(len(v[0]) <= 16 for v in vectors.values())
    assert_same_vectors(vectors, {d["_id"]: (v.indices, v.values) for d, v in zip(docs, reference)})


# -- resume and exactly-once ----------------------------------------------------------------------------------

def test_sigkill_part_way_then_rerun_gives_every_id_once(export_dir, corpus, docs, reference, tmp_path):
    out = tmp_path / "out"
    command = CLI + [str(export_dir), str(corpus), "-o", str(out), "--device", "cpu", "--max-length",
                     str(MAX_LENGTH), "--shard-size", "10", "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(out.glob("part-*.parquet"))) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = len(list(out.glob("part-*.parquet")))
    assert process.returncode == -signal.SIGKILL and 2 <= finished < N_DOCS // 10, "the kill came too late"
    assert state(out)["status"] == "running"

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert_exactly_once(out, reference, [d["_id"] for d in docs])
    record = state(out)
    assert record["status"] == "complete"
    assert [r["documents"] for r in record["runs"]] == [N_DOCS - 10 * finished]  # only the unfinished shards
    assert f"{N_DOCS} documents in 12 shards" in rerun.stdout


def test_rerun_resumes_nothing_done_and_refuses_other_options(export_dir, corpus, docs, reference, tmp_path):
    out = tmp_path / "out"
    encode(export_dir, corpus, out, shard_size=60)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")}
    assert encode(export_dir, corpus, out, shard_size=60).encoded == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")} == before

    with pytest.raises(CorpusError, match=r"different config \(config.top_k: null -> 8\)") as e:
        encode(export_dir, corpus, out, shard_size=60, top_k=8)
    assert "\n" not in str(e.value)
    other = corpus.parent / "other.jsonl"
    write_jsonl(other, docs[:5])
    with pytest.raises(CorpusError, match="different input"):
        encode(export_dir, other, out, shard_size=60)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")} == before

    summary = encode(export_dir, corpus, out, shard_size=60, top_k=8, force=True)
    assert summary.encoded == N_DOCS
    _, vectors = read_parquet_output(out)
    assert max(len(v[0]) for v in vectors.values()) == 8


def test_a_directory_from_an_earlier_version_resumes_and_its_record_moves_out(export_dir, corpus, docs, reference,
                                                                              tmp_path):
    out = tmp_path / "out"
    encode(export_dir, corpus, out, shard_size=60)
    record_path(out).rename(out / "splade-corpus.json")  # where earlier versions kept the record
    (out / "part-00001.parquet").unlink()
    with pytest.raises(CorpusError, match="different config"):  # the old record still guards the directory
        encode(export_dir, corpus, out, shard_size=60, top_k=8)
    assert encode(export_dir, corpus, out, shard_size=60).encoded == N_DOCS - 60  # only the missing shard
    assert sorted(p.name for p in out.iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    assert state(out)["status"] == "complete" and len(state(out)["runs"]) == 2
    assert_exactly_once(out, reference, [d["_id"] for d in docs])


def test_a_run_that_failed_before_encoding_binds_nothing(export_dir, corpus, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="device 'bogus'"):
        encode(export_dir, corpus, out, device="bogus")
    assert not list(out.glob("part-*"))
    assert encode(export_dir, corpus, out, shard_size=200).encoded == N_DOCS  # another device: no refusal


def test_refuses_a_directory_that_is_not_its_output(export_dir, corpus, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CorpusError, match="not empty"):
        encode(export_dir, corpus, tmp_path, force=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"


# -- bad input --------------------------------------------------------------------------------------------------

BAD_LINES = {  # line 4 of a five-line file; the message part the error must contain
    "malformed JSON": (b'{"_id": "x", "text": \n', "malformed JSON line"),
    "missing id": (b'{"text": "no id here"}\n', "missing id field '_id'"),
    "missing text": (b'{"_id": "m", "title": "only a title"}\n', "text field 'text' missing"),
    "duplicate id": (b'{"_id": "d1", "text": "again"}\n', "duplicate id 'd1'"),
    "non-UTF-8": (b'{"_id": "u", "text": "caf\xe9"}\n', "not UTF-8"),
}
GOOD = [{"_id": f"d{i}", "title": "A title", "text": f"document number {i} about cells"} for i in range(1, 5)]


def bad_file(path: Path, bad: bytes) -> Path:
    lines = [json.dumps(r).encode() + b"\n" for r in GOOD]
    path.write_bytes(b"".join(lines[:3]) + bad + lines[3])
    return path


@pytest.mark.parametrize("case", list(BAD_LINES))
def test_bad_row_stops_with_one_line_naming_file_and_line(case, export_dir, tmp_path, capsys):
    from splade_rt.bulk.cli import main

    bad, message = BAD_LINES[case]
    path = bad_file(tmp_path / "corpus.jsonl", bad)
    out = tmp_path / "out"
    assert main([str(export_dir), str(path), "-o", str(out), "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"splade-encode-corpus: error: {path}:4: "), err
    assert message in err[0]
    if case == "duplicate id":
        assert f"first at {path}:1" in err[0]
    assert not out.exists()  # vetting comes before anything is written


def test_on_error_skip_counts_each_kind_and_encodes_the_rest(export_dir, encoder, tmp_path):
    path = tmp_path / "corpus.jsonl"
    lines = [json.dumps(r).encode() + b"\n" for r in GOOD]
    path.write_bytes(lines[0] + b"".join(bad for bad, _ in BAD_LINES.values()) + b"".join(lines[1:]))
    summary = encode(export_dir, path, tmp_path / "out", on_error="skip")
    assert summary.documents == 4
    assert summary.skipped == {"malformed": 1, "missing field": 2, "duplicate id": 1, "not UTF-8": 1}
    record = state(tmp_path / "out")
    assert record["skipped"] == summary.skipped
    assert record["skipped_examples"]["duplicate id"].startswith(f"{path}:5: duplicate id 'd1'")
    ids, vectors = read_parquet_output(tmp_path / "out")
    assert ids == ["d1", "d2", "d3", "d4"]  # the first d1 kept, its duplicate skipped
    reference = encoder.encode_document(["A title " + r["text"] for r in GOOD])
    assert_same_vectors(vectors, {r["_id"]: (v.indices, v.values) for r, v in zip(GOOD, reference)})
    assert "5 bad rows skipped" in summary.line()


def test_missing_column_is_one_error_for_the_file(export_dir, tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("id,body\n1,text\n")
    with pytest.raises(CorpusError, match=r"no column '_id' \(columns: id, body\); name it with id_field$"):
        encode(export_dir, path, tmp_path / "out", on_error="skip")
    assert not (tmp_path / "out").exists()


def test_hints_name_the_argument_from_python_and_the_flag_from_the_cli(export_dir, tmp_path, capsys):
    from splade_rt.bulk.cli import main

    path = bad_file(tmp_path / "corpus.jsonl", BAD_LINES["missing id"][0])
    with pytest.raises(CorpusError, match=r'\(on_error="skip" skips such rows\)$'):
        encode(export_dir, path, tmp_path / "out")
    assert main([str(export_dir), str(path), "-o", str(tmp_path / "out"), "--device", "cpu", "--no-progress"]) == 2
    assert capsys.readouterr().err.strip().endswith("(--on-error skip skips such rows)")


def test_empty_documents_are_kept_with_no_terms_and_counted(export_dir, encoder, tmp_path):
    """The rule of SpladeEncoder.encode: an empty or blank text is a vector with no terms. Cranfield
    (the shared copy) has two such documents; they must not stop a run."""
    from splade_rt.evaluation.dataset import document_text

    rows = [*GOOD[:2], {"_id": "e1", "title": "", "text": ""}, {"_id": "e2", "title": " ", "text": " \n\t "}, *GOOD[2:]]
    path = tmp_path / "corpus.jsonl"
    write_jsonl(path, rows)
    out = tmp_path / "out"
    summary = encode(export_dir, path, out)
    assert (summary.documents, summary.empty, summary.skipped) == (6, 2, {})
    assert "2 empty (no terms)" in summary.line() and state(out)["empty_documents"] == 2
    ids, vectors = read_parquet_output(out)
    assert ids == [r["_id"] for r in rows]
    assert len(vectors["e1"][0]) == len(vectors["e2"][0]) == 0
    reference = encoder.encode_document([document_text(r["title"], r["text"]) for r in rows])
    assert_same_vectors(vectors, {r["_id"]: (v.indices, v.values) for r, v in zip(rows, reference)})


class _IdsWriter:
    """A format of the test's own: the ids of a shard, one a line."""

    def open(self, path: Path):
        return _IdsFile(path)

    def close(self) -> None:
        pass


class _IdsFile:
    def __init__(self, path: Path) -> None:
        self.file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def write(self, batch) -> None:
        self.file.write("".join(rid + "\n" for rid in batch.ids))

    def close(self) -> None:
        self.file.close()


def test_a_new_output_format_is_one_row_plus_its_writer(export_dir, tmp_path, capsys, monkeypatch):
    from splade_rt.bulk import OUTPUT_FORMATS, OutputFormat
    from splade_rt.bulk.cli import main, parser

    monkeypatch.setitem(OUTPUT_FORMATS, "ids", OutputFormat("ids", ".txt", "the ids, one a line",
                                                            lambda export_dir, options: _IdsWriter()))
    assert "ids: the ids, one a line" in " ".join(parser().format_help().split())
    path = tmp_path / "corpus.jsonl"
    write_jsonl(path, GOOD)
    out = tmp_path / "out"
    assert main([str(export_dir), str(path), "-o", str(out), "--device", "cpu", "--no-progress", "--format", "ids",
                 "--shard-size", "3"]) == 0, capsys.readouterr().err
    assert [(out / f"part-0000{k}.txt").read_text().split() for k in (0, 1)] == [["d1", "d2", "d3"], ["d4"]]
    assert state(out)["config"]["format"] == "ids"


def test_a_missing_package_is_named_before_any_work(export_dir, tmp_path):
    path = tmp_path / "corpus.jsonl"
    write_jsonl(path, GOOD)
    code = ("import sys; sys.modules['pyarrow'] = sys.modules['pyarrow.parquet'] = None\n"
            "from splade_rt.bulk.cli import main; sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", code, str(export_dir), str(path), "-o", str(tmp_path / "out"),
                           "--device", "cpu"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "splade-encode-corpus: error: --format parquet needs pyarrow: pip install 'splade-rt[distributed]'"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fmt", ["parquet", "anserini"])
def test_empty_input_writes_an_empty_valid_output(fmt, export_dir, tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("")
    out = tmp_path / "out"
    summary = encode(export_dir, path, out, format=fmt)
    assert (summary.documents, summary.shards) == (0, 1)
    if fmt == "parquet":
        table = pq.read_table(out / "part-00000.parquet")
        assert table.num_rows == 0 and table.schema.names == ["id", "indices", "values"]
    else:
        assert (out / "part-00000.jsonl").read_text() == ""
    assert state(out)["status"] == "complete"


# -- other outputs ----------------------------------------------------------------------------------------------

def test_anserini_json_vector_collection(export_dir, corpus, docs, reference, tmp_path):
    from tokenizers import Tokenizer

    from splade_rt.evaluation.dataset import document_text

    out = tmp_path / "out"
    encode(export_dir, corpus, out, format="anserini", shard_size=100)
    lines = [json.loads(line) for p in sorted(out.glob("part-*.jsonl")) for line in p.read_text().splitlines()]
    assert [line["id"] for line in lines] == [d["_id"] for d in docs]
    assert state(out)["config"]["quantization_factor"] == 100
    tokenizer = Tokenizer.from_file(str(export_dir / "tokenizer.json"))
    for line, doc in zip(lines, docs):
        assert set(line) == {"id", "contents", "vector"}
        assert line["contents"] == document_text(doc.get("title"), doc["text"])
        indices, values = reference[doc["_id"]]
        impacts = np.rint(values.astype(np.float64) * 100).astype(int)
        expected = {tokenizer.id_to_token(int(t)): int(q) for t, q in zip(indices, impacts) if q > 0}
        assert line["vector"] == expected
    # Anserini's JsonVectorCollection reads every file under -input, hidden or not (no file filter in
    # DocumentCollection's walker): the directory must hold the shards and nothing else
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["part-00000.jsonl", "part-00001.jsonl"]


def test_anserini_queries_are_quantized_as_its_documents(export_dir, encoder, tmp_path, caplog):
    from collections import Counter

    from splade_rt.bulk import anserini_queries, write_anserini_topics

    queries = {"q1": "what do cells in the brain do", "q2": "vitamin D and the risk of cancer", "q3": "0-dimensional",
               "blank": "  "}
    path = tmp_path / "queries.jsonl"
    write_jsonl(path, [{"_id": qid, "text": text} for qid, text in queries.items()])
    encode(export_dir, path, tmp_path / "out", format="anserini", quantization_factor=50)
    documents = {r["id"]: r["vector"] for r in map(json.loads, (tmp_path / "out" / "part-00000.jsonl").open())}
    assert anserini_queries(encoder, list(queries.values()), factor=50) == list(documents.values())
    assert all(documents[q] for q in ("q1", "q2", "q3")) and documents["blank"] == {}

    topics = write_anserini_topics(tmp_path / "topics.tsv", encoder, queries, factor=50)
    lines = [line.split("\t") for line in topics.read_text(encoding="utf-8").splitlines()]
    assert [qid for qid, _ in lines] == ["q1", "q2", "q3"]  # the query with no terms is left out, and said so
    assert "1 of 4 queries have no terms" in caplog.text
    for qid, tokens in lines:  # each token repeated by its impact: what -impact -pretokenized counts back
        assert Counter(tokens.split(" ")) == documents[qid]
    with pytest.raises(ValueError, match=re.escape("query id 'a\\tb': must be")):
        write_anserini_topics(tmp_path / "bad.tsv", encoder, {"a\tb": "text"})


def _java_and_anserini() -> tuple[str, str]:
    """(java, Anserini's fatjar): the jar named by SPLADE_RT_ANSERINI_JAR (pyserini's sdist ships one,
    pyserini/resources/jars/), java from SPLADE_RT_JAVA or PATH (Anserini 1.x needs Java 21+)."""
    jar = os.environ.get("SPLADE_RT_ANSERINI_JAR")
    java = os.environ.get("SPLADE_RT_JAVA") or shutil.which("java")
    if not jar or not Path(jar).is_file() or not java:
        pytest.skip("set SPLADE_RT_ANSERINI_JAR to an Anserini fatjar (and SPLADE_RT_JAVA to a Java 21+) to run it")
    return java, jar


def test_anserini_indexes_the_output_and_searches_it_with_the_queries(export_dir, encoder, docs, tmp_path):
    """The real consumer: IndexCollection takes the output directory as it is (no error line), and
    SearchCollection's impact scores are the integer dot products of the quantized vectors."""
    from collections import Counter

    from splade_rt.bulk import write_anserini_topics

    java, jar = _java_and_anserini()
    corpus = tmp_path / "corpus.jsonl"
    write_jsonl(corpus, [*docs[:40], {"_id": "empty", "title": "", "text": " "}])
    out = tmp_path / "out"
    encode(export_dir, corpus, out, format="anserini", shard_size=15)
    index = subprocess.run([java, "-cp", jar, "io.anserini.index.IndexCollection", "-collection",
                            "JsonVectorCollection", "-input", str(out), "-index", str(tmp_path / "index"),
                            "-generator", "DefaultLuceneDocumentGenerator", "-impact", "-pretokenized",
                            "-threads", "1"],
                           capture_output=True, text=True, timeout=300, check=False)
    log = index.stdout + index.stderr
    assert index.returncode == 0 and not [line for line in log.splitlines() if " ERROR " in line or "Exception" in line]
    assert "3 files found" in log and re.search(r"indexed: +40\b", log) and re.search(r"empty: +1\b", log), log[-3000:]

    queries = {"q1": docs[3]["title"], "q2": "what do cells in the brain do"}
    topics = write_anserini_topics(tmp_path / "topics.tsv", encoder, queries)
    run = tmp_path / "run.txt"
    search = subprocess.run([java, "-cp", jar, "io.anserini.search.SearchCollection", "-index", str(tmp_path / "index"),
                             "-topics", str(topics), "-topicReader", "TsvString", "-output", str(run), "-impact",
                             "-pretokenized", "-hits", "10"], capture_output=True, text=True, timeout=300, check=False)
    assert search.returncode == 0 and run.is_file(), (search.stdout + search.stderr)[-3000:]
    vectors = {r["id"]: r["vector"] for p in sorted(out.glob("*.jsonl")) for r in map(json.loads, p.open())}
    weights = {qid: Counter(tokens.split()) for qid, tokens in (line.split("\t") for line in topics.open())}
    hits = [line.split() for line in run.read_text().splitlines()]
    assert {h[0] for h in hits} == {"q1", "q2"} and docs[3]["_id"] in [h[2] for h in hits if h[0] == "q1"]
    for qid, _, doc, _, score, _ in hits:
        assert float(score) == sum(w * vectors[doc].get(t, 0) for t, w in weights[qid].items()), (qid, doc)


def test_qdrant_embedded_local_mode(export_dir, corpus, docs, reference, tmp_path):
    qdrant_client = pytest.importorskip("qdrant_client")
    from splade_rt.bulk import point_id

    location = tmp_path / "qdrant"
    encode(export_dir, corpus, tmp_path / "out", qdrant=str(location), collection="scifact", shard_size=50)
    client = qdrant_client.QdrantClient(path=str(location))
    try:
        assert client.count("scifact").count == N_DOCS
        for doc in docs[::37]:
            (point,) = client.retrieve("scifact", [point_id(doc["_id"])], with_vectors=True)
            assert point.payload == {"doc_id": doc["_id"]}
            vector = point.vector["splade"]
            order = np.argsort(vector.indices)
            np.testing.assert_array_equal(np.array(vector.indices)[order], reference[doc["_id"]][0])
            assert np.max(np.abs(np.array(vector.values, np.float32)[order] - reference[doc["_id"]][1])) <= 1e-6
    finally:
        client.close()


# -- Ray engine -------------------------------------------------------------------------------------------------

def test_ray_resources_always_leave_cpus_for_reads_and_writes():
    pytest.importorskip("ray")
    from splade_rt.bulk.ray_engine import default_workers, resources

    assert default_workers(2, 0, "cpu") == 2 and default_workers(16, 4, "cuda") == 4
    assert resources(2, 2, None) == (0.5, 0.5)  # the measured trap: 1 CPU each hangs on 2 CPUs
    assert resources(2, 1, None) == (1.0, 0.5)
    for cpus in (1, 2, 3, 8, 64):
        for workers in range(1, 2 * cpus + 1):
            per_actor, io = resources(cpus, workers, None)
            assert per_actor > 0 and io > 0
            assert workers * per_actor + 2 * io <= cpus + 1e-9  # a read and a write task always fit
    with pytest.raises(CorpusError, match="would hang"):
        resources(2, 2, 1.0)


def test_ray_actors_of_every_gpu_provider_ask_for_gpus():
    """Which devices need a GPU is the provider table's to say: TensorRT actors get one, as CUDA's do."""
    pytest.importorskip("ray")
    from splade_rt.bulk import CorpusOptions
    from splade_rt.bulk.ray_engine import actor_plan
    from splade_rt.runtime.providers import PROVIDERS

    cluster = {"CPU": 16.0, "GPU": 4.0}
    trt = actor_plan(cluster, CorpusOptions(engine="ray", device="tensorrt:1"))
    assert (trt.workers, trt.gpus, trt.device) == (4, 1.0, "tensorrt")  # Ray numbers each actor's GPUs from 0
    for kind, row in PROVIDERS.items():
        plan = actor_plan(cluster, CorpusOptions(engine="ray", device=kind, gpus_per_worker=0.5))
        assert (plan.gpus, plan.workers) == ((0.5, 4) if row.uses_gpu else (None, 16)), kind
    assert actor_plan(cluster, CorpusOptions(engine="ray", device="auto")).gpus is None
    with pytest.raises(CorpusError, match="tensorrt: the Ray cluster has 0 GPUs"):
        actor_plan({"CPU": 8.0}, CorpusOptions(engine="ray", device="tensorrt", workers=2))


def test_ray_cli_two_actors_on_two_cpus_finishes(export_dir, corpus, docs, reference, tmp_path):
    """The real pipeline with its own local Ray on this machine's CPUs (2 in CI): it must finish."""
    pytest.importorskip("ray")
    out = tmp_path / "out"
    command = CLI + [str(export_dir), str(corpus), "-o", str(out), "--engine", "ray", "--workers", "2",
                     "--device", "cpu", "--max-length", str(MAX_LENGTH), "--shard-size", "50", "--no-progress"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("the Ray pipeline hung: encoder actors left no CPU for the read tasks")
    assert done.returncode == 0, done.stderr[-2000:]
    assert_exactly_once(out, reference, [d["_id"] for d in docs])
    assert state(out)["runs"][-1]["engine"] == "ray"
    # Ray is quiet unless --verbose: no INFO lines, no execution plan, no progress reports, no worker output
    noisy = [line for line in done.stderr.splitlines() if " INFO " in line or "Dataset" in line or "(pid=" in line]
    assert not noisy, noisy[:5]


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_two_actors_equal_encode_document_and_local(export_dir, ray_cluster, docs, encoder, tmp_path):
    """Mixed formats and skipped rows: Ray's read tasks must number rows exactly as the vetting pass did."""
    from splade_rt.evaluation.dataset import document_text

    src = tmp_path / "src"
    src.mkdir()
    bad = b"".join(bad for bad, _ in BAD_LINES.values())
    first = [json.dumps({**d, "_id": f"j{i}"}).encode() + b"\n" for i, d in enumerate(docs[:40])]
    (src / "a.jsonl").write_bytes(b"".join(first[:20]) + bad.replace(b'"d1"', b'"j0"') + b"".join(first[20:]))
    pq.write_table(pa.Table.from_pylist([{"_id": f"p{i}", "title": d.get("title"), "text": d["text"]}
                                         for i, d in enumerate(docs[40:N_DOCS])]), src / "b.parquet")
    texts = {f"j{i}": d for i, d in enumerate(docs[:40])} | {f"p{i}": d for i, d in enumerate(docs[40:N_DOCS])}
    vectors = encoder.encode_document([document_text(d.get("title"), d["text"]) for d in texts.values()])
    reference = {rid: (v.indices, v.values) for rid, v in zip(texts, vectors)}

    summary = encode(export_dir, src, tmp_path / "ray", engine="ray", workers=2, on_error="skip", shard_size=35)
    assert (summary.documents, summary.encoded, summary.shards) == (N_DOCS, N_DOCS, 4)
    assert sum(summary.skipped.values()) == len(BAD_LINES)
    assert_exactly_once(tmp_path / "ray", reference, list(texts))
    encode(export_dir, src, tmp_path / "local", on_error="skip", shard_size=35)
    for name in (f"part-0000{i}.parquet" for i in range(4)):  # the same shards, row for row
        assert pq.read_table(tmp_path / "ray" / name)["id"].equals(pq.read_table(tmp_path / "local" / name)["id"])


def test_ray_anserini_equals_local_anserini(export_dir, ray_cluster, corpus, tmp_path):
    encode(export_dir, corpus, tmp_path / "local", format="anserini", shard_size=70)
    encode(export_dir, corpus, tmp_path / "ray", format="anserini", shard_size=70, engine="ray", workers=2)
    for name in ("part-00000.jsonl", "part-00001.jsonl"):
        local, ray = ([json.loads(line) for line in (tmp_path / side / name).read_text().splitlines()]
                      for side in ("local", "ray"))
        assert [(r["id"], r["contents"]) for r in ray] == [(r["id"], r["contents"]) for r in local]
        for a, b in zip(ray, local):  # integer impacts: a 1e-6 difference may round the other way, no more
            assert a["vector"].keys() == b["vector"].keys()
            assert all(abs(a["vector"][t] - b["vector"][t]) <= 1 for t in a["vector"])


def _encoder_actors(busy: bool) -> dict[int, str]:
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            title = (proc / "cmdline").read_bytes().split(b"\0")[0].decode()
        except (OSError, ValueError):
            continue
        if title.startswith("ray::MapWorker(MapBatches(EncodeBatch))") and (not busy or title.endswith(".submit")):
            found[int(proc.name)] = title
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the actor's process through /proc")
def test_ray_killed_actor_is_restarted_and_its_batch_retried(export_dir, ray_cluster, corpus, docs, reference,
                                                            tmp_path):
    out, errors = tmp_path / "out", []

    def run():
        try:
            encode(export_dir, corpus, out, engine="ray", workers=2, batch_size=2, shard_size=40)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            errors.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    deadline, victim = time.monotonic() + 120, None
    while victim is None and thread.is_alive() and time.monotonic() < deadline:
        busy = _encoder_actors(busy=True)  # an actor inside a batch right now
        victim = min(busy) if busy else None
        time.sleep(0.01)
    assert victim is not None and thread.is_alive(), "no busy encoder actor seen before the run ended"
    os.kill(victim, signal.SIGKILL)  # its batch was in flight: only a retry can bring those rows back
    thread.join(timeout=240)
    assert not thread.is_alive() and not errors, errors
    assert_exactly_once(out, reference, [d["_id"] for d in docs])


def test_ray_rerun_keeps_fragments_of_an_interrupted_run(export_dir, ray_cluster, corpus, docs, reference, tmp_path):
    """What a killed driver leaves: fragments of an unpublished shard (one cut off mid-write), and
    fragments of a shard published just before the kill. The rerun encodes only what is missing."""
    out = tmp_path / "out"
    encode(export_dir, corpus, out, shard_size=40)
    shard = pq.read_table(out / "part-00001.parquet")
    (out / "part-00001.parquet").unlink()
    fragments = out / ".fragments"
    (fragments / "shard=1").mkdir(parents=True)
    (fragments / "shard=0").mkdir()
    half = shard.slice(0, 15)
    half = half.add_column(0, "position", pa.array(range(40, 55), pa.int64()))
    pq.write_table(half, fragments / "shard=1" / "earlier.parquet")
    (fragments / "shard=1" / "cut-off.parquet").write_bytes(b"PAR1\x00\x01")
    pq.write_table(half, fragments / "shard=0" / "leftover.parquet")

    summary = encode(export_dir, corpus, out, shard_size=40, engine="ray", workers=1)
    assert summary.encoded == 40 - 15
    assert_exactly_once(out, reference, [d["_id"] for d in docs])
