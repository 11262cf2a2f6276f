"""`python -m benchmarks.gpu_check`: one command that proves the GPU path (issue 13).

In one go on one GPU (sized to finish in under 5 minutes on an H100 once the wheel is there):

1. install: onnxruntime-gpu from the pieces under .ortgpu/NN/part-NN (--install), then a session
   that really reports CUDAExecutionProvider (onnxruntime falls back to the CPU silently otherwise);
   TensorRT is tried too, and its outcome recorded (it needs libnvinfer, which that machine lacks).
2. parity: the fp16 graph on CUDA against the fp32 graph on the CPU and against sentence-transformers
   torch fp32 on the GPU: top-64 overlap >= 0.98 and the same argmax term (the export's fp16 bar), on
   the parity texts and SciFact queries and abstracts.
3. transfer: a spy on the session's IOBinding records what is bound where: only [batch, k] or the
   non-zeros may be bound to the host, never the [batch, vocab] tensor, and inputs sit on the GPU.
4. nDCG@10 on SciFact (max length 256, as benchmarks.eval_all): fp16 CUDA within 0.002 of fp32 CPU.
5. memory: 1,000 batches of random shapes, peak GPU memory after 100 and after 1,000 (flat: at most
   +10% + 64 MiB), with splade-rt's arena settings; to ground the defaults in numbers, 200 batches
   each with the arena grown as requested (kSameAsRequested), arena shrinkage, and lengths padded
   to x64. Each also times its batches, then the last 50 shapes again: a shape's first run against
   a seen one's.
6. speed: passages/s at batch 32 and 256 and query p50/p99 at batch 1 (then again over the same
   queries, every length seen: a shape's first run apart), with peak GPU memory, for
   splade-rt fp16 CUDA (and TensorRT where it loads) and sentence-transformers torch fp16 and fp32,
   each in its own process on the same GPU. Bar: splade-rt >= 3x sentence-transformers fp16 at 256.
7. extras: CUDA graphs (enable_cuda_graph, one fixed shape, in a process of its own: on the H100 its
   replay died with CUDA error 700) and pre-allocated host output buffers, timed against the plain
   bound run, or the error that refused them.

Results: gpu-check-<gpu>-<date>.{json,md,png} under $OUT when set, else benchmarks/results/.
--dry-run runs the same code here: the CPU EP stands in for CUDA (fp16 graph, IOBinding on), the
sizes are small, and process RSS stands in for GPU memory. tests/test_gpu_path.py runs it.

Running it on a lent GPU (H100/H200: python3 3.12, torch 2.11 CUDA 13, CPU-only onnxruntime, no
network, 64 MiB per call with the checkout's ~19 MiB). Here, in the checkout's root, once:

    bash ../shared/tools/ort-gpu-chunks.sh     # onnxruntime-gpu 1.31.1 in 40 MiB pieces: .ortgpu/00 .. 06
    python -m benchmarks.gpu_carry             # benchmarks/.cache/gpu-carry: export + SciFact, ~29 MiB

Then these seven `run` calls back to back (a machine keeps what earlier calls left only while it is
warm, 30 s after each call; if one goes cold, start again from the first):

    run(command="ls -l .ortgpu/*", carry=[".ortgpu/00"], timeout_s=60)
    run(command="ls -l .ortgpu/*", carry=[".ortgpu/01"], timeout_s=60)
    ... the same with .ortgpu/02, .ortgpu/03, .ortgpu/04, .ortgpu/05 ...
    run(command="set -o pipefail; PYTHONUNBUFFERED=1 python3 -m benchmarks.gpu_check --install 2>&1 "
                "| tee $OUT/gpu-check.log",
        carry=[".ortgpu/06", "benchmarks/.cache/gpu-carry"], timeout_s=480)

then give_back. The last call prints the summary and returns the JSON, Markdown and PNG (and the log)
under $OUT. On the same warm machine a rerun needs no pieces: .ortgpu/site is reused.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
import zlib
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from .common import CACHE, HERE, REPO, SHARED, save_figure, table_head

ORTGPU = REPO / ".ortgpu"
CARRY = CACHE / "gpu-carry"
TOP = 64  # top-k overlap, as the export's parity check
OUTPUTS_SMALL = ("top_values", "top_indices", "nonzero_index", "nonzero_value")
MEMORY_VARIANTS = {  # SpladeEncoder keyword arguments per memory run; the first is splade-rt's default
    "splade-rt default (kNextPowerOfTwo)": {},
    "arena grown as requested (kSameAsRequested)": {"provider_options": {"arena_extend_strategy": "kSameAsRequested"}},
    "arena shrinkage after each run": {"arena_shrinkage": True},
    "lengths padded to x64": {"pad_to_multiple_of": 64},
}
BARS = ("cuda_ep_loads", "parity", "ndcg_within_0.002", "only_small_outputs_to_host", "memory_flat",
        "b256_3x_st_fp16")
# every field the real run fills: the dry run must fill them too (tests/test_gpu_path.py checks)
FIELDS = {
    "top": ("gpu", "machine", "software", "install", "providers", "parity", "transfer", "ndcg", "memory", "speed",
            "extras", "bars", "passed", "date", "dry_run", "command", "wall_s", "sizes", "memory_source"),
    "gpu": ("name", "driver", "memory_total_mib"),
    "software": ("python", "onnxruntime", "onnxruntime_file", "providers_available", "torch", "transformers",
                 "sentence_transformers"),
    "providers": ("cuda", "tensorrt", "torch_preloaded"),
    "parity": ("texts", "fp16_device_vs_fp32_cpu", "fp16_device_vs_st_fp32_device", "fp32_cpu_vs_st_fp32_device",
               "pass"),
    "transfer": ("batches", "outputs_bound", "output_devices", "input_devices", "plain_runs", "bytes_to_host",
                 "bytes_if_dense", "pass"),
    "ndcg": ("documents", "queries", "max_length", "fp32_cpu", "fp16_device", "diff", "pass"),
    "memory_variant": ("batches", "peak_mib_after_100", "peak_mib_after_all", "growth", "seconds",
                       "ms_per_new_shape", "ms_per_seen_shape", "pass"),
    "speed_config": ("label", "passages_per_s_b32", "passages_per_s_b256", "query_p50_ms", "query_p99_ms",
                     "query_p99_ms_seen", "peak_mib"),
    "extras": ("cuda_graph", "preallocated_outputs"),
}


# -- onnxruntime-gpu from the pieces ------------------------------------------------------------


def install_ort_gpu(root: Path = ORTGPU) -> dict[str, Any]:
    """Join root/NN/part-NN into the wheel and unpack it into root/site (what pip does for a wheel with
    no .data folder; zipfile checks every member's CRC, so a damaged piece fails here). Reused when
    root/site already holds the wheel these pieces make (same sha256: ort-gpu-chunks.sh prints its start)."""
    started = time.perf_counter()
    pieces = sorted(root.glob("[0-9]*/part-*"), key=lambda p: p.name)
    if not pieces:
        raise RuntimeError(f"--install: no pieces under {root}/NN/part-NN (make them with "
                           "../shared/tools/ort-gpu-chunks.sh and carry each .ortgpu/NN folder)")
    numbers = [int(p.name.rsplit("-", 1)[1]) for p in pieces]
    missing = sorted(set(range(max(numbers) + 1)) - set(numbers))
    if missing or len(numbers) != len(set(numbers)):
        raise RuntimeError(f"--install: pieces {', '.join(f'part-{n:02d}' for n in missing) or '(duplicates)'} "
                           f"missing from {root} (have {', '.join(p.name for p in pieces)})")
    total = sum(p.stat().st_size for p in pieces)
    digest = hashlib.sha256()
    for piece in pieces:
        with open(piece, "rb") as f:
            while block := f.read(1 << 24):
                digest.update(block)
    site, marker = root / "site", root / "site" / ".pieces"
    stamp = f"{len(pieces)} pieces, {total} bytes, sha256 {digest.hexdigest()}"
    found = {"bytes": total, "pieces": len(pieces), "sha256": digest.hexdigest()[:16], "site": str(site)}
    if marker.is_file() and marker.read_text() == stamp:
        return {"wheel": (site / ".wheel").read_text(), **found, "reused": True,
                "seconds": round(time.perf_counter() - started, 1)}
    joined = root / "joined.whl.partial"
    with open(joined, "wb") as out:
        for piece in pieces:
            with open(piece, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 24)
    try:
        with zipfile.ZipFile(joined) as z:
            names = z.namelist()
            info = next((n for n in names if n.endswith(".dist-info/WHEEL")), None)
            if info is None:
                raise RuntimeError(f"--install: the joined pieces ({stamp}) are a zip but not a wheel")
            if any(".data/" in n for n in names):
                raise RuntimeError("--install: this wheel has a .data folder; install it with pip instead")
            wheel = info.split("/")[0].removesuffix(".dist-info") + "-" + next(
                line.split(": ", 1)[1] for line in z.read(info).decode().splitlines() if line.startswith("Tag: "))
            if site.exists():
                shutil.rmtree(site)
            z.extractall(site)
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise RuntimeError(f"--install: the joined pieces ({stamp}) are not a valid wheel ({e}): a piece is "
                           "missing, truncated or from another download") from None
    finally:
        joined.unlink(missing_ok=True)
    (site / ".wheel").write_text(f"{wheel}.whl")
    marker.write_text(stamp)
    return {"wheel": f"{wheel}.whl", **found, "reused": False, "seconds": round(time.perf_counter() - started, 1)}


def activate_site(site: Path) -> None:
    """Put the unpacked onnxruntime-gpu ahead of the machine's CPU onnxruntime, here and in every phase."""
    sys.path.insert(0, str(site))
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(site) + (os.pathsep + old if old else "")


# -- what crosses to the host: a spy on IOBinding -----------------------------------------------


class BindingSpy:
    """Stands in for an onnxruntime session: passes every call on, and records each IOBinding made
    on it (which inputs were bound and on which device, which outputs were bound to which device, the
    bytes handed back) and every plain run(), which would bypass IOBinding."""

    def __init__(self, session) -> None:
        self.session = session
        self.bindings: list[dict[str, Any]] = []
        self.plain_runs = 0
        self._lock = threading.Lock()

    def io_binding(self):
        record: dict[str, Any] = {"inputs": {}, "cpu_inputs": [], "outputs": {}, "returned": [], "runs": 0}
        with self._lock:
            self.bindings.append(record)
        return _RecordingBinding(self.session.io_binding(), record)

    def run_with_iobinding(self, binding, *args, **kwargs):
        binding.record["runs"] += 1
        return self.session.run_with_iobinding(binding.binding, *args, **kwargs)

    def run(self, *args, **kwargs):
        with self._lock:
            self.plain_runs += 1
        return self.session.run(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.session, name)

    def summary(self, vocab: int) -> dict[str, Any]:
        ran = [b for b in self.bindings if b["runs"]]
        outputs = sorted({name for b in ran for name in b["outputs"]})
        returned = [r for b in ran for r in b["returned"]]
        rows = sum(b["inputs"].get("input_ids", ("", (0, 0)))[1][0] for b in ran)
        return {
            "batches": len(ran),
            "outputs_bound": outputs,
            "output_devices": sorted({device for b in ran for device in b["outputs"].values()}),
            "input_devices": sorted({device for b in ran for device, _ in b["inputs"].values()}),
            "cpu_inputs": sorted({name for b in ran for name in b["cpu_inputs"]}),
            "plain_runs": self.plain_runs,
            "bytes_to_host": int(sum(nbytes for device, _, nbytes in returned if device == "cpu")),
            "bytes_if_dense": int(rows * vocab * 4),  # the [batch, vocab] float32 tensor, had it been copied
        }


class _RecordingBinding:
    def __init__(self, binding, record: dict[str, Any]) -> None:
        self.binding, self.record = binding, record

    def bind_ortvalue_input(self, name, value):
        self.record["inputs"][name] = (value.device_name().lower(), tuple(value.shape()))
        return self.binding.bind_ortvalue_input(name, value)

    def bind_input(self, name, device_type, device_id, element_type, shape, buffer_ptr):
        self.record["inputs"][name] = (str(device_type).lower(), tuple(shape))
        return self.binding.bind_input(name, device_type, device_id, element_type, shape, buffer_ptr)

    def bind_cpu_input(self, name, array):
        self.record["cpu_inputs"].append(name)
        return self.binding.bind_cpu_input(name, array)

    def bind_output(self, name, device_type="cpu", *args, **kwargs):
        self.record["outputs"][name] = str(device_type).lower()
        return self.binding.bind_output(name, device_type, *args, **kwargs)

    def bind_ortvalue_output(self, name, value):
        self.record["outputs"][name] = value.device_name().lower()
        return self.binding.bind_ortvalue_output(name, value)

    def get_outputs(self):
        values = self.binding.get_outputs()
        for value in values:
            shape = tuple(value.shape())
            itemsize = 8 if "int64" in value.data_type() else 2 if "float16" in value.data_type() else 4
            self.record["returned"].append((value.device_name().lower(), shape, int(np.prod(shape)) * itemsize))
        return values

    def __getattr__(self, name: str):
        return getattr(self.binding, name)


# -- device memory --------------------------------------------------------------------------------


class MemorySampler:
    """Peak memory of this process on the GPU, polled every few ms in a thread: NVML's per-process
    figure where it has one, else the device's used memory less what was used when this started (so
    run one configuration per process, on an otherwise idle GPU). In a dry run: the process's RSS."""

    def __init__(self, dry_run: bool, index: int = 0, interval: float = 0.002) -> None:
        self.source, self.interval, self._peak, self._stop = "rss", interval, 0.0, threading.Event()
        self._read = _rss_mib
        if not dry_run:
            self._read, self.source = _gpu_reader(index)
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(self.interval)

    def sample(self) -> float:
        value = self._read()
        self._peak = max(self._peak, value)
        return value

    def peak(self) -> float:
        self.sample()
        return round(self._peak, 1)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak()


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def _gpu_reader(index: int):
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        base = pynvml.nvmlDeviceGetMemoryInfo(handle).used
        pid = os.getpid()

        def read() -> float:
            try:
                for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    if proc.pid == pid and proc.usedGpuMemory:
                        return proc.usedGpuMemory / 2**20
            except pynvml.NVMLError:
                pass
            return max(0, pynvml.nvmlDeviceGetMemoryInfo(handle).used - base) / 2**20

        return read, "nvml (this process, or device used less the idle baseline)"
    except Exception:  # noqa: BLE001 - no NVML bindings: nvidia-smi, slower but there
        base = _smi_used(index)
        return (lambda: max(0.0, _smi_used(index) - base)), "nvidia-smi (device used less the idle baseline)"


def _smi_used(index: int) -> float:
    out = subprocess.run(["nvidia-smi", f"--id={index}", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, timeout=10).stdout
    return float(out.strip() or 0)


def gpu_info(dry_run: bool) -> dict[str, Any]:
    if dry_run:
        return {"name": "none (dry run: the CPU EP stands in for CUDA)", "driver": None, "memory_total_mib": None}
    try:
        out = subprocess.run(["nvidia-smi", "--id=0", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=20).stdout
        name, driver, total = (x.strip() for x in out.strip().splitlines()[0].split(","))
        return {"name": name, "driver": driver, "memory_total_mib": float(total)}
    except Exception as e:  # noqa: BLE001
        return {"name": f"unknown ({e})", "driver": None, "memory_total_mib": None}


# -- the phases (each in its own process) -----------------------------------------------------------


def _encoder(spec: dict, device: bool, **kwargs):
    """splade-rt on the device (the fp16 graph; in a dry run the CPU EP with IOBinding on), or the fp32
    graph on the CPU (variant named: the carried export has no screened graph)."""
    from splade_rt import SpladeEncoder

    if not device:
        return SpladeEncoder(spec["export"], device="cpu", variant="fp32", threads=spec["threads"], **kwargs)
    if spec["dry_run"]:
        return SpladeEncoder(spec["export"], device="cpu", variant="fp16", io_binding=True, threads=spec["threads"],
                             **kwargs)
    return SpladeEncoder(spec["export"], device=spec.get("device", "cuda"), **kwargs)


def _st(spec: dict, fp16: bool):
    import torch
    from sentence_transformers import SparseEncoder

    torch.set_num_threads(spec["threads"])
    model = SparseEncoder(spec["st_dir"], device="cpu" if spec["dry_run"] else "cuda")
    if fp16:
        model.half()
    model.max_seq_length = spec["max_length"]
    return model


def _st_dense(model, texts: list[str], batch_size: int = 32) -> np.ndarray:
    out = model.encode_document(texts, batch_size=batch_size, convert_to_tensor=True)
    return out.to_dense().float().cpu().numpy()


def _preload_torch(spec: dict) -> None:
    """Importing torch loads its CUDA 13 libraries, where onnxruntime finds them if preload_dlls can't."""
    if spec.get("preload_torch"):
        import torch  # noqa: F401


def phase_env(spec: dict) -> dict:
    _preload_torch(spec)
    import onnxruntime as ort

    from splade_rt import DeviceError

    out: dict[str, Any] = {"onnxruntime": ort.__version__, "onnxruntime_file": ort.__file__,
                           "providers_available": ort.get_available_providers(), "python": platform.python_version()}
    for module, dist in (("torch", "torch"), ("transformers", "transformers"),
                         ("sentence_transformers", "sentence-transformers")):
        try:
            out[module] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[module] = None
    from splade_rt import SpladeEncoder

    for kind in spec["kinds"]:  # tried in a dry run too: there, each must say in one line why not
        started = time.perf_counter()
        try:
            enc = SpladeEncoder(spec["export"], device=kind, max_length=spec["max_length"],
                                trt_cache_dir=str(CACHE / "trt"))
            result = {"loaded": True, "session_providers": enc.placement.session.get_providers(),
                      "graph": enc.placement.file, "options": {k: str(v) for k, v in enc.placement.options.items()}}
            enc.encode(["warm up the engine"])
        except DeviceError as e:
            result = {"loaded": False, "error": str(e)}
        except Exception as e:  # noqa: BLE001 - recorded, not fatal
            result = {"loaded": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
        result["seconds"] = round(time.perf_counter() - started, 2)
        out[kind] = result
    return out


def phase_parity(spec: dict) -> dict:
    """fp16 on the device against fp32 on the CPU and sentence-transformers fp32 on the device; then the
    IOBinding spy over the same texts, top-k and non-zero outputs."""
    _preload_torch(spec)
    from splade_rt.evaluation.dataset import load_beir
    from splade_rt.export.parity import compare
    from splade_rt.export.texts import parity_texts

    texts = parity_texts()
    if spec.get("data"):
        data = load_beir(spec["data"])
        n = spec["sizes"]["parity_texts"]
        texts += data.query_texts[:n] + data.corpus_texts[:n]
    device, cpu = _encoder(spec, True), _encoder(spec, False)
    dense_dev, dense_cpu = device.encode(texts).to_dense(), cpu.encode(texts).to_dense()
    st = _st({**spec, "max_length": device.max_length}, fp16=False)
    dense_st = _st_dense(st, texts)
    spy = BindingSpy(device.placement.session)
    device.placement.session = spy
    for k in (TOP, None):
        device.encode(texts, top_k=k, batch_size=32)
    transfer = spy.summary(device.dim)
    transfer["pass"] = bool(transfer["batches"] > 0 and transfer["plain_runs"] == 0
                            and set(transfer["outputs_bound"]) <= set(OUTPUTS_SMALL)
                            and transfer["output_devices"] == ["cpu"]
                            and transfer["input_devices"] == [device.placement.spec.memory]
                            and transfer["bytes_to_host"] < transfer["bytes_if_dense"] / 10)
    result = {"texts": len(texts), "fp16_device_vs_fp32_cpu": compare(dense_cpu, dense_dev, top=TOP),
              "fp16_device_vs_st_fp32_device": compare(dense_st, dense_dev, top=TOP),
              "fp32_cpu_vs_st_fp32_device": compare(dense_st, dense_cpu, top=TOP)}
    result["pass"] = all(result[k][f"top{TOP}_overlap_mean"] >= 0.98 and result[k]["argmax_same"]
                         for k in ("fp16_device_vs_fp32_cpu", "fp16_device_vs_st_fp32_device"))
    return {"parity": result, "transfer": transfer}


def phase_ndcg(spec: dict) -> dict:
    _preload_torch(spec)
    from splade_rt.evaluation.metrics import MAX_K, mean_metrics
    from splade_rt.evaluation.search import search

    data = _dataset(spec)
    out: dict[str, Any] = {"documents": len(data.corpus_texts), "queries": len(data.query_texts),
                           "max_length": spec["ndcg_max_length"]}
    for key, on_device in (("fp32_cpu", False), ("fp16_device", True)):
        enc = _encoder(spec, on_device, max_length=spec["ndcg_max_length"])
        started = time.perf_counter()
        docs = enc.encode_document(data.corpus_texts, batch_size=32)
        seconds = time.perf_counter() - started
        queries = enc.encode_query(data.query_texts, batch_size=32)
        top, _ = search(queries.to_csr(), docs.to_csr(), top_k=MAX_K)
        rankings = [[data.corpus_ids[i] for i in row] for row in top]
        metrics = mean_metrics(rankings, [data.qrels[q] for q in data.query_ids])
        out[key] = {"ndcg@10": metrics["ndcg@10"], "recall@10": metrics["recall@10"], "mrr@10": metrics["mrr@10"],
                    "docs_per_s": len(docs) / seconds, "document_active_dims": float(np.mean(docs.active_dims)),
                    "graph": enc.placement.file, "provider": enc.provider}
    out["diff"] = out["fp16_device"]["ndcg@10"] - out["fp32_cpu"]["ndcg@10"]
    out["pass"] = abs(out["diff"]) <= 0.002
    return out


def _dataset(spec: dict):
    """SciFact, whole; or in a dry run the first queries with their relevant abstracts and some others."""
    from splade_rt.evaluation.dataset import BeirDataset, load_beir

    data = load_beir(spec["data"])
    n_queries, n_docs = spec["sizes"]["ndcg_queries"], spec["sizes"]["ndcg_documents"]
    if n_queries is None:
        return data
    qids = data.query_ids[:n_queries]
    keep = {d for q in qids for d in data.qrels[q]}
    keep.update(data.corpus_ids[:max(0, n_docs - len(keep))])
    rows = [i for i, d in enumerate(data.corpus_ids) if d in keep]
    texts = dict(zip(data.query_ids, data.query_texts))
    return BeirDataset([data.corpus_ids[i] for i in rows], [data.corpus_texts[i] for i in rows], qids,
                       [texts[q] for q in qids], {q: data.qrels[q] for q in qids})


def phase_memory(spec: dict) -> dict:
    """Random shapes, as the encoder cuts them (rows up to 64 within its token budget, rows of random
    length under the longest), straight through the device path; peak memory after 100 and after all."""
    sampler = MemorySampler(spec["dry_run"])
    _preload_torch(spec)
    enc = _encoder(spec, True, max_length=spec["max_length"], **MEMORY_VARIANTS[spec["variant"]])
    rng = np.random.default_rng(0)
    n, checkpoint = spec["batches"], spec["sizes"]["memory_checkpoint"]
    peaks, shapes, times, started = {}, [], [], time.perf_counter()
    for i in range(1, n + 1):
        length = int(rng.integers(8, enc.max_length + 1))
        rows = int(rng.integers(1, max(1, min(spec["sizes"]["memory_rows"], enc.max_batch_tokens // length)) + 1))
        lengths = rng.integers(2, length + 1, rows)
        lengths[0] = length
        mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)
        ids = np.where(mask, rng.integers(1000, enc.dim, (rows, length)), enc.pad_id).astype(np.int64)
        t = time.perf_counter()
        enc._run(ids, mask, TOP, 0.0)
        times.append(time.perf_counter() - t)
        shapes.append((ids, mask))
        if i in (checkpoint, n):
            peaks[i] = sampler.peak()
    seconds = time.perf_counter() - started
    seen = shapes[-50:]  # mostly shapes never run before; now again, as a repeated shape
    t = time.perf_counter()
    for ids, mask in seen:
        enc._run(ids, mask, TOP, 0.0)
    seen_ms = (time.perf_counter() - t) / len(seen) * 1000
    sampler.stop()
    after, before = peaks[n], peaks[checkpoint]
    return {"batches": n, "checkpoint": checkpoint, "peak_mib_after_100": before, "peak_mib_after_all": after,
            "growth": round(after / before - 1, 4) if before else None, "seconds": round(seconds, 2),
            "ms_per_new_shape": round(float(np.mean(times[-len(seen):])) * 1000, 2),
            "ms_per_seen_shape": round(seen_ms, 2), "pass": bool(after <= before * 1.10 + 64),
            "source": sampler.source}


def phase_speed(spec: dict) -> dict:
    """One configuration: warm pass, then timed passes over the passages per batch size (the median
    pass), query latency at batch 1, peak memory over the whole phase."""
    sampler = MemorySampler(spec["dry_run"])
    _preload_torch(spec)
    from splade_rt.evaluation.dataset import load_beir

    data = load_beir(spec["data"]) if spec.get("data") else None
    from splade_rt.export.texts import PASSAGES, QUERIES

    passages = data.corpus_texts if data else PASSAGES * 64
    queries = data.query_texts if data else QUERIES * 32
    passages, queries = passages[:spec["sizes"]["passages"]], queries[:spec["sizes"]["queries"]]
    config, sync = spec["config"], (lambda: None)
    if config["kind"] == "st":
        import torch

        model = _st(spec, fp16=config["fp16"])
        if not spec["dry_run"]:
            sync = torch.cuda.synchronize
            torch.cuda.reset_peak_memory_stats()

        def encode(texts: list[str], batch_size: int):
            model.encode_document(texts, batch_size=batch_size, convert_to_tensor=True)
            sync()
    else:  # a token budget that lets a batch of 256 be 256 rows: batch_size alone cuts the batches
        enc = _encoder({**spec, "device": config["device"]}, True, max_length=spec["max_length"],
                       max_batch_tokens=256 * spec["max_length"], max_batch=256, trt_cache_dir=str(CACHE / "trt"))

        def encode(texts: list[str], batch_size: int):
            enc.encode(texts, batch_size=batch_size)
    from splade_rt.bench.measure import query_latencies, throughput

    out: dict[str, Any] = {"label": config["label"], "passages": len(passages), "queries": len(queries)}
    for bs in (32, 256):
        out.update(throughput(encode, passages, bs, None, spec["min_seconds"])[0])
    for q in queries[:5]:
        encode([q], 1)
    for key in ("", "_seen"):  # then again: every length seen once, so no first run of a shape is timed
        out.update({name + key: ms for name, ms in query_latencies(encode, queries).items()})
    out["peak_mib"] = sampler.stop()
    out["memory_source"] = sampler.source
    if config["kind"] == "st" and not spec["dry_run"]:
        import torch

        out["torch_max_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
    return out


def phase_extras(spec: dict) -> dict:
    """CUDA graphs and pre-allocated host outputs, each against the plain bound run at one fixed shape."""
    _preload_torch(spec)
    import onnxruntime as ort

    enc = _encoder(spec, True)
    memory, index = enc.placement.spec.memory, enc.placement.device_id
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    seq = spec["sizes"]["extras_length"]
    for rows in (1, 32):
        ids = rng.integers(1000, enc.dim, (rows, seq)).astype(np.int64)
        mask = np.ones_like(ids)
        k = np.array([TOP], np.int64)
        plain = _timed(lambda ids=ids, mask=mask: enc._run(ids, mask, TOP, 0.0), spec["extras_runs"])
        values, indices = np.empty((rows, TOP), np.float32), np.empty((rows, TOP), np.int64)

        def preallocated(ids=ids, mask=mask, k=k, values=values, indices=indices):
            binding = enc.placement.session.io_binding()
            binding.bind_ortvalue_input("input_ids", ort.OrtValue.ortvalue_from_numpy(ids, memory, index))
            binding.bind_ortvalue_input("attention_mask", ort.OrtValue.ortvalue_from_numpy(mask, memory, index))
            binding.bind_cpu_input("top_k", k)
            for name, array in (("top_values", values), ("top_indices", indices)):
                binding.bind_output(name, "cpu", 0, array.dtype.type, list(array.shape), array.ctypes.data)
            enc.placement.session.run_with_iobinding(binding)

        out.setdefault("preallocated_outputs", {})[f"b{rows}"] = {
            "plain_ms": plain, "preallocated_ms": _timed(preallocated, spec["extras_runs"])}
    out["cuda_graph"] = {"plain_ms_b32": out["preallocated_outputs"]["b32"]["plain_ms"]}
    if spec["dry_run"]:
        out["cuda_graph"].update(status="not tried: the CPU EP has no CUDA graphs (dry run)", graph_ms_b32=None)
        return out
    # its own process: on the H100 the replay died with CUDA error 700 (illegal memory access), which
    # took this phase's other numbers with it
    graph = run_phase("cuda_graph", spec, 60, lambda _: None)
    if "error" in graph:
        graph = {"status": f"failed: {graph['error']}", "graph_ms_b32": None}
    out["cuda_graph"].update(graph)
    return out


def phase_cuda_graph(spec: dict) -> dict:
    """The fp16 graph with enable_cuda_graph at 32 rows, everything bound on the device at fixed addresses,
    as CUDA graph replay requires; the refusal, or the process's death, is the finding."""
    _preload_torch(spec)
    import onnxruntime as ort

    from splade_rt.runtime.session import session_options

    enc = _encoder(spec, True)
    index, seq, rng = enc.placement.device_id, spec["sizes"]["extras_length"], np.random.default_rng(0)
    try:
        options = {**enc.placement.options, "enable_cuda_graph": "1"}
        session = ort.InferenceSession(str(Path(spec["export"]) / enc.placement.file), session_options(None, False),
                                       providers=[("CUDAExecutionProvider", options)])
        ids = ort.OrtValue.ortvalue_from_numpy(rng.integers(1000, enc.dim, (32, seq)).astype(np.int64), "cuda", index)
        mask = ort.OrtValue.ortvalue_from_numpy(np.ones((32, seq), np.int64), "cuda", index)
        k = ort.OrtValue.ortvalue_from_numpy(np.array([TOP], np.int64), "cuda", index)
        top_v = ort.OrtValue.ortvalue_from_shape_and_type([32, TOP], np.float32, "cuda", index)
        top_i = ort.OrtValue.ortvalue_from_shape_and_type([32, TOP], np.int64, "cuda", index)
        binding = session.io_binding()
        for name, value in (("input_ids", ids), ("attention_mask", mask), ("top_k", k)):
            binding.bind_ortvalue_input(name, value)
        binding.bind_ortvalue_output("top_values", top_v)
        binding.bind_ortvalue_output("top_indices", top_i)
        return {"status": "ran", "graph_ms_b32": _timed(lambda: (session.run_with_iobinding(binding), top_v.numpy()),
                                                        spec["extras_runs"])}
    except Exception as e:  # noqa: BLE001 - the refusal is the finding
        return {"status": f"refused: {type(e).__name__}: {str(e).strip().splitlines()[0][:300]}", "graph_ms_b32": None}


def _timed(fn, runs: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


PHASES = {"env": phase_env, "parity": phase_parity, "ndcg": phase_ndcg, "memory": phase_memory,
          "speed": phase_speed, "extras": phase_extras, "cuda_graph": phase_cuda_graph}


# -- orchestration ----------------------------------------------------------------------------------


def run_phase(name: str, spec: dict, timeout: float, log) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(json.dumps(spec))
        env = {**os.environ, "TOKENIZERS_PARALLELISM": spec["tokenizers_parallelism"], "HF_HUB_OFFLINE": "1",
               "OMP_NUM_THREADS": str(spec["threads"])}
        try:
            proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--phase", name, str(spec_path),
                                   str(out_path)], cwd=REPO, env=env, capture_output=True, text=True,
                                  timeout=max(5.0, timeout))
        except subprocess.TimeoutExpired:
            log(f"    {name}: timed out after {timeout:.0f} s")
            return {"error": f"timed out after {timeout:.0f} s"}
        if proc.returncode != 0 or not out_path.is_file():
            lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
            for line in lines[-6:]:
                log(f"    | {line[:300]}")
            return {"error": (lines[-1] if lines else f"exit code {proc.returncode}")[:400]}
        return json.loads(out_path.read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="the CPU EP stands in for CUDA; small sizes")
    p.add_argument("--install", action="store_true", help="install onnxruntime-gpu from .ortgpu/NN/part-NN first")
    p.add_argument("--export", type=Path, help="export directory (default: the carried one, else a fresh export)")
    p.add_argument("--st-dir", type=Path, help="the model as a sentence-transformers directory (default: made here)")
    p.add_argument("--data", type=Path, help="SciFact in BEIR layout (default: the carried copy, else ../shared)")
    p.add_argument("--out", type=Path, help="where results go (default: $OUT, else benchmarks/results)")
    p.add_argument("--budget", type=float, default=285.0, help="seconds; later phases are skipped past it")
    p.add_argument("--phase", nargs=3, metavar=("NAME", "SPEC", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.phase:
        name, spec_path, out_path = args.phase
        result = PHASES[name](json.loads(Path(spec_path).read_text()))
        Path(out_path).write_text(json.dumps(result))
        return 0

    started = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the GPU machine has no network: never wait on a hub
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {message}", flush=True)

    dry = args.dry_run
    install: dict[str, Any] = {"skipped": "not asked (--install)"}
    if args.install:
        log("installing onnxruntime-gpu from the pieces under .ortgpu/")
        install = install_ort_gpu()
        log(f"    {install['wheel']}: {install['pieces']} pieces, {install['bytes'] / 2**20:.0f} MiB, sha256 "
            f"{install['sha256']}..., "
            f"{'reused' if install['reused'] else 'unpacked'} in {install['seconds']} s")
    if not dry and (ORTGPU / "site" / "onnxruntime").is_dir():
        activate_site(ORTGPU / "site")
    elif dry and args.install:
        install["note"] = "dry run: unpacked, not put on the path (the machine's onnxruntime runs)"

    export = args.export or _carried_or_made_export(log)
    data = args.data or _scifact(log)
    st_dir = args.st_dir or _st_copy(log)
    sizes = ({"parity_texts": 4, "ndcg_queries": 8, "ndcg_documents": 40, "memory_batches": 10,
              "memory_batches_compared": 6, "memory_checkpoint": 4, "memory_rows": 8, "passages": 12, "queries": 4,
              "extras_length": 16} if dry else
             {"parity_texts": 100, "ndcg_queries": None, "ndcg_documents": None, "memory_batches": 1000,
              "memory_batches_compared": 200, "memory_checkpoint": 100, "memory_rows": 64, "passages": 2048,
              "queries": 200, "extras_length": 128})
    spec = {"dry_run": dry, "export": str(export), "st_dir": str(st_dir), "data": str(data) if data else None,
            "threads": os.cpu_count() or 1, "max_length": 64 if dry else 512, "ndcg_max_length": 64 if dry else 256,
            "sizes": sizes, "min_seconds": 0.0 if dry else 2.0, "extras_runs": 2 if dry else 50,
            "preload_torch": False,
            # a user's default, for both sides alike (serial tokenizing held splade-rt to a third of its
            # speed on the H100); off in a dry run, where two cores are shared with onnxruntime's threads
            "tokenizers_parallelism": "false" if dry else "true"}

    report: dict[str, Any] = {"gpu": gpu_info(dry), "machine": _machine(), "date": date.today().isoformat(),
                              "dry_run": dry, "command": " ".join(["python -m benchmarks.gpu_check"]
                                                                  + (argv if argv is not None else sys.argv[1:])),
                              "install": install, "sizes": sizes, "export": str(export), "data": spec["data"],
                              "tokenizers_parallelism": spec["tokenizers_parallelism"]}
    log(f"GPU: {report['gpu']['name']}")

    def remaining() -> float:
        return args.budget - (time.perf_counter() - started)

    log("env: onnxruntime, its providers, a CUDA session")
    env = run_phase("env", {**spec, "kinds": ["cuda"]}, 120, log)
    if not dry and not env.get("cuda", {}).get("loaded"):
        log(f"    CUDA did not load ({env.get('cuda', env).get('error')}); again with torch's CUDA libraries loaded")
        spec["preload_torch"] = True
        env = run_phase("env", {**spec, "kinds": ["cuda"]}, 120, log)
    log("env: a TensorRT session (its own process: a first engine build can take minutes)")
    trt = run_phase("env", {**spec, "kinds": ["tensorrt"]}, max(30.0, min(150.0, remaining() - 200)), log)
    env["tensorrt"] = trt.get("tensorrt", {"loaded": False, "error": trt.get("error")})
    report["software"] = {k: env.get(k) for k in FIELDS["software"]}
    report["providers"] = {"cuda": env.get("cuda", {"loaded": False, "error": env.get("error")}),
                           "tensorrt": env.get("tensorrt", {"loaded": False, "error": env.get("error")}),
                           "torch_preloaded": spec["preload_torch"]}
    for kind in ("cuda", "tensorrt"):
        got = report["providers"][kind]
        log(f"    {kind}: {'loaded ' + str(got.get('session_providers')) if got.get('loaded') else got.get('error')}")
    device_ok = dry or bool(report["providers"]["cuda"].get("loaded"))

    def skipped(why: str) -> dict:
        return {"skipped": why}

    # in order of importance: what the bars need first, then the measurements that ground the defaults
    plan: list[tuple[str, str, dict, float]] = [("parity", "parity", {}, 60), ("ndcg", "ndcg", {}, 60)]
    speeds = {"splade-rt fp16 CUDA EP": {"kind": "rt", "device": "cuda", "label": "splade-rt fp16 CUDA EP"},
              "sentence-transformers torch fp16": {"kind": "st", "fp16": True,
                                                   "label": "sentence-transformers torch fp16"}}
    if report["providers"]["tensorrt"].get("loaded"):
        speeds["splade-rt fp16 TensorRT EP"] = {"kind": "rt", "device": "tensorrt",
                                               "label": "splade-rt fp16 TensorRT EP"}
    speeds["sentence-transformers torch fp32"] = {"kind": "st", "fp16": False,
                                                  "label": "sentence-transformers torch fp32"}
    variants = list(MEMORY_VARIANTS)
    if dry:  # the names stay those of the real run; the labels say what ran
        for cfg in speeds.values():
            cfg["label"] += " [dry run: CPU]"
    # estimates: seconds each phase took on an H100, process start included
    plan += [("speed", name, {"config": cfg}, 35) for name, cfg in list(speeds.items())[:2]]
    plan += [("memory", variants[0], {"variant": variants[0], "batches": sizes["memory_batches"]}, 65),
             ("extras", "extras", {}, 30)]
    plan += [("speed", name, {"config": cfg}, 30) for name, cfg in list(speeds.items())[2:]]
    plan += [("memory", v, {"variant": v, "batches": sizes["memory_batches_compared"]}, 20)
             for v in reversed(variants[1:])]
    results: dict[str, Any] = {"memory": {}, "speed": {}}
    for phase, name, extra, estimate in plan:
        if not device_ok:
            result = skipped("the CUDA EP did not load")
        elif phase == "ndcg" and not spec["data"]:
            result = skipped("no SciFact data (--data, or python -m benchmarks.gpu_carry before the run)")
        elif remaining() < estimate:
            result = skipped(f"time budget: {remaining():.0f} s left of {args.budget:.0f}, needs ~{estimate:.0f}")
        else:
            log(f"{phase}: {name}")
            result = run_phase(phase, {**spec, **extra}, min(remaining() + 60, 240), log)
        if phase in ("memory", "speed"):
            results[phase][name] = result
        elif phase == "parity":
            results["parity"] = result.get("parity", result)
            results["transfer"] = result.get("transfer", result)
        else:
            results[phase] = result
        _log_result(log, phase, name, result)
    report.update(results)
    report["memory_source"] = "process RSS (dry run)" if dry else "GPU memory: NVML or nvidia-smi, per process"
    st16 = report["speed"].get("sentence-transformers torch fp16", {})
    for entry in report["speed"].values():
        for bs in (32, 256):
            if f"passages_per_s_b{bs}" in entry and f"passages_per_s_b{bs}" in st16:
                entry[f"x_st_fp16_b{bs}"] = entry[f"passages_per_s_b{bs}"] / st16[f"passages_per_s_b{bs}"]
    rt = report["speed"].get("splade-rt fp16 CUDA EP", {})
    report["bars"] = {
        "cuda_ep_loads": bool(report["providers"]["cuda"].get("loaded")),
        "parity": bool(report["parity"].get("pass")),
        "ndcg_within_0.002": bool(report["ndcg"].get("pass")),
        "only_small_outputs_to_host": bool(report["transfer"].get("pass")),
        "memory_flat": bool(report["memory"].get(variants[0], {}).get("pass")),
        "b256_3x_st_fp16": bool(rt.get("x_st_fp16_b256", 0) >= 3.0),
    }
    report["passed"] = all(report["bars"].values())
    report["wall_s"] = round(time.perf_counter() - started, 1)

    out_dir = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else HERE / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = "dry-run" if dry else "".join(c if c.isalnum() else "-" for c in report["gpu"]["name"].lower()).strip("-")
    stem = f"gpu-check-{slug}-{report['date']}"
    (out_dir / f"{stem}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    table = markdown(report)
    (out_dir / f"{stem}.md").write_text(table)
    plot(report, out_dir / f"{stem}.png")
    print(table)
    log(f"wrote {out_dir / stem}.{{json,md,png}}; {'PASSED' if report['passed'] else 'FAILED'}: "
        + ", ".join(f"{k} {'ok' if v else 'NO'}" for k, v in report["bars"].items()))
    return 0 if report["passed"] or dry else 1


def _log_result(log, phase: str, name: str, result: dict) -> None:
    if "skipped" in result or "error" in result:
        log(f"    {name}: {result.get('skipped') or 'error: ' + result['error']}")
    elif phase == "parity":
        p, t = result["parity"], result["transfer"]
        log(f"    top-{TOP} overlap vs fp32 CPU {p['fp16_device_vs_fp32_cpu'][f'top{TOP}_overlap_mean']:.4f}, vs ST "
            f"{p['fp16_device_vs_st_fp32_device'][f'top{TOP}_overlap_mean']:.4f}; to host {t['outputs_bound']} "
            f"{t['bytes_to_host']} B of {t['bytes_if_dense']} dense")
    elif phase == "ndcg":
        log(f"    nDCG@10 fp32 CPU {result['fp32_cpu']['ndcg@10']:.4f}, fp16 device "
            f"{result['fp16_device']['ndcg@10']:.4f} ({result['diff']:+.4f})")
    elif phase == "memory":
        log(f"    peak {result['peak_mib_after_100']:.0f} MiB after {result['checkpoint']}, "
            f"{result['peak_mib_after_all']:.0f} after {result['batches']} ({result['seconds']} s)")
    elif phase == "speed":
        log(f"    {result['passages_per_s_b32']:.0f} / {result['passages_per_s_b256']:.0f} passages/s (b32/b256), "
            f"query p50 {result['query_p50_ms']:.2f} ms, peak {result['peak_mib']:.0f} MiB")
    elif phase == "extras":
        log(f"    cuda graph: {result['cuda_graph']['status']}")


def _carried_or_made_export(log) -> Path:
    for candidate in (CARRY / "export", CACHE / "export"):
        if (candidate / "splade.json").is_file() and (candidate / "model.fp16.onnx").is_file():
            return candidate
    from splade_rt.export.pipeline import export_model

    out = CACHE / "gpu-export"
    if not (out / "splade.json").is_file():
        log("exporting the bundled model (no carried export)")
        export_model(None, out, force=True, log=lambda _: None)
    return out


def _scifact(log) -> Path | None:
    carried = CARRY / "scifact"
    if (carried / "corpus.jsonl.gz").is_file():
        unpacked = CACHE / "gpu-data" / "scifact"
        if not (unpacked / "corpus.jsonl").is_file():
            (unpacked / "qrels").mkdir(parents=True, exist_ok=True)
            with gzip.open(carried / "corpus.jsonl.gz", "rb") as f, open(unpacked / "corpus.jsonl", "wb") as g:
                shutil.copyfileobj(f, g)
            shutil.copy(carried / "queries.jsonl", unpacked / "queries.jsonl")
            shutil.copy(carried / "qrels" / "test.tsv", unpacked / "qrels" / "test.tsv")
        return unpacked
    shared = SHARED / "data" / "scifact"
    if (shared / "corpus.jsonl").is_file():
        return shared
    log("no SciFact data: nDCG is skipped, texts come from the export's parity set")
    return None


def _st_copy(log) -> Path:
    shared = SHARED / "models" / "splade-tiny-msmarco-st"
    if (shared / "modules.json").is_file():
        return shared
    out = CACHE / "st"
    if not (out / "modules.json").is_file():
        from splade_rt.export.source import default_model_dir

        from .common import sentence_transformers_copy

        log("saving the bundled model as a sentence-transformers directory")
        sentence_transformers_copy(default_model_dir(), out)
    return out


def _machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as f:
        cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def markdown(report: dict) -> str:
    def f(value, fmt: str) -> str:
        return format(value, fmt) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"

    def why(entry: dict) -> str:
        return entry.get("skipped") or ("failed: " + entry["error"] if "error" in entry else "")

    g, s = report["gpu"], report.get("software", {})
    lines = [f"GPU check{' (DRY RUN: CPU EP, small sizes, RSS for GPU memory)' if report['dry_run'] else ''}: "
             f"**{g['name']}** (driver {g['driver'] or '-'}, {f(g['memory_total_mib'], '.0f')} MiB); "
             f"{report['machine']['cpu']}, {report['machine']['cores']} cores; {report['date']}; onnxruntime "
             f"{s.get('onnxruntime')}, torch {s.get('torch')}, sentence-transformers {s.get('sentence_transformers')}; "
             f"`{report['command']}`, {report['wall_s']} s.", "",
             "| bar | result |", "|---|---|"]
    lines += [f"| {k} | {'pass' if v else 'FAIL'} |" for k, v in report["bars"].items()]
    prov = report["providers"]
    lines += ["", "| provider | loaded | detail |", "|---|---|---|"]
    for kind in ("cuda", "tensorrt"):
        e = prov[kind]
        lines.append(f"| {kind} | {e.get('loaded')} | "
                     f"{e.get('session_providers') if e.get('loaded') else e.get('error')} |")
    par, tr = report["parity"], report["transfer"]
    lines += ["", f"Parity on {par.get('texts', '-')} texts (top-{TOP} overlap mean / min, argmax, max abs diff):", "",
              "| pair | overlap mean | min | same argmax | max abs diff |", "|---|---|---|---|---|"]
    for key in ("fp16_device_vs_fp32_cpu", "fp16_device_vs_st_fp32_device", "fp32_cpu_vs_st_fp32_device"):
        c = par.get(key, {})
        lines.append(f"| {key} | {f(c.get(f'top{TOP}_overlap_mean'), '.4f')} | "
                     f"{f(c.get(f'top{TOP}_overlap_min'), '.4f')} | {c.get('argmax_same', '-')} | "
                     f"{f(c.get('max_abs_diff'), '.1e')} |")
    lines += ["", f"Transfer: {tr.get('batches', '-')} bound batches; outputs bound {tr.get('outputs_bound', why(tr))} "
                  f"to {tr.get('output_devices', '-')}; inputs on {tr.get('input_devices', '-')}; plain runs "
                  f"{tr.get('plain_runs', '-')}; {f(tr.get('bytes_to_host'), ',')} bytes to the host where the "
                  f"[batch, vocab] tensor would be {f(tr.get('bytes_if_dense'), ',')}."]
    nd = report["ndcg"]
    if "fp32_cpu" in nd:
        lines += ["", f"SciFact nDCG@10 ({nd['documents']} documents, {nd['queries']} queries, max length "
                      f"{nd['max_length']}): fp32 CPU {nd['fp32_cpu']['ndcg@10']:.4f}, fp16 device "
                      f"{nd['fp16_device']['ndcg@10']:.4f}, difference {nd['diff']:+.4f}."]
    else:
        lines += ["", f"SciFact nDCG@10: {why(nd)}"]
    def table(header: list[str], entries: dict, needed: str, cells) -> list[str]:
        """A Markdown table: cells(name, entry) per row, or the reason an entry has no numbers."""
        rows = table_head(header)
        for name, e in entries.items():
            row = cells(name, e) if needed in e else [name, why(e)] + [""] * (len(header) - 2)
            rows.append("| " + " | ".join(str(c) for c in row) + " |")
        return rows

    lines += ["", f"Memory, random shapes ({report['memory_source']}):", ""]
    lines += table(["arena setting", "after first", "after all", "growth", "s", "ms/batch, new shape", "seen shape"],
                   report["memory"], "peak_mib_after_all",
                   lambda name, e: [name, f"{e['peak_mib_after_100']:.0f} MiB ({e['checkpoint']})",
                                    f"{e['peak_mib_after_all']:.0f} MiB ({e['batches']})", f(e["growth"], "+.1%"),
                                    e["seconds"], f(e.get("ms_per_new_shape"), ".1f"),
                                    f(e.get("ms_per_seen_shape"), ".1f")])
    lines += [""] + table(["configuration", "passages/s b32", "b256", "x ST fp16 b256", "query p50 ms", "p99 ms",
                           "p99, lengths seen", "peak MiB"], report["speed"], "passages_per_s_b32",
                          lambda name, e: [e["label"], f"{e['passages_per_s_b32']:.1f}",
                                           f"{e['passages_per_s_b256']:.1f}", f(e.get("x_st_fp16_b256"), ".2f") + "x",
                                           f"{e['query_p50_ms']:.2f}", f"{e['query_p99_ms']:.2f}",
                                           f(e.get("query_p99_ms_seen"), ".2f"), f"{e['peak_mib']:.0f}"])
    ex = report["extras"]
    if "cuda_graph" in ex:
        pre = ex["preallocated_outputs"]
        lines += ["", f"CUDA graph at 32 x {report['sizes']['extras_length']}: {ex['cuda_graph']['status']}; "
                      f"{f(ex['cuda_graph'].get('graph_ms_b32'), '.3f')} ms against "
                      f"{f(ex['cuda_graph']['plain_ms_b32'], '.3f')} ms. Pre-allocated host outputs: "
                  + "; ".join(f"{b}: {f(v['preallocated_ms'], '.3f')} ms against {f(v['plain_ms'], '.3f')} ms"
                              for b, v in pre.items()) + "."]
    else:
        lines += ["", f"Extras: {why(ex)}"]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    speed = [(e["label"], e) for e in report["speed"].values() if "passages_per_s_b32" in e]
    y = np.arange(len(speed))
    for key, offset, label in (("passages_per_s_b32", -0.2, "batch 32"), ("passages_per_s_b256", 0.2, "batch 256")):
        axes[0].barh(y + offset, [e[key] for _, e in speed], height=0.4, label=label)
    axes[0].set_yticks(y)
    axes[0].set_yticklabels([name for name, _ in speed], fontsize=8)
    axes[0].invert_yaxis()
    axes[0].set_xlabel("passages / s (higher is better)")
    axes[0].legend(fontsize=8)
    memory = [(name, e) for name, e in report["memory"].items() if "peak_mib_after_all" in e]
    y = np.arange(len(memory))
    axes[1].barh(y - 0.2, [e["peak_mib_after_100"] for _, e in memory], height=0.4, label="after the first batches")
    axes[1].barh(y + 0.2, [e["peak_mib_after_all"] for _, e in memory], height=0.4, label="after all")
    axes[1].set_yticks(y)
    axes[1].set_yticklabels([name for name, _ in memory], fontsize=8)
    axes[1].invert_yaxis()
    axes[1].set_xlabel(f"peak memory, MiB ({report['memory_source']})")
    axes[1].legend(fontsize=8)
    save_figure(fig, path, f"splade-rt GPU check: {report['gpu']['name']}, {report['date']}")


if __name__ == "__main__":
    sys.exit(main())
