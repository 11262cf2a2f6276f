"""The host's ceiling on this CPU: the whole encode at batch 256 as a GPU gets it, with the device's
work replaced by replaying recorded outputs (splade_rt.bench.host_ceiling).

Passages/s one core of this CPU can feed a device, passages/s its every core can, and the split of
the host's work into tokenize / pack / bind / assemble (seconds per passage each), on the bundled
model with SciFact passages (title and text, as splade-eval reads them; $SPLADE_SHARED/data/scifact).
The bar: host work beyond tokenizing at most 25% of the tokenizing time.

Writes benchmarks/results/host-ceiling-2026-12-07-<cpu>.json and a .png beside it.

    python -m benchmarks.host_ceiling [--passages 2048] [--repeats 3]
"""

from __future__ import annotations

import sys
import time

from benchmarks.common import CACHE, cached_export, collection_texts, save_figure, script_parser, write_results

DATE = "2026-12-07"


def plot(report: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from splade_rt.bench.host_ceiling import PARTS

    us = [report["per_passage_s"][p] * 1e6 for p in PARTS] + [max(report["other_host_s"], 0.0) * 1e6]
    labels = list(PARTS) + ["other (pipeline glue)"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    bars = left.barh(labels[::-1], us[::-1], color=["#999999", "#d62728", "#ff7f0e", "#2ca02c", "#1f77b4"])
    left.bar_label(bars, fmt="%.1f us", fontsize=8, padding=2)
    bar = report["bar"] * report["per_passage_s"]["tokenize"] * 1e6
    left.axvline(bar, color="k", linestyle="--", linewidth=1)
    left.text(bar, -0.6, f" {report['bar']:.0%} of tokenize", fontsize=8, va="bottom")
    left.set_xlabel("CPU microseconds per passage, one core (TOKENIZERS_PARALLELISM=false)")
    left.set_xlim(0, max(us) * 1.25)
    rates = [report["per_core_passages_per_s"], report["passages_per_s"]]
    names = ["one core", f"{report['cores']} cores"]
    bars = right.bar(names, rates, color=["#1f77b4", "#9467bd"])
    right.bar_label(bars, fmt="%.0f", fontsize=8)
    right.set_ylabel("passages/s the host can feed")
    right.set_xlabel("all cores: tokenizer threads on, wall time")
    beyond = report["beyond_tokenize_ratio"]
    save_figure(fig, path, f"host ceiling, {report['machine']['cpu']} ({report['cores']} cores), bundled model, "
                           f"{report['passages']} SciFact passages at batch {report['batch_size']}: host work beyond "
                           f"tokenizing {beyond:.1%} of tokenizing (bar {report['bar']:.0%})")


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(__doc__)
    parser.add_argument("--passages", type=int, default=2048, help="SciFact passages to encode (default 2048)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="runs per measure; the best is kept")
    args = parser.parse_args(argv)

    from splade_rt.bench.host_ceiling import describe, host_ceiling

    passages, _ = collection_texts("scifact", args.passages)
    if not passages:
        print("host_ceiling: SciFact not found under $SPLADE_SHARED/data/scifact", file=sys.stderr)
        return 2
    export = cached_export(None, CACHE / "export", log=lambda _: None, int8=True)  # benchmarks.run's export
    started = time.perf_counter()
    report = host_ceiling(export, passages, batch_size=args.batch_size, repeats=args.repeats)
    given = sys.argv[1:] if argv is None else argv
    report.update(date=DATE, command=" ".join(["python -m benchmarks.host_ceiling", *given]),
                  wall_s=time.perf_counter() - started)
    print(describe(report))
    write_results(report, args.out, f"host-ceiling-{DATE}", plot)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
