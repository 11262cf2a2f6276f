"""The GPU path as far as a CPU takes it: the provider table and the options it builds (TensorRT's
engine cache and shape profile included), the one-line errors where an execution provider can't
load, the out-of-memory split, IOBinding watched by a spy that fails when IOBinding is not used,
and the GPU check's dry run."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from conftest import DATA
from fan_out import in_threads

from splade_rt import DeviceError, SpladeEncoder
from splade_rt.bench.gpu import BindingSpy
from splade_rt.kernels.native_head import unavailable
from splade_rt.manifest import read_manifest
from splade_rt.runtime.providers import (
    CPU,
    CUDA,
    PROVIDERS,
    TENSORRT,
    GpuSettings,
    Target,
    device_help,
    parse_bytes,
    parse_device,
    trt_cache_dir,
)
from splade_rt.runtime.session import choose_graph

REPO = Path(__file__).resolve().parents[1]
CPU_ONLY = CUDA not in ort.get_available_providers()
OOM_MESSAGES = (
    "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running MatMul node. "
    "Name:'/bert/encoder/MatMul' Status Message: /onnxruntime_src/onnxruntime/core/framework/bfc_arena.cc:359 "
    "void* onnxruntime::BFCArena::AllocateRawInternal(size_t, bool, onnxruntime::Stream*, bool, "
    "onnxruntime::WaitNotificationFn) Failed to allocate memory for requested buffer of size 1610612736\n",
    "[ONNXRuntimeError] : 1 : FAIL : CUDA failure 2: out of memory ; GPU=0 ; hostname=gpu ; "
    "file=/onnxruntime_src/onnxruntime/core/providers/cuda/cuda_allocator.cc ; line=47 ; "
    "expr=cudaMalloc((void**)&p, size);",
)


@pytest.fixture(scope="module")
def manifest(export_dir):
    return read_manifest(export_dir)


@pytest.fixture(scope="module")
def texts(real_pairs) -> list[str]:
    queries, passages = real_pairs
    return passages[:10] + queries[:8] + ["", "word " * 600]


@pytest.fixture(scope="module")
def reference(export_dir) -> SpladeEncoder:
    """The fp16 graph on the CPU EP, plain run(): what the device path must reproduce."""
    return SpladeEncoder(export_dir, device="cpu", variant="fp16", workers=1)


def target(manifest, **settings) -> Target:
    return Target(0, manifest.graph("fp16"), 512, manifest.model.vocab_size, GpuSettings(**settings))


def names(providers) -> list[str]:
    return [p if isinstance(p, str) else p[0] for p in providers]


def assert_same(a, b) -> None:
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.values, b.values, rtol=1e-5, atol=1e-6)


class PretendProviders:
    """onnxruntime as if it had these execution providers: InferenceSession records the providers it
    was given and runs on the CPU, reporting the asked-for ones it is told load (all by default)."""

    def __init__(self, monkeypatch, available: list[str], loads: set[str] | None = None) -> None:
        self.calls: list[list] = []
        real, calls = ort.InferenceSession, self.calls
        monkeypatch.setattr(ort, "get_available_providers", lambda: list(available))

        class Session(real):
            def __init__(self, path, options=None, providers=None, **kwargs):
                calls.append(providers)
                super().__init__(path, options, providers=[CPU])
                self._reported = [n for n in names(providers) if loads is None or n in loads or n == CPU]

            def get_providers(self):
                return self._reported

        monkeypatch.setattr(ort, "InferenceSession", Session)


# -- the table ------------------------------------------------------------------------------------


def test_each_device_gets_its_graph_its_providers_and_its_name(manifest):
    cpu, cuda, trt = PROVIDERS["cpu"], PROVIDERS["cuda"], PROVIDERS["tensorrt"]
    # the CPU's first choice runs only where the native kernel does; the screened graph elsewhere
    cpu_graph = "model.states.onnx" if unavailable() is None else "model.screened.onnx"
    assert [choose_graph(manifest, s, None).name for s in (cpu, cuda, trt)] == [
        cpu_graph, "model.fp16.onnx", "model.fp16.onnx"]
    t = target(manifest)
    assert names(trt.providers(t)) == [TENSORRT, CUDA, CPU]  # CUDA runs what TensorRT can't
    assert names(cuda.providers(t)) == [CUDA, CPU] and cpu.providers(t) == [CPU]
    assert "libnvinfer" in trt.library and "libnvinfer" in trt.install
    assert parse_device("tensorrt:2") == ("tensorrt", 2) and parse_device("cuda") == ("cuda", 0)
    with pytest.raises(ValueError, match="'tensorrt' or 'tensorrt:N'"):
        parse_device("trt")
    with pytest.raises(ValueError):
        parse_device("cpu:1")
    # the one --device help every command shows names every device the table has, as parse_device takes it
    help_text = device_help()
    for kind in PROVIDERS:
        assert kind in help_text and parse_device(kind) == (kind, 0)
    assert [k for k, s in PROVIDERS.items() if s.uses_gpu] == ["cuda", "tensorrt"]  # what Ray reserves a GPU for


def test_cuda_options_keep_the_arena_bounded_and_skip_per_shape_attention_plans(manifest):
    built = PROVIDERS["cuda"].options(target(manifest))
    # sdpa_kernel 2: memory-efficient attention, never cuDNN's, which plans each new shape
    # (docs/design/cuda-attention.md)
    assert built == {"device_id": 0, "arena_extend_strategy": "kNextPowerOfTwo", "use_tf32": 0, "sdpa_kernel": 2}
    limited = PROVIDERS["cuda"].options(target(manifest, gpu_mem_limit="2GiB"))
    assert limited["gpu_mem_limit"] == 2 * 2**30
    # the user's provider_options go over the table's
    mine = PROVIDERS["cuda"].options(target(manifest, provider_options={"arena_extend_strategy": "kSameAsRequested",
                                                                        "sdpa_kernel": 0}))
    assert mine["arena_extend_strategy"] == "kSameAsRequested" and mine["use_tf32"] == 0 and mine["sdpa_kernel"] == 0


def test_sizes_and_settings_are_checked():
    assert parse_bytes("8GB", "x") == 8 * 10**9 and parse_bytes("512 MiB", "x") == 512 * 2**20
    assert parse_bytes(1024, "x") == 1024 and parse_bytes("1.5GiB", "x") == 3 * 2**29
    for bad in ("lots", "-1GB", 0, True, "8 parsecs", None):
        with pytest.raises(ValueError, match="gpu_mem_limit must be"):
            parse_bytes(bad, "gpu_mem_limit")
    with pytest.raises(ValueError, match="max_batch must be a positive integer"):
        GpuSettings(max_batch=0)


def test_tensorrt_options_as_built(manifest, tmp_path, monkeypatch):
    t = target(manifest, trt_cache_dir=tmp_path / "engines", max_batch=64, gpu_mem_limit=2**30)
    built = PROVIDERS["tensorrt"].options(t)
    cache = tmp_path / "engines" / manifest.graph("fp16").sha256[:16] / "b64-s512"
    assert built == {
        "device_id": 0, "trt_fp16_enable": True,
        "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache),
        "trt_profile_min_shapes": "input_ids:1x1,attention_mask:1x1,top_k:1",
        "trt_profile_opt_shapes": "input_ids:32x512,attention_mask:32x512,top_k:64",
        "trt_profile_max_shapes": "input_ids:64x512,attention_mask:64x512,top_k:3840",
        "trt_max_workspace_size": 2**30,
    }
    # by default: outside the export, under the user's cache, keyed by the graph's hash and the profile
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    default = trt_cache_dir(target(manifest))
    assert default == tmp_path / "xdg" / "splade-rt" / "trt" / manifest.graph("fp16").sha256[:16] / "b256-s512"
    other = Target(0, manifest.graph("fp32"), 512, manifest.model.vocab_size)
    assert trt_cache_dir(other).parent != default.parent


# -- sessions opened from the table ---------------------------------------------------------------


def test_a_tensorrt_session_gets_the_tables_options(export_dir, reference, texts, tmp_path, monkeypatch):
    fake = PretendProviders(monkeypatch, [TENSORRT, CUDA, CPU])
    enc = SpladeEncoder(export_dir, device="tensorrt:1", trt_cache_dir=tmp_path / "engines", max_batch=4,
                        max_length=128, gpu_mem_limit="1GiB")
    (providers,) = fake.calls
    assert names(providers) == [TENSORRT, CUDA, CPU]
    trt, cuda = providers[0][1], providers[1][1]
    assert trt["device_id"] == 1 and cuda["device_id"] == 1
    assert trt["trt_profile_max_shapes"] == "input_ids:4x128,attention_mask:4x128,top_k:3840"
    assert Path(trt["trt_engine_cache_path"]).is_dir()  # made before the session opens
    assert Path(trt["trt_engine_cache_path"]).relative_to(tmp_path / "engines").parts[1] == "b4-s128"
    assert cuda["gpu_mem_limit"] == 2**30 and cuda["arena_extend_strategy"] == "kNextPowerOfTwo"
    assert (enc.device, enc.placement.file, enc.placement.max_rows) == ("tensorrt", "model.fp16.onnx", 4)
    assert enc.placement.options == trt and enc._io_binding  # GPU rows bind by default
    # batches over the profile's 4 rows run in parts (plain run() here: the session is really on the CPU)
    enc._io_binding = False
    spy = BindingSpy(enc.placement.session)
    enc.placement.session = spy
    rows = []
    real_run = spy.run

    def run(names_, feeds, *args):
        rows.append(len(feeds["input_ids"]))
        return real_run(names_, feeds, *args)

    spy.run = run
    short = SpladeEncoder(export_dir, device="cpu", variant="fp16", max_length=128, workers=1)
    for k in (None, 16):
        assert_same(enc.encode(texts, top_k=k, batch_size=16), short.encode(texts, top_k=k, batch_size=16))
    assert rows and max(rows) == 4


def test_tensorrt_without_tensorrt_is_one_device_error_line(export_dir, monkeypatch):
    if CPU_ONLY:  # not in this onnxruntime at all
        with pytest.raises(DeviceError) as info:
            SpladeEncoder(export_dir, device="tensorrt")
        message = str(info.value)
        assert "\n" not in message and "libnvinfer" in message
        assert message.startswith("device='tensorrt' but the installed onnxruntime has no TensorRT execution provider")
    # listed but libnvinfer missing: onnxruntime drops it and opens CUDA + CPU (its own fallback)
    fake = PretendProviders(monkeypatch, [TENSORRT, CUDA, CPU], loads={CUDA})
    with pytest.raises(DeviceError) as info:
        SpladeEncoder(export_dir, device="tensorrt:0")
    message = str(info.value)
    assert "\n" not in message and message.startswith(
        "device='tensorrt:0' but onnxruntime could not load the TensorRT execution provider: TensorRT's library "
        "libnvinfer is missing")
    assert len(fake.calls) == 1


def test_both_onnxruntime_builds_installed_is_named_with_the_fix(export_dir, monkeypatch):
    from importlib import metadata

    PretendProviders(monkeypatch, [CPU])  # what the CPU build's files give, whatever else is installed
    versions = {"onnxruntime": "1.32.0", "onnxruntime-gpu": "1.31.1"}

    def version(name):
        if name in versions:
            return versions[name]
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", version)
    with pytest.raises(DeviceError) as info:
        SpladeEncoder(export_dir, device="cuda")
    assert str(info.value) == (
        "device='cuda' but the installed onnxruntime has no CUDA execution provider (it has: CPUExecutionProvider); "
        "onnxruntime 1.32.0 and onnxruntime-gpu 1.31.1 are both installed, in one package folder where the CPU "
        "build's files won: pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu")
    del versions["onnxruntime-gpu"]  # the CPU build alone: install the GPU one
    with pytest.raises(DeviceError, match=r"; install onnxruntime-gpu \(pip install 'splade-rt\[gpu\]'\)$"):
        SpladeEncoder(export_dir, device="cuda")


def test_a_gpu_encoder_says_once_when_the_tokenizer_runs_on_one_thread(export_dir, texts, monkeypatch, caplog):
    from splade_rt.runtime.encoder import tokenizer_is_serial

    PretendProviders(monkeypatch, [CUDA, CPU])
    on_gpu = SpladeEncoder(export_dir, device="cuda")
    on_gpu._io_binding = False  # the session really runs on the CPU here
    on_cpu = SpladeEncoder(export_dir, device="cpu")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    with caplog.at_level(logging.WARNING, logger="splade_rt"):
        on_gpu.encode(texts[:1])  # a query: one text, nothing to parallelize
        assert not caplog.records
        for _ in range(2):
            on_gpu.encode(texts[:4])
            on_cpu.encode(texts[:4])  # serial on the CPU is what the CPU wants
    said = [r.getMessage() for r in caplog.records if "TOKENIZERS_PARALLELISM" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(
        "splade-rt: TOKENIZERS_PARALLELISM=false: texts are tokenized on one thread, and on cuda the tokenizer")
    for value, serial in (("0", True), ("off", True), ("", True), ("N", True), ("true", False), ("1", False)):
        monkeypatch.setenv("TOKENIZERS_PARALLELISM", value)
        assert tokenizer_is_serial() is serial, value
    monkeypatch.delenv("TOKENIZERS_PARALLELISM")
    assert not tokenizer_is_serial()  # tokenizers' default: threads on


def test_auto_never_picks_tensorrt(export_dir, monkeypatch, caplog):
    fake = PretendProviders(monkeypatch, [TENSORRT, CPU])  # TensorRT listed, no CUDA
    with caplog.at_level(logging.WARNING, logger="splade_rt"):
        auto = SpladeEncoder(export_dir, device="auto")
    assert auto.device == "cpu"
    assert [r.getMessage() for r in caplog.records if "running on CPU" in r.getMessage()] == [
        "splade-rt: running on CPU: the installed onnxruntime has no CUDA execution provider (it has: "
        "TensorrtExecutionProvider, CPUExecutionProvider); install onnxruntime-gpu (pip install 'splade-rt[gpu]')"]
    assert all(TENSORRT not in names(p) for p in fake.calls)
    fake = PretendProviders(monkeypatch, [TENSORRT, CUDA, CPU])
    auto = SpladeEncoder(export_dir, device="auto")
    assert auto.device == "cuda" and names(fake.calls[0]) == [CUDA, CPU]


# -- out of memory ----------------------------------------------------------------------------------


class OutOfMemoryAbove:
    """Stands in for a session on a GPU whose memory holds batches of at most `rows` rows: a larger one
    raises onnxruntime's out-of-memory error, through run() or run_with_iobinding()."""

    def __init__(self, session, rows: int, message: str) -> None:
        self.session, self.rows, self.message = session, rows, message
        self.failed: list[tuple[int, int]] = []
        self.ran: list[tuple[int, int]] = []
        self.spy = BindingSpy(session)  # knows the bound inputs' shapes

    def _check(self, shape: tuple[int, int]) -> None:
        if shape[0] > self.rows:
            self.failed.append(shape)
            raise RuntimeError(self.message)
        self.ran.append(shape)

    def run(self, output_names, feeds, *args):
        self._check(feeds["input_ids"].shape)
        return self.session.run(output_names, feeds, *args)

    def io_binding(self):
        return self.spy.io_binding()

    def run_with_iobinding(self, binding, *args):
        self._check(binding.record["inputs"]["input_ids"][1])
        return self.spy.run_with_iobinding(binding, *args)

    def __getattr__(self, name: str):
        return getattr(self.session, name)


@pytest.mark.parametrize("io_binding, message", [(True, OOM_MESSAGES[0]), (False, OOM_MESSAGES[1])])
def test_a_batch_out_of_memory_is_split_retried_and_warned_once(export_dir, reference, texts, io_binding, message):
    enc = SpladeEncoder(export_dir, device="cpu", variant="fp16", io_binding=io_binding, workers=1)
    fake = OutOfMemoryAbove(enc.placement.session, 3, message)
    enc.placement.session = fake
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert_same(enc.encode(texts, batch_size=8), reference.encode(texts, batch_size=8))
        failures = len(fake.failed)
        assert_same(enc.encode(texts, top_k=16, batch_size=8), reference.encode(texts, top_k=16, batch_size=8))
    assert failures and max(rows for rows, _ in fake.ran) <= 3
    assert len(fake.failed) == failures  # once one failed, batches as large are split before they run
    warned = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(warned) == 1 and "\n" not in warned[0]
    assert warned[0].startswith("splade-rt: a batch of 8 texts x ") and "ran out of memory on cpu" in warned[0]


def test_one_text_out_of_memory_and_other_errors_are_not_retried(export_dir):
    enc = SpladeEncoder(export_dir, device="cpu", variant="fp16", io_binding=True, workers=1)
    real = enc.placement.session
    enc.placement.session = OutOfMemoryAbove(real, 0, OOM_MESSAGES[1])
    with pytest.raises(DeviceError) as info:
        enc.encode(["one text alone"])
    assert str(info.value).startswith("text 0: 5 tokens alone run out of memory on cpu ([ONNXRuntimeError] : 1")
    assert "\n" not in str(info.value)
    other = OutOfMemoryAbove(real, 0, "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions")
    enc.placement.session = other
    with pytest.raises(RuntimeError, match="INVALID_ARGUMENT"):
        enc.encode(["first text", "second text", "third"])
    assert len(other.failed) == 1  # not split, not retried


# -- IOBinding ----------------------------------------------------------------------------------------


def test_io_binding_binds_only_the_small_outputs_to_the_host(export_dir, reference, texts):
    """Fails if the device path stops using IOBinding (no bindings, or plain run() calls), binds the
    [batch, vocab] tensor, or copies outputs other than the top-k or the non-zeros to the host."""
    enc = SpladeEncoder(export_dir, device="cpu", variant="fp16", io_binding=True)
    spy = BindingSpy(enc.placement.session)
    enc.placement.session = spy
    for k, wanted in ((32, {"top_values", "top_indices"}), (None, {"nonzero_index", "nonzero_value"})):
        before = len(spy.bindings)
        assert_same(enc.encode(texts, top_k=k, batch_size=8), reference.encode(texts, top_k=k, batch_size=8))
        made = spy.bindings[before:]
        assert made, "no IOBinding was made: the device path ran without it"
        for binding in made:
            assert binding["runs"] == 1
            assert binding["outputs"] == dict.fromkeys(wanted, "cpu")  # never "sparse", [batch, vocab]
            assert set(binding["inputs"]) == {"input_ids", "attention_mask"} and binding["cpu_inputs"] == ["top_k"]
            assert {device for device, _ in binding["inputs"].values()} == {enc.placement.spec.memory}
    assert spy.plain_runs == 0
    summary = spy.summary(enc.dim)
    assert summary["bytes_to_host"] < summary["bytes_if_dense"] / 10


def test_encode_with_io_binding_is_thread_safe(export_dir, reference, texts):
    enc = SpladeEncoder(export_dir, device="cpu", variant="fp16", io_binding=True)
    expected = reference.encode(texts, top_k=16, batch_size=4)
    for got in in_threads(lambda _: enc.encode(texts, top_k=16, batch_size=4), 4):
        assert_same(got, expected)


def test_shape_options_leave_the_vectors_alone(export_dir, reference, texts):
    enc = SpladeEncoder(export_dir, device="cpu", variant="fp16", io_binding=True, pad_to_multiple_of=64,
                        arena_shrinkage=True, max_batch=3)
    for k in (None, 16):
        assert_same(enc.encode(texts, top_k=k, batch_size=8), reference.encode(texts, top_k=k, batch_size=8))


# -- the GPU check ------------------------------------------------------------------------------------


def _gpu_install(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "install"], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "ORTGPU_DIR": str(root), "PYTHON": sys.executable})


def test_the_gpu_machines_wheel_is_joined_from_its_pieces_and_installed(tmp_path):
    """A lent GPU machine gets onnxruntime-gpu in pieces, one a call: a missing or damaged piece must
    stop the install with one line saying so (not a broken onnxruntime on the path), and a rerun on
    the same pieces must reuse the install (device time is counted)."""
    wheel = tmp_path / "built.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("fake_ort/__init__.py", "".join(f"# {i} {np.random.default_rng(i).random()}\n" for i in range(3000)))
        z.writestr("fake_ort-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("fake_ort-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: fake-ort\nVersion: 1.0\n")
        z.writestr("fake_ort-1.0.dist-info/RECORD", "")
    data, root = wheel.read_bytes(), tmp_path / ".ortgpu"
    size = len(data) // 3 + 1
    for i in range(3):
        (root / f"{i:02d}").mkdir(parents=True)
        (root / f"{i:02d}" / f"part-{i:02d}").write_bytes(data[i * size:(i + 1) * size])
    first = _gpu_install(root)
    assert first.returncode == 0 and "installed fake_ort-1.0-py3-none-any.whl" in first.stdout, first.stderr
    assert (root / "site" / "fake_ort" / "__init__.py").is_file()
    assert "reused" in _gpu_install(root).stdout
    (root / "01" / "part-01").unlink()
    missing = _gpu_install(root)
    assert missing.returncode == 2 and missing.stderr.strip().endswith(f"pieces part-01 missing from {root} (have 2)")
    (root / "01" / "part-01").write_bytes(np.random.default_rng(0).bytes(size))  # a piece from another download
    damaged = _gpu_install(root)
    assert damaged.returncode == 2 and damaged.stderr.count("\n") == 1 and "a piece damaged" in damaged.stderr
    assert not (root / "site").exists()


def _small_scifact(root: Path) -> Path:
    """The first 8 SciFact test queries, their relevant abstracts and others, 40 in all: what the dry run needs."""
    source = DATA / "scifact"
    if not (source / "corpus.jsonl").is_file():
        pytest.skip(f"SciFact not found at {source} (set SPLADE_SHARED)")
    qrels = [line.split("\t") for line in (source / "qrels" / "test.tsv").read_text().splitlines()[1:]]
    queries = list(dict.fromkeys(q for q, _, _ in qrels))[:8]
    docs = [json.loads(line) for line in (source / "corpus.jsonl").read_text().splitlines()]
    keep = {d for q, d, _ in qrels if q in queries}
    keep |= {d["_id"] for d in docs[:40 - len(keep)]}
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs if d["_id"] in keep))
    (root / "queries.jsonl").write_text("".join(line + "\n" for line in (source / "queries.jsonl").read_text()
                                                .splitlines() if json.loads(line)["_id"] in queries))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        "\t".join(r) + "\n" for r in qrels if r[0] in queries))
    return root


def test_the_gpu_check_dry_run_checks_what_a_cpu_can_and_reports_every_configuration(export_dir, tmp_path):
    """The GPU check runs on a lent machine with minutes of device time: its dry run here must run every
    phase end to end (the CPU EP standing in for CUDA), pass the bars a CPU can check, and report every
    configuration with numbers or the one-line reason it has none."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--dry-run", "--out", str(tmp_path),
                           "--export", str(export_dir), "--data", str(_small_scifact(tmp_path / "scifact"))],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    (result,) = tmp_path.glob("gpu-check-dry-run-*.json")
    assert result.with_suffix(".md").is_file() and result.with_suffix(".png").stat().st_size > 10_000
    report = json.loads(result.read_text())
    table = result.with_suffix(".md").read_text()
    assert report["dry_run"] and all(f"| {bar} | {'pass' if ok else 'FAIL'} |" in table
                                     for bar, ok in report["bars"].items())
    # what the CPU stand-in can check, it passes; CUDA itself can't load here, and says why in one line
    assert all(report["bars"][bar] for bar in ("parity", "ndcg_within_0.002", "only_small_outputs_to_host",
                                               "memory_flat"))
    for kind in ("cuda", "tensorrt"):
        assert report["providers"][kind]["loaded"] is False and "\n" not in report["providers"][kind]["error"]
    timed = {**report["speed"], **{f"base {k}": v for k, v in report["base_size"]["speed"].items()}}
    assert len(timed) == 6 and "top64_overlap_mean" in report["base_size"]["overlap_fp16_vs_fp32"]
    for name, entry in timed.items():
        assert "error" not in entry, (name, entry)
        assert "bf16" in name or (entry["passages_per_s_b32"] > 0 and entry["query_p99_ms_seen"] > 0), (name, entry)
    assert len(report["memory"]) == 4 and all(e["peak_mib_after_all"] > 0 for e in report["memory"].values())
    assert report["cuda_graph"]["plain_ms_b32"] > 0 and "dry run" in report["cuda_graph"]["status"]
    assert report["host_ceiling"]["passages_per_s"] > 0 and "Host ceiling: host ceiling (" in table


def test_the_attention_kernel_benchmark_dry_run_times_every_setting(export_dir, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_attention", "--dry-run", "--out", str(tmp_path),
                           "--export", str(export_dir)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (result,) = tmp_path.glob("gpu-attention-dry-run-*.json")
    report = json.loads(result.read_text())
    assert result.with_suffix(".png").stat().st_size > 10_000 and report["dry_run"]
    assert {r["sdpa_kernel"] for r in report["results"].values()} == {0, 1, 2, 4, 16}
    for entry in report["results"].values():
        assert entry["new_shape_ms"] > 0 and entry["seen_shape_ms"] > 0 and entry["2x16_ms"] > 0
