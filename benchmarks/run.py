"""splade-rt against sentence-transformers and the other peers, side by side in one run, on real text.

    python -m benchmarks.run            # full run: the bundled tiny model and a base-size one
    python -m benchmarks.run --quick    # smoke run, what the tests run (tiny model, no peers)

Two models: the bundled trained BERT-tiny on the benchmark's passages, and a random-weight
base-size BERT (benchmarks.base_size) on 96 held-out SciFact passages at max length 256, batch 32.
The peers (benchmarks.peers) run from their own venvs. Each configuration runs in its own
subprocess, configurations alternate across repeats (A B C A B C ...) so machine drift hits all
alike, and the median of the repeats is reported (each repeat: the median of its timed passes over
the passages, at least --min-seconds of them). Every configuration's vectors are compared with
sentence-transformers torch fp32 on the same model, so a fast wrong answer shows. Writes
results/<machine>-<date>.json, .md and .png.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

from splade_rt.bench.measure import compare_rows
from splade_rt.bench.runner import run_worker
from splade_rt.kernels.native_head import unavailable
from splade_rt.machine import machine_info
from splade_rt.variants import VARIANTS

from . import base_size
from .common import (
    REPO,
    SHARED,
    candidate_count,
    cell,
    load_texts,
    prepare_models,
    save_figure,
    script_parser,
    table_head,
    why_not,
)
from .peers import QUALITY_PAIRS, int8_quality, peer_configurations, quality_line, run_peer

REFERENCE = "st-torch"
BASE = "base-"  # the base-size model's configurations: its names start with this
MODELS = {"": "splade-tiny-msmarco (bundled, trained)", BASE: base_size.LABEL}
INT8_LABEL = "splade-rt int8 encoder, exact screened head (lossy, opt-in)"
INT8_NATIVE_LABEL = "splade-rt int8 encoder, exact native head (lossy, opt-in)"
NATIVE_LABEL = "splade-rt exact native head CPU (default with AVX-512 VNNI)"
SCREENED_LABEL = "splade-rt exact int8-screened graph CPU (default without AVX-512 VNNI)"


def configurations(paths: dict[str, Path], gpu: bool, peers: bool = False,
                   only: list[str] | None = None) -> dict[str, dict]:
    configs = {
        REFERENCE: {"kind": "st", "st_dir": str(paths["st"]), "label": "sentence-transformers torch fp32"},
        "rt-fp32": {"kind": "rt", "export_dir": str(paths["chunked"]), "variant": "fp32", "device": "cpu",
                    "label": "splade-rt fp32 CPU (chunked vocab)"},
        "rt-native": {"kind": "rt", "export_dir": str(paths["chunked"]), "variant": "fp32-native", "device": "cpu",
                      "label": NATIVE_LABEL},
        "rt-screened": {"kind": "rt", "export_dir": str(paths["chunked"]), "variant": "fp32-screened",
                        "device": "cpu", "label": SCREENED_LABEL},
        "rt-screened-serial": {"kind": "rt", "export_dir": str(paths["chunked"]), "variant": "fp32-screened",
                               "device": "cpu", "workers": 1,
                               "label": "splade-rt exact int8-screened, one batch at a time (workers=1)"},
        "rt-int8": {"kind": "rt", "export_dir": str(paths["chunked"]), "variant": "int8", "device": "cpu",
                    "label": INT8_LABEL},
        "rt-int8-native": {"kind": "rt", "export_dir": str(paths["chunked"]), "variant": "int8-native",
                           "device": "cpu", "label": INT8_NATIVE_LABEL},
    }
    if "naive" in paths:
        configs["rt-fp32-unchunked"] = {"kind": "rt", "export_dir": str(paths["naive"]), "variant": "fp32",
                                        "device": "cpu", "label": "splade-rt fp32 CPU (one chunk: logits materialized)"}
    if peers:  # each in its own venv (benchmarks.peers); one that can't be set up says why in its row
        configs.update(peer_configurations(paths["st"], only=only, log=lambda line: print(line, flush=True)))
    if gpu:
        configs["st-torch-cuda-fp16"] = {"kind": "st", "st_dir": str(paths["st"]), "device": "cuda", "fp16": True,
                                         "label": "sentence-transformers torch fp16 CUDA"}
        configs["rt-fp16-cuda"] = {"kind": "rt", "export_dir": str(paths["chunked"]), "device": "cuda",
                                   "label": "splade-rt fp16 CUDA EP"}
    return configs


def base_configurations(model: Path, export: Path, passages: list[str], peers: bool = False,
                        only: list[str] | None = None) -> dict[str, dict]:
    """The base-size model's configurations (names prefixed BASE), each with its own passages."""
    common = {"passages": passages, "passage_tokens": count_tokens(export, passages), "batch_sizes": [32],
              "check_rows": len(passages), "max_length": base_size.MAX_LENGTH}
    configs = {
        REFERENCE: {"kind": "st", "mlm_dir": str(model), "label": "sentence-transformers torch fp32"},
        "rt-fp32": {"kind": "rt", "export_dir": str(export), "variant": "fp32", "label": "splade-rt fp32 CPU"},
        "rt-native": {"kind": "rt", "export_dir": str(export), "variant": "fp32-native", "label": NATIVE_LABEL},
        "rt-screened": {"kind": "rt", "export_dir": str(export), "variant": "fp32-screened", "label": SCREENED_LABEL},
        "rt-int8": {"kind": "rt", "export_dir": str(export), "variant": "int8", "label": INT8_LABEL},
        "rt-int8-native": {"kind": "rt", "export_dir": str(export), "variant": "int8-native",
                           "label": INT8_NATIVE_LABEL},
    }
    if peers:
        wanted = None if only is None else [n[len(BASE):] for n in only if n.startswith(BASE)]
        configs.update(peer_configurations(model, max_length=base_size.MAX_LENGTH, only=wanted,
                                           log=lambda line: print(line, flush=True)))
    return {BASE + name: {**spec, **common} for name, spec in configs.items()}


def count_tokens(export_dir: Path, texts: list[str]) -> int:
    from splade_rt import SpladeEncoder

    return sum(len(ids) for ids in SpladeEncoder(export_dir, device="cpu").tokenize(texts))


def main(argv: list[str] | None = None) -> int:
    p = script_parser(__doc__)
    p.add_argument("--quick", action="store_true", help="smoke run: few texts, one repeat, no memory runs")
    p.add_argument("--repeats", type=int, help="alternating repeats per configuration (default 3; quick 1)")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads for every configuration")
    p.add_argument("--only", nargs="*", help="configuration names to run (the reference always runs)")
    p.add_argument("--min-seconds", type=float, default=8.0,
                   help="time passes over the passages for at least this long per batch size; report the median")
    p.add_argument("--gpu", action="store_true", help="add the CUDA configurations")
    p.add_argument("--no-peers", action="store_true",
                   help="leave out the peers run from their own venvs (--quick always does)")
    p.add_argument("--no-base", action="store_true", help="leave out the base-size model (--quick always does)")
    p.add_argument("--st-dir", type=Path, help="sentence-transformers copy of the model")
    p.add_argument("--name", help="result file stem (default <machine>-<date>)")
    args = p.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    started = time.perf_counter()

    passages, queries = load_texts(args.quick)
    paths = prepare_models(args.st_dir, naive=not args.quick)
    peers = not (args.quick or args.no_peers)
    configs = configurations(paths, args.gpu, peers=peers, only=args.only)
    if not (args.quick or args.no_base):
        base_model, base_export = base_size.build()
        base_passages = base_size.held_out_passages()
        configs.update(base_configurations(base_model, base_export, base_passages, peers=peers, only=args.only))
    if args.only:
        configs = {k: v for k, v in configs.items() if k in (REFERENCE, BASE + REFERENCE) or k in args.only}
    native_missing = unavailable()
    for cfg in configs.values():  # the native variants say why they can't run here, in their rows
        if native_missing and cfg.get("variant") in VARIANTS and VARIANTS[cfg["variant"]].native:
            cfg["unavailable"] = f"the native head can't run here: {native_missing}"
    passage_tokens = count_tokens(paths["chunked"], passages)
    common = {"threads": args.threads, "passages": passages, "queries": queries, "passage_tokens": passage_tokens,
              "batch_sizes": [32] if args.quick else [32, 128], "check_rows": min(64, len(passages)),
              "min_seconds": 0 if args.quick else args.min_seconds}
    runs: dict[str, list[dict]] = {k: [] for k, c in configs.items() if "unavailable" not in c}
    for r in range(repeats):
        for name, done in runs.items():
            print(f"[{time.perf_counter() - started:6.1f}s] repeat {r + 1}/{repeats}: {name}", flush=True)
            spec = {**common, **configs[name]}  # a peer's spec sets its own batch sizes
            done.append(run_peer(spec, timeout=1800) if spec.get("peer") else run_worker(spec, timeout=600, cwd=REPO))

    memory = {}
    if not args.quick:  # peak RSS at batch 64 x 256 tokens, each in a fresh process
        long_texts = [t for t in passages if len(t) > 1600][:64]
        long_texts = (long_texts * 64)[:64]
        for name in [n for n in (REFERENCE, "rt-fp32", "rt-native", "rt-screened", "rt-fp32-unchunked") if n in runs]:
            print(f"[{time.perf_counter() - started:6.1f}s] memory: {name}", flush=True)
            memory[name] = run_worker({**common, **configs[name], "memory_only": True, "passages": long_texts,
                                       "memory_batch": 64, "max_length": 256, "max_batch_tokens": 64 * 256},
                                      timeout=600, cwd=REPO)

    results = summarize(configs, runs, memory)
    for name in (BASE + "rt-screened", BASE + "rt-int8"):  # how much the screen lets through, random weights
        if "error" not in results.get(name, {"error": None}):
            results[name]["candidates_per_nonzero"] = candidates_per_nonzero(configs[name], runs[name])
    for int8 in QUALITY_PAIRS:  # each int8 peer's retrieval loss against its fp32 export, on the tiny model
        if int8 in runs and "error" not in results[int8]:
            results[int8]["quality"] = int8_quality(configs, SHARED / "data" / "scifact", int8=int8,
                                                    threads=args.threads)
    report = {"machine": machine_info(), "date": date.today().isoformat(), "threads": args.threads,
              "repeats": repeats, "min_seconds": common["min_seconds"], "quick": args.quick,
              "passages": len(passages), "queries": len(queries), "models": MODELS,
              "base_passages": len(configs.get(BASE + REFERENCE, {}).get("passages", [])),
              "mean_passage_tokens": passage_tokens / len(passages), "command": " ".join(["python -m benchmarks.run"]
                                                                                        + (argv or sys.argv[1:])),
              "results": results, "wall_s": round(time.perf_counter() - started, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.name or f"{platform.machine()}-{os.cpu_count()}cpu-{report['date']}" + ("-quick" if args.quick else "")
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (args.out / f"{stem}.md").write_text(table)
    plot(report, args.out / f"{stem}.png")
    print(table)
    print(f"wrote {args.out / stem}.{{json,md,png}} in {report['wall_s']} s")
    return 0


def candidates_per_nonzero(config: dict, runs: list[dict]) -> float:
    """Vocab entries the screen passes to the exact pass per true non-zero, over the config's passages."""
    from splade_rt import SpladeEncoder

    encoder = SpladeEncoder(config["export_dir"], device="cpu", variant=config["variant"])
    nonzeros = sum(len(row) for row in next(r for r in runs if "vectors" in r)["vectors"])
    return round(candidate_count(encoder, config["passages"]) / max(nonzeros, 1), 3)


def reference_of(name: str) -> str:
    return BASE + REFERENCE if name.startswith(BASE) else REFERENCE


def summarize(configs: dict, runs: dict, memory: dict) -> dict:
    """Each configuration's entry: the medians of its repeats' numbers, its vectors checked against its
    model's sentence-transformers torch run, its speed as a multiple of that run's."""
    reference_rows = {name: next((r["vectors"] for r in runs.get(name, []) if "vectors" in r), None)
                      for name in (REFERENCE, BASE + REFERENCE)}
    out = {}
    for name, cfg in configs.items():
        entry = {"label": cfg["label"]}
        if "unavailable" in cfg:
            entry["unavailable"] = cfg["unavailable"]
            out[name] = entry
            continue
        good = [r for r in runs[name] if "error" not in r]
        if not good:
            entry["error"] = runs[name][0]["error"]
            out[name] = entry
            continue
        for key, first in good[0].items():
            if key == "vectors":
                continue
            numeric = isinstance(first, (int, float)) and not isinstance(first, bool)
            # numbers: the median over the repeats; labels (provider, graph, versions): the first run's
            entry[key] = statistics.median(r[key] for r in good) if numeric else first
        if reference_rows[reference_of(name)] is not None:
            entry["check_vs_reference"] = compare_rows(reference_rows[reference_of(name)], good[0]["vectors"])
        if name in memory:
            entry["peak_rss_mib_b64x256"] = memory[name].get("peak_rss_mib", memory[name].get("error"))
        out[name] = entry
    for name, entry in out.items():
        ref = out.get(reference_of(name), {})
        for key in ("passages_per_s_b32", "passages_per_s_b128"):
            if key in entry and key in ref:
                entry[key.replace("passages_per_s", "speedup")] = entry[key] / ref[key]
    return out


COLUMNS = ["configuration", "passages/s b32", "b128", "x ST b32", "tokens/s b32", "query p50 ms", "p99 ms",
           "cold start s", "import s", "peak RSS MiB", "RSS b64x256 MiB", "max abs diff", "top-64 overlap",
           "active-term Jaccard", "screen candidates per non-zero"]


def by_model(results: dict) -> dict[str, list[dict]]:
    """The entries of each model (MODELS' prefixes), in run order."""
    groups: dict[str, list[dict]] = {prefix: [] for prefix in MODELS}
    for name, entry in results.items():
        groups[BASE if name.startswith(BASE) else ""].append(entry)
    return {prefix: entries for prefix, entries in groups.items() if entries}


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [(f"Machine: {m['cpu']}, {m['cores']} cores ({', '.join(m['isa']) or 'no AVX2'}), "
              f"{report['threads']} intra-op threads; {report['date']}; median of {report['repeats']} alternating "
              f"repeats (each the median pass of >= {report.get('min_seconds', 0):g} s). Vectors are checked "
              f"against sentence-transformers torch on the same model. Command: `{report['command']}`.")]
    texts = {"": (f"{report['passages']} passages (mean {report['mean_passage_tokens']:.0f} tokens), "
                  f"{report['queries']} queries"),
             BASE: (f"{report.get('base_passages')} held-out SciFact passages at max length {base_size.MAX_LENGTH}, "
                    f"batch 32; the same {report['queries']} queries")}
    f = cell
    for prefix, entries in by_model(report["results"]).items():
        lines += ["", f"**{report.get('models', MODELS)[prefix]}**: {texts[prefix]}.", "", *table_head(COLUMNS)]
        for e in entries:
            if why_not(e):
                lines.append(f"| {e['label']} | {why_not(e)} |"
                             + " |" * (len(COLUMNS) - 2))
                continue
            chk = e.get("check_vs_reference", {})
            lines.append(" | ".join([
                f"| {e['label']}", f(e, "passages_per_s_b32", ".1f"), f(e, "passages_per_s_b128", ".1f"),
                f(e, "speedup_b32", ".2f") + "x", f(e, "tokens_per_s_b32", ".0f"), f(e, "query_p50_ms", ".2f"),
                f(e, "query_p99_ms", ".2f"), f(e, "cold_start_s", ".2f"), f(e, "import_s", ".2f"),
                f(e, "peak_rss_mib", ".0f"), f(e, "peak_rss_mib_b64x256", ".0f"), f(chk, "max_abs_diff", ".1e"),
                f(chk, "top64_overlap", ".4f"), f(chk, "active_term_jaccard", ".4f"),
                f(e, "candidates_per_nonzero", ".2f")]) + " |")
        for int8 in QUALITY_PAIRS:
            quality = report["results"].get(prefix + int8, {}).get("quality")
            if quality:
                lines += ["", quality_line(quality)]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no chart")
        return
    groups = {prefix: [(e["label"].replace(" (", "\n("), e) for e in entries if "passages_per_s_b32" in e]
              for prefix, entries in by_model(report["results"]).items()}
    groups = {prefix: rows for prefix, rows in groups.items() if rows}
    heights = [len(rows) for rows in groups.values()]
    fig, grid = plt.subplots(len(groups), 2, figsize=(13, 0.8 * sum(heights) + 2.5 * len(groups)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for (prefix, rows), axes in zip(groups.items(), grid):
        y = np.arange(len(rows))
        for key, offset, name in (("passages_per_s_b32", -0.2, "batch 32"), ("passages_per_s_b128", 0.2, "batch 128")):
            if any(key in e for _, e in rows):
                axes[0].barh(y + offset, [e.get(key, 0) for _, e in rows], height=0.4, label=name)
        axes[0].set_xlabel("passages / s (higher is better)")
        axes[0].legend(fontsize=8)
        axes[0].set_title(report.get("models", MODELS)[prefix], fontsize=9, loc="left")
        axes[1].barh(y - 0.2, [e["query_p50_ms"] for _, e in rows], height=0.4, label="p50")
        axes[1].barh(y + 0.2, [e["query_p99_ms"] for _, e in rows], height=0.4, label="p99")
        axes[1].set_xlabel("query latency at batch 1, ms (lower is better)")
        axes[1].legend(fontsize=8)
        for ax in axes:
            ax.set_yticks(y)
            ax.set_yticklabels([label for label, _ in rows], fontsize=7)
            ax.invert_yaxis()
    m = report["machine"]
    save_figure(fig, path, f"{m['cpu']} ({m['cores']} cores), {report['threads']} threads, {report['date']}")


if __name__ == "__main__":
    sys.exit(main())
