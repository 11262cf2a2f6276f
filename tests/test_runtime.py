"""SpladeEncoder: identical results to sentence-transformers, safe under threads, clear errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from fan_out import in_threads

from splade_rt import DeviceError, ExportDirError, SparseEmbeddings, SpladeEncoder
from splade_rt.kernels.native_head import unavailable
from splade_rt.runtime import session as session_mod
from splade_rt.runtime.batching import length_batches, planned_batches
from splade_rt.runtime.embeddings import dot_scores
from splade_rt.runtime.providers import PROVIDERS


@pytest.fixture(scope="module")
def enc(export_dir) -> SpladeEncoder:
    # the CPU default a user gets: the native head where its kernel runs, else the faster exact graph
    return SpladeEncoder(export_dir, device="cpu")


def test_import_pulls_in_no_heavy_dependency():
    code = ("import sys, splade_rt; from splade_rt import SpladeEncoder, SparseEmbeddings; "
            "heavy = [m for m in ('torch', 'transformers', 'onnx', 'optimum', 'sentence_transformers') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_scores_equal_sentence_transformers_on_200_real_pairs(export_dir, st_dir, real_pairs):
    from sentence_transformers import SparseEncoder

    queries, passages = real_pairs
    st = SparseEncoder(str(st_dir), device="cpu")
    expected = st.similarity(st.encode_query(queries, convert_to_tensor=True),
                             st.encode_document(passages, convert_to_tensor=True)).to_dense().numpy()
    for variant in ("fp32-screened", "fp32") + (("fp32-native",) if unavailable() is None else ()):
        enc = SpladeEncoder(export_dir, device="cpu", variant=variant)
        q, d = enc.encode_query(queries), enc.encode_document(passages, batch_size=16)
        got = enc.similarity(q, d)
        assert got.shape == (200, 200)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
        # the pair's own score, the one retrieval ranks by, to 1e-4 relative
        np.testing.assert_allclose(np.diag(got), np.diag(expected), rtol=1e-4, atol=1e-6)
    # sentence-transformers' max_active_dims is our top_k
    st_top = st.encode_document(passages[:20], max_active_dims=16, convert_to_tensor=True).to_dense().numpy()
    ours_top = enc.encode_document(passages[:20], top_k=16).to_dense()
    assert ((st_top > 0) == (ours_top > 0)).all()
    np.testing.assert_allclose(ours_top, st_top, atol=1e-4)


def test_token_ids_identical_to_the_reference_tokenizer(enc, default_model_dir, real_pairs):
    from transformers import AutoTokenizer

    queries, passages = real_pairs
    texts = queries[:50] + passages[:50] + ["", "  ", "naïve café — 東京 🙂"]
    ref = AutoTokenizer.from_pretrained(str(default_model_dir))(texts, truncation=True, max_length=512)["input_ids"]
    assert enc.tokenize(texts) == ref


def test_top_k_equals_the_dense_paths_top_k(enc, real_pairs):
    passages = real_pairs[1][:40]
    dense = enc.encode(passages)
    for k in (1, 16, 64):
        top = enc.encode(passages, top_k=k)
        for full, cut in zip(dense, top):
            expect = full.top(k)
            assert sorted(cut.to_dict().items()) == sorted(expect)
    huge = enc.encode(passages[:3], top_k=10**6)  # larger than the vocab: everything non-zero
    np.testing.assert_array_equal(huge.to_dense(), dense[:3].to_dense())


def test_threshold_batching_and_order(enc, real_pairs):
    passages = real_pairs[1][:30] + ["short", ""]
    one_by_one = [enc.encode(p) for p in passages]
    batched = enc.encode(passages, batch_size=7)
    tight = SpladeEncoder(enc.path, device="cpu", max_batch_tokens=600).encode(passages)
    for single, b, t in zip(one_by_one, batched, tight):
        np.testing.assert_allclose(b.to_dense(), single[0].to_dense(), atol=1e-5)
        np.testing.assert_allclose(t.to_dense(), single[0].to_dense(), atol=1e-5)
    cut = enc.encode(passages, threshold=0.5)
    assert (cut.values > 0.5).all()
    assert cut.nnz == int((batched.values > 0.5).sum())



def test_token_budget_defaults_to_the_devices_and_is_checked(enc):
    """The CPU cuts batches at its own budget (activations stay in cache), never below one full-length
    text; an explicit budget wins, and one too small for a full-length text is refused by name."""
    from splade_rt.runtime.providers import PROVIDERS

    assert enc.max_batch_tokens == max(PROVIDERS["cpu"].batch_tokens, enc.max_length)
    assert PROVIDERS["cpu"].batch_tokens < PROVIDERS["cuda"].batch_tokens
    assert SpladeEncoder(enc.path, device="cpu", max_batch_tokens=4096).max_batch_tokens == 4096
    for bad in (enc.max_length - 1, 0, 2.5):
        with pytest.raises(ValueError, match="max_batch_tokens"):
            SpladeEncoder(enc.path, device="cpu", max_batch_tokens=bad)

def test_batches_never_pad_beyond_their_longest_row():
    lengths = np.array([5, 300, 40, 41, 299, 7, 8, 512])
    order = np.argsort(-lengths, kind="stable")
    seen = []
    for rows in length_batches(order, lengths, batch_size=3, max_tokens=1024):
        assert len(rows) <= 3 and len(rows) * lengths[rows].max() <= 1024
        assert lengths[rows[0]] == lengths[rows].max()
        seen.extend(rows.tolist())
    assert sorted(seen) == list(range(len(lengths)))


class SessionSpy:
    """Stands in for an onnxruntime session: counts the calls to each method named, passes them on."""

    def __init__(self, session, *methods: str) -> None:
        self.session = session
        self.calls = dict.fromkeys(methods, 0)
        for name in methods:
            setattr(self, name, self._counted(name))

    def _counted(self, name: str):
        def call(*args, **kwargs):
            self.calls[name] += 1
            return getattr(self.session, name)(*args, **kwargs)

        return call

    def __getattr__(self, name: str):
        return getattr(self.session, name)


def encoder_batches(enc: SpladeEncoder, texts: list[str], batch_size: int) -> list[np.ndarray]:
    """The batches enc.encode runs for these texts (runtime.batching.planned_batches)."""
    lengths = [len(ids) for ids in enc.tokenize(texts)]
    return planned_batches([len(t) for t in texts], lengths, enc._tokens.special, batch_size, enc.max_batch_tokens)


def test_io_binding_path_gives_the_same_vectors(export_dir, real_pairs):
    enc = SpladeEncoder(export_dir, device="cpu", variant="fp32-screened")  # a fused graph: IOBinding applies
    bound = SpladeEncoder(export_dir, device="cpu", variant="fp32-screened", io_binding=True)
    spy = SessionSpy(bound.placement.session, "io_binding", "run_with_iobinding", "run")
    bound.placement.session = spy
    texts = real_pairs[0][:10] + real_pairs[1][:10]
    batches = len(encoder_batches(bound, texts, 8))
    for k in (None, 32):
        a, b = bound.encode(texts, top_k=k, batch_size=8), enc.encode(texts, top_k=k)
        np.testing.assert_array_equal(a.indptr, b.indptr)
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_allclose(a.values, b.values, rtol=1e-6)
    # every batch went through an IOBinding, none through plain run()
    assert spy.calls == {"io_binding": 2 * batches, "run_with_iobinding": 2 * batches, "run": 0}, spy.calls


def test_query_sized_inputs_run_on_a_one_thread_twin_with_the_same_results(export_dir, real_pairs):
    enc = SpladeEncoder(export_dir, device="cpu", threads=2, variant="fp32-screened")  # a screened head
    queries = real_pairs[0][:20]
    small = enc.encode(queries[0])  # <= 64 padded tokens: the one-thread session
    assert enc._schedule.twins[(1, 2)].get_session_options().intra_op_num_threads == 1
    enc._schedule.small_enabled = False  # the two-thread session for everything
    big = enc.encode(queries[0])
    np.testing.assert_array_equal(small.indices, big.indices)
    np.testing.assert_array_equal(small.values, big.values)


def test_a_base_size_encoder_keeps_both_threads_for_queries_and_runs_one_batch_at_a_time(export_dir, tmp_path):
    """The one-thread twin and two batches side by side pay off only where the vocab head dominates:
    with a base-size encoder's layers a query runs faster on both threads (docs/design/cpu-threads.md)."""
    base = tmp_path / "base"
    shutil.copytree(export_dir, base)
    manifest = json.loads((base / "splade.json").read_text())
    manifest["model"]["hidden_size"] = 768
    (base / "splade.json").write_text(json.dumps(manifest))
    enc = SpladeEncoder(base, device="cpu", threads=2, verify=False)
    assert enc.workers == 1
    enc.encode("capital of france")
    assert enc._schedule.twins == {}
    assert SpladeEncoder(export_dir, device="cpu", threads=2).workers == 2


class InFlight:
    """A session spy that counts runs and the most of them in flight at once. The first run waits (up
    to 5 s) for a second one to start beside it, so two batches really run side by side if they can."""

    def __init__(self, session) -> None:
        self.session, self.lock, self.second = session, threading.Lock(), threading.Event()
        self.calls = self.now = self.peak = 0

    def run(self, *args, **kwargs):
        with self.lock:
            self.calls += 1
            self.now += 1
            self.peak = max(self.peak, self.now)
            first = self.calls == 1
            if self.now >= 2:
                self.second.set()
        try:
            if first:
                self.second.wait(timeout=5)
            return self.session.run(*args, **kwargs)
        finally:
            with self.lock:
                self.now -= 1


def test_batches_run_side_by_side_give_the_serial_results_in_input_order(export_dir, real_pairs):
    texts = real_pairs[1][:40] + real_pairs[0][:40]  # passages and queries: many batches of mixed widths
    serial = SpladeEncoder(export_dir, device="cpu", threads=2, workers=1).encode(texts, batch_size=4)
    side = SpladeEncoder(export_dir, device="cpu", threads=2)
    assert side.workers == 2 and side._schedule.worker_threads == 1
    # the worker session (one thread each); the same object serves query-sized inputs, so the count of
    # runs on it, not its existence, tells the two apart: every batch, passages included, must use it
    workers = side._schedule.twins[(1, 1)] = InFlight(side._schedule.twin(1))
    full = side.placement.session = SessionSpy(side.placement.session, "run")
    got = side.encode(texts, batch_size=4)
    batches = len(encoder_batches(side, texts, 4))
    assert workers.calls == batches and full.calls["run"] == 0, (workers.calls, batches, full.calls)
    assert workers.peak == 2  # two batches in flight at once
    np.testing.assert_array_equal(got.indptr, serial.indptr)
    np.testing.assert_array_equal(got.indices, serial.indices)
    np.testing.assert_array_equal(got.values, serial.values)
    with pytest.raises(ValueError, match="workers"):
        SpladeEncoder(export_dir, device="cpu", workers=0)


def test_threads_give_the_results_of_sequential_calls(enc, real_pairs):
    texts = real_pairs[0][:8] + real_pairs[1][:8]
    expected = [enc.encode(texts[i % len(texts)], top_k=32).to_dicts() for i in range(100)]
    results = in_threads(lambda _: [enc.encode(texts[i % len(texts)], top_k=32).to_dicts() for i in range(100)], 8)
    assert results == [expected] * 8


def test_output_formats(enc):
    v = enc.encode(["the capital of australia", "clowns in a musical"], top_k=5)
    assert isinstance(v, SparseEmbeddings) and len(v) == 2 and v.dim == 30522
    csr = v.to_csr()
    assert csr.shape == (2, 30522) and csr.nnz == v.nnz
    np.testing.assert_array_equal(csr.toarray(), v.to_dense())
    dicts, qdrant, rank = v.to_dicts(), v.to_qdrant(), v.to_rank_features()
    assert all(isinstance(k, int) and isinstance(w, float) for k, w in dicts[0].items())
    assert qdrant[0]["indices"] == v[0].indices.tolist() and len(qdrant[0]["values"]) == 5
    json.dumps(qdrant)
    assert rank[0]["capital"] == pytest.approx(max(dicts[0].values()))
    assert enc.decode(v[0], top_k=2)[0][0] == "capital"
    assert list(v[0].indices) == sorted(v[0].indices)
    assert np.allclose(enc.similarity(v[0], v), v.to_dense() @ v[0].to_dense())


def test_cosine_similarity_normalizes_each_row(export_dir):
    """A model saved with cosine similarity scores normalized vectors (sentence-transformers' cos)."""
    enc = SpladeEncoder(export_dir, device="cpu")
    enc.similarity_fn_name = "cosine"
    v = enc.encode(["what is the capital of australia", "canberra is the capital", "boil an egg"])
    dense = v.to_dense().astype(np.float64)
    unit = dense / np.linalg.norm(dense, axis=1, keepdims=True)
    np.testing.assert_allclose(enc.similarity(v, v), unit @ unit.T, rtol=1e-5, atol=1e-6)


def test_bad_text_input(enc):
    assert len(enc.encode([])) == 0
    empty = enc.encode("")
    assert len(empty) == 1 and empty.nnz == 0  # nothing to encode: no terms (test_pipeline has the rule)
    with pytest.raises(TypeError, match=r"texts\[1\] is NoneType"):
        enc.encode(["fine", None])
    with pytest.raises(TypeError, match=r"texts\[0\] is bytes"):
        enc.encode([b"bytes"])
    with pytest.raises(TypeError, match="not bytes"):
        enc.encode(b"bytes")
    with pytest.raises(TypeError, match=r"texts\[2\] is int"):
        enc.encode(["a", "b", 3])
    with pytest.raises(ValueError, match="top_k"):
        enc.encode("x", top_k=0)
    long = enc.encode(["word " * 2000, "short"])
    assert long.truncated == 1


def test_bad_export_directories(export_dir, tmp_path):
    with pytest.raises(ExportDirError, match="no such directory"):
        SpladeEncoder(tmp_path / "missing", device="cpu")
    with pytest.raises(ExportDirError, match=r"splade\.json: missing"):
        SpladeEncoder(tmp_path, device="cpu")
    newer = tmp_path / "newer"
    shutil.copytree(export_dir, newer)
    manifest = json.loads((newer / "splade.json").read_text())
    (newer / "splade.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(ExportDirError, match="newer than this splade-rt"):
        SpladeEncoder(newer, device="cpu")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(export_dir, corrupt)
    onnx_file = corrupt / "model.fp32.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:100_000])
    with pytest.raises(ExportDirError, match=r"model\.fp32\.onnx: contents differ"):
        SpladeEncoder(corrupt, device="cpu", variant="fp32")
    with pytest.raises(ExportDirError, match=r"model\.fp32\.onnx: onnxruntime cannot load it"):
        SpladeEncoder(corrupt, device="cpu", variant="fp32", verify=False)
    (corrupt / "splade.json").write_text("{broken")
    with pytest.raises(ExportDirError, match="corrupt manifest"):
        SpladeEncoder(corrupt, device="cpu")


def fallback_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "splade_rt" and "running on CPU" in r.getMessage()]


def test_device_selection_and_fallback(export_dir, monkeypatch, caplog):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(DeviceError, match="no CUDA execution provider"):
            SpladeEncoder(export_dir, device="cuda")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            auto = SpladeEncoder(export_dir, device="auto")
        assert not [w for w in caught if "running on CPU" in str(w.message)]  # a log line, not a two-line warning
        (line,) = fallback_lines(caplog)
        assert line.startswith("splade-rt: running on CPU: the installed onnxruntime has no CUDA") and "\n" not in line
        assert auto.device == "cpu" and auto.placement.file == SpladeEncoder(export_dir, device="cpu").placement.file
        caplog.clear()

    # A CUDA EP that is listed but fails to load: onnxruntime quietly gives a CPU-only session.
    real = ort.InferenceSession

    class SilentFallback(real):
        def __init__(self, path, options=None, providers=None, **kw):
            super().__init__(path, options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", SilentFallback)
    with pytest.raises(DeviceError, match="could not load the CUDA execution provider"):
        SpladeEncoder(export_dir, device="cuda")
    auto = SpladeEncoder(export_dir, device="auto")
    (line,) = fallback_lines(caplog)  # once per encoder
    assert "could not load the CUDA" in line
    assert auto.device == "cpu" and "could not load" in auto.placement.fallback_reason

    def broken(*a, providers=None, **kw):
        if any("CUDA" in str(p) for p in providers):
            raise RuntimeError("CUDA failure 100: no CUDA-capable device is detected")
        return real(*a, providers=providers, **kw)

    monkeypatch.setattr(ort, "InferenceSession", broken)
    with pytest.raises(DeviceError, match="no CUDA-capable device"):
        SpladeEncoder(export_dir, device="cuda:0")
    with pytest.raises(ValueError, match="cuda:N"):
        SpladeEncoder(export_dir, device="gpu")


def test_each_device_runs_the_first_graph_of_its_order_that_the_export_has(export_dir, tmp_path):
    from splade_rt.manifest import read_manifest

    manifest = read_manifest(export_dir)
    cpu, cuda = PROVIDERS["cpu"], PROVIDERS["cuda"]
    assert session_mod.choose_graph(manifest, cuda, None).name == "model.fp16.onnx"
    cpu_first = "model.states.onnx" if unavailable() is None else "model.screened.onnx"
    assert session_mod.choose_graph(manifest, cpu, None).name == cpu_first
    assert session_mod.choose_graph(manifest, cpu, None, prefer="fp32").name == "model.fp32.onnx"
    assert session_mod.choose_graph(manifest, cpu, "fp32").name == "model.fp32.onnx"
    # an export without the fp16 graph (--no-fp16): CUDA runs the fp32 one; TensorRT has nothing to run
    no_fp16 = tmp_path / "no-fp16"
    shutil.copytree(export_dir, no_fp16, ignore=shutil.ignore_patterns("model.fp16.onnx"))
    data = json.loads((no_fp16 / "splade.json").read_text())
    del data["files"]["model.fp16.onnx"]
    (no_fp16 / "splade.json").write_text(json.dumps(data))
    trimmed = read_manifest(no_fp16)
    assert session_mod.choose_graph(trimmed, cuda, None).name == "model.fp32.onnx"
    with pytest.raises(ExportDirError, match="no graph TensorRT runs"):
        session_mod.choose_graph(trimmed, PROVIDERS["tensorrt"], None)


def test_a_variant_the_export_lacks_says_how_to_export_it(export_dir, tmp_path):
    with pytest.raises(ExportDirError, match=r"variant 'int8' not in this export .*; re-export with splade-export "
                                             r"-o .* --force --int8$"):
        SpladeEncoder(export_dir, device="cpu", variant="int8")
    no_fp16 = tmp_path / "no-fp16"
    shutil.copytree(export_dir, no_fp16, ignore=shutil.ignore_patterns("model.fp16.onnx"))
    data = json.loads((no_fp16 / "splade.json").read_text())
    del data["files"]["model.fp16.onnx"]
    (no_fp16 / "splade.json").write_text(json.dumps(data))
    with pytest.raises(ExportDirError, match=r"variant 'fp16' not in this export .*--force \(without --no-fp16\)"):
        SpladeEncoder(no_fp16, device="cpu", variant="fp16")
    with pytest.raises(ValueError, match="variant 'int4': expected one of fp32, fp32-screened"):
        SpladeEncoder(export_dir, device="cpu", variant="int4")
    from splade_rt.manifest import read_manifest

    # a native variant's head is a CPU kernel: on a GPU row, its fused twin is named instead
    with pytest.raises(DeviceError, match=r"variant 'fp32-native' runs on the CPU only.*variant='fp32'"):
        session_mod.choose_graph(read_manifest(export_dir), PROVIDERS["cuda"], "fp32-native")


def test_screened_graph_equals_the_fp32_graph(export_dir, real_pairs):
    enc = SpladeEncoder(export_dir, device="cpu", variant="fp32-screened")
    fp32 = SpladeEncoder(export_dir, device="cpu", variant="fp32")
    texts = real_pairs[0] + real_pairs[1][:100] + ["", "word " * 600]
    a, b = enc.encode(texts, batch_size=16), fp32.encode(texts, batch_size=16)
    np.testing.assert_array_equal(a.indptr, b.indptr)  # the same non-zero set, row by row
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.values, b.values, atol=1e-5)


@pytest.mark.skipif(unavailable() is not None, reason=f"native head: {unavailable()}")
def test_native_head_equals_the_fp32_graph_on_every_path(export_dir, real_pairs):
    """Batches side by side, one batch at a time, query-sized inputs (one-thread encoder, the head on
    both threads), top-k, an empty text and a truncated one: the fp32 graph's vectors every time."""
    fp32 = SpladeEncoder(export_dir, device="cpu", variant="fp32")
    texts = real_pairs[0][:60] + real_pairs[1][:60] + ["", "word " * 600]
    want = fp32.encode(texts, batch_size=16)
    for workers in (1, 2):
        native = SpladeEncoder(export_dir, device="cpu", variant="fp32-native", threads=2, workers=workers)
        got = native.encode(texts, batch_size=16)
        np.testing.assert_array_equal(got.indptr, want.indptr)  # the same non-zero set, row by row
        np.testing.assert_array_equal(got.indices, want.indices)
        np.testing.assert_allclose(got.values, want.values, atol=1e-5)
    for query in real_pairs[0][:10]:
        a, b = native.encode_query(query), fp32.encode_query(query)
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_allclose(a.values, b.values, atol=1e-5)
    assert native._schedule.twins[(1, 2)].head_threads == 2  # the query's head split across both threads
    with pytest.raises(ValueError, match="io_binding=True applies to the fused graphs"):
        SpladeEncoder(export_dir, device="cpu", variant="fp32-native", io_binding=True)
    for k in (1, 16):
        a, b = native.encode(texts[:40], top_k=k), fp32.encode(texts[:40], top_k=k)
        assert [sorted(r.to_dict()) for r in a] == [sorted(r.to_dict()) for r in b]


def test_the_cpu_default_is_the_native_head_where_it_runs_else_the_faster_exact_graph_timed_once(
        export_dir, tmp_path, monkeypatch):
    """What a user gets with no variant: the native head where its kernel runs; elsewhere, on a CPU
    without VNNI, the screened and fp32 graphs timed once and the faster kept, cached for later loads;
    with VNNI, the screened graph untimed."""
    from splade_rt import machine
    from splade_rt.runtime import cpu_choice

    monkeypatch.delenv(cpu_choice.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # a fresh cache: the first load times
    timed = []

    def fake_time(session, manifest, *args):  # fp32 made to look faster: the choice must follow the timing
        precision = next(g.precision for g in manifest.graphs if g.name == Path(session._model_path).name)
        timed.append(precision)
        return 0.001 if precision == "fp32" else 0.01

    monkeypatch.setattr(cpu_choice, "_time", fake_time)
    default = SpladeEncoder(export_dir, device="cpu").placement.precision
    if unavailable() is None:
        assert default == "fp32-native" and timed == []
    elif machine.has_vnni():
        assert default == "fp32-screened" and timed == []
    else:
        assert default == "fp32" and sorted(timed) == ["fp32", "fp32-screened"]
    reason = "this CPU has no AVX-512 VNNI"  # what a CPU without the instructions says
    monkeypatch.setattr(session_mod, "native_unavailable", lambda: reason)
    monkeypatch.setattr(machine, "machine_info", lambda: {"cpu": "test cpu", "isa": ["avx2"]})
    timed.clear()
    assert SpladeEncoder(export_dir, device="cpu").placement.precision == "fp32"
    assert sorted(timed) == ["fp32", "fp32-screened"]
    assert SpladeEncoder(export_dir, device="cpu").placement.precision == "fp32"
    assert len(timed) == 2 and cpu_choice.cache_file().is_file()  # cached: no new timing
    monkeypatch.setattr(machine, "machine_info", lambda: {"cpu": "test cpu", "isa": ["avx2", "avx512_vnni"]})
    assert SpladeEncoder(export_dir, device="cpu").placement.precision == "fp32-screened"  # VNNI: no timing
    assert len(timed) == 2
    with pytest.raises(DeviceError, match=f"variant 'fp32-native' can't run here: {reason}; "
                                          "variant='fp32-screened' gives the same vectors"):
        SpladeEncoder(export_dir, device="cpu", variant="fp32-native")


def test_fp16_graph_keeps_top_terms_through_the_runtime(export_dir, enc, real_pairs):
    half = SpladeEncoder(export_dir, device="cpu", variant="fp16")
    texts = real_pairs[1][:20]
    a, b = enc.encode(texts, top_k=10), half.encode(texts, top_k=10)
    overlap = np.mean([len(set(x.indices) & set(y.indices)) / 10 for x, y in zip(a, b)])
    assert overlap >= 0.95


def test_dot_scores_without_scipy_equal_scipys(enc, real_pairs, monkeypatch):
    queries = enc.encode(real_pairs[0][:7])
    docs = enc.encode(real_pairs[1][:30], top_k=40)
    nothing = SparseEmbeddings.from_dense(np.zeros((2, enc.dim), np.float32))  # rows without a non-zero
    cases = [(queries, docs), (docs, queries), (queries, nothing), (nothing, docs)]
    expected = [dot_scores(a, b) for a, b in cases]  # scipy's sparse product
    monkeypatch.setitem(sys.modules, "scipy.sparse", None)  # as if scipy were not installed
    with pytest.raises(ImportError, match="needs scipy"):
        queries.to_csr()
    for (a, b), want in zip(cases, expected):
        for block_bytes in (64 << 20, 3 * 4 * enc.dim):  # one dense block; blocks of 3 rows
            got = dot_scores(a, b, block_bytes=block_bytes)
            assert got.shape == (len(a), len(b)) and got.dtype == np.float32
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(expected[0], queries.to_dense() @ docs.to_dense().T, rtol=1e-5)


def test_progress_bar_and_cli(export_dir, enc, capsys):
    enc.encode(["a", "b", "c"], show_progress_bar=True)
    bar = capsys.readouterr().err
    assert "Encoding" in bar and "3/3" in bar and "100%" in bar, bar  # tqdm's bar, on stderr
    enc.encode(["a", "b", "c"])
    assert capsys.readouterr().err == ""  # and none unless asked
    from splade_rt.runtime.cli import main

    assert main([str(export_dir), "--device", "cpu", "what is the capital of australia"]) == 0
    assert "capital" in capsys.readouterr().out
    assert main([str(Path(export_dir) / "nope"), "--device", "cpu", "x"]) == 2
