"""Which encoder graph and batch size the CPU runs fastest: the timings behind export.graph.CPU_UNFUSED,
the int8 variant's graph form (export.graph.quantize_encoder) and the CPU row's token budget
(runtime.providers.PROVIDERS["cpu"].batch_tokens).

    python -m benchmarks.cpu_fusions [--models tiny,base] [--threads 1,2] [--graphs fused,cpu,...]

For each model, the encoder body (everything before the vocab projection, what the native variants
run in onnxruntime) is exported once and optimized by onnxruntime's transformer optimizer into each
of GRAPHS: with every BERT fusion ("fused"), with attention and SkipLayerNormalization left as plain
ops ("cpu": what the exporter writes for the CPU graphs), and int8 forms of either (onnxruntime's
dynamic quantization as the exporter applies it, with the fused graph's Attention becoming
QAttention; with the tanh GELU; with 8-bit block-wise weights in MatMulNBits at int8 compute). Each
is timed on the benchmark's passages (max length 256, length-sorted batches of 32 cut by a budget of
padded tokens), for each thread count and budget: states graph only, best of the passes. Each graph
must be the form its name says (Graph.has / lacks): an optimizer that stopped fusing would make the
comparison moot, so the script stops instead. Writes results/cpu-fusions-<date>.json and a plot;
--quick (what tests/test_benchmarks.py runs) times the tiny model once, on one thread and budget.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from .common import SHARED, load_texts, save_figure, script_parser

BUDGETS = (8192, 2048, 1024, 512)


@dataclass(frozen=True)
class Graph:
    plain: bool  # export.graph.CPU_UNFUSED left unfused
    quantize: str | None = None  # "dynamic" (export.graph.quantize_encoder) or "blockwise" (MatMulNBits)
    approximate_gelu: bool = False
    has: frozenset[str] = frozenset()  # op types the graph must hold to be this form
    lacks: frozenset[str] = frozenset()  # and must not


GRAPHS = {
    "fused": Graph(plain=False, has=frozenset({"Attention", "SkipLayerNormalization"})),
    "cpu": Graph(plain=True, lacks=frozenset({"Attention", "SkipLayerNormalization", "MatMulInteger"})),
    "int8": Graph(plain=True, quantize="dynamic", has=frozenset({"MatMulInteger"}),  # what the exporter writes
                  lacks=frozenset({"QAttention", "Attention"})),
    "int8 fused (QAttention)": Graph(plain=False, quantize="dynamic", has=frozenset({"QAttention"})),
    "int8 tanh GELU": Graph(plain=True, quantize="dynamic", approximate_gelu=True, has=frozenset({"FastGelu"}),
                            lacks=frozenset({"BiasGelu"})),
    "int8 block-wise (MatMulNBits)": Graph(plain=True, quantize="blockwise", has=frozenset({"MatMulNBits"})),
}


def form_error(name: str, model) -> str | None:
    """Why the graph is not the form GRAPHS[name] says, or None."""
    ops, spec = {n.op_type for n in model.graph.node}, GRAPHS[name]
    missing, extra = sorted(spec.has - ops), sorted(spec.lacks & ops)
    if missing or extra:
        return f"the {name!r} graph is not the form it names: {missing or ''} missing {extra or ''} present".strip()
    return None


def _graphs(model_dir: Path, work: Path, names: list[str]) -> tuple[dict[str, bytes], dict[str, str]]:
    """The named graphs, and why any could not be made."""
    from splade_rt.export.graph import CPU_UNFUSED, export_body, optimize_body, quantize_encoder
    from splade_rt.export.heads import export_head
    from splade_rt.export.source import resolve_source

    source = resolve_source(str(model_dir))
    head = export_head(source)
    mlm = head.load(source)
    body = export_body(head.states(mlm, source), mlm.config.vocab_size, work / "body.onnx")
    graphs, skipped = {}, {}
    for name in names:
        spec = GRAPHS[name]
        model, _ = optimize_body(body, source.architecture.optimizer, mlm.config,
                                 unfused=CPU_UNFUSED if spec.plain else (), approximate_gelu=spec.approximate_gelu)
        if spec.quantize == "dynamic":
            model = quantize_encoder(model, work)
        elif spec.quantize == "blockwise":
            try:
                model = _blockwise_int8(model)
            except ImportError as e:  # onnxruntime's MatMulNBits quantizer needs onnx_ir
                skipped[name] = f"{e} (pip install onnx_ir)"
                continue
        error = form_error(name, model)
        if error:
            raise SystemExit(f"cpu_fusions: {error} (onnxruntime {_ort_version()})")
        graphs[name] = model.SerializeToString()
    return graphs, skipped


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _blockwise_int8(model):
    """8-bit weights in blocks of 128 along the reduction, activations quantized per block at run time
    (accuracy level 4: int8 compute)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(model, bits=8, block_size=128, is_symmetric=True, accuracy_level=4)
    quantizer.process()
    return quantizer.model.model


def _time(graph: bytes, ids: list[list[int]], threads: int, budget: int, passes: int) -> float:
    """Passages per second through the graph, batches cut as the encoder cuts them."""
    import onnxruntime as ort

    from splade_rt.runtime.batching import padded_batches

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
    feeds = [{"input_ids": i, "attention_mask": m} for _, i, m in padded_batches(ids, 0, 32, budget)]
    session.run(None, feeds[0])
    best = float("inf")
    for _ in range(passes):
        start = time.perf_counter()
        for feed in feeds:
            session.run(None, feed)
        best = min(best, time.perf_counter() - start)
    return len(ids) / best


def main(argv: list[str] | None = None) -> int:
    from tokenizers import Tokenizer

    from splade_rt.export.source import default_model_dir
    from splade_rt.machine import machine_info

    from . import base_size

    p = script_parser(__doc__)
    p.add_argument("--models", default="tiny,base", help="tiny (the bundled model), base (the random base-size one)")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--graphs", default=",".join(GRAPHS), help=f"some of: {', '.join(GRAPHS)}")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny model, 1 thread, one budget, one pass")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.threads = "tiny", "1"
    threads = [int(t) for t in args.threads.split(",")]
    names = args.graphs.split(",")
    unknown = [n for n in names if n not in GRAPHS]
    if unknown:
        p.error(f"unknown graph(s) {unknown}: choose from {list(GRAPHS)}")
    passages, _ = load_texts(quick=args.quick)
    models = {"tiny": (default_model_dir, passages, 1 if args.quick else 3),
              "base": (lambda: base_size.build()[0], base_size.held_out_passages(32), 2)}
    rows, skipped = [], {}
    for name in args.models.split(","):
        locate, texts, passes = models[name]
        model_dir = locate()
        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        tokenizer.enable_truncation(base_size.MAX_LENGTH)
        ids = [e.ids for e in tokenizer.encode_batch(texts)]
        with tempfile.TemporaryDirectory() as work:
            graphs, skipped[name] = _graphs(model_dir, Path(work), names)
        for graph, why in skipped[name].items():
            print(f"{name}, {graph}: skipped: {why}", flush=True)
        for t in threads:
            for graph, blob in graphs.items():
                for budget in BUDGETS[2:3] if args.quick else BUDGETS:
                    rows.append({"model": name, "graph": graph, "threads": t, "batch_tokens": budget,
                                 "passages_per_s": round(_time(blob, ids, t, budget, passes), 2)})
                    print(json.dumps(rows[-1]), flush=True)
    report = {"date": date.today().isoformat(), "machine": machine_info(), "shared": str(SHARED), "batch_size": 32,
              "max_length": base_size.MAX_LENGTH, "rows": rows,
              "skipped": {m: why for m, why in skipped.items() if why}}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"cpu-fusions-{report['date']}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    _plot(rows, stem.with_suffix(".png"))
    return 0


def _plot(rows: list[dict], path: Path) -> None:
    """One panel per model and thread count; a colour per graph, shared by every panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((r["model"], r["threads"]) for r in rows))
    colours = {g: f"C{i}" for i, g in enumerate(dict.fromkeys(r["graph"] for r in rows))}
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.6), squeeze=False)
    for ax, (model, threads) in zip(axes[0], panels):
        for graph, colour in colours.items():
            line = [r for r in rows if (r["model"], r["threads"], r["graph"]) == (model, threads, graph)]
            ax.plot([r["batch_tokens"] for r in line], [r["passages_per_s"] for r in line], marker="o", color=colour,
                    linestyle="--" if graph.startswith("int8") else "-", label=graph)
        ax.set_xscale("log", base=2)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("padded tokens per batch")
        ax.set_ylabel("passages/s (encoder only)")
        ax.set_title(f"{model}, {threads} thread(s)", fontsize=9)
    axes[0][0].legend(fontsize=6, loc="lower left", ncol=2)  # the panels' lower part is empty: y starts at 0
    save_figure(fig, path, "encoder graph on the CPU: onnxruntime's fused ops against plain ones, fp32 and int8, "
                           "by batch size")


if __name__ == "__main__":
    raise SystemExit(main())
