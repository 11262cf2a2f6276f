"""Multilingual-size vocabularies (105,879-term BERT, 250,002-term XLM-R) export and encode like
sentence-transformers' SparseEncoder, every variant.

The models are random, at a small hidden size (the vocabulary, not the encoder, is what this tests),
with the trained tokenizer padded to the full vocabulary (tests/random_models.py, pad_vocabulary):
every id has a SPLADE-like decoder row, so terms near the top of the vocabulary, the last vocab
chunks, are among the outputs.
"""

from __future__ import annotations

import pytest
from random_models import LARGE_VOCABS, make_model, max_abs_and_nonzero

from splade_rt import SpladeEncoder
from splade_rt.export.parity import TOP, compare
from splade_rt.export.pipeline import export_model
from splade_rt.kernels.native_head import unavailable
from splade_rt.manifest import read_manifest
from splade_rt.variants import VARIANTS

CASES = [("bert", "relu"), ("xlm-roberta", "log1p_relu")]


@pytest.fixture(scope="module")
def texts(real_pairs) -> list[str]:
    """Held-out real text: SciFact queries and passages the export's parity texts are not."""
    queries, docs = real_pairs
    return list(queries[:12]) + list(docs[:12]) + ["Send In The Clowns " * 10]


@pytest.mark.parametrize("family,activation", CASES, ids=[c[0] for c in CASES])
def test_large_vocab_exports_and_encodes_like_sentence_transformers(tmp_path, texts, family, activation):
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    vocab = LARGE_VOCABS[family]
    src = make_model(family, tmp_path / "model", vocab=vocab, z=4.5, seed=7)
    out = tmp_path / "onnx"
    export_model(str(src), out, int8=True, activation=activation, log=lambda _: None)
    manifest = read_manifest(out)
    assert manifest.parity["passed"], manifest.parity
    assert manifest.model.vocab_size == vocab
    data = read_manifest(out).path.read_text()
    assert '"export_peak_rss_bytes"' in data

    st = SparseEncoder(modules=[Transformer(str(src), transformer_task="fill-mask"),
                                SpladePooling(pooling_strategy="max", activation_function=activation)], device="cpu")
    expected = st.encode_document(texts, convert_to_tensor=True).to_dense().numpy()
    assert expected.shape[1] == vocab
    active = (expected > 0).sum(axis=1)
    assert active.min() >= 1 and active.mean() >= 5  # non-zeros to get wrong
    assert (expected[:, vocab - 4096:] > 0).any()  # the last vocab chunks are among them
    precisions = [g.precision for g in manifest.graphs]
    assert set(precisions) == set(VARIANTS)  # every variant was written (and passed the export's parity)
    for precision in precisions:
        variant = VARIANTS[precision]
        if variant.native and unavailable():  # checked by the export's parity through numpy pooling
            continue
        got = SpladeEncoder(out, device="cpu", variant=precision).encode_document(texts, batch_size=8).to_dense()
        if variant.exact:
            diff, rel, same_terms = max_abs_and_nonzero(expected, got)
            assert rel <= 1e-4 and same_terms, (precision, diff, rel)
        else:
            stats = compare(expected, got)
            floor = variant.bar.min_top_overlap
            assert stats[f"top{TOP}_overlap_mean"] >= floor, (precision, stats)
