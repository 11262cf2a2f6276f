"""splade-encode-corpus throughput: the local engine against Ray Data with 1 and 2 actors, same run.

    python -m benchmarks.bulk                    # 2,000 SciFact and 2,000 Vaswani documents, max length 256
    python -m benchmarks.bulk --export DIR       # your own export (the default: the bundled tiny model)
    python -m benchmarks.bulk --quick            # smoke run: 100 documents, one repeat

Every configuration encodes the same corpus slice into a fresh output directory through
`encode_corpus`, so the time is what a user waits for after vetting: encoder (or actor) start-up,
encoding, writing and, for Ray, the merge of fragments into shards. Configurations alternate
across repeats (A B C A B C) so a busy neighbour slows all of them alike; the median counts. Ray
is started once, before the first repeat, and its start-up is reported on its own; a 16-document
Ray job measures the fixed cost of each job (actors, model loads, scheduling), and the rest is the
steady rate. Two corpora bracket MS MARCO's passage length (short Vaswani abstracts, long SciFact
ones), and a line through their steady per-core times gives the MS MARCO estimate. Writes
results/bulk-<date>.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

from splade_rt.machine import machine_info as machine

from .common import CACHE, HERE, SHARED, cached_export, save_figure

CONFIGS = {"local": {"engine": "local"}, "ray-1": {"engine": "ray", "workers": 1},
           "ray-2": {"engine": "ray", "workers": 2}}
MSMARCO_PASSAGES = 8_841_823
MSMARCO_TOKENS = 75  # assumed mean BERT tokens per MS MARCO passage (about 56 words); --msmarco-tokens
SMALL = 16  # documents of the run that measures Ray's fixed start-up cost per job


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--export", type=Path, help="an export directory (default: the bundled model, exported once)")
    p.add_argument("--docs", type=int, default=2000, help="documents per corpus (the first ones in file order)")
    p.add_argument("--corpora", nargs="+", default=["vaswani", "scifact"])
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--msmarco-tokens", type=float, default=MSMARCO_TOKENS)
    p.add_argument("--quick", action="store_true", help="100 documents, one repeat, results not written")
    p.add_argument("--note", default="", help="a line for the results (e.g. what else ran on the machine)")
    args = p.parse_args(argv)
    if args.quick:
        args.docs, args.repeats = 100, 1

    import ray

    from splade_rt import SpladeEncoder

    export = args.export or _bundled_export()
    load_before = os.getloadavg()[0]  # the machine may be shared: say how busy it was
    began = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - began
    cpus = int(ray.cluster_resources()["CPU"])
    encoder = SpladeEncoder(export, device="cpu", max_length=args.max_length)
    report = {"date": date.today().isoformat(), "machine": machine(), "export": str(export),
              "max_length": args.max_length, "repeats": args.repeats, "ray_cpus": cpus,
              "ray_start_seconds": round(ray_start, 2), "note": args.note, "corpora": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.corpora:
            corpus, small = _slice(name, args.docs, Path(tmp)), _slice(name, SMALL, Path(tmp))
            tokens = _mean_tokens(encoder, corpus)
            seconds: dict[str, list[float]] = {key: [] for key in [*CONFIGS, "ray-2-small"]}
            for _ in range(args.repeats):
                for key, config in CONFIGS.items():
                    seconds[key].append(_timed(export, corpus, Path(tmp) / f"{name}-{key}", args, config))
                seconds["ray-2-small"].append(_timed(export, small, Path(tmp) / f"{name}-small", args,
                                                     CONFIGS["ray-2"]))
            median = {key: statistics.median(v) for key, v in seconds.items()}
            rates = {key: args.docs / median[key] for key in CONFIGS}
            start_up = median["ray-2-small"]  # a job of 16 documents: almost all fixed cost
            steady = ((args.docs - SMALL) / (median["ray-2"] - start_up) if median["ray-2"] > start_up
                      else rates["ray-2"])  # too few documents to tell the start-up apart (--quick)
            report["corpora"][name] = {
                "documents": args.docs, "mean_tokens": round(tokens, 1), "seconds": seconds,
                "documents_per_s": {k: round(v, 1) for k, v in rates.items()},
                "ray_overhead": {k: round(rates["local"] / rates[k], 2) for k in ("ray-1", "ray-2")},
                "ray_job_start_seconds": round(start_up, 2), "ray_2_steady_documents_per_s": round(steady, 1),
                "per_core": {**{k: round(v / cpus, 1) for k, v in rates.items()},
                             "ray-2-steady": round(steady / cpus, 1)}}
    ray.shutdown()
    report["load_average"] = {"before": round(load_before, 1), "after": round(os.getloadavg()[0], 1)}
    report["msmarco"] = _msmarco(report, args.msmarco_tokens)
    print(markdown(report))
    if not args.quick:
        out = HERE / "results" / f"bulk-{report['date']}"
        out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        out.with_suffix(".md").write_text(markdown(report))
        plot(report, out.with_suffix(".png"))
        print(f"wrote {out}.json, .md, .png")
    return 0


def _timed(export: Path, corpus: Path, out: Path, args: argparse.Namespace, config: dict) -> float:
    """Seconds of one encode_corpus call after vetting, into a fresh output directory."""
    from splade_rt.bulk import encode_corpus

    summary = encode_corpus(export, corpus, out, device="cpu", max_length=args.max_length, progress=False,
                            force=True, **config)
    assert summary.encoded == summary.documents, summary
    print(f"{out.name}: {summary.documents} documents, {summary.seconds:.2f} s", flush=True)
    return summary.seconds


def _bundled_export() -> Path:
    return cached_export(None, CACHE / "export", log=lambda _: None)


def _slice(name: str, documents: int, tmp: Path) -> Path:
    """The first `documents` lines of a shared collection's corpus.jsonl, as a corpus file of its own."""
    source = SHARED / "data" / name / "corpus.jsonl"
    if not source.is_file():
        raise SystemExit(f"{source}: not found (set SPLADE_SHARED)")
    path = tmp / f"{name}-{documents}.jsonl"
    with open(source, encoding="utf-8") as f:
        path.write_text("".join(line for _, line in zip(range(documents), f)), encoding="utf-8")
    return path


def _mean_tokens(encoder, corpus: Path) -> float:
    """Mean tokens per document as the encoder feeds them (title + text, truncated)."""
    from splade_rt.evaluation.dataset import document_text

    rows = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines()]
    ids = encoder.tokenize([document_text(r.get("title"), r["text"]) for r in rows])
    return sum(map(len, ids)) / len(ids)


def _msmarco(report: dict, tokens: float) -> dict:
    """Seconds per document per core as a + b * tokens, through the two corpora's steady Ray 2-actor
    rates (a job's fixed start-up, seconds, is nothing next to hours), evaluated at MS MARCO's mean
    length; hours on N machines of C cores with the default one single-threaded actor per core."""
    points = [(c["mean_tokens"], 1 / c["per_core"]["ray-2-steady"]) for c in report["corpora"].values()]
    if len(points) < 2:
        return {}
    (x0, y0), (x1, y1) = points[0], points[-1]
    slope = (y1 - y0) / (x1 - x0)
    per_core = 1 / (y0 + slope * (tokens - x0))
    hours = {f"{n}x{c}": round(MSMARCO_PASSAGES / (per_core * n * c) / 3600, 2)
             for n, c in ((1, 2), (1, 16), (4, 16), (16, 16), (64, 16))}
    return {"passages": MSMARCO_PASSAGES, "mean_tokens": tokens, "documents_per_s_per_core": round(per_core, 1),
            "hours": hours}


def markdown(report: dict) -> str:
    m = report["machine"]
    header = (f"Machine: {m['cpu']}, {m['cores']} cores ({', '.join(m['isa'])}); {report['date']}; export "
              f"`{report['export']}`, max length {report['max_length']}; median of {report['repeats']} alternating "
              f"repeats; Ray on {report['ray_cpus']} CPUs, started once ({report['ray_start_seconds']} s, not "
              f"counted); load average {report['load_average']['before']} before, "
              f"{report['load_average']['after']} after. Command: `python -m benchmarks.bulk`.")
    columns = ("| corpus | documents | mean tokens | local docs/s | Ray 1 actor | Ray 2 actors | local / Ray 1 | "
               "local / Ray 2 | Ray job start-up s | Ray 2 steady docs/s | per core, steady |")
    lines = [header, "", *([f"Note: {report['note']}", ""] if report["note"] else []), columns,
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, c in report["corpora"].items():
        r = c["documents_per_s"]
        lines.append(f"| {name} | {c['documents']} | {c['mean_tokens']} | {r['local']} | {r['ray-1']} | {r['ray-2']} "
                     f"| {c['ray_overhead']['ray-1']}x | {c['ray_overhead']['ray-2']}x | {c['ray_job_start_seconds']} "
                     f"| {c['ray_2_steady_documents_per_s']} | {c['per_core']['ray-2-steady']} |")
    ms = report.get("msmarco")
    if ms:
        lines += ["", f"MS MARCO estimate ({ms['passages']:,} passages, {ms['mean_tokens']:g} tokens assumed): "
                  f"{ms['documents_per_s_per_core']} documents/s per core; hours on machines x cores: "
                  + ", ".join(f"{k}: {v}" for k, v in ms["hours"].items()) + "."]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corpora = list(report["corpora"])
    fig, ax = plt.subplots(figsize=(7, 3.8))
    width = 0.8 / len(CONFIGS)
    for i, key in enumerate(CONFIGS):
        values = [report["corpora"][c]["documents_per_s"][key] for c in corpora]
        bars = ax.bar([x + i * width for x in range(len(corpora))], values, width, label=key)
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.set_xticks([x + width for x in range(len(corpora))],
                  [f"{c} ({report['corpora'][c]['mean_tokens']:.0f} tokens)" for c in corpora])
    ax.set_ylabel("documents/s")
    ax.legend()
    title = f"splade-encode-corpus, {report['machine']['cores']} cores, max length {report['max_length']}"
    save_figure(fig, path, title)


if __name__ == "__main__":
    raise SystemExit(main())
