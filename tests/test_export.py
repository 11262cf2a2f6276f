"""splade-export: graphs that match the torch reference, a truthful manifest, clear failures."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import SHARED, make_tiny_model

from splade_rt.export.cli import main as export_main
from splade_rt.export.pipeline import export_model
from splade_rt.kernels.native_head import unavailable
from splade_rt.manifest import read_manifest

TEXTS = ["is send in the clowns from a musical", "", "Canberra is the capital city of Australia. " * 3]


def run_sparse(path: Path, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["sparse"], {"input_ids": ids, "attention_mask": mask, "top_k": np.array([8])})[0]


def tokenized(directory: Path, texts=TEXTS, max_length: int = 512):
    from transformers import AutoTokenizer

    enc = AutoTokenizer.from_pretrained(str(directory))(texts, padding=True, truncation=True, max_length=max_length,
                                                        return_tensors="np")
    return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)


def test_default_export_passes_parity_and_records_it(export_dir):
    manifest = read_manifest(export_dir)
    parity = manifest.parity
    assert parity["passed"] and parity["tokenizer_ids_match"]
    assert parity["fp32"]["max_rel_diff"] <= 1e-4
    assert parity["fp16"]["top64_overlap_mean"] >= 0.98 and parity["fp16"]["argmax_same"]
    assert set(manifest.files) == {"model.fp32.onnx", "model.screened.onnx", "model.states.onnx", "native_head.npz",
                                   "model.fp16.onnx", "tokenizer.json"}
    for exact in ("fp32-screened", "fp32-native"):  # the same vectors as the fp32 graph
        assert parity[exact]["passed"] and parity[exact]["vs_fp32_graph"]["nonzero_jaccard_min"] == 1.0
        assert parity[exact]["vs_fp32_graph"]["max_abs_diff"] <= 1e-5
    native_ran = "kernels/_head.c" in parity["fp32-native"]["method"]
    assert native_ran == (unavailable() is None), parity["fp32-native"]["method"]  # the kernel itself, where it runs
    assert manifest.native_head == "native_head.npz" and manifest.format_version == 6
    assert [g.precision for g in manifest.graphs] == ["fp32", "fp32-screened", "fp32-native", "fp16"]
    assert manifest.model.vocab_size == 30522 and manifest.tokenizer.max_length == 512
    assert manifest.model.model_type == "bert" and manifest.query_table is None
    assert manifest.tokenizer.special_tokens["cls"] == 101 and manifest.tokenizer.pad_id == 0
    assert len(manifest.source["weights_sha256"]) == 64
    # the BERT fusions the optimizer is there for actually happened, in the GPU's graph; the CPU's
    # graphs keep attention and the residual LayerNorms as plain ops (faster in onnxruntime's CPU EP)
    assert manifest.graph_info["fusions"].get("Attention") == 2
    assert manifest.graph_info["fusions"].get("SkipLayerNormalization", 0) >= 2
    ops = {g.precision: {n.op_type for n in onnx.load(str(export_dir / g.name)).graph.node} for g in manifest.graphs}
    assert {"Attention", "SkipLayerNormalization"} <= ops["fp16"]
    for cpu in ("fp32", "fp32-screened", "fp32-native"):
        assert not {"Attention", "SkipLayerNormalization"} & ops[cpu] and "LayerNormalization" in ops[cpu]


def test_tied_weights_stored_once_and_logits_never_whole(export_dir, default_model_dir):
    weights = (default_model_dir / "model.safetensors").stat().st_size
    fp32 = export_dir / "model.fp32.onnx"
    assert fp32.stat().st_size < 1.05 * weights  # 33 MB when the tied decoder is stored twice
    model = onnx.load(str(fp32))
    chunk = read_manifest(export_dir).graph_info["vocab_chunk"]
    slices = [n for n in model.graph.node if n.op_type == "Slice" and n.name.startswith("splade/w_")]
    assert len(slices) == -(-30522 // chunk)
    # every vocab projection multiplies by a chunk of the vocab, never the whole of it
    inits = {i.name: i for i in model.graph.initializer}
    for node in slices:
        start, stop = (int(onnx.numpy_helper.to_array(inits[name])[0]) for name in node.input[1:3])
        assert stop - start <= chunk


def test_fp16_graph_keeps_topk_in_fp16_with_fp32_outputs(export_dir):
    model = onnx.load(str(export_dir / "model.fp16.onnx"))
    types = {vi.name: vi.type.tensor_type.elem_type for vi in
             list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input)}
    topk = next(n for n in model.graph.node if n.op_type == "TopK")
    assert types[topk.input[0]] == onnx.TensorProto.FLOAT16
    assert {o.name: o.type.tensor_type.elem_type for o in model.graph.output}["sparse"] == onnx.TensorProto.FLOAT
    assert {i.name: i.type.tensor_type.elem_type for i in model.graph.input}["input_ids"] == onnx.TensorProto.INT64
    assert not any(n.op_type == "Pow" for n in model.graph.node)  # no decomposed LayerNorm in fp16
    half = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert sum(np.prod(i.dims) for i in half) > 4_000_000  # the weights really are fp16


def test_fp16_weights_converted_in_blocks_as_onnxruntime_converts_them(monkeypatch):
    from onnxruntime.transformers.float16 import convert_np_to_float16

    from splade_rt.export import graph

    edges = np.array([0.0, -0.0, 1e-9, -1e-9, 5.96e-08, 3e-5, 1.0, -2.5, 65504.0, 7e4, -1e6, np.inf, -np.inf, np.nan],
                     np.float32)
    values = np.concatenate([edges, np.random.default_rng(0).normal(0, 30_000, 4_000).astype(np.float32)])
    monkeypatch.setattr(graph, "FLOAT16_BLOCK", 97)  # many blocks, the last one partial
    ours, theirs = graph.float16_in_blocks(values), convert_np_to_float16(values)
    assert ours.dtype == theirs.dtype == np.float16
    assert np.array_equal(ours.view(np.uint16), theirs.view(np.uint16))  # bit for bit, NaN and signed zero too
    doubles = values.astype(np.float64)  # the converter's float_data path hands it float64
    assert np.array_equal(graph.float16_in_blocks(doubles).view(np.uint16),
                          convert_np_to_float16(doubles).view(np.uint16))


def assert_same_graph(ours, theirs) -> None:
    from onnx import numpy_helper

    mine, other = ({i.name: i for i in m.graph.initializer} for m in (ours, theirs))
    assert set(mine) == set(other)
    for name in mine:
        assert mine[name].data_type == other[name].data_type, name
        assert np.array_equal(numpy_helper.to_array(mine[name]), numpy_helper.to_array(other[name])), name
    assert [(n.op_type, list(n.input), list(n.output)) for n in ours.graph.node] == \
        [(n.op_type, list(n.input), list(n.output)) for n in theirs.graph.node]
    assert [i.name for i in ours.graph.input] == [i.name for i in theirs.graph.input]
    assert {v.name: v.type.tensor_type.elem_type for v in ours.graph.value_info} == \
        {v.name: v.type.tensor_type.elem_type for v in theirs.graph.value_info}


@pytest.mark.parametrize("step", ["fp16", "int8"])
def test_weights_held_aside_give_the_libraries_own_graph(export_dir, monkeypatch, tmp_path, step):
    """to_fp16 and quantize_encoder hold large weights out of onnxruntime's converter and quantizer
    (both copy the model they read) and put them back after (to_fp16 converting them itself): each
    graph must be the one the library makes with them inside."""
    from splade_rt.export import graph

    source = export_dir / ("model.fp32.onnx" if step == "fp16" else "model.states.onnx")

    def build(threshold: int):
        monkeypatch.setattr(graph, "LARGE_INITIALIZER", threshold)
        model = onnx.load(str(source))
        return graph.to_fp16(model) if step == "fp16" else graph.quantize_encoder(model, tmp_path)

    from onnxruntime.transformers.onnx_model import OnnxModel

    calls, seen = [], []
    hold, convert = graph._hold_aside, OnnxModel.convert_float_to_float16
    monkeypatch.setattr(OnnxModel, "convert_float_to_float16", lambda self, **kw: seen.append(
        sum(i.ByteSize() >= 1024 for i in self.model.graph.initializer)) or convert(self, **kw))
    monkeypatch.setattr(graph, "_hold_aside", lambda model, rows: calls.append(rows) or hold(model, rows))
    held, whole = build(1024), build(1 << 40)
    if step == "int8":
        assert calls[0] and not calls[1]  # the path under test really held the word embedding aside
    else:  # the converter saw no large weight on the held path, every one on the other
        assert seen[0] == 0 and seen[1] >= 5, seen
    assert_same_graph(held, whole)


def test_sentence_transformers_layouts_export_to_the_same_outputs(export_dir, st_dir, tmp_path):
    ids, mask = tokenized(st_dir)
    reference = run_sparse(export_dir / "model.fp32.onnx", ids, mask)
    sources = [st_dir] + ([SHARED / "models" / "splade-tiny-msmarco-st"]
                          if (SHARED / "models" / "splade-tiny-msmarco-st").is_dir() else [])
    for i, source in enumerate(sources):
        out = tmp_path / f"st{i}"
        manifest = export_model(str(source), out, fp16=False, log=lambda _: None)
        assert manifest["source"]["layout"] == "sentence-transformers"
        np.testing.assert_array_equal(run_sparse(out / "model.fp32.onnx", ids, mask), reference)


def test_sentence_transformers_sparse_encoder_agrees(export_dir, st_dir):
    from sentence_transformers import SparseEncoder

    st = SparseEncoder(str(st_dir), device="cpu")
    expected = st.encode(TEXTS, convert_to_tensor=True).to_dense().numpy()
    ids, mask = tokenized(st_dir)
    got = run_sparse(export_dir / "model.fp32.onnx", ids, mask)
    assert np.abs(got - expected).max() <= 1e-4 * expected.max()


@pytest.mark.parametrize("tied,activation,tokenizer_json", [(False, "log1p_relu", False), (True, "relu", True)])
def test_tiny_random_models_match_sentence_transformers(tmp_path, tied, activation, tokenizer_json):
    from sentence_transformers import SparseEncoder

    src = make_tiny_model(tmp_path / "tiny", tied=tied, layout="sentence-transformers", activation=activation,
                          tokenizer_json=tokenizer_json)
    out = tmp_path / "out"
    manifest = export_model(str(src), out, vocab_chunk=37, log=lambda _: None)
    assert manifest["parity"]["passed"], manifest["parity"]
    assert manifest["model"]["activation"] == activation and manifest["tokenizer"]["max_length"] == 48
    assert manifest["model"]["decoder_tied_to_embeddings"] is tied
    texts = ["what is the capital city", "", "the immune cell protein " * 20]
    ids, mask = tokenized(src, texts, max_length=48)
    st = SparseEncoder(str(src), device="cpu")
    st.max_seq_length = 48
    expected = st.encode(texts, convert_to_tensor=True).to_dense().numpy()
    got = run_sparse(out / "model.fp32.onnx", ids, mask)
    assert np.abs(got - expected).max() <= 1e-4 * expected.max()
    assert ((got > 1e-5) <= (expected > 0)).all() and ((expected > 1e-5) <= (got > 0)).all()


def test_check_reruns_parity(export_dir, capsys):
    assert export_main(["--check", str(export_dir)]) == 0
    assert "fp32: max abs diff" in capsys.readouterr().out


def _bad(argv, capsys) -> str:
    code = export_main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err  # one line
    return err


def test_bad_models_give_one_line_and_exit_2(tmp_path, capsys):
    from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration

    dense = tmp_path / "dense"
    BertModel(BertConfig(vocab_size=99, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=16)).save_pretrained(str(dense))
    assert "dense (non-MLM)" in _bad([str(dense), "-o", str(tmp_path / "o1")], capsys)

    gpt2 = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(vocab_size=99, n_embd=16, n_layer=1, n_head=2)).save_pretrained(str(gpt2))
    err = _bad([str(gpt2), "-o", str(tmp_path / "o2")], capsys)
    assert "model family 'gpt2'" in err and "bert, distilbert, roberta, xlm-roberta, modernbert" in err
    t5 = tmp_path / "t5"
    T5ForConditionalGeneration(T5Config(vocab_size=99, d_model=16, d_kv=8, d_ff=16, num_layers=1,
                                        num_heads=2)).save_pretrained(str(t5))
    assert "model family 't5'" in _bad([str(t5), "-o", str(tmp_path / "o2")], capsys)

    tiny = make_tiny_model(tmp_path / "tiny")
    no_weights = tmp_path / "noweights"
    shutil.copytree(tiny, no_weights)
    (no_weights / "model.safetensors").unlink()
    assert "no model weights" in _bad([str(no_weights), "-o", str(tmp_path / "o3")], capsys)

    no_tok = tmp_path / "notok"
    shutil.copytree(tiny, no_tok)
    for f in ("tokenizer.json", "vocab.txt"):
        (no_tok / f).unlink()
    assert "no tokenizer" in _bad([str(no_tok), "-o", str(tmp_path / "o4")], capsys)

    summed = make_tiny_model(tmp_path / "sum", layout="sentence-transformers")
    cfg = summed / "1_SpladePooling" / "config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "pooling_strategy": "sum"}))
    assert "sum pooling" in _bad([str(summed), "-o", str(tmp_path / "o5")], capsys)

    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny, corrupt)
    (corrupt / "config.json").write_text("{not json")
    assert "unreadable JSON" in _bad([str(corrupt), "-o", str(tmp_path / "o6")], capsys)

    assert "no such directory" in _bad(["./does/not/exist", "-o", str(tmp_path / "o7")], capsys)
    assert not any(p.name.startswith("o") for p in tmp_path.iterdir())  # nothing half-written


def test_offline_hub_id_says_how_to_pass_a_local_path(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    err = _bad(["sparse-encoder-testing/splade-bert-tiny-nq", "-o", str(tmp_path / "o")], capsys)
    assert "Hugging Face hub" in err and "local model directory" in err


def test_output_rules(tmp_path, capsys):
    tiny = make_tiny_model(tmp_path / "tiny")
    out = tmp_path / "out"
    out.mkdir()
    assert "--force" in _bad([str(tiny), "-o", str(out)], capsys)
    assert export_main([str(tiny), "-o", str(out), "--force", "--no-fp16"]) == 0
    assert (out / "splade.json").is_file() and not (out / "model.fp16.onnx").exists()
    assert oct(out.stat().st_mode & 0o777) != oct(0o700)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert "cannot write" in _bad([str(tiny), "-o", str(locked / "x")], capsys)


def test_failed_export_leaves_nothing_behind(tmp_path, monkeypatch):
    from splade_rt.variants import VARIANTS, ParityBar

    tiny = make_tiny_model(tmp_path / "tiny")
    # a bar no graph meets: the parity check reads the variant table's bars
    monkeypatch.setitem(VARIANTS, "fp32", dataclasses.replace(VARIANTS["fp32"], bar=ParityBar(max_rel_diff=-1.0)))
    out = tmp_path / "out"
    with pytest.raises(Exception, match="parity"):
        export_model(str(tiny), out, log=lambda _: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]


def test_a_new_variant_is_one_table_row_and_its_build_function(tmp_path, monkeypatch):
    """The extension point as ARCHITECTURE.md describes it: a row in splade_rt.variants.VARIANTS and its
    BUILDERS entry in export.graph; the exporter writes and checks it, the manifest records it and the
    runtime runs it by name, with no other edit."""
    from splade_rt import SpladeEncoder
    from splade_rt.export import graph
    from splade_rt.variants import VARIANTS, ParityBar, Variant

    row = Variant("fp32-fused", "model.fused.onnx", bar=ParityBar(max_rel_diff=1e-4))  # exact
    monkeypatch.setitem(VARIANTS, row.name, row)
    built = []

    def build(parts):  # the fp32 head over the fused (GPU) encoder, every fusion on
        built.append(row.name)
        return parts.with_head(screened=False, encoder=parts.fused_body())

    monkeypatch.setitem(graph.BUILDERS, row.name, build)
    tiny = make_tiny_model(tmp_path / "tiny")
    manifest = export_model(str(tiny), tmp_path / "out", fp16=False, log=lambda _: None)
    assert built == [row.name] and manifest["files"]["model.fused.onnx"]["precision"] == row.name
    assert manifest["parity"][row.name]["passed"] and manifest["parity"][row.name]["bar"] == "max_rel_diff <= 0.0001"
    texts = ["what is the capital city", "the immune cell protein"]
    new = SpladeEncoder(tmp_path / "out", device="cpu", variant=row.name)
    assert new.placement.file == "model.fused.onnx"
    want = SpladeEncoder(tmp_path / "out", device="cpu", variant="fp32").encode(texts).to_dense()
    np.testing.assert_allclose(new.encode(texts).to_dense(), want, atol=1e-5)
    assert SpladeEncoder(tmp_path / "out", device="cpu").placement.precision != row.name  # not in the CPU's order
    assert set(graph.BUILDERS) == set(VARIANTS)  # every row has its build function



def test_a_graph_past_protobufs_limit_keeps_its_weights_beside_it(tmp_path, monkeypatch):
    """bge-m3 and other large models pass protobuf's 2 GiB per message: their graphs are saved with the
    weights in GRAPH.onnx.data (here every graph, by lowering the threshold), listed and hashed in the
    manifest, and give the same vectors; a damaged weights file is one line at load."""
    from splade_rt import SpladeEncoder
    from splade_rt.errors import ExportDirError
    from splade_rt.export import graph

    tiny = make_tiny_model(tmp_path / "tiny")
    export_model(str(tiny), tmp_path / "inline", fp16=False, log=lambda _: None)
    monkeypatch.setattr(graph, "EXTERNAL_DATA_BYTES", 0)
    manifest = export_model(str(tiny), tmp_path / "external", int8=True, log=lambda _: None)
    assert manifest["parity"]["passed"]
    for name, entry in manifest["files"].items():
        if "precision" in entry:
            assert entry["data"] == name + ".data" and manifest["files"][entry["data"]]["bytes"] > 0
    assert sorted(p.name for p in (tmp_path / "external").iterdir()) == sorted([*manifest["files"], "splade.json"])
    texts = ["what is the capital city", "the immune cell protein"]
    for variant in ("fp32", "fp32-screened"):
        want = SpladeEncoder(tmp_path / "inline", device="cpu", variant=variant).encode(texts).to_dense()
        got = SpladeEncoder(tmp_path / "external", device="cpu", variant=variant).encode(texts).to_dense()
        np.testing.assert_array_equal(got, want)
    with open(tmp_path / "external" / "model.fp32.onnx.data", "r+b") as f:
        f.seek(100)
        f.write(b"\x7f\x7f\x7f\x7f")
    with pytest.raises(ExportDirError, match=r"model\.fp32\.onnx\.data: contents differ from the manifest's hash"):
        SpladeEncoder(tmp_path / "external", device="cpu", variant="fp32")
