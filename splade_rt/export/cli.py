"""`splade-export`: the command line over export.pipeline (errors: one line, exit code 2; cli_support)."""

from __future__ import annotations

import argparse
import sys

from ..cli_support import add_verbose, run
from ..kernels import DEFAULT_VOCAB_CHUNK
from ..validation import positive_int_arg


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="splade-export",
        description="Export a SPLADE model (a masked-LM of a supported family + max pooling) to fused ONNX "
                    "(fp32, exact int8-screened fp32, fp16) with a "
                    "verified manifest. MODEL: a Hugging Face hub id, a transformers directory or a "
                    "sentence-transformers SparseEncoder directory; omitted: the bundled splade-tiny-msmarco.",
    )
    p.add_argument("model", nargs="?", help="hub id or local directory (default: bundled splade-tiny-msmarco)")
    p.add_argument("-o", "--output", help="directory to write (must not exist unless --force)")
    p.add_argument("--check", metavar="EXPORT_DIR", help="re-run the parity check of an existing export")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    p.add_argument("--max-length", type=int, help="truncate inputs to this many tokens (default: the model's)")
    p.add_argument("--vocab-chunk", type=positive_int_arg, default=DEFAULT_VOCAB_CHUNK,
                   help="vocab columns per projection chunk: bounds memory to batch x seq x chunk floats")
    p.add_argument("--no-fp16", action="store_true", help="skip the fp16 (GPU) graph")
    p.add_argument("--int8", action="store_true",
                   help="also write model.int8.onnx: the encoder's matrix products in int8 (faster on CPU, lossy: "
                        "never chosen unless asked for with variant='int8'; the SPLADE head stays exact)")
    p.add_argument("--activation", choices=("relu", "log1p_relu"),
                   help="SPLADE activation of a plain transformers directory (default relu; OpenSearch's models "
                        "use log1p_relu); sentence-transformers models record theirs")
    add_verbose(p)
    return p


def export(args: argparse.Namespace) -> None:
    if args.check:
        if args.model or args.output:
            _parser().error("--check EXPORT_DIR re-checks an existing export: it takes no MODEL and no -o")
        from .pipeline import recheck

        recheck(args.check)
        return
    if not args.output:
        _parser().error("-o/--output is required (or --check EXPORT_DIR)")
    from .pipeline import export_model

    export_model(args.model, args.output, force=args.force, max_length=args.max_length,
                 vocab_chunk=args.vocab_chunk, fp16=not args.no_fp16, int8=args.int8, activation=args.activation)


def main(argv: list[str] | None = None) -> int:
    return run(_parser(), export, argv, interrupted="nothing was written")


if __name__ == "__main__":
    sys.exit(main())
