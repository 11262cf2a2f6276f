"""One configuration, measured in its own process so its memory and cold start are its own.

Run by benchmarks.run as `python -m benchmarks.worker SPEC.json OUT.json`; prints nothing useful.
The clock starts before any import, so cold start = import + load + first encode, as a user sees it.
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402


def peak_rss_mib() -> float:
    """VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child would inherit the peak of
    the (big) parent it was forked from."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class SentenceTransformersEncoder:
    def __init__(self, spec: dict) -> None:
        import torch
        from sentence_transformers import SparseEncoder

        torch.set_num_threads(spec["threads"])
        self.t_import = time.perf_counter() - T0
        kwargs = {}
        if spec.get("backend"):
            kwargs["backend"] = spec["backend"]
        self.model = SparseEncoder(spec["st_dir"], device=spec.get("device", "cpu"), **kwargs)
        if spec.get("fp16"):
            self.model.half()
        if spec.get("max_length"):
            self.model.max_seq_length = spec["max_length"]

    def encode(self, texts: list[str], batch_size: int):
        out = self.model.encode_document(texts, batch_size=batch_size, convert_to_tensor=True)
        return out

    def rows(self, result, n: int) -> list[dict[int, float]]:
        dense = result.to_dense()[:n].float().cpu().numpy()
        return [{int(i): float(r[i]) for i in np.flatnonzero(r)} for r in dense]


class SpladeRtEncoder:
    def __init__(self, spec: dict) -> None:
        from splade_rt import SpladeEncoder

        self.t_import = time.perf_counter() - T0
        kwargs = {"variant": spec.get("variant"), "threads": spec["threads"], "workers": spec.get("workers")}
        if spec.get("max_length"):
            kwargs["max_length"] = spec["max_length"]
        if spec.get("max_batch_tokens"):
            kwargs["max_batch_tokens"] = spec["max_batch_tokens"]
        self.model = SpladeEncoder(spec["export_dir"], device=spec.get("device", "cpu"), **kwargs)

    def encode(self, texts: list[str], batch_size: int):
        return self.model.encode_document(texts, batch_size=batch_size)

    def rows(self, result, n: int) -> list[dict[int, float]]:
        return result[:n].to_dicts()


def main(spec_path: str, out_path: str) -> None:
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    runner = SentenceTransformersEncoder if spec["kind"] == "st" else SpladeRtEncoder
    enc = runner(spec)
    t_loaded = time.perf_counter() - T0
    passages, queries = spec["passages"], spec["queries"]
    enc.encode([queries[0]], 1)
    result = {"import_s": enc.t_import, "load_s": t_loaded - enc.t_import,
              "cold_start_s": time.perf_counter() - T0}
    if spec.get("memory_only"):
        t = time.perf_counter()
        enc.encode(passages, spec["memory_batch"])
        result["memory_encode_s"] = time.perf_counter() - t
        result["peak_rss_mib"] = peak_rss_mib()
        write_json(result, out_path)
        return
    lat = []
    for q in queries:
        t = time.perf_counter()
        enc.encode([q], 1)
        lat.append(time.perf_counter() - t)
    result["query_p50_ms"] = float(np.percentile(lat, 50) * 1000)
    result["query_p99_ms"] = float(np.percentile(lat, 99) * 1000)
    for bs in spec["batch_sizes"]:
        enc.encode(passages[:bs], bs)  # warm up the shapes this batch size uses
        # passes over the whole set until min_seconds have gone by; the median pass is reported, so
        # one pass slowed by a neighbour on a shared machine doesn't decide a fast configuration
        passes, started = [], time.perf_counter()
        while not passes or time.perf_counter() - started < spec.get("min_seconds", 0):
            t = time.perf_counter()
            out = enc.encode(passages, bs)
            passes.append(time.perf_counter() - t)
        dt = float(np.median(passes))
        result[f"passes_b{bs}"] = len(passes)
        result[f"passages_per_s_b{bs}"] = len(passages) / dt
        result[f"tokens_per_s_b{bs}"] = spec["passage_tokens"] / dt
    result["vectors"] = enc.rows(out, spec["check_rows"])
    result["peak_rss_mib"] = peak_rss_mib()
    write_json(result, out_path)


def write_json(result: dict, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
