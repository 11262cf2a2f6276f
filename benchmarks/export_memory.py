"""Where an export's memory goes: the peak RSS of each step of `splade-export` on a random
multilingual-size model, so that a change to the exporter's memory shows which step it moved.

    python -m benchmarks.export_memory [--vocab 250002] [--hidden 768] [--layers 2] [--int8]

Model: random XLM-R (tests/random_models.py, z=4.5; cached), max length 512, default export options
(and the int8 graphs with --int8). The export runs in this process; each step below is timed and
its peak taken from the kernel's high-water mark (VmHWM), reset at every step's start and end
(/proc/self/clear_refs), so a spike between two samples counts too. Steps: the body's torch export,
the screen's hidden mean, each onnxruntime optimizer run, each graph's save, the fp16 conversion,
the parity reference and each parity graph. A step's peak includes what earlier steps still hold
(the torch model, the CPU encoder).

Writes benchmarks/results/export-memory-<date>-<cpu>.{json,png}.
"""

from __future__ import annotations

import functools
import sys
import time
from datetime import date
from pathlib import Path

from .common import CACHE, save_figure, script_parser, write_results

# (module, function) of each step, in splade_rt.export
STEPS = (("graph", "export_body"), ("graph", "hidden_mean"), ("graph", "optimize_body"), ("graph", "quantize_encoder"),
         ("graph", "save_graph"), ("graph", "to_fp16"), ("parity", "reference_tokenize"), ("parity", "run_graph"),
         ("parity", "run_native"))


def _gib(field: str) -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field))
    return int(line.split()[1]) / 2**20


def instrument(events: list[dict], started: float, export_model):
    """Wrap each STEPS function (and the export head's reference) so that it records its peak, and
    return export_model wrapped the same way. Steps nest (quantize_encoder saves a graph): every reset
    first folds the high-water mark into each open step's peak. The resets also reset what the
    manifest's export_peak_rss_bytes reads: the "export" step's peak stands in for it here."""
    import dataclasses

    import splade_rt.export.graph as graph
    import splade_rt.export.parity as parity

    modules, open_steps = {"graph": graph, "parity": parity}, []

    def fold_and_reset() -> None:
        peak = _gib("VmHWM")
        for step in open_steps:
            step["peak_gib"] = max(step["peak_gib"], round(peak, 3))
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # VmHWM := VmRSS (Linux 4.0+)

    def timed(name, fn):
        @functools.wraps(fn)
        def step(*args, **kwargs):
            fold_and_reset()
            t0 = time.perf_counter()
            entry = {"step": name, "start_s": round(t0 - started, 2), "rss_before_gib": round(_gib("VmRSS"), 3),
                     "peak_gib": 0.0}
            open_steps.append(entry)
            try:
                return fn(*args, **kwargs)
            finally:
                fold_and_reset()
                open_steps.remove(entry)
                entry.update(seconds=round(time.perf_counter() - t0, 2), rss_after_gib=round(_gib("VmRSS"), 3))
                events.append(entry)
        return step

    for module, name in STEPS:
        setattr(modules[module], name, timed(name, getattr(modules[module], name)))
    export_head = parity.export_head
    parity.export_head = lambda source: dataclasses.replace(
        export_head(source), reference=timed("reference", export_head(source).reference))
    return timed("export", export_model)  # the whole export: its peak folds in every step's and what lies between


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = report["steps"]
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(steps) + 1.5))
    names = [f"{s['step']} @{s['start_s']:.0f}s" for s in steps][::-1]
    bars = ax.barh(names, [s["peak_gib"] for s in steps][::-1], color="#1f77b4")
    ax.barh(names, [s["rss_before_gib"] for s in steps][::-1], color="#999999")
    ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
    ax.axvline(report["export_peak_gib"], color="#d62728", lw=1, ls="--")
    ax.set_xlabel("GiB (grey: RSS at the step's start; blue: its peak; dashed: the export's peak)")
    ax.tick_params(axis="y", labelsize=7)
    save_figure(fig, path, f"splade-export memory by step: {report['model']}, {report['machine']['cpu']} "
                           f"({report['machine']['cores']} cores)")


def main(argv: list[str] | None = None) -> int:
    from random_models import make_model

    from splade_rt.export.pipeline import export_model
    from splade_rt.machine import machine_info

    p = script_parser(__doc__)
    p.add_argument("--vocab", type=int, default=250_002)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--int8", action="store_true", help="also the int8 graphs")
    args = p.parse_args(argv)
    if not Path("/proc/self/clear_refs").exists():
        print("export_memory: needs Linux's /proc/self/clear_refs", file=sys.stderr)
        return 2
    model = CACHE / "export-memory" / f"xlm-roberta-{args.vocab}-{args.hidden}x{args.layers}"
    if not (model / "config.json").is_file():
        make_model("xlm-roberta", model, hidden=args.hidden, layers=args.layers, heads=max(2, args.hidden // 64),
                   max_length=512, vocab=args.vocab, z=4.5, seed=3)
    events: list[dict] = []
    started = time.perf_counter()
    export = instrument(events, started, export_model)
    out = CACHE / "export-memory" / "export"
    manifest = export(str(model), out, force=True, int8=args.int8, log=lambda m: print(m, flush=True))
    whole = next(e for e in events if e["step"] == "export")
    report = {"date": date.today().isoformat(), "machine": machine_info(),
              "command": " ".join(["python -m benchmarks.export_memory", *(sys.argv[1:] if argv is None else argv)]),
              "model": f"random XLM-R, vocab {args.vocab:,}, hidden {args.hidden}, {args.layers} layers",
              "variants": [name for name, info in manifest["files"].items() if "precision" in info],
              "export_peak_gib": whole["peak_gib"], "export_seconds": manifest["export_seconds"],
              "parity_passed": manifest["parity"]["passed"],
              "steps": sorted((e for e in events if e is not whole), key=lambda e: e["start_s"])}
    for step in report["steps"]:
        print(f"{step['start_s']:7.1f}s {step['step']:<20} {step['seconds']:6.1f}s  RSS {step['rss_before_gib']:.2f} "
              f"-> peak {step['peak_gib']:.2f} -> {step['rss_after_gib']:.2f} GiB")
    print(f"export peak {report['export_peak_gib']:.2f} GiB, {report['export_seconds']:.0f} s")
    write_results(report, args.out, f"export-memory-{report['date']}", plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
