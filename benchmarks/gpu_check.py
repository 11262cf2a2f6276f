"""`python -m benchmarks.gpu_check`: one command that proves the GPU path (issues 13 and 25).

Phases, each in a process of its own, in order of importance (later ones skipped past --budget, so
that the whole check, install included, takes under 6 minutes of device time): env (a session that
really reports CUDAExecutionProvider, as onnxruntime falls back to the CPU silently; TensorRT tried);
quality (fp16 on the device against fp32 on the CPU and sentence-transformers fp32 on the device:
top-64 overlap >= 0.98, same argmax; an IOBinding spy, splade_rt.bench.gpu: only [batch, k] or the
non-zeros reach the host; SciFact nDCG@10 of fp16 within 0.002 of fp32); speed (splade_rt.bench.worker:
passages/s at batch 32 and 256, query p50/p99 at batch 1 over first-seen lengths and once seen, peak
GPU memory; splade-rt fp16 against sentence-transformers torch fp16 and bf16, its GPU settings); base size (a
random 768 x 12 BERT from benchmarks.base_size, exported on the machine beside env and quality,
SciFact passages at max length 256, batch 32 and 128, the same peers, and fp16 against fp32);
memory (1,000 batches of random shapes: peak GPU memory after 100 and after all flat within +10% +
64 MiB, ms per new shape against a seen one, and the arena settings the default beat); the host
ceiling (splade_rt.bench.host_ceiling, on this machine's CPU); CUDA graphs at one fixed shape, or their error.

Results: gpu-check-<gpu>-<date>.{json,md,png} under $OUT when set, else benchmarks/results/.
--dry-run runs the same code on the CPU EP (fp16 graph, IOBinding on), small sizes, RSS for GPU
memory (tests/test_gpu_path.py). On a lent GPU, benchmarks/gpu_check.sh installs onnxruntime-gpu
and runs this; its header says how.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys
import time
from datetime import date
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from splade_rt.bench.gpu import BindingSpy, MemorySampler, gpu_info
from splade_rt.bench.host_ceiling import describe
from splade_rt.bench.measure import median_ms
from splade_rt.bench.runner import finish, run_worker, start
from splade_rt.machine import machine_info

from . import base_size
from .common import CACHE, HERE, REPO, SHARED, cached_export, cell, markdown_table, save_figure, why_not

TOP = 64  # top-k overlap, as the export's parity check
SMALL_OUTPUTS = ("top_values", "top_indices", "nonzero_index", "nonzero_value")
MEMORY_VARIANTS = {  # SpladeEncoder keyword arguments per memory run; the first is splade-rt's default
    "splade-rt default (kNextPowerOfTwo)": {},
    "arena grown as requested (kSameAsRequested)": {"provider_options": {"arena_extend_strategy": "kSameAsRequested"}},
    "arena shrinkage after each run": {"arena_shrinkage": True},
    "lengths padded to x64": {"pad_to_multiple_of": 64},
}
RT, ST16, ST_BF16 = "splade-rt fp16 CUDA EP", "sentence-transformers torch fp16", "sentence-transformers torch bf16"
SIZES = {  # name: (real run, dry run)
    "parity_texts": (100, 4), "memory_batches": (1000, 10), "memory_batches_compared": (200, 6),
    "memory_checkpoint": (100, 4), "memory_rows": (64, 8), "passages": (2048, 12), "queries": (200, 4),
    "base_passages": (1024, 8), "base_size": ((768, 12, 12), (64, 2, 2)), "overlap_texts": (256, 8),
    "extras_length": (128, 16), "extras_runs": (50, 2), "max_length": (512, 64), "ndcg_max_length": (256, 64),
    "min_seconds": (1.0, 0.0)}


# -- the phases, each in its own process (python -m benchmarks.gpu_check --phase NAME SPEC OUT) --


def _encoder(spec: dict, on_device: bool = True, export: str | None = None, **kwargs):
    """splade-rt on the device (the fp16 graph; in a dry run the CPU EP with IOBinding on), or the fp32
    graph on the CPU (variant named: the carried export has no screened graph)."""
    from splade_rt import SpladeEncoder

    path = export or spec["export"]
    if not on_device:
        return SpladeEncoder(path, device="cpu", variant="fp32", threads=spec["threads"], **kwargs)
    return SpladeEncoder(path, device=spec["device"], **{**spec["device_options"], **kwargs})


def _texts(spec: dict) -> tuple[list[str], list[str]]:
    """SciFact's abstracts and queries, or the exporter's parity texts where no data came along."""
    if spec.get("data"):
        from splade_rt.evaluation.dataset import load_beir

        data = load_beir(spec["data"])
        return data.corpus_texts, data.query_texts
    from splade_rt.export.texts import PASSAGES, QUERIES

    return PASSAGES * 64, QUERIES * 32


def phase_env(spec: dict) -> dict:
    import onnxruntime as ort

    from splade_rt import DeviceError, SpladeEncoder

    out: dict[str, Any] = {"onnxruntime": ort.__version__, "onnxruntime_file": ort.__file__,
                           "providers_available": ort.get_available_providers(),
                           **{d.replace("-", "_"): importlib.metadata.version(d)
                              for d in ("torch", "transformers", "sentence-transformers")}}
    started = time.perf_counter()
    try:  # tried in a dry run too: there, each must say in one line why not
        enc = SpladeEncoder(spec["export"], device=spec["kind"], trt_cache_dir=str(CACHE / "trt"))
        enc.encode(["warm up the engine"])
        result = {"loaded": True, "session_providers": enc.placement.session.get_providers(),
                  "graph": enc.placement.file, "options": {k: str(v) for k, v in enc.placement.options.items()}}
    except DeviceError as e:
        result = {"loaded": False, "error": str(e)}
    except Exception as e:  # noqa: BLE001 - recorded, not fatal
        result = {"loaded": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
    return {**out, spec["kind"]: {**result, "seconds": round(time.perf_counter() - started, 2)}}


def phase_quality(spec: dict) -> dict:
    """Parity of fp16 on the device with fp32 on the CPU and sentence-transformers; the IOBinding spy
    over the same texts (top-k and non-zero outputs); SciFact nDCG@10 of both encoders."""
    from splade_rt.evaluation.metrics import MAX_K, mean_metrics
    from splade_rt.evaluation.search import search
    from splade_rt.export.parity import compare
    from splade_rt.export.texts import parity_texts

    n, (passages, queries) = spec["sizes"]["parity_texts"], _texts(spec)
    # a blank text is an empty vector in splade-rt (its documented rule), six terms in sentence-transformers
    texts = [t for t in parity_texts() if t.strip()] + (queries[:n] + passages[:n] if spec.get("data") else [])
    device, cpu = _encoder(spec), _encoder(spec, False)
    dense_dev, dense_cpu = device.encode(texts).to_dense(), cpu.encode(texts).to_dense()
    from splade_rt.bench.worker import SentenceTransformersEncoder

    st = SentenceTransformersEncoder({"mlm_dir": spec["bundled"], "device": spec["device"],  # torch fp32
                                      "threads": spec["threads"], "max_length": device.max_length})
    dense_st = st.encode(texts, 32).to_dense().float().cpu().numpy()
    parity = {"texts": len(texts), "fp16_device_vs_fp32_cpu": compare(dense_cpu, dense_dev, top=TOP),
              "fp16_device_vs_st_fp32_device": compare(dense_st, dense_dev, top=TOP),
              "fp32_cpu_vs_st_fp32_device": compare(dense_st, dense_cpu, top=TOP)}
    parity["pass"] = all(parity[k][f"top{TOP}_overlap_mean"] >= 0.98 and parity[k]["argmax_same"]
                         for k in ("fp16_device_vs_fp32_cpu", "fp16_device_vs_st_fp32_device"))
    spy = device.placement.session = BindingSpy(device.placement.session)
    for k in (TOP, None):
        device.encode(texts, top_k=k, batch_size=32)
    transfer = spy.summary(device.dim)
    transfer["pass"] = bool(transfer["batches"] > 0 and transfer["plain_runs"] == 0
                            and set(transfer["outputs_bound"]) <= set(SMALL_OUTPUTS)
                            and transfer["output_devices"] == ["cpu"]
                            and transfer["input_devices"] == [device.placement.spec.memory]
                            and transfer["bytes_to_host"] < transfer["bytes_if_dense"] / 10)
    if not spec.get("data"):
        return {"parity": parity, "transfer": transfer, "ndcg": {"skipped": "no SciFact data (benchmarks.gpu_carry)"}}
    from splade_rt.evaluation.dataset import load_beir

    data = load_beir(spec["data"])
    ndcg: dict[str, Any] = {"documents": len(data.corpus_texts), "queries": len(data.query_texts),
                            "max_length": spec["sizes"]["ndcg_max_length"]}
    for key, on_device in (("fp32_cpu", False), ("fp16_device", True)):
        enc = _encoder(spec, on_device, max_length=ndcg["max_length"])
        started = time.perf_counter()
        docs = enc.encode_document(data.corpus_texts, batch_size=32)
        seconds = time.perf_counter() - started
        top, _ = search(enc.encode_query(data.query_texts, batch_size=32).to_csr(), docs.to_csr(), top_k=MAX_K)
        metrics = mean_metrics([[data.corpus_ids[i] for i in row] for row in top],
                               [data.qrels[q] for q in data.query_ids])
        ndcg[key] = {"ndcg@10": metrics["ndcg@10"], "recall@10": metrics["recall@10"],
                     "docs_per_s": len(docs) / seconds, "graph": enc.placement.file, "provider": enc.provider}
    ndcg["diff"] = ndcg["fp16_device"]["ndcg@10"] - ndcg["fp32_cpu"]["ndcg@10"]
    ndcg["pass"] = abs(ndcg["diff"]) <= 0.002
    return {"parity": parity, "transfer": transfer, "ndcg": ndcg}


def phase_memory(spec: dict) -> dict:
    """Random shapes through encode (rows up to memory_rows, texts of random length cut from real
    text); peak memory after the checkpoint and after all; then the last 50 batches again, seen."""
    sampler = MemorySampler(not spec["dry_run"])
    enc = _encoder(spec, max_length=spec["sizes"]["max_length"], **MEMORY_VARIANTS[spec["variant"]])
    words = " ".join(_texts(spec)[0][:400]).split()
    rng, sizes = np.random.default_rng(0), spec["sizes"]
    longest = min(len(words) - 1, enc.max_length * 3 // 4)  # ~1.3 tokens a word: up to the longest allowed
    batches = []
    for _ in range(spec["batches"]):
        rows = int(rng.integers(1, sizes["memory_rows"] + 1))
        starts, counts = rng.integers(0, len(words) - longest, rows), rng.integers(1, longest + 1, rows)
        batches.append([" ".join(words[s:s + c]) for s, c in zip(starts, counts)])
    before, times, started = 0.0, [], time.perf_counter()
    for i, batch in enumerate(batches, 1):
        t = time.perf_counter()
        enc.encode(batch, top_k=TOP, batch_size=len(batch))
        times.append(time.perf_counter() - t)
        if i == sizes["memory_checkpoint"]:
            before = sampler.peak()
    seconds, t = time.perf_counter() - started, time.perf_counter()
    for batch in batches[-50:]:  # mostly shapes never run before; now again, seen
        enc.encode(batch, top_k=TOP, batch_size=len(batch))
    seen_ms, after = (time.perf_counter() - t) / len(batches[-50:]) * 1000, sampler.stop()
    return {"batches": len(batches), "checkpoint": sizes["memory_checkpoint"], "peak_mib_after_100": before,
            "peak_mib_after_all": after, "growth": round(after / before - 1, 4) if before else None,
            "seconds": round(seconds, 2), "ms_per_new_shape": round(float(np.mean(times[-50:])) * 1000, 2),
            "ms_per_seen_shape": round(seen_ms, 2), "pass": bool(after <= before * 1.10 + 64),
            "source": sampler.source}


def phase_base_export(spec: dict) -> dict:
    """The random base-size model and its fp16 and fp32 graphs (with the export's parity checks)."""
    started = time.perf_counter()
    model, export = base_size.build(Path(spec["base_root"]), size=tuple(spec["sizes"]["base_size"]),
                                    export=base_size.GPU_EXPORT)
    return {"model": str(model), "export": str(export), "seconds": round(time.perf_counter() - started, 1),
            "label": base_size.LABEL if not spec["dry_run"] else "random BERT 64 x 2 (dry run)"}


def phase_overlap(spec: dict) -> dict:
    """Top-64 overlap of the fp16 graph against the fp32 graph, both on the device (TF32 off)."""
    from splade_rt.export.parity import compare

    texts = _texts(spec)[0][:spec["sizes"]["overlap_texts"]]
    dense = [_encoder(spec, export=spec["base_export"], variant=v, max_length=base_size.MAX_LENGTH)
             .encode(texts, batch_size=32).to_dense() for v in ("fp32", "fp16")]
    return {"texts": len(texts), **compare(dense[0], dense[1], top=TOP)}


def phase_host_ceiling(spec: dict) -> dict:
    """What this machine's CPU can feed a device (issue 25, item 2): encode with the device's work replayed."""
    from splade_rt.bench.host_ceiling import host_ceiling

    return host_ceiling(spec["export"], _texts(spec)[0][:spec["sizes"]["passages"]], batch_size=256,
                        max_length=spec["sizes"]["max_length"])


def phase_cuda_graph(spec: dict) -> dict:
    """The fp16 graph at 32 x extras_length, every input and output bound on the device at fixed
    addresses (as CUDA graph replay requires): the plain run, then the same with enable_cuda_graph.
    The plain number is written first: on the H100 the replay died with CUDA error 700."""
    import onnxruntime as ort

    enc = _encoder(spec)
    place, runs = enc.placement, spec["sizes"]["extras_runs"]
    memory, index, seq = place.spec.memory, place.device_id, spec["sizes"]["extras_length"]
    ids = np.random.default_rng(0).integers(1000, enc.dim, (32, seq)).astype(np.int64)

    def timed_session(session) -> float:
        binding = session.io_binding()
        for name, array in (("input_ids", ids), ("attention_mask", np.ones_like(ids)),
                            ("top_k", np.array([TOP], np.int64))):
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, memory, index))
        for name, dtype in (("top_values", np.float32), ("top_indices", np.int64)):
            value = ort.OrtValue.ortvalue_from_shape_and_type([32, TOP], dtype, memory, index)
            binding.bind_ortvalue_output(name, value)
        return median_ms(lambda: session.run_with_iobinding(binding), runs)

    out: dict[str, Any] = {"plain_ms_b32": timed_session(place.session), "graph_ms_b32": None}
    Path(spec["out"]).write_text(json.dumps({**out, "status": "the graph run died"}))
    if spec["dry_run"]:
        return {**out, "status": "not tried: the CPU EP has no CUDA graphs (dry run)"}
    try:
        options = {**place.options, "enable_cuda_graph": "1"}
        session = ort.InferenceSession(str(Path(spec["export"]) / place.file),
                                       providers=[("CUDAExecutionProvider", options)])
        return {**out, "graph_ms_b32": timed_session(session), "status": "ran"}
    except Exception as e:  # noqa: BLE001 - the refusal is the finding
        return {**out, "status": f"refused: {type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"}


PHASES = {"env": phase_env, "quality": phase_quality, "memory": phase_memory, "base_export": phase_base_export,
          "overlap": phase_overlap, "host_ceiling": phase_host_ceiling, "cuda_graph": phase_cuda_graph}


# -- orchestration ------------------------------------------------------------------------------------


def speed_spec(spec: dict, kind: str, texts: tuple[list[str], list[str]], batch_sizes: list[int], max_length: int,
               export: str | None = None, model: str | None = None, dtype: str | None = None) -> dict:
    """A splade_rt.bench.worker configuration: splade-rt (kind "rt") with a token budget that lets a
    batch be batch_size rows, or sentence-transformers torch (kind "st") in the given dtype."""
    common = {"kind": kind, "device": spec["device"], "threads": spec["threads"], "passages": texts[0],
              "queries": texts[1], "passage_tokens": None, "batch_sizes": batch_sizes, "check_rows": 0,
              "min_seconds": spec["sizes"]["min_seconds"], "queries_again": True, "max_length": max_length}
    if kind == "st":  # fp16 on a CPU takes seconds a batch: a dry run runs it in fp32
        return {**common, "mlm_dir": model, "dtype": None if spec["dry_run"] else dtype}
    top = max(batch_sizes)
    return {**common, "export_dir": export, "options": {**spec["device_options"], "max_batch": top,
                                                        "max_batch_tokens": top * max_length}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="the CPU EP stands in for CUDA; small sizes")
    p.add_argument("--export", type=Path, help="export directory (default: a fresh export of the bundled model)")
    p.add_argument("--data", type=Path, help="SciFact in BEIR layout (default: $SPLADE_SHARED's)")
    p.add_argument("--out", type=Path, help="where results go (default: $OUT, else benchmarks/results)")
    p.add_argument("--budget", type=float, help="seconds; later phases are skipped past it (default 270, dry: none)")
    p.add_argument("--phase", nargs=3, metavar=("NAME", "SPEC", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.phase:
        name, spec_path, out = args.phase
        result = PHASES[name]({**json.loads(Path(spec_path).read_text()), "out": out})
        Path(out).write_text(json.dumps(result, default=str))
        return 0

    started, dry = time.perf_counter(), args.dry_run
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the GPU machine has no network: never wait on a hub

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {message}", flush=True)

    def remaining() -> float:
        return args.budget - (time.perf_counter() - started)

    args.budget = args.budget or (float("inf") if dry else 270.0)

    from splade_rt.export.source import default_model_dir

    export = args.export or cached_export(None, CACHE / "gpu-export", log=lambda _: None)
    data = args.data or (SHARED / "data" / "scifact" if (SHARED / "data" / "scifact" / "corpus.jsonl").is_file()
                         else None)  # none: nDCG skipped, texts from the export's parity set
    sizes = {k: v[1] if dry else v[0] for k, v in SIZES.items()}
    spec = {"dry_run": dry, "export": str(export), "data": str(data) if data else None, "threads": os.cpu_count() or 1,
            "sizes": sizes, "device": "cpu" if dry else "cuda", "bundled": str(default_model_dir()),
            "device_options": {"variant": "fp16", "io_binding": True} if dry else {},
            "base_root": str(CACHE / ("base-size-dry" if dry else "base-size-gpu"))}
    report: dict[str, Any] = {
        "gpu": {"name": "none (dry run: the CPU EP stands in for CUDA)", "driver": None, "memory_total_mib": None}
        if dry else gpu_info(), "machine": machine_info(), "date": date.today().isoformat(), "dry_run": dry,
        "command": " ".join(["python -m benchmarks.gpu_check"] + (argv if argv is not None else sys.argv[1:])),
        "sizes": sizes, "export": str(export), "data": spec["data"], "budget_s": args.budget,
        "memory_source": "process RSS (dry run)" if dry else "GPU memory: NVML or nvidia-smi, per process"}
    log(f"GPU: {report['gpu']['name']}; the base-size export starts beside the first phases")
    base_job = start(["benchmarks.gpu_check", "--phase", "base_export"], spec, REPO)  # beside phases not timed

    envs = {kind: finish(start(["benchmarks.gpu_check", "--phase", "env"], {**spec, "kind": kind}, REPO), 150, log)
            for kind in ("cuda", "tensorrt")}
    report["software"] = {k: v for k, v in envs["cuda"].items() if k not in ("cuda", "error")}
    report["providers"] = {kind: env.get(kind, {"loaded": False, "error": env.get("error")})
                           for kind, env in envs.items()}
    for kind, got in report["providers"].items():
        log(f"env {kind}: {'loaded ' + str(got.get('session_providers')) if got.get('loaded') else got.get('error')}")
    device_ok = dry or bool(report["providers"]["cuda"].get("loaded"))

    def phase(name: str, estimate: float, job: dict) -> dict:
        """A phase in its own process (job: what it adds to the spec), or with name "worker" a
        splade_rt.bench.worker configuration (job: its spec); skipped past the budget."""
        if not device_ok:
            return {"skipped": "the CUDA EP did not load"}
        if dry and job.get("label") == ST_BF16:  # the same code as fp16's
            return {"skipped": "dry run: not run on the CPU"}
        if remaining() < estimate:
            return {"skipped": f"time budget: {remaining():.0f} s left of {args.budget:.0f}, needs ~{estimate:.0f}"}
        log(f"{name}: {job.get('label') or job.get('variant') or ''}")
        if name == "worker":
            result = run_worker(job, timeout=min(remaining() + 60, 240), cwd=REPO)
        else:
            result = finish(start(["benchmarks.gpu_check", "--phase", name], {**spec, **job}, REPO),
                            min(remaining() + 60, 240), log)
        numbers = {k: v for k, v in result.items() if k.startswith(("passages_per_s", "query_p99", "peak", "top64"))}
        log(f"    {why_not(result) or ', '.join(f'{k} {v:.4g}' for k, v in numbers.items()) or 'done'}")
        return result

    quality = phase("quality", 50, {})
    for key in ("parity", "transfer", "ndcg"):
        report[key] = quality.get(key, quality)
    base = finish(base_job, min(max(60.0, remaining()), 900), log)
    log(f"base-size export: {base.get('error') or str(base.get('seconds')) + ' s'}")
    passages, queries = _texts(spec)
    texts, base_texts = (passages[:sizes["passages"]], queries[:sizes["queries"]]), (
        passages[:sizes["base_passages"]], queries[:sizes["queries"]])
    bundled, big = ({RT: speed_spec(spec, "rt", ts, bss, length, export=exp)} | {
        name: speed_spec(spec, "st", ts, bss, length, model=model, dtype=dtype)
        for name, dtype in ((ST16, "fp16"), (ST_BF16, "bf16"))} for ts, bss, length, exp, model in (
            (texts, [32, 256], sizes["max_length"], str(export), spec["bundled"]),
            (base_texts, [32, 128], base_size.MAX_LENGTH, base.get("export"), base.get("model"))))
    report.update(speed={}, memory={}, base_size={"export": base, "speed": {}})
    variants = list(MEMORY_VARIANTS)
    # in order of importance: (where the result goes, its name, seconds it took on an H100 with the
    # process start, the phase and its job)
    plan: list[tuple[dict, str, float, str, dict]] = [
        (report["speed"], name, 30, "worker", bundled[name]) for name in (RT, ST16)]
    if "error" not in base:
        plan += [(report["base_size"]["speed"], name, 30, "worker", cfg) for name, cfg in big.items()]
        plan += [(report["base_size"], "overlap_fp16_vs_fp32", 20, "overlap", {"base_export": base["export"]})]
    plan += [(report["memory"], variants[0], 50, "memory", {"variant": variants[0],
                                                             "batches": sizes["memory_batches"]}),
             (report, "host_ceiling", 30, "host_ceiling", {}),
             (report["speed"], ST_BF16, 30, "worker", bundled[ST_BF16]),
             (report, "cuda_graph", 20, "cuda_graph", {})]
    plan += [(report["memory"], v, 20, "memory", {"variant": v, "batches": sizes["memory_batches_compared"]})
             for v in variants[1:]]
    for target, key, estimate, name, job in plan:
        result = phase(name, estimate, {**job, "label": key} if name == "worker" else job)
        target[key] = {"label": key, **result} if name == "worker" else result
    report["bars"] = bars(report)
    report["passed"] = all(report["bars"].values())
    report["wall_s"] = round(time.perf_counter() - started, 1)

    out_dir = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else HERE / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = "dry-run" if dry else "".join(c if c.isalnum() else "-" for c in report["gpu"]["name"].lower()).strip("-")
    stem = out_dir / f"gpu-check-{slug}-{report['date']}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    table = markdown(report)
    stem.with_suffix(".md").write_text(table)
    plot(report, stem.with_suffix(".png"))
    print(table)
    log(f"wrote {stem}.{{json,md,png}}; {'PASSED' if report['passed'] else 'FAILED'}: "
        + ", ".join(f"{k} {'ok' if v else 'NO'}" for k, v in report["bars"].items()))
    return 0 if report["passed"] or dry else 1


def bars(report: dict) -> dict[str, bool]:
    """Issue 25's bars (and issue 13's before them), each from this run's numbers."""
    speed, base = report["speed"], report["base_size"]["speed"]
    for entries, bs, (ref, tag) in product((speed, base), (32, 128, 256), ((ST16, "st_fp16"), (ST_BF16, "st_bf16"))):
        for entry in entries.values():  # each configuration's speed as a multiple of the peer's
            if f"passages_per_s_b{bs}" in entry and entries.get(ref, {}).get(f"passages_per_s_b{bs}"):
                entry[f"x_{tag}_b{bs}"] = entry[f"passages_per_s_b{bs}"] / entries[ref][f"passages_per_s_b{bs}"]
    rt, brt = speed.get(RT, {}), base.get(RT, {})
    return {
        "cuda_ep_loads": bool(report["providers"]["cuda"].get("loaded")),
        "parity": bool(report["parity"].get("pass")),
        "ndcg_within_0.002": bool(report["ndcg"].get("pass")),
        "only_small_outputs_to_host": bool(report["transfer"].get("pass")),
        "memory_flat": bool(report["memory"].get(next(iter(MEMORY_VARIANTS)), {}).get("pass")),
        "b256_12000_per_s": rt.get("passages_per_s_b256", 0) >= 12000,
        "b256_10x_st_fp16": rt.get("x_st_fp16_b256", 0) >= 10,
        "query_p99_first_seen_10ms": rt.get("query_p99_ms", float("inf")) <= 10,
        "base_2x_st_fp16": min(brt.get("x_st_fp16_b32", 0), brt.get("x_st_fp16_b128", 0)) >= 2,
        "base_1.5x_st_bf16": min(brt.get("x_st_bf16_b32", 0), brt.get("x_st_bf16_b128", 0)) >= 1.5,
    }


def markdown(report: dict) -> str:
    g, s, m = report["gpu"], report.get("software", {}), report["machine"]
    lines = [f"GPU check{' (DRY RUN: CPU EP, small sizes, RSS for GPU memory)' if report['dry_run'] else ''}: "
             f"**{g['name']}** (driver {g['driver'] or '-'}, {cell(g, 'memory_total_mib', '.0f')} MiB); {m['cpu']}, "
             f"{m['cores']} cores; {report['date']}; onnxruntime {s.get('onnxruntime')}, torch {s.get('torch')}, "
             f"sentence-transformers {s.get('sentence_transformers')}; `{report['command']}`, {report['wall_s']} s.",
             ""]
    lines += markdown_table(["bar", "result"], [[k, "pass" if v else "FAIL"] for k, v in report["bars"].items()])
    lines += [""] + markdown_table(["provider", "loaded", "detail"], [
        [k, e.get("loaded"), e.get("session_providers") or e.get("error")] for k, e in report["providers"].items()])
    par, tr, nd = report["parity"], report["transfer"], report["ndcg"]
    lines += ["", f"Parity on {par.get('texts', why_not(par))} texts:", ""] + markdown_table(
        ["pair", f"top-{TOP} overlap mean", "min", "same argmax", "max abs diff"],
        [[k, cell(c, f"top{TOP}_overlap_mean", ".4f"), cell(c, f"top{TOP}_overlap_min", ".4f"),
          c.get("argmax_same", "-"), cell(c, "max_abs_diff", ".1e")] for k, c in par.items() if isinstance(c, dict)])
    lines += ["", f"Transfer: {tr.get('batches', why_not(tr))} bound batches; outputs {tr.get('outputs_bound')} to "
                  f"{tr.get('output_devices')}; inputs on {tr.get('input_devices')}; plain runs {tr.get('plain_runs')};"
                  f" {cell(tr, 'bytes_to_host', ',')} bytes to the host where the [batch, vocab] tensor would be "
                  f"{cell(tr, 'bytes_if_dense', ',')}.", "",
              f"SciFact nDCG@10 ({nd['documents']} documents, {nd['queries']} queries, max length {nd['max_length']}):"
              f" fp32 CPU {nd['fp32_cpu']['ndcg@10']:.4f}, fp16 device {nd['fp16_device']['ndcg@10']:.4f}, "
              f"difference {nd['diff']:+.4f}." if "diff" in nd else f"SciFact nDCG@10: {why_not(nd)}"]
    base, overlap = report["base_size"], report["base_size"].get("overlap_fp16_vs_fp32", {})
    titles = ("Bundled model, SciFact passages (ratios at the larger batch):",
              f"{base['export'].get('label', 'Base size')} ({why_not(base['export']) or 'exported on the machine'}),"
              f" SciFact passages at max length {base_size.MAX_LENGTH}; fp16 against fp32 on the device: top-{TOP} "
              f"overlap {cell(overlap, f'top{TOP}_overlap_mean', '.4f')} ({why_not(overlap) or overlap.get('texts')}).")
    for title, entries, bs in zip(titles, (report["speed"], base["speed"]), (256, 128)):
        lines += ["", title, ""] + markdown_table(
            ["configuration", "passages/s b32", f"b{bs}", "x ST fp16", "x ST bf16", "query p50 ms",
             "p99 ms (first-seen lengths)", "p99 ms (seen)", "peak GPU MiB"],
            [[name, why_not(e)] if why_not(e) else
             [name] + [cell(e, key, fmt) for key, fmt in (
                 ("passages_per_s_b32", ".1f"), (f"passages_per_s_b{bs}", ".1f"), (f"x_st_fp16_b{bs}", ".2f"),
                 (f"x_st_bf16_b{bs}", ".2f"), ("query_p50_ms", ".2f"), ("query_p99_ms", ".2f"),
                 ("query_p99_ms_seen", ".2f"), ("gpu_memory_mib", ".0f"))] for name, e in entries.items()])
    lines += ["", f"Memory, random shapes ({report['memory_source']}):", ""] + markdown_table(
        ["arena setting", "after first", "after all", "growth", "s", "ms/batch, new shape", "seen shape"],
        [[name, why_not(e)] if why_not(e) else
         [name, f"{e['peak_mib_after_100']:.0f} MiB ({e['checkpoint']})", f"{e['peak_mib_after_all']:.0f} MiB "
          f"({e['batches']})", cell(e, "growth", "+.1%"), e["seconds"], cell(e, "ms_per_new_shape", ".1f"),
          cell(e, "ms_per_seen_shape", ".1f")] for name, e in report["memory"].items()])
    ceiling, graph = report["host_ceiling"], report["cuda_graph"]
    lines += ["", f"Host ceiling: {why_not(ceiling) or describe(ceiling)}.", "",
              f"CUDA graph at 32 x {report['sizes']['extras_length']}: {graph.get('status', why_not(graph))}; "
              f"{cell(graph, 'graph_ms_b32', '.3f')} ms against {cell(graph, 'plain_ms_b32', '.3f')} ms plain."]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    """Passages/s of each configuration (bundled, base size) and the memory runs' peaks, bars by pair."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    panels = [(entries, [(f"batch {b}", f"passages_per_s_b{b}") for b in sizes], title, "passages/s (higher is better)")
              for entries, sizes, title in ((report["speed"], (32, 256), "bundled model"),
                                            (report["base_size"]["speed"], (32, 128), "base size"))]
    panels.append((report["memory"], [("after the first batches", "peak_mib_after_100"), ("after all",
                                                                                         "peak_mib_after_all")],
                   "memory over random shapes", f"peak memory, MiB ({report['memory_source']})"))
    for ax, (entries, bars_, title, xlabel) in zip(axes, panels):
        done = [(name, e) for name, e in entries.items() if bars_[0][1] in e]
        for (label, key), offset in zip(bars_, (-0.2, 0.2)):
            ax.barh(np.arange(len(done)) + offset, [e.get(key, 0) for _, e in done], height=0.4, label=label)
        ax.set_yticks(np.arange(len(done)), [name for name, _ in done], fontsize=8)
        ax.invert_yaxis()
        ax.set(title=title, xlabel=xlabel)
        ax.legend(fontsize=8)
    save_figure(fig, path, f"splade-rt GPU check: {report['gpu']['name']}, {report['date']}")


if __name__ == "__main__":
    sys.exit(main())
