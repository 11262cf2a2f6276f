"""`python -m benchmarks.gpu_attention`: which attention kernel the CUDA EP should use, measured.

onnxruntime's CUDA EP picks among several kernels for the fused Attention op (its `sdpa_kernel` option,
a bit mask of onnxruntime's AttentionBackend: 1 flash, 2 memory-efficient, 4 TensorRT fused, 8 cuDNN
flash, 16 unfused; 0 lets onnxruntime choose). A SPLADE encoder sees a new (batch, length) shape on
almost every batch, so a kernel that plans per shape costs on every one of them. For each setting:

1. the export's fp16 graph: a shape's first run against the same shapes again (random shapes);
2. a base-size Attention op alone (hidden 768, 12 heads, fp16), batches of 32 x 512 and 256 x 256 tokens,
   seen shapes: the kernel's own speed where attention is a larger share of the work.

Run on a lent GPU once onnxruntime-gpu's pieces are there (benchmarks/gpu_check.sh says how), carrying
benchmarks/.cache/gpu-carry (the export):
    bash benchmarks/gpu_check.sh install && PYTHONPATH=.ortgpu/site python3 -m benchmarks.gpu_attention
--dry-run runs the same code on the CPU EP with small sizes. Results: gpu-attention-<gpu>-<date>.{json,png}
under $OUT when set, else benchmarks/results/.
"""

from __future__ import annotations

import json
import os
import re
import time
from datetime import date
from pathlib import Path

import numpy as np

from splade_rt.bench.gpu import gpu_info
from splade_rt.bench.measure import median_ms

from .common import save_figure, script_parser
from .gpu_carry import CARRY

SETTINGS = {"onnxruntime's choice (0)": 0, "memory-efficient (2)": 2, "flash (1)": 1, "TensorRT fused (4)": 4,
            "unfused (16)": 16}
OUTPUTS = ["top_values", "top_indices", "nonzero_index", "nonzero_value"]


def session(model: str | bytes, sdpa: int, dry: bool):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if dry:
        return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    options = {"arena_extend_strategy": "kNextPowerOfTwo", "sdpa_kernel": sdpa}
    return ort.InferenceSession(model, so, providers=[("CUDAExecutionProvider", options), "CPUExecutionProvider"])


def timed(run, feeds: list[dict]) -> list[float]:
    """Seconds per feed, each run once in order (so that a shape's first run is the one timed)."""
    seconds = []
    for f in feeds:
        start = time.perf_counter()
        run(f)
        seconds.append(time.perf_counter() - start)
    return seconds


def new_and_seen(graph: Path, sdpa: int, shapes: list[tuple[int, int]], dry: bool) -> dict[str, float]:
    """ms per batch over shapes never run before, then over the same shapes again."""
    rng = np.random.default_rng(0)

    def feed(b: int, length: int) -> dict:
        ids = rng.integers(1000, 30000, (b, length)).astype(np.int64)
        ids[:, 0] = 101
        return {"input_ids": ids, "attention_mask": np.ones((b, length), np.int64), "top_k": np.array([64])}

    s = session(str(graph), sdpa, dry)
    s.run(OUTPUTS, feed(2, 7))
    first = timed(lambda f: s.run(OUTPUTS, f), [feed(*shape) for shape in shapes])
    again = timed(lambda f: s.run(OUTPUTS, f), [feed(*shape) for shape in shapes])
    return {"new_shape_ms": 1000 * float(np.median(first)), "seen_shape_ms": 1000 * float(np.median(again))}


def attention_graph(hidden: int, heads: int) -> bytes:
    """One fused Attention op (onnxruntime's com.microsoft domain) in fp16, as the exported BERT graphs use it."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    weight = numpy_helper.from_array((rng.standard_normal((hidden, 3 * hidden)) * 0.02).astype(np.float16), "w")
    bias = numpy_helper.from_array(np.zeros(3 * hidden, np.float16), "b")
    node = helper.make_node("Attention", ["x", "w", "b", "mask"], ["y"], domain="com.microsoft", num_heads=heads)
    graph = helper.make_graph(
        [node], "attention", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["batch", "seq", hidden]),
                              helper.make_tensor_value_info("mask", TensorProto.INT32, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["batch", "seq", hidden])], [weight, bias])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8  # what onnxruntime 1.20 reads (a newer onnx writes a version older runtimes refuse)
    return model.SerializeToString()


def attention_speed(model: bytes, sdpa: int, shapes: list[tuple[int, int]], runs: int, dry: bool) -> dict[str, float]:
    """ms per run of the Attention op alone at each shape, once seen (median of runs)."""
    s = session(model, sdpa, dry)
    rng = np.random.default_rng(2)
    out = {}
    for b, length in shapes:
        f = {"x": rng.standard_normal((b, length, 768 if not dry else 64)).astype(np.float16),
             "mask": np.ones((b, length), np.int32)}
        out[f"{b}x{length}_ms"] = median_ms(lambda f=f: s.run(["y"], f), runs)
    return out


def main(argv: list[str] | None = None) -> int:
    p = script_parser(__doc__)
    p.add_argument("--dry-run", action="store_true", help="CPU EP, small sizes (sdpa_kernel does not apply)")
    p.add_argument("--export", type=Path, default=CARRY / "export", help="export with model.fp16.onnx")
    args = p.parse_args(argv)
    dry = args.dry_run
    if not dry:
        import onnxruntime as ort

        ort.preload_dlls()
    rng = np.random.default_rng(3)
    count, top_b, top_len = (4, 4, 32) if dry else (24, 64, 512)
    shapes = list(zip(rng.integers(1, top_b + 1, count).tolist(), rng.integers(8, top_len + 1, count).tolist()))
    hidden, heads = (64, 2) if dry else (768, 12)
    op_shapes, runs = ([(2, 16)], 3) if dry else ([(32, 512), (256, 256)], 20)
    model = attention_graph(hidden, heads)
    results: dict[str, dict] = {}
    for name, sdpa in SETTINGS.items():
        results[name] = {"sdpa_kernel": sdpa, **new_and_seen(args.export / "model.fp16.onnx", sdpa, shapes, dry),
                         **attention_speed(model, sdpa, op_shapes, runs, dry)}
        print(name, {k: round(v, 2) if isinstance(v, float) else v for k, v in results[name].items()}, flush=True)
    gpu = {"name": "none (dry run)", "driver": None, "memory_total_mib": None} if dry else gpu_info()
    report = {"gpu": gpu, "date": date.today().isoformat(), "dry_run": dry, "shapes": shapes,
              "attention_op": {"hidden": hidden, "heads": heads, "shapes": op_shapes, "runs": runs},
              "command": "python -m benchmarks.gpu_attention", "results": results}
    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") and not dry else args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = "dry-run" if dry else re.sub(r"[^a-z0-9]+", "-", gpu["name"].lower()).strip("-")
    stem = out_dir / f"gpu-attention-{slug}-{report['date']}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, stem.with_suffix(".png"))
    print(f"wrote {stem}.{{json,png}}")
    return 0


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["results"])
    keys = ["new_shape_ms", "seen_shape_ms"] + [k for k in report["results"][names[0]] if k.endswith("_ms")
                                                and "shape" not in k]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.4))
    for ax, key in zip(axes, keys):
        ax.barh(names, [report["results"][n][key] for n in names])
        ax.set_title(key.replace("_ms", " (ms)").replace("_", " "), fontsize=8)
        ax.tick_params(labelsize=7)
    save_figure(fig, path, f"CUDA EP attention kernels: {report['gpu']['name']}, {report['date']}")


if __name__ == "__main__":
    raise SystemExit(main())
