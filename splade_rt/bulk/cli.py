"""`splade-encode-corpus EXPORT_DIR INPUT -o OUT_DIR`: the command-line face of encode_corpus."""

from __future__ import annotations

import argparse
import sys

from ..cli_support import add_verbose, device_arg, device_help, run
from .api import ENGINES, ON_ERROR, CorpusOptions, encode_corpus
from .formats import ANSERINI_FACTOR, OUTPUT_FORMATS, file_formats, format_help
from .hints import command_line

PROG = "splade-encode-corpus"


def parser() -> argparse.ArgumentParser:
    d = CorpusOptions()
    p = argparse.ArgumentParser(prog=PROG, description="Encode a corpus into SPLADE sparse vectors: sharded, "
                                "resumable (rerun the same command after a crash), exactly-once.")
    p.add_argument("export_dir", help="a splade-export directory")
    p.add_argument("input", help="a BEIR dataset directory or corpus.jsonl, a JSONL/CSV/TSV/Parquet file, or a "
                                 "directory of them (read in sorted path order)")
    p.add_argument("-o", "--output", required=True, help="output directory (created; a rerun resumes it)")
    g = p.add_argument_group("engine")
    g.add_argument("--engine", choices=ENGINES, default=d.engine, help="local: this process (default); ray: Ray Data")
    g.add_argument("--ray-address", default=None,
                   help="with --engine ray: 'auto' or an address joins a cluster; none starts a local Ray")
    g.add_argument("--workers", type=int, default=None,
                   help="local: CPU batches in flight (default 2); ray: encoder actors (default one per CPU, "
                        "or one per GPU on a GPU device)")
    g.add_argument("--cpus-per-worker", type=float, default=None,
                   help="ray: CPUs each actor asks for, and its threads (default: the share that leaves room "
                        "for the read and write tasks, at most 1)")
    g.add_argument("--gpus-per-worker", type=float, default=d.gpus_per_worker,
                   help="ray, on a GPU device: GPUs each actor asks for (default 1)")
    g.add_argument("--device", default=d.device, type=device_arg, help=device_help(d.device))
    e = p.add_argument_group("encoding")
    e.add_argument("--batch-size", type=int, default=d.batch_size)
    e.add_argument("--max-length", type=int, default=None, help="truncate below the export's max length")
    e.add_argument("--top-k", type=int, default=None, help="keep each document's k largest weights")
    e.add_argument("--threshold", type=float, default=None, help="drop weights at or below this")
    o = p.add_argument_group("output")
    o.add_argument("--format", choices=file_formats(), default=d.format, help=format_help())
    o.add_argument("--quantization-factor", type=float, default=ANSERINI_FACTOR,
                   help=f"anserini: impact = round(weight x this) (default {ANSERINI_FACTOR}, the SPLADE recipes')")
    o.add_argument("--qdrant", default=None, help=OUTPUT_FORMATS["qdrant"].help)
    o.add_argument("--collection", default=None, help="the Qdrant collection (created if missing)")
    o.add_argument("--shard-size", type=int, default=d.shard_size, help="documents per shard file")
    o.add_argument("--force", action="store_true", help="start over instead of resuming")
    i = p.add_argument_group("input")
    i.add_argument("--id-field", default=d.id_field)
    i.add_argument("--text-field", default=d.text_field)
    i.add_argument("--title-field", default=d.title_field, help="joined before the text; '' for none")
    i.add_argument("--on-error", choices=ON_ERROR, default=d.on_error,
                   help="stop: first bad row stops the run, naming file and line (default); skip: skip and count")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_verbose(p)
    return p


def encode(args: argparse.Namespace) -> int:
    skip = ("export_dir", "input", "output", "no_progress")
    options = {k: v for k, v in vars(args).items() if k not in skip}
    with command_line():  # error hints name flags (--on-error skip), not keyword arguments
        summary = encode_corpus(args.export_dir, args.input, args.output, progress=not args.no_progress, **options)
    print(f"{PROG}: {summary.line()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(parser(), encode, argv, interrupted="rerun the same command to resume")


if __name__ == "__main__":
    sys.exit(main())
