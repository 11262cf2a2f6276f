"""Which encoder graph and batch size the CPU runs fastest: the timings behind export.graph.CPU_UNFUSED
and the CPU row's token budget (runtime.session.PROVIDERS["cpu"].batch_tokens).

    python -m benchmarks.cpu_fusions [--models tiny,base] [--threads 1,2]

For each model, the encoder body (everything before the vocab projection, what the fp32-native
variant runs in onnxruntime) is exported once and optimized twice by onnxruntime's transformer
optimizer: with every BERT fusion ("fused"), and with attention and SkipLayerNormalization left as
plain ops ("cpu": what the exporter writes for the CPU graphs). Each is timed on the benchmark's
passages (max length 256, length-sorted batches of 32 cut by a budget of padded tokens), for each
thread count and budget: states graph only, best of the passes. Writes
results/cpu-fusions-<date>.json and a plot.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

from .common import SHARED, load_texts, save_figure, script_parser

BUDGETS = (8192, 2048, 1024, 512)


def _graphs(model_dir: Path, work: Path) -> dict[str, bytes]:
    from splade_rt.export.graph import CPU_UNFUSED, export_body, optimize_body
    from splade_rt.export.reference import load_mlm
    from splade_rt.export.source import resolve_source

    source = resolve_source(str(model_dir))
    mlm = load_mlm(source)
    body = export_body(mlm, source.architecture, work / "body.onnx")
    return {name: optimize_body(body, source.architecture.optimizer, mlm.config, unfused=unfused)[0].SerializeToString()
            for name, unfused in (("fused", ()), ("cpu", CPU_UNFUSED))}


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

    from . import base_size

    p = script_parser(__doc__)
    p.add_argument("--models", default="tiny,base", help="tiny (the bundled model), base (the random base-size one)")
    p.add_argument("--threads", default="1,2")
    args = p.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    passages, _ = load_texts(quick=False)
    models = {"tiny": (default_model_dir, passages, 3), "base": (lambda: base_size.build()[0],
                                                                  base_size.held_out_passages(32), 1)}
    rows = []
    for name in args.models.split(","):
        locate, texts, passes = models[name]
        model_dir = locate()
        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        tokenizer.enable_truncation(base_size.MAX_LENGTH)
        ids = [e.ids for e in tokenizer.encode_batch(texts)]
        with tempfile.TemporaryDirectory() as work:
            graphs = _graphs(model_dir, Path(work))
        for t in threads:
            for graph, blob in graphs.items():
                for budget in BUDGETS:
                    rows.append({"model": name, "graph": graph, "threads": t, "batch_tokens": budget,
                                 "passages_per_s": round(_time(blob, ids, t, budget, passes), 2)})
                    print(json.dumps(rows[-1]), flush=True)
    report = {"date": date.today().isoformat(), "cpu": platform.processor() or platform.machine(),
              "shared": str(SHARED), "batch_size": 32, "max_length": base_size.MAX_LENGTH, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"cpu-fusions-{report['date']}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    _plot(rows, stem.with_suffix(".png"))
    return 0


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.6), squeeze=False)
    for ax, model in zip(axes[0], models):
        for graph, threads in dict.fromkeys((r["graph"], r["threads"]) for r in rows if r["model"] == model):
            line = [r for r in rows if (r["model"], r["graph"], r["threads"]) == (model, graph, threads)]
            ax.plot([r["batch_tokens"] for r in line], [r["passages_per_s"] for r in line], marker="o",
                    linestyle="-" if graph == "cpu" else "--", label=f"{graph}, {threads} thread(s)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("padded tokens per batch")
        ax.set_ylabel("passages/s (encoder only)")
        ax.set_title(model, fontsize=9)
        ax.legend(fontsize=7)
    save_figure(fig, path, "encoder graph on the CPU: onnxruntime's fused ops against plain ones, by batch size")


if __name__ == "__main__":
    raise SystemExit(main())
