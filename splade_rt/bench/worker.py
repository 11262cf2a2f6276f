"""One configuration, measured in its own process so its memory and cold start are its own.

Run as `python -m splade_rt.bench.worker SPEC.json OUT.json` (by bench.runner). Cold start is
counted from the moment the parent spawned the process (`spawned_at` in the spec): interpreter,
imports, load and first encode, as a user sees it. On a GPU, the process's peak GPU memory over
the whole run is sampled (bench.gpu), and both sides are synchronized before a pass's clock stops.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import numpy as np

from ..machine import peak_rss_mib
from .measure import query_latencies, throughput


def torch_device(device: str, cuda_available: bool) -> str:
    """Where torch runs for splade-rt's device name, so that a comparison runs on the same device: the
    provider row's memory (TensorRT's GPU is a CUDA device to torch); "auto" picks CUDA where torch
    sees one."""
    from ..runtime.providers import PROVIDERS, parse_device

    kind, index = parse_device(device)
    if kind == "auto":
        kind = "cuda" if cuda_available else "cpu"
    memory = PROVIDERS[kind].memory
    return f"{memory}:{index}" if memory != "cpu" and ":" in device else memory


class SentenceTransformersEncoder:
    """sentence-transformers' SparseEncoder: from its own directory (st_dir) or, for a plain
    transformers directory, built from the fill-mask Transformer and SpladePooling (mlm_dir); in the
    spec's dtype ("fp16" or "bf16", its recommended GPU settings; fp32 by default)."""

    def __init__(self, spec: dict) -> None:
        import torch
        from sentence_transformers import SparseEncoder

        torch.set_num_threads(spec["threads"])
        self.imported = time.time()
        kwargs = {"backend": spec["backend"]} if spec.get("backend") else {}
        device = torch_device(spec.get("device", "cpu"), torch.cuda.is_available())
        if spec.get("st_dir"):
            self.model = SparseEncoder(spec["st_dir"], device=device, **kwargs)
        else:
            from sentence_transformers.base.modules import Transformer
            from sentence_transformers.sparse_encoder.modules import SpladePooling

            modules = [Transformer(spec["mlm_dir"], transformer_task="fill-mask"),
                       SpladePooling(pooling_strategy="max", activation_function=spec.get("activation", "relu"))]
            self.model = SparseEncoder(modules=modules, device=device, **kwargs)
        dtype = spec.get("dtype") or ("fp16" if spec.get("fp16") else None)
        if dtype:
            self.model.to({"fp16": torch.float16, "bf16": torch.bfloat16}[dtype])
        self.sync = torch.cuda.synchronize if device.startswith("cuda") else None
        if spec.get("max_length"):
            self.model.max_seq_length = spec["max_length"]

    def encode(self, texts: list[str], batch_size: int):
        out = self.model.encode_document(texts, batch_size=batch_size, convert_to_tensor=True)
        if self.sync:
            self.sync()
        return out

    def rows(self, result, n: int) -> list[dict[int, float]]:
        dense = result.to_dense()[:n].float().cpu().numpy()
        return [{int(i): float(r[i]) for i in np.flatnonzero(r)} for r in dense]


class FlagEmbeddingEncoder:
    """FlagEmbedding's BGEM3FlagModel on a bge-m3 model, lexical weights only (return_sparse), in fp32
    on the CPU (its use_fp16 default applies on a GPU: fp16 there, as users run it)."""

    def __init__(self, spec: dict) -> None:
        import torch
        from FlagEmbedding import BGEM3FlagModel

        torch.set_num_threads(spec["threads"])
        self.imported = time.time()
        device = torch_device(spec.get("device", "cpu"), torch.cuda.is_available())
        self.model = BGEM3FlagModel(spec["model_dir"], use_fp16=device != "cpu", devices=device)
        self.max_length = spec["max_length"]
        self.sync = torch.cuda.synchronize if device.startswith("cuda") else None

    def encode(self, texts: list[str], batch_size: int):
        out = self.model.encode(texts, batch_size=batch_size, max_length=self.max_length, return_dense=False,
                                return_sparse=True)["lexical_weights"]
        if self.sync:
            self.sync()
        return out

    def rows(self, result, n: int) -> list[dict[int, float]]:
        return [{int(k): float(v) for k, v in row.items()} for row in result[:n]]


class SpladeRtEncoder:
    def __init__(self, spec: dict) -> None:
        from splade_rt import SpladeEncoder

        self.imported = time.time()
        kwargs = {"variant": spec.get("variant"), "threads": spec["threads"], "workers": spec.get("workers")}
        for key in ("max_length", "max_batch_tokens"):
            if spec.get(key):
                kwargs[key] = spec[key]
        kwargs.update(spec.get("options", {}))  # any other SpladeEncoder keyword (max_batch, io_binding, ...)
        self.model = SpladeEncoder(spec["export_dir"], device=spec.get("device", "cpu"), **kwargs)
        self.provider = self.model.provider
        self.graph = self.model.placement.file

    def encode(self, texts: list[str], batch_size: int):
        return self.model.encode_document(texts, batch_size=batch_size)

    def rows(self, result, n: int) -> list[dict[int, float]]:
        return result[:n].to_dicts()


ENCODERS = {"st": SentenceTransformersEncoder, "flag": FlagEmbeddingEncoder, "rt": SpladeRtEncoder}  # spec["kind"]


def measure(spec: dict) -> dict[str, Any]:
    """Cold start, query latency at batch 1 (queries_again: then over the same queries again, every
    length seen), passages/s per batch size, the first check_rows vectors, peak RSS and GPU memory."""
    spawned = spec.get("spawned_at", time.time())
    sampler = None
    if spec.get("device", "cpu") != "cpu":
        from ..runtime.providers import parse_device
        from .gpu import MemorySampler

        sampler = MemorySampler(True, parse_device(spec["device"])[1])
    enc = ENCODERS[spec["kind"]](spec)
    loaded = time.time()
    passages, queries = spec["passages"], spec["queries"]
    enc.encode([queries[0]], 1)
    result: dict[str, Any] = {"import_s": enc.imported - spawned, "load_s": loaded - enc.imported,
                              "cold_start_s": time.time() - spawned}
    for key in ("provider", "graph"):
        if hasattr(enc, key):
            result[key] = getattr(enc, key)
    if spec.get("memory_only"):
        start = time.perf_counter()
        enc.encode(passages, spec["memory_batch"])
        result["memory_encode_s"] = time.perf_counter() - start
        result["peak_rss_mib"] = peak_rss_mib()
        return result
    result.update(query_latencies(enc.encode, queries))
    if spec.get("queries_again"):  # a shape's first run apart: on a GPU it may plan each new shape
        result.update({f"{key}_seen": ms for key, ms in query_latencies(enc.encode, queries).items()})
    out = None
    for batch_size in spec["batch_sizes"]:
        numbers, out = throughput(enc.encode, passages, batch_size, spec["passage_tokens"],
                                  spec.get("min_seconds", 0))
        result.update(numbers)
    result["vectors"] = enc.rows(out, spec["check_rows"])
    result["peak_rss_mib"] = peak_rss_mib()
    if sampler is not None:
        result["gpu_memory_mib"], result["gpu_memory_source"] = sampler.stop(), sampler.source
    return result


def main(spec_path: str, out_path: str) -> None:
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    result = measure(spec)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
