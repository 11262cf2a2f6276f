"""`splade-bench`: measure an export on this machine (and GPU), optionally beside sentence-transformers.

    splade-bench EXPORT_DIR [--texts FILE | --dataset BEIR_DIR] [--device cpu] [--batch-size 32 128]
                 [--variant ...] [--compare] [--json OUT]

Without --texts or --dataset it times the texts of the README's figures (SciFact and Vaswani) when
SPLADE_SHARED names the shared data folder, else the bundled parity passages (and says that those
are not comparable).

Each configuration runs in its own process (bench.worker), so its cold start and peak memory are its
own; the numbers are those of `python -m benchmarks.run` in the repository, which uses the same code.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import sys
from datetime import date
from pathlib import Path

from ..cli_support import (
    add_verbose,
    device_arg,
    device_help,
    non_negative_float,
    output_file,
    run,
    variant_choices,
    variant_help,
)
from ..errors import DeviceError, SpladeError
from ..machine import machine_info
from ..validation import positive_int_arg
from .measure import compare_rows
from .runner import run_worker

PROG = "splade-bench"
# the collections whose texts the README's figures time (benchmarks.run: half the passages from each)
FIGURE_COLLECTIONS = ("scifact", "vaswani")
QUERIES = 200


def shared_dir() -> Path | None:
    """The shared data folder named by SPLADE_SHARED (models/, data/<BEIR collection>/), if set."""
    value = os.environ.get("SPLADE_SHARED")
    return Path(value).expanduser() if value else None


def figure_collections(shared: Path) -> list[Path]:
    """The collections of the README's figures that the shared folder holds."""
    folders = [shared / "data" / name for name in FIGURE_COLLECTIONS]
    return [folder for folder in folders if (folder / "corpus.jsonl").is_file()]


def figure_texts(shared: Path, limit: int, queries: int = QUERIES) -> tuple[list[str], list[str]]:
    """(passages, queries) as the README's figures time them: the first passages and queries of each
    shared collection found, in equal parts; ([], []) when none is there."""
    from ..evaluation.dataset import read_records

    found = figure_collections(shared)
    passages: list[str] = []
    texts: list[str] = []
    for i, folder in enumerate(found):
        share = -(-(limit - len(passages)) // (len(found) - i))  # what is left, in equal parts (rounded up)
        passages += read_records(folder / "corpus.jsonl", with_title=True, limit=share).values()
        texts += read_records(folder / "queries.jsonl", with_title=False, limit=queries // len(found)).values()
    return passages[:limit], texts


def load_texts(texts_file: Path | None, dataset: Path | None, limit: int) -> tuple[list[str], list[str], str]:
    """(passages, queries, what they are): a file of one passage per line, a BEIR dataset, the shared
    collections of the README's figures (SPLADE_SHARED), else the bundled parity passages."""
    if texts_file is not None:
        try:
            lines = [t for t in texts_file.read_text(encoding="utf-8").splitlines() if t.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise SpladeError(f"{texts_file}: cannot read it as UTF-8 text ({e})") from None
        if not lines:
            raise SpladeError(f"{texts_file}: no text in it (one passage per line)")
        return lines[:limit], [" ".join(t.split()[:8]) for t in lines[:QUERIES]], f"passages from {texts_file}"
    if dataset is not None:
        from ..evaluation.dataset import read_records

        for name in ("corpus.jsonl", "queries.jsonl"):
            if not (dataset / name).is_file():
                raise SpladeError(f"{dataset / name}: missing (--dataset takes a BEIR directory)")
        return (list(read_records(dataset / "corpus.jsonl", with_title=True, limit=limit).values()),
                list(read_records(dataset / "queries.jsonl", with_title=False, limit=QUERIES).values()),
                f"passages from {dataset}")
    shared = shared_dir()
    if shared is not None:
        passages, queries = figure_texts(shared, limit)
        if passages:
            names = " and ".join(folder.name for folder in figure_collections(shared))
            return passages, queries, f"{names} from SPLADE_SHARED={shared}, as the README's figures"
    from ..export import texts

    where = (f"SPLADE_SHARED={shared} has no {' or '.join(FIGURE_COLLECTIONS)}" if shared
             else "SPLADE_SHARED is not set")
    parity = texts.PASSAGES
    return ((parity * (limit // len(parity) + 1))[:limit], (texts.QUERIES * 25)[:QUERIES],
            f"the {len(parity)} bundled parity passages, repeated: not comparable with the README's figures "
            f"({where}; pass --dataset BEIR_DIR or set SPLADE_SHARED to the shared data folder)")


def reference_spec(export_dir: Path, device: str) -> dict:
    """The library a user would run instead, on the model the export was made from (its directory must
    be here), on splade-rt's device (bench.worker.torch_device: TensorRT's GPU is CUDA to torch):
    sentence-transformers for a SPLADE export, FlagEmbedding for a bge-m3 one (head token-max)."""
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
    common = {"max_length": manifest.tokenizer.max_length, "device": device}
    if manifest.model.heads["document"] == "token-max":
        if importlib.util.find_spec("FlagEmbedding") is None:
            raise SpladeError("--compare on a bge-m3 export runs FlagEmbedding: pip install FlagEmbedding")
        return {**common, "kind": "flag", "model_dir": str(path), "short": "FlagEmbedding",
                "label": f"FlagEmbedding BGEM3FlagModel fp32 {device}"}
    return {**common, "kind": "st", "mlm_dir": str(path), "activation": manifest.model.activation, "short": "ST",
            "label": f"sentence-transformers torch fp32 {device}"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("export_dir", type=Path, help="a directory written by splade-export")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--texts", type=Path, help="passages, one per line")
    source.add_argument("--dataset", type=Path, help="a BEIR directory: its corpus and queries")
    p.add_argument("--limit", type=positive_int_arg, default=512, help="passages to time (default 512)")
    p.add_argument("--device", default="cpu", type=device_arg, help=device_help(default="cpu"))
    p.add_argument("--variant", choices=variant_choices(), metavar="VARIANT", help=variant_help())
    p.add_argument("--batch-size", type=positive_int_arg, nargs="+", default=[32, 128])
    p.add_argument("--threads", type=positive_int_arg, help="CPU intra-op threads (default: all cores)")
    p.add_argument("--min-seconds", type=non_negative_float, default=3.0,
                   help="time passes for at least this long per batch size (default 3)")
    p.add_argument("--compare", action="store_true", help="also run sentence-transformers torch on the source model "
                   "(FlagEmbedding for a bge-m3 export), and compare vectors and speed")
    p.add_argument("--json", type=output_file, help="write the report here")
    add_verbose(p)
    return p


def check_device(device: str) -> None:
    """A GPU device whose provider this onnxruntime lacks is an error here, before any worker starts.
    Without opening a session: a CUDA context in this process would count in the worker's GPU memory."""
    import onnxruntime as ort

    from ..runtime.providers import PROVIDERS, parse_device

    kind, _ = parse_device(device)
    spec = PROVIDERS.get(kind)
    available = ort.get_available_providers()
    if spec is not None and spec.provider not in available:
        raise DeviceError(f"device={device!r} but the installed onnxruntime has no {spec.label} execution provider "
                          f"(it has: {', '.join(available)}); install {spec.install}")


def _run(args: argparse.Namespace) -> int:
    check_device(args.device)
    if args.compare and importlib.util.find_spec("sentence_transformers") is None:
        raise SpladeError("--compare needs sentence-transformers: pip install 'splade-rt[bench]'")
    report = benchmark(args)
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    failed = [entry for entry in report["results"].values() if "error" in entry]
    for entry in failed:
        print(f"{PROG}: error: {entry['label']}: {entry['error']}", file=sys.stderr)
    return 2 if failed else 0


def main(argv: list[str] | None = None) -> int:
    return run(parser(), _run, argv)


def benchmark(args: argparse.Namespace) -> dict:
    from ..runtime.cli import load_encoder

    # vets the export and counts tokens, on the CPU: the graph asked for, so that an export carrying only
    # its GPU graph can be measured on the GPU
    encoder = load_encoder(PROG, args.export_dir, device="cpu", variant=args.variant)
    passages, queries, what = load_texts(args.texts, args.dataset, args.limit)
    threads = args.threads or len(os.sched_getaffinity(0))
    common = {"threads": threads, "passages": passages, "queries": queries, "batch_sizes": args.batch_size,
              "passage_tokens": sum(len(ids) for ids in encoder.tokenize(passages)), "min_seconds": args.min_seconds,
              "check_rows": min(64, len(passages))}
    configs = {"splade-rt": {"kind": "rt", "export_dir": str(args.export_dir), "device": args.device,
                             "variant": args.variant, "label": f"splade-rt {args.variant or 'default'} {args.device}"}}
    if args.compare:
        configs["reference"] = reference_spec(args.export_dir, args.device)
    results = {}
    for name, spec in configs.items():
        print(f"{PROG}: measuring {spec['label']} ...", file=sys.stderr, flush=True)
        result = run_worker({**common, **spec}, timeout=3600)
        if "error" in result:  # the worker's last line: a SpladeError's message without its class path
            result["error"] = re.sub(r"^splade_rt\.errors\.\w+: ", "", result["error"])
        results[name] = {"label": spec["label"], **result}
    reference = results.get("reference", {})
    for name, entry in results.items():
        if name == "reference":
            continue
        if "vectors" in reference and "vectors" in entry:
            entry["check_vs_reference"] = compare_rows(reference["vectors"], entry["vectors"])
        for b in args.batch_size:
            key = f"passages_per_s_b{b}"
            if key in entry and key in reference:
                entry[f"x_reference_b{b}"] = entry[key] / reference[key]
    for entry in results.values():
        entry.pop("vectors", None)
    return {"date": date.today().isoformat(), "machine": machine_info(), "threads": threads,
            "passages": len(passages), "texts": what, "queries": len(queries),
            "mean_passage_tokens": common["passage_tokens"] / len(passages), "batch_sizes": args.batch_size,
            "reference": configs["reference"]["short"] if args.compare else None, "results": results}


def table(report: dict) -> str:
    m = report["machine"]
    lines = [f"# {m['cpu']}, {m['cores']} cores ({', '.join(m['isa']) or 'no AVX2'}), {report['threads']} threads; "
             f"{report['passages']} passages (mean {report['mean_passage_tokens']:.0f} tokens), "
             f"{report['queries']} queries"]
    if "texts" in report:
        lines.append(f"# texts: {report['texts']}")
    for entry in report["results"].values():
        if "error" in entry:  # said on stderr as an error line (main)
            continue
        where = f" [{entry['provider']}, {entry['graph']}]" if "provider" in entry else ""
        lines.append(f"{entry['label']}{where}")
        for b in report["batch_sizes"]:
            ratio = entry.get(f"x_reference_b{b}")
            lines.append(f"  batch {b:4d}: {entry[f'passages_per_s_b{b}']:9.1f} passages/s "
                         f"{entry[f'tokens_per_s_b{b}']:10.0f} tokens/s"
                         + (f"  {ratio:.2f}x {report['reference']}" if ratio else ""))
        lines.append(f"  query at batch 1: p50 {entry['query_p50_ms']:.2f} ms, p99 {entry['query_p99_ms']:.2f} ms; "
                     f"cold start {entry['cold_start_s']:.2f} s; peak RSS {entry['peak_rss_mib']:.0f} MiB"
                     + (f"; GPU {entry['gpu_memory_mib']:.0f} MiB" if "gpu_memory_mib" in entry else ""))
        check = entry.get("check_vs_reference")
        if check:
            lines.append(f"  vs {report['reference']}: max abs diff {check['max_abs_diff']:.1e}, "
                         f"top-64 overlap {check['top64_overlap']:.4f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
