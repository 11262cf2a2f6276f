"""Every supported family and layout exports and encodes like sentence-transformers' SparseEncoder.

The models are random (no hub here) with a tokenizer of the family's kind and a SPLADE-like head
(tests/random_models.py): logits mostly negative, a few positive per token, driven by the token's
state, so a wrong body, mask, position scheme or tokenizer changes the vectors and these tests fail.
"""

from __future__ import annotations

import numpy as np
import pytest
from random_models import make_model, max_abs_and_nonzero

from splade_rt import SpladeEncoder
from splade_rt.export.pipeline import export_model
from splade_rt.manifest import read_manifest

# (family, layout, activation): every family in the three model layouts, both activations, and an
# inference-free Router model for a WordPiece and a byte-level BPE family
CASES = [
    ("bert", "st-new", "relu"), ("bert", "st-old", "log1p_relu"),
    ("distilbert", "transformers", "relu"), ("distilbert", "st-old", "log1p_relu"),
    ("distilbert", "router", "log1p_relu"),
    ("roberta", "transformers", "relu"), ("roberta", "st-new", "log1p_relu"), ("roberta", "router", "relu"),
    ("xlm-roberta", "transformers", "log1p_relu"), ("xlm-roberta", "st-old", "relu"),
    ("xlm-roberta", "st-new", "relu"),
    ("modernbert", "transformers", "relu"), ("modernbert", "st-old", "relu"),
    ("modernbert", "st-new", "log1p_relu"),
]


@pytest.fixture(scope="module")
def texts(real_pairs) -> tuple[list[str], list[str]]:
    """Real queries and passages (SciFact), with mixed case and repeated words."""
    queries, docs = real_pairs
    queries = list(queries[:20]) + ["What IS the Capital of AUSTRALIA", "rain rain rain river river", ""]
    return queries, list(docs[:20]) + ["Send In The Clowns " * 10]


def sentence_transformers_model(directory, layout: str, activation: str):
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    if layout == "transformers":
        modules = [Transformer(str(directory), transformer_task="fill-mask"),
                   SpladePooling(pooling_strategy="max", activation_function=activation)]
        return SparseEncoder(modules=modules, device="cpu")
    return SparseEncoder(str(directory), device="cpu")


@pytest.mark.parametrize("family,layout,activation", CASES, ids=["-".join(c) for c in CASES])
def test_family_exports_and_encodes_like_sentence_transformers(tmp_path, texts, family, layout, activation):
    # st-old carries max_seq_length and do_lower_case: they must reach the runtime
    lowercase, st_max = (True, 40) if layout == "st-old" else (False, None)
    src = make_model(family, tmp_path / "model", layout=layout, activation=activation, seed=len(family),
                     st_max_length=st_max, lowercase=lowercase)
    out = tmp_path / "onnx"
    # a plain transformers directory records no activation: the user names it
    export_model(str(src), out, fp16=False, log=lambda _: None,
                 activation=activation if layout == "transformers" else None)
    manifest = read_manifest(out)
    assert manifest.parity["passed"], manifest.parity
    assert manifest.model.model_type == family and manifest.model.activation == activation
    assert manifest.tokenizer.lowercase is lowercase and manifest.tokenizer.max_length == (st_max or 64)
    assert (manifest.query_table is not None) is (layout == "router")

    st = sentence_transformers_model(src, layout, activation)
    queries, docs = texts
    for side, batch in (("query", queries), ("document", docs)):
        expected = getattr(st, f"encode_{side}")(batch, convert_to_tensor=True).to_dense().numpy()
        active = (expected > 0).sum(axis=1)[:-1]
        assert active.min() >= 1 and active.mean() >= 5  # the test has non-zeros to get wrong
        kept = [i for i, text in enumerate(batch) if text.strip()]  # a blank text: splade-rt's own rule, not ST's
        for variant in ("fp32", "fp32-screened"):
            enc = SpladeEncoder(out, device="cpu", variant=variant)
            got = getattr(enc, f"encode_{side}")(batch, batch_size=8).to_dense()
            diff, rel, same_terms = max_abs_and_nonzero(expected[kept], got[kept])
            assert rel <= 1e-4 and same_terms, (side, variant, diff, rel)


@pytest.fixture(scope="module")
def inference_free(tmp_path_factory):
    root = tmp_path_factory.mktemp("router")
    src = make_model("distilbert", root / "model", layout="router", activation="log1p_relu")
    export_model(str(src), root / "onnx", fp16=False, log=lambda _: None)
    return src, root / "onnx"


def test_inference_free_queries_run_no_graph_and_equal_sentence_transformers(inference_free, texts, monkeypatch):
    from sentence_transformers import SparseEncoder

    src, out = inference_free
    enc = SpladeEncoder(out, device="cpu")
    st = SparseEncoder(str(src), device="cpu")
    queries = texts[0] + ["the the the capital capital", "[CLS] capital [SEP]", "x " * 600]

    def no_graph(*args, **kwargs):
        raise AssertionError("encode_query ran the ONNX graph")

    monkeypatch.setattr(enc, "_run", no_graph)
    for top_k in (None, 3):
        got = enc.encode_query(queries, top_k=top_k)
        expected = st.encode_query(queries, convert_to_tensor=True, max_active_dims=top_k).to_dense().numpy()
        np.testing.assert_array_equal(got.to_dense(), expected)
    single = enc.encode_query("what is the capital city")
    np.testing.assert_array_equal(single.to_dense(), st.encode_query(["what is the capital city"],
                                                                     convert_to_tensor=True).to_dense().numpy())
    with pytest.raises(AssertionError, match="ran the ONNX graph"):  # documents do use the graph
        enc.encode_document(["a passage"])


def test_unsupported_sentence_transformers_routes_are_one_line(inference_free, tmp_path, capsys):
    import json
    import shutil

    from splade_rt.export.cli import main as export_main

    src, _ = inference_free
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    config = json.loads((bad / "router_config.json").read_text())
    config["types"]["query_0_SparseStaticEmbedding"] = "sentence_transformers.base.modules.dense.Dense"
    (bad / "router_config.json").write_text(json.dumps(config))
    assert export_main([str(bad), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "query route Dense is not supported" in err
