"""The manifest is parsed once into typed records: every gap is one ExportDirError line naming the field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from splade_rt import ExportDirError, SpladeEncoder
from splade_rt.manifest import read_manifest


def edited(export_dir: Path, tmp_path: Path, edit) -> Path:
    """A copy of the export whose splade.json went through edit(dict)."""
    out = tmp_path / "copy"
    shutil.copytree(export_dir, out, ignore=shutil.ignore_patterns("model.fp16.onnx", "model.fp32.onnx"))
    path = out / "splade.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return out


def drop(*keys):
    def edit(data):
        for key in keys[:-1]:
            data = data[key]
        del data[keys[-1]]
    return edit


def put(value, *keys):
    def edit(data):
        for key in keys[:-1]:
            data = data[key]
        data[keys[-1]] = value
    return edit


BROKEN = [
    (drop("tokenizer", "max_length"), "field 'tokenizer.max_length' is missing"),
    (drop("model"), "field 'model' is missing"),
    (put("12", "model", "vocab_size"), "field 'model.vocab_size' must be an integer"),
    (put("mean", "model", "pooling"), "field 'model.pooling' is 'mean'"),
    (put("nope", "files", "model.screened.onnx", "sha256"), "field 'files.model.screened.onnx.sha256'"),
    (put("int4", "files", "model.screened.onnx", "precision"), "field 'files.model.screened.onnx.precision' is 'int4'"),
    (drop("files", "tokenizer.json"), "no entry for the tokenizer file"),
    (put(99, "format_version"), "manifest format 99 is newer"),
    (put([], "tokenizer"), "field 'tokenizer' is not a JSON object"),
    (drop("native_head"), "field 'native_head' is missing"),  # the fp32-native graph's arrays
    (drop("files", "native_head.npz"), "no entry for native_head 'native_head.npz'"),
]


@pytest.mark.parametrize("edit,message", BROKEN, ids=[m.split("'")[1] if "'" in m else m for _, m in BROKEN])
def test_a_broken_manifest_is_one_error_naming_the_field(export_dir, tmp_path, edit, message):
    broken = edited(export_dir, tmp_path, edit)
    with pytest.raises(ExportDirError, match=r"splade\.json: ") as info:
        SpladeEncoder(broken, device="cpu")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_every_cli_says_it_in_one_line(export_dir, tmp_path, capsys):
    from splade_rt.bench.cli import main as bench_main
    from splade_rt.bulk.cli import main as corpus_main
    from splade_rt.evaluation.cli import main as eval_main
    from splade_rt.export.cli import main as export_main
    from splade_rt.runtime.cli import main as encode_main

    broken = edited(export_dir, tmp_path, drop("tokenizer", "max_length"))
    data = tmp_path / "beir"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "text": "a passage"}) + "\n")
    (data / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "a query"}) + "\n")
    (data / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    for name, main, argv in (("splade-encode", encode_main, [str(broken), "text"]),
                             ("splade-eval", eval_main, [str(broken), str(data)]),
                             ("splade-export", export_main, ["--check", str(broken)]),
                             ("splade-encode-corpus", corpus_main,
                              [str(broken), str(data / "corpus.jsonl"), "-o", str(tmp_path / "vectors")]),
                             ("splade-bench", bench_main, [str(broken)])):
        assert main(argv) == 2, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "'tokenizer.max_length' is missing" in err, (name, err)


def test_format_1_exports_still_load_and_encode_the_same(export_dir, tmp_path):
    """What version 1 wrote: no query_table, no per-file providers that the runtime read."""
    def as_v1(data):
        data["format_version"] = 1
        data.pop("query_table", None)
        data.pop("native_head")  # format 3's
        for name in ("model.states.onnx", "native_head.npz"):
            data["files"].pop(name)
        for entry in data["files"].values():
            entry.pop("providers", None)

    old = edited(export_dir, tmp_path, as_v1)
    manifest = read_manifest(old)
    assert manifest.format_version == 1 and manifest.graph("fp32-screened").name == "model.screened.onnx"
    texts = ["is send in the clowns from a musical", "what is the capital of australia"]
    a = SpladeEncoder(old, device="cpu", variant="fp32-screened").encode(texts).to_dense()
    b = SpladeEncoder(export_dir, device="cpu", variant="fp32-screened").encode(texts).to_dense()
    np.testing.assert_array_equal(a, b)


def test_new_manifests_name_no_execution_provider_and_old_ones_that_do_still_load(export_dir, tmp_path):
    """Which graph runs on which device is the provider table's order, not the manifest's: a new provider
    needs no re-export, and a format 4 manifest's provider lists change nothing."""
    data = json.loads((export_dir / "splade.json").read_text())
    assert data["format_version"] == 6
    assert not any("providers" in entry for entry in data["files"].values())

    def as_v4(data):  # what format 4 wrote: a provider list per graph, here one that says CUDA only
        data["format_version"] = 4
        del data["model"]["heads"]  # format 6
        for entry in data["files"].values():
            if "precision" in entry:
                entry["providers"] = ["CUDAExecutionProvider"]

    old = edited(export_dir, tmp_path, as_v4)
    for name in ("model.fp32.onnx", "model.fp16.onnx"):
        shutil.copy(export_dir / name, old)
    assert read_manifest(old).format_version == 4
    texts = ["is send in the clowns from a musical", "what is the capital of australia"]
    a = SpladeEncoder(old, device="cpu", variant="fp32-screened")
    b = SpladeEncoder(export_dir, device="cpu", variant="fp32-screened")
    np.testing.assert_array_equal(a.encode(texts).to_dense(), b.encode(texts).to_dense())
    assert SpladeEncoder(old, device="cpu").placement.file == SpladeEncoder(export_dir, device="cpu").placement.file


def test_an_export_without_the_cpu_graphs_runs_the_fp32_graph_on_the_cpu(export_dir, tmp_path):
    # the CPU's order (native, screened, fp32): the first the export has
    def fp32_only(data):
        for name in ("model.screened.onnx", "model.states.onnx", "native_head.npz"):
            del data["files"][name]
        data["native_head"] = None

    only_fp32 = edited(export_dir, tmp_path, fp32_only)
    shutil.copy(export_dir / "model.fp32.onnx", only_fp32)
    assert SpladeEncoder(only_fp32, device="cpu").placement.file == "model.fp32.onnx"


def test_a_manifest_before_heads_reads_as_splades_head_and_the_lookup_for_queries(export_dir, tmp_path):
    """Format 6 records each route's head kind (splade_rt.heads); earlier manifests imply SPLADE's."""
    assert read_manifest(export_dir).model.heads == {"document": "splade-max", "query": "splade-max"}

    def as_v5(data):
        data["format_version"] = 5
        del data["model"]["heads"]

    old = edited(export_dir, tmp_path, as_v5)
    assert read_manifest(old).model.heads == {"document": "splade-max", "query": "splade-max"}
    assert SpladeEncoder(old, device="cpu").encode(["rain"]).nnz > 0


@pytest.mark.parametrize("heads,problem", [
    ({"document": "static-lookup", "query": "static-lookup"}, "which runs no graph"),
    ({"document": "splade-max", "query": "static-lookup"}, "and query_table disagree"),
    ({"document": "mystery", "query": "splade-max"}, "expected one of splade-max, token-max, static-lookup"),
])
def test_a_head_the_export_cannot_have_is_one_line(export_dir, tmp_path, heads, problem):
    def put(data):
        data["model"]["heads"] = heads

    with pytest.raises(ExportDirError, match=problem):
        read_manifest(edited(export_dir, tmp_path, put))

