"""The opt-in int8 encoder graph, the CPU graph choice, and splade-bench as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from splade_rt import DeviceError, SpladeEncoder
from splade_rt.export.pipeline import export_model
from splade_rt.kernels.native_head import unavailable
from splade_rt.manifest import read_manifest


@pytest.fixture(scope="module")
def int8_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "export"
    export_model(None, out, fp16=False, int8=True, log=lambda _: None)
    return out


def test_int8_graph_is_opt_in_quantizes_only_the_encoder_and_keeps_the_top_terms(int8_export, real_pairs):
    manifest = read_manifest(int8_export)
    int8 = manifest.graph("int8")
    assert int8 is not None and int8.name == "model.int8.onnx" and manifest.parity["int8"]["passed"]
    # lossy: never the default, on any device
    assert SpladeEncoder(int8_export, device="cpu").placement.precision in ("fp32-native", "fp32-screened", "fp32")

    model = onnx.load(str(int8_export / int8.name))
    encoder_ops = {n.op_type for n in model.graph.node if not n.name.startswith("splade/")}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= encoder_ops or "QAttention" in encoder_ops
    screened = onnx.load(str(int8_export / manifest.graph("fp32-screened").name))
    head = [n.op_type for n in model.graph.node if n.name.startswith("splade/")]
    assert head == [n.op_type for n in screened.graph.node if n.name.startswith("splade/")]  # the same exact head

    texts = real_pairs[1][:40] + real_pairs[0][:40]
    fast = SpladeEncoder(int8_export, device="cpu", variant="int8").encode(texts, top_k=64)
    exact = SpladeEncoder(int8_export, device="cpu", variant="fp32").encode(texts, top_k=64)
    overlap = np.mean([len(set(a.indices) & set(b.indices)) / max(len(b), 1) for a, b in zip(fast, exact)])
    assert 0.85 <= overlap < 1.0  # close, and really a different (quantized) computation


def test_int8_native_gives_the_int8_graphs_vectors_and_says_so_where_it_cant_run(int8_export, real_pairs):
    manifest = read_manifest(int8_export)
    native = manifest.graph("int8-native")
    assert native is not None and native.name == "model.int8.states.onnx"
    parity = manifest.parity["int8-native"]
    assert parity["passed"] and parity["vs_int8_graph"]["max_rel_diff"] <= 1e-5
    model = onnx.load(str(int8_export / native.name))
    assert [o.name for o in model.graph.output] == ["mlm_hidden"]  # states only: the head is the kernel's
    assert "MatMulInteger" in {n.op_type for n in model.graph.node}

    texts = real_pairs[1][:40] + real_pairs[0][:40] + [""]
    graph = SpladeEncoder(int8_export, device="cpu", variant="int8").encode(texts)
    if unavailable() is not None:
        with pytest.raises(DeviceError, match=r"variant 'int8-native' can't run here: .*variant='int8'"):
            SpladeEncoder(int8_export, device="cpu", variant="int8-native")
        return
    fast = SpladeEncoder(int8_export, device="cpu", variant="int8-native").encode(texts)
    a, b = graph.to_dense(), fast.to_dense()
    assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()
    both = (a > 1e-4) | (b > 1e-4)  # a logit within rounding of zero may differ; anything larger may not
    assert ((a > 0) == (b > 0))[both].all()


def test_without_vnni_the_faster_exact_graph_is_timed_once_and_cached(export_dir, tmp_path, monkeypatch):
    from splade_rt.runtime import cpu_choice

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv(cpu_choice.ENV, raising=False)
    manifest = read_manifest(export_dir)
    timed = []

    def factory(precision):
        timed.append(precision)

        class Session:  # fp32 made to look faster: the choice must follow the measurement
            def run(self, *args):
                import time

                time.sleep(0.002 if precision == "fp32" else 0.02)
        return Session()

    assert cpu_choice.choose_cpu_precision(manifest, factory, isa=["avx2", "avx512_vnni"]) is None  # VNNI
    assert timed == []
    assert cpu_choice.choose_cpu_precision(manifest, factory, isa=["avx2"]) == "fp32"
    assert sorted(timed) == ["fp32", "fp32-screened"]
    assert cpu_choice.choose_cpu_precision(manifest, factory, isa=["avx2"]) == "fp32"  # cached: no new timing
    assert len(timed) == 2 and cpu_choice.cache_file().is_file()
    monkeypatch.setenv(cpu_choice.ENV, "fp32-screened")
    assert cpu_choice.choose_cpu_precision(manifest, factory, isa=["avx2"]) == "fp32-screened"
    from splade_rt import machine

    monkeypatch.setattr(machine, "machine_info", lambda: {"cpu": "test", "isa": ["avx2", "avx512_vnni"]})
    assert SpladeEncoder(export_dir, device="cpu").placement.precision == "fp32-screened"  # through the encoder
    monkeypatch.setenv(cpu_choice.ENV, "fp32")
    assert SpladeEncoder(export_dir, device="cpu").placement.precision == "fp32"
    assert SpladeEncoder(export_dir, device="cpu", variant="fp32-screened").placement.precision == "fp32-screened"
    monkeypatch.setenv(cpu_choice.ENV, "int4")
    with pytest.raises(ValueError, match="SPLADE_RT_CPU_GRAPH='int4'"):
        cpu_choice.choose_cpu_precision(manifest, factory, isa=["avx2"])


def test_splade_bench_measures_an_export_beside_sentence_transformers(export_dir, tmp_path):
    default = SpladeEncoder(export_dir, device="cpu").placement.file  # the CPU choice, cached for the bench
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "splade_rt.bench.cli", str(export_dir), "--limit", "24",
                           "--batch-size", "8", "--min-seconds", "0", "--threads", "1", "--compare", "--json",
                           str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["machine"]["cores"] >= 1 and "isa" in report["machine"] and report["passages"] == 24
    rt, st = report["results"]["splade-rt"], report["results"]["reference"]
    assert rt["provider"] == "CPUExecutionProvider" and rt["graph"] == default
    for entry in (rt, st):
        assert entry["passages_per_s_b8"] > 0 and 0 < entry["query_p50_ms"] <= entry["query_p99_ms"]
        assert entry["peak_rss_mib"] > 0 and entry["cold_start_s"] > 0
    assert rt["check_vs_reference"]["max_abs_diff"] <= 1e-4  # the same vectors
    assert rt["x_reference_b8"] == pytest.approx(rt["passages_per_s_b8"] / st["passages_per_s_b8"])
    assert f"splade-rt default cpu [CPUExecutionProvider, {default}]" in proc.stdout
    assert "passages/s" in proc.stdout and "x ST" in proc.stdout


def test_splade_bench_compares_on_splade_rts_device_and_tokenizes_in_parallel_on_a_gpu(export_dir):
    from splade_rt.bench.cli import reference_spec
    from splade_rt.bench.runner import tokenizer_threads
    from splade_rt.bench.worker import torch_device

    assert reference_spec(export_dir, "tensorrt:1")["device"] == "tensorrt:1"
    assert [torch_device(d, True) for d in ("cpu", "cuda", "cuda:1", "tensorrt:2", "auto")] == [
        "cpu", "cuda", "cuda:1", "cuda:2", "cuda"]
    assert torch_device("auto", False) == "cpu"
    # serial tokenizing held the GPU to a third of its speed; on the CPU the cores belong to the measured threads
    assert tokenizer_threads({"device": "cuda:1"}) == "true" and tokenizer_threads({"device": "cpu"}) == "false"


def test_splade_bench_measures_an_export_that_carries_only_the_graph_asked_for(export_dir, tmp_path):
    """An export trimmed to its GPU graph for a GPU machine: the bench loads the graph asked for, nothing else."""
    import shutil

    trimmed = tmp_path / "fp32-only"
    shutil.copytree(export_dir, trimmed, ignore=shutil.ignore_patterns("model.screened.onnx", "model.states.onnx",
                                                                        "native_head.npz", "model.fp16.onnx"))
    proc = subprocess.run([sys.executable, "-m", "splade_rt.bench.cli", str(trimmed), "--variant", "fp32",
                           "--limit", "8", "--batch-size", "4", "--min-seconds", "0", "--threads", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "splade-rt fp32 cpu [CPUExecutionProvider, model.fp32.onnx]" in proc.stdout


def test_throughput_is_timed_once_every_shape_has_run(monkeypatch):
    """A GPU provider may plan each new input shape (cuDNN attention: ~50 ms each on an H100); the timed
    passes must not include those first runs, or splade-bench reports a fraction of the real speed."""
    import time

    from splade_rt.bench.measure import throughput

    seen: set[tuple[str, ...]] = set()

    def encode(texts, batch_size):
        for i in range(0, len(texts), batch_size):
            shape = tuple(texts[i:i + batch_size])
            time.sleep(0.001 if shape in seen else 0.05)
            seen.add(shape)
        return texts

    numbers, _ = throughput(encode, [f"passage {i}" for i in range(32)], 8, 320)
    # 4 batches of a seen shape take ~4 ms: over 1,000 passages/s; one first run each would give ~150
    assert numbers["passages_per_s_b8"] > 1000 and numbers["tokens_per_s_b8"] == pytest.approx(
        10 * numbers["passages_per_s_b8"])


def test_splade_bench_bad_input_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "splade_rt.bench.cli", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no such directory" in proc.stderr
