"""How to lay out the int8 screen in onnxruntime ops: the timings behind kernels.screening's choice.

    python -m benchmarks.screen_layouts [--threads 2]

Each layout computes, for a batch of B sequences of S tokens, the max over each sequence's tokens
of an int8 product with a [V, H] weight, over the whole vocab (in chunks of C rows):

  batched   MatMulInteger([C, H] u8, [B, H, S] s8) -> [B, C, S] int32, ReduceMax over S
  2-D       MatMulInteger([C, H] u8, [H, B*S] s8) -> [C, B*S] int32, Reshape [C, B, S], ReduceMax over S
  2-D u8    QLinearMatMul, same shapes, requantized to uint8 in the gemm, ReduceMax over S
  tokens    MatMulInteger([B*S, H] u8, [H, C] s8, prepacked) -> [B, S, C], ReduceMax over the middle axis

Random int8 data of the benchmark's mean passage batch (32 x 186 tokens, hidden 128): the time
depends on shapes, not values. Writes results/screen-layouts-<date>.json.
"""

from __future__ import annotations

import json
import platform
import time
from datetime import date

import numpy as np

from .common import script_parser

B, S, H, V = 32, 186, 128, 30522


def _time(nodes, inits: dict, feeds: dict, out_type: int, chunk: int, threads: int, repeats: int = 5) -> float:
    """Seconds per batch over the whole vocab: best of 3 runs of `repeats` calls on one chunk."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    types = {np.dtype(np.int8): TensorProto.INT8, np.dtype(np.uint8): TensorProto.UINT8}
    inputs = [helper.make_tensor_value_info(k, types[v.dtype], list(v.shape)) for k, v in feeds.items()]
    graph = helper.make_graph(nodes, "layout", inputs, [helper.make_tensor_value_info("y", out_type, None)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    session.run(None, feeds)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(repeats):
            session.run(None, feeds)
        best = min(best, (time.perf_counter() - t) / repeats)
    return best * V / chunk


def main(argv: list[str] | None = None) -> int:
    from onnx import TensorProto, helper

    p = script_parser(__doc__)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    acts = rng.integers(-127, 128, (H, B * S), dtype=np.int8)
    zero = np.array(128, np.uint8)
    node = helper.make_node
    rows = []
    for chunk in (512, 1024, 2048):
        w = rng.integers(0, 256, (chunk, H), dtype=np.uint8)
        layouts = {
            "batched": ([node("MatMulInteger", ["w", "x", "zp"], ["acc"]),
                         node("ReduceMax", ["acc"], ["y"], axes=[2], keepdims=0)],
                        {"w": w, "zp": zero}, {"x": np.ascontiguousarray(acts.reshape(H, B, S).transpose(1, 0, 2))}),
            "2-D": ([node("MatMulInteger", ["w", "x", "zp"], ["acc"]), node("Reshape", ["acc", "shape"], ["acc3"]),
                     node("ReduceMax", ["acc3"], ["y"], axes=[2], keepdims=0)],
                    {"w": w, "zp": zero, "shape": np.array([chunk, B, S], np.int64)}, {"x": acts}),
            "2-D u8": ([node("QLinearMatMul", ["w", "ws", "zp", "x", "xs", "xz", "ys", "yz"], ["q"]),
                        node("Reshape", ["q", "shape"], ["q3"]),
                        node("ReduceMax", ["q3"], ["y"], axes=[2], keepdims=0)],
                       {"w": w, "ws": np.array(0.01, np.float32), "zp": zero, "xs": np.array(0.02, np.float32),
                        "xz": np.array(0, np.int8), "ys": np.array(1.0, np.float32), "yz": zero,
                        "shape": np.array([chunk, B, S], np.int64)}, {"x": acts}),
            "tokens": ([node("MatMulInteger", ["x", "w", "zp"], ["acc"]), node("Reshape", ["acc", "shape"], ["acc3"]),
                        node("ReduceMax", ["acc3"], ["y"], axes=[1], keepdims=0)],
                       {"w": (w.astype(np.int16) - 128).astype(np.int8).T.copy(), "zp": zero,
                        "shape": np.array([B, S, chunk], np.int64)},
                       {"x": (acts.T.astype(np.int16) + 128).astype(np.uint8)}),
        }
        for name, (nodes, inits, feeds) in layouts.items():
            out_type = TensorProto.UINT8 if name == "2-D u8" else TensorProto.INT32
            ms = _time(nodes, inits, feeds, out_type, chunk, args.threads) * 1e3
            rows.append({"layout": name, "chunk": chunk, "ms_per_batch": round(ms, 1)})
            print(json.dumps(rows[-1]), flush=True)
    report = {"date": date.today().isoformat(), "threads": args.threads, "batch": B, "tokens": S, "hidden": H,
              "vocab": V, "cpu": platform.processor() or platform.machine(), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"screen-layouts-{report['date']}.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
