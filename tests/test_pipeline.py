"""The pipelined host path: each text's own vector in input order, tokenizing, padding and assembling
overlapped with graph runs (watched by timestamps, so a serial encode fails), bounded batches in
flight, errors that name their text, and texts with nothing to encode."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from fan_out import in_threads

from splade_rt import SpladeEncoder
from splade_rt.runtime import encoder as encoder_module
from splade_rt.runtime.batching import planned_batches
from splade_rt.runtime.tokens import TextTokenizer


@pytest.fixture(scope="module")
def texts(real_pairs) -> list[str]:
    """Passages and queries interleaved (many widths), a truncated text and texts with nothing in them."""
    queries, passages = real_pairs
    mixed = [t for pair in zip(passages[:60], queries[:60]) for t in pair]
    return mixed[:50] + ["", "word " * 600, " \n\t "] + mixed[50:]


@pytest.fixture(scope="module")
def enc(export_dir) -> SpladeEncoder:
    return SpladeEncoder(export_dir, device="cpu")  # the CPU default a user gets


def one_at_a_time(export_dir, **options) -> SpladeEncoder:
    """An encoder that runs one batch at a time on its own session, as on a GPU: every run goes
    through placement.session, where a spy sees it (no one-thread twin for small inputs)."""
    enc = SpladeEncoder(export_dir, device="cpu", workers=1, **options)
    enc._schedule.small_enabled = False
    return enc


def batches_of(enc: SpladeEncoder, texts: list[str], batch_size: int) -> list[np.ndarray]:
    lengths = [len(ids) for ids in enc.tokenize(texts)]
    return planned_batches([len(t) for t in texts], lengths, enc._tokens.special, batch_size, enc.max_batch_tokens)


def same_vectors(a, b, atol: float = 1e-6) -> None:
    np.testing.assert_array_equal(a.indptr, b.indptr)  # the same non-zero terms, row by row
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.values, b.values, rtol=0, atol=atol)


def test_pipelined_encode_gives_each_texts_own_vector_in_input_order(enc, texts):
    """Many windows and batches, padded to other widths than a text alone: each row is that text's
    vector encoded by itself (no padding, no batch), within 1e-6, in the order given."""
    for top_k in (None, 24):
        alone = [enc.encode(t, top_k=top_k) for t in texts]
        for batch_size in (4, 64):
            got = enc.encode(texts, batch_size=batch_size, top_k=top_k)
            assert len(got) == len(texts) and got.truncated == sum(a.truncated for a in alone) > 1
            for i, (row, single) in enumerate(zip(got, alone)):
                np.testing.assert_array_equal(row.indices, single[0].indices, err_msg=f"text {i}")
                np.testing.assert_allclose(row.values, single[0].values, rtol=0, atol=1e-6, err_msg=f"text {i}")


class SlowRuns:
    """A session spy: each run() first sleeps (a device busy for `delay` s); records each run's
    interval and the most runs in flight at once."""

    def __init__(self, session, delay: float) -> None:
        self.session, self.delay = session, delay
        self.lock = threading.Lock()
        self.intervals: list[tuple[float, float]] = []
        self.now = self.peak = 0

    def run(self, *args, **kwargs):
        start = time.perf_counter()
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            time.sleep(self.delay)
            return self.session.run(*args, **kwargs)
        finally:
            with self.lock:
                self.now -= 1
                self.intervals.append((start, time.perf_counter()))

    def __getattr__(self, name: str):
        return getattr(self.session, name)


def stamped(stamps: list, kind: str, function):
    """function, recording (kind, thread, start, end) of each call into stamps."""

    def call(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            stamps.append((kind, threading.current_thread().name, start, time.perf_counter()))

    return call


def test_tokenizing_padding_and_assembling_overlap_the_graph_runs(export_dir, texts, monkeypatch):
    """With runs that take 40 ms: the next window is tokenized, the next batch padded and the last one
    assembled while a batch runs. A serial encode (tokenize all, then pad, run and assemble each batch
    in turn) overlaps nothing and fails here. At most workers + 1 padded batches are alive at once."""
    enc = one_at_a_time(export_dir)
    expected = enc.encode(texts, batch_size=8)
    spy = enc.placement.session = SlowRuns(enc.placement.session, 0.04)
    stamps: list = []
    monkeypatch.setattr(TextTokenizer, "encodings", stamped(stamps, "tokenize", TextTokenizer.encodings))
    monkeypatch.setattr(encoder_module, "pad_flat", stamped(stamps, "pad", encoder_module.pad_flat))
    monkeypatch.setattr(encoder_module, "rows_from_nonzeros", stamped(stamps, "assemble",
                                                                      encoder_module.rows_from_nonzeros))
    same_vectors(enc.encode(texts, batch_size=8), expected)
    runs, batches = spy.intervals, batches_of(enc, texts, 8)
    assert len(runs) == len(batches) > 8 and spy.peak == 1

    def overlaps_a_run(start: float, end: float) -> bool:
        return any(start < e and s < end for s, e in runs)

    def of(kind: str) -> list[tuple[str, float, float]]:
        return [(thread, s, e) for k, thread, s, e in stamps if k == kind]

    main = threading.current_thread().name
    windows = of("tokenize")
    assert len(windows) >= 3  # windows of 8, 16, 32 ... texts
    assert any(thread != main and overlaps_a_run(s, e) for thread, s, e in windows), "no window tokenized during a run"
    pads, assembles = of("pad"), of("assemble")
    assert len(pads) == len(assembles) == len(batches) and {t for t, _, _ in pads + assembles} == {main}
    assert sum(overlaps_a_run(s, e) for _, s, e in pads) >= len(batches) // 2, "batches padded between runs"
    assert sum(overlaps_a_run(s, e) for _, s, e in assembles) >= len(batches) // 2, "batches assembled between runs"
    alive = peak = 0  # padded and not yet assembled, in the calling thread's order
    for kind, _, _, _ in sorted((s for s in stamps if s[0] != "tokenize"), key=lambda stamp: stamp[2]):
        alive += 1 if kind == "pad" else -1
        peak = max(peak, alive)
    assert peak <= enc.workers + 1


def test_batches_side_by_side_overlap_and_keep_the_order(export_dir, texts):
    side = SpladeEncoder(export_dir, device="cpu", threads=2, workers=2)
    spy = side._schedule.twins[(1, 1)] = SlowRuns(side._schedule.twin(1), 0.02)
    got = side.encode(texts, batch_size=4)
    assert spy.peak == 2 and len(spy.intervals) == len(batches_of(side, texts, 4))  # two batches ran at once
    same_vectors(got, SpladeEncoder(export_dir, device="cpu", workers=1).encode(texts, batch_size=4))


def test_many_threads_share_one_encoder(enc, texts):
    expected = enc.encode(texts, batch_size=8, top_k=32)
    results = in_threads(lambda i: enc.encode(texts[i:] + texts[:i], batch_size=8, top_k=32), 4)
    for i, got in enumerate(results):
        same_vectors(got, expected.take(list(range(i, len(texts))) + list(range(i))))


class FailsOn:
    """A session spy whose run() raises onnxruntime's kind of error for any batch holding the token."""

    def __init__(self, session, token: int) -> None:
        self.session, self.token, self.runs = session, token, 0

    def run(self, names, feeds, *args):
        self.runs += 1
        if (feeds["input_ids"] == self.token).any():
            raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions\nmore detail")
        return self.session.run(names, feeds, *args)

    def __getattr__(self, name: str):
        return getattr(self.session, name)


def test_a_failing_batch_names_its_texts_and_stops(export_dir, texts):
    enc = one_at_a_time(export_dir, max_batch_tokens=16 * 512)  # batches of 16 full-length texts
    token = enc.tokenize("zeppelin")[0][1]
    bad = list(texts)
    bad[77] = "zeppelin " + "word " * 4000  # the longest text by far: in the first batch to run
    spy = enc.placement.session = FailsOn(enc.placement.session, token)
    with pytest.raises(RuntimeError) as info:
        enc.encode(bad, batch_size=1)
    assert str(info.value) == "text 77: [ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions"
    assert spy.runs <= 3  # the pipeline stopped at the error: runs queued behind it were cancelled
    with pytest.raises(RuntimeError) as info:
        enc.encode(bad, batch_size=16)
    batch = sorted(next(b for b in batches_of(enc, bad, 16) if 77 in b).tolist())
    assert len(batch) == 16
    assert str(info.value) == (f"texts {', '.join(map(str, batch[:3]))} and {len(batch) - 3} more (one batch): "
                               "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions")
    # an error on the tokenizer thread (a later window) names the text by its place in the call
    broken = list(texts) + ["fine"] * 40 + ["bad \ud800 text"]
    with pytest.raises(ValueError, match=rf"texts\[{len(broken) - 1}\] is not valid Unicode"):
        SpladeEncoder(export_dir, device="cpu").encode(broken, batch_size=4)


def test_texts_with_nothing_to_encode_have_no_terms(enc, export_dir):
    """An empty, whitespace-only or control-character text: no terms (sentence-transformers would give
    the [CLS]/[SEP] vector), whichever method and batching, and no graph runs for it."""
    empty = ["", " ", "\n\t  ", "\u3000", "\x00\x01"]
    for method in (enc.encode, enc.encode_query, enc.encode_document):
        got = method(empty + ["the capital of france"] + empty, batch_size=2)
        assert got.active_dims.tolist() == [0] * 5 + [got.active_dims[5]] + [0] * 5 and got.active_dims[5] > 3
        assert method("").nnz == 0 and len(method("")) == 1
    counter = one_at_a_time(export_dir)
    spy = counter.placement.session = FailsOn(counter.placement.session, -1)
    assert counter.encode(empty, batch_size=2).nnz == 0 and spy.runs == 0
    assert counter.tokenize("") == [[101, 102]]  # the tokenizer's own ids are unchanged


def test_an_inference_free_query_with_nothing_in_it_has_no_terms(tmp_path_factory):
    from random_models import make_model

    from splade_rt.export.pipeline import export_model

    root = tmp_path_factory.mktemp("router-empty")
    src = make_model("distilbert", root / "model", layout="router", activation="log1p_relu")
    export_model(str(src), root / "onnx", fp16=False, log=lambda _: None)
    enc = SpladeEncoder(root / "onnx", device="cpu")
    assert enc.query_table is not None
    got = enc.encode_query(["", "  ", "capital city", "\t"])
    assert got.active_dims.tolist()[:2] == [0, 0] and got.active_dims[2] > 0 and got.active_dims[3] == 0
    assert enc.encode_document(["", "capital city"]).active_dims[0] == 0
