"""`splade-bench`: measure an export on this machine (and GPU), optionally beside sentence-transformers.

    splade-bench EXPORT_DIR [--texts FILE | --dataset BEIR_DIR] [--device cpu] [--batch-size 32 128]
                 [--variant ...] [--compare] [--json OUT]

Each configuration runs in its own process (bench.worker), so its cold start and peak memory are its
own; the numbers are those of `python -m benchmarks.run` in the repository, which uses the same code.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

from ..errors import SpladeError
from ..validation import positive_int_arg
from .measure import compare_rows, machine_info
from .runner import run_worker


def load_texts(texts_file: Path | None, dataset: Path | None, limit: int) -> tuple[list[str], list[str]]:
    """(passages, queries): a file of one passage per line, a BEIR dataset, or the bundled real texts."""
    if texts_file is not None:
        try:
            lines = [t for t in texts_file.read_text(encoding="utf-8").splitlines() if t.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise SpladeError(f"{texts_file}: cannot read it as UTF-8 text ({e})") from None
        if not lines:
            raise SpladeError(f"{texts_file}: no text in it (one passage per line)")
        return lines[:limit], [" ".join(t.split()[:8]) for t in lines[:200]]
    if dataset is not None:
        from ..evaluation.dataset import read_records

        for name in ("corpus.jsonl", "queries.jsonl"):
            if not (dataset / name).is_file():
                raise SpladeError(f"{dataset / name}: missing (--dataset takes a BEIR directory)")
        return (list(read_records(dataset / "corpus.jsonl", with_title=True, limit=limit).values()),
                list(read_records(dataset / "queries.jsonl", with_title=False, limit=200).values()))
    from ..export.texts import PASSAGES, QUERIES

    return (PASSAGES * (limit // len(PASSAGES) + 1))[:limit], (QUERIES * 25)[:200]


def reference_spec(export_dir: Path, device: str) -> dict:
    """sentence-transformers on the model the export was made from (its directory must be here), on
    splade-rt's device (bench.worker.torch_device: TensorRT's GPU is CUDA to torch)."""
    from ..manifest import read_manifest

    manifest = read_manifest(export_dir)
    source = manifest.source
    if str(source.get("model", "")).startswith("default:"):
        from importlib import resources

        path = Path(str(resources.files("splade_rt") / "models" / str(source["model"]).split(":", 1)[1]))
    else:
        path = Path(str(source.get("path", "")))
    if not (path / "config.json").is_file():
        raise SpladeError(f"--compare needs the model the export was made from; {path} is not a model directory here")
    return {"kind": "st", "mlm_dir": str(path), "activation": manifest.model.activation,
            "max_length": manifest.tokenizer.max_length, "device": device,
            "label": f"sentence-transformers torch fp32 {device}"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="splade-bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("export_dir", type=Path)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--texts", type=Path, help="passages, one per line (default: bundled real passages)")
    source.add_argument("--dataset", type=Path, help="a BEIR directory: its corpus and queries")
    p.add_argument("--limit", type=positive_int_arg, default=512, help="passages to time (default 512)")
    p.add_argument("--device", default="cpu", help="cpu | cuda[:N] | tensorrt[:N] (default cpu)")
    p.add_argument("--variant", help="graph to run (default: the device's best, as SpladeEncoder picks)")
    p.add_argument("--batch-size", type=positive_int_arg, nargs="+", default=[32, 128])
    p.add_argument("--threads", type=positive_int_arg, help="CPU intra-op threads (default: all cores)")
    p.add_argument("--min-seconds", type=float, default=3.0, help="time passes for at least this long per batch size")
    p.add_argument("--compare", action="store_true", help="also run sentence-transformers torch on the source model")
    p.add_argument("--json", type=Path, help="write the report here")
    args = p.parse_args(argv)
    try:
        report = benchmark(args)
    except SpladeError as e:
        print(f"splade-bench: error: {e}", file=sys.stderr)
        return 2
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all("error" not in r for r in report["results"].values()) else 1


def benchmark(args: argparse.Namespace) -> dict:
    import os

    from ..runtime.cli import load_encoder

    # vets the export and counts tokens, on the CPU: the graph asked for, so that an export carrying only
    # its GPU graph can be measured on the GPU
    encoder = load_encoder("splade-bench", args.export_dir, device="cpu", variant=args.variant)
    passages, queries = load_texts(args.texts, args.dataset, args.limit)
    threads = args.threads or len(os.sched_getaffinity(0))
    common = {"threads": threads, "passages": passages, "queries": queries, "batch_sizes": args.batch_size,
              "passage_tokens": sum(len(ids) for ids in encoder.tokenize(passages)), "min_seconds": args.min_seconds,
              "check_rows": min(64, len(passages))}
    configs = {"splade-rt": {"kind": "rt", "export_dir": str(args.export_dir), "device": args.device,
                             "variant": args.variant, "label": f"splade-rt {args.variant or 'default'} {args.device}"}}
    if args.compare:
        configs["sentence-transformers"] = reference_spec(args.export_dir, args.device)
    results = {}
    for name, spec in configs.items():
        print(f"splade-bench: measuring {spec['label']} ...", file=sys.stderr, flush=True)
        results[name] = {"label": spec["label"], **run_worker({**common, **spec}, timeout=3600)}
    reference = results.get("sentence-transformers", {})
    for entry in results.values():
        if "vectors" in reference and "vectors" in entry:
            entry["check_vs_sentence_transformers"] = compare_rows(reference["vectors"], entry["vectors"])
        for b in args.batch_size:
            key = f"passages_per_s_b{b}"
            if key in entry and key in reference:
                entry[f"x_sentence_transformers_b{b}"] = entry[key] / reference[key]
    for entry in results.values():
        entry.pop("vectors", None)
    return {"date": date.today().isoformat(), "machine": machine_info(), "threads": threads,
            "passages": len(passages), "queries": len(queries), "mean_passage_tokens": common["passage_tokens"]
            / len(passages), "batch_sizes": args.batch_size, "results": results}


def table(report: dict) -> str:
    m = report["machine"]
    lines = [f"# {m['cpu']}, {m['cores']} cores ({', '.join(m['isa']) or 'no AVX2'}), {report['threads']} threads; "
             f"{report['passages']} passages (mean {report['mean_passage_tokens']:.0f} tokens), "
             f"{report['queries']} queries"]
    for entry in report["results"].values():
        if "error" in entry:
            lines.append(f"{entry['label']}: failed: {entry['error']}")
            continue
        where = f" [{entry['provider']}, {entry['graph']}]" if "provider" in entry else ""
        lines.append(f"{entry['label']}{where}")
        for b in report["batch_sizes"]:
            ratio = entry.get(f"x_sentence_transformers_b{b}")
            lines.append(f"  batch {b:4d}: {entry[f'passages_per_s_b{b}']:9.1f} passages/s "
                         f"{entry[f'tokens_per_s_b{b}']:10.0f} tokens/s" + (f"  {ratio:.2f}x ST" if ratio else ""))
        lines.append(f"  query at batch 1: p50 {entry['query_p50_ms']:.2f} ms, p99 {entry['query_p99_ms']:.2f} ms; "
                     f"cold start {entry['cold_start_s']:.2f} s; peak RSS {entry['peak_rss_mib']:.0f} MiB"
                     + (f"; GPU {entry['gpu_memory_mib']:.0f} MiB" if "gpu_memory_mib" in entry else ""))
        check = entry.get("check_vs_sentence_transformers")
        if check:
            lines.append(f"  vs sentence-transformers: max abs diff {check['max_abs_diff']:.1e}, "
                         f"top-64 overlap {check['top64_overlap']:.4f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
