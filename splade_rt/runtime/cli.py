"""`splade-encode`: encode texts with an export and print their top terms (a smoke test for users)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from ..cli_support import add_verbose, device_arg, device_help, run
from ..validation import positive_int_arg

PROG = "splade-encode"


class _Hold(logging.Filter):
    """Holds the "splade_rt" logger's records back while an encoder loads, to be sorted afterwards."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return False


def load_encoder(prog: str, path, **kwargs: Any):
    """SpladeEncoder for a command line. Under device='auto' a CPU fallback is what the user asked
    for on a machine without a GPU, so its line (the "splade_rt" logger's, which cli_support shows
    as `PROG: running on CPU: ...`) is passed on only with verbose=True; every other line the encoder
    logs while loading is passed on. prog: kept for callers; errors propagate to cli_support.run."""
    from .encoder import SpladeEncoder

    verbose = kwargs.pop("verbose", False)
    logger = logging.getLogger("splade_rt")
    hold = _Hold()
    logger.addFilter(hold)
    try:
        encoder = SpladeEncoder(path, **kwargs)
    except BaseException:
        logger.removeFilter(hold)
        if verbose:
            for record in hold.records:
                logger.handle(record)
        raise
    logger.removeFilter(hold)
    reason = encoder.placement.fallback_reason
    for record in hold.records:
        if not (reason and reason in record.getMessage()) or verbose:
            logger.handle(record)
    return encoder


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, usage="%(prog)s EXPORT_DIR [TEXT ...] [options]",
        description="Encode texts with a splade-export directory and print their top terms. Texts come from "
                    "the command line or, when none is given, one per line from standard input.")
    p.add_argument("export_dir", metavar="EXPORT_DIR", nargs="?", help="a directory written by splade-export")
    p.add_argument("texts", metavar="TEXT", nargs="*", help="texts to encode (none: one per line from stdin)")
    p.add_argument("--device", default="auto", type=device_arg, help=device_help())
    p.add_argument("--top", type=positive_int_arg, default=10, help="terms to print per text (default 10)")
    p.add_argument("--json", action="store_true", help="print Qdrant-style JSON vectors instead")
    add_verbose(p)
    return p


def encode(args: argparse.Namespace) -> int:
    if args.export_dir is None:
        parser().error("EXPORT_DIR is required (texts are optional: without them, one text per line is read "
                       "from stdin)")
    texts = args.texts
    if not texts:
        if sys.stdin.isatty():  # else a user who forgot the texts sees a command that seems to hang
            print(f"{PROG}: reading texts from standard input, one per line (Ctrl-D to end)", file=sys.stderr)
        texts = [line.rstrip("\r\n") for line in sys.stdin]
    enc = load_encoder(PROG, args.export_dir, device=args.device, verbose=args.verbose)
    vectors = enc.encode(texts)
    if args.json:
        print(json.dumps(vectors.to_qdrant()))
        return 0
    print(f"# {enc.provider}, graph {enc.placement.file}, {len(texts)} text{'' if len(texts) == 1 else 's'}")
    for text, vec in zip(texts, vectors):
        terms = ", ".join(f"{t} {w:.2f}" for t, w in enc.decode(vec, top_k=args.top))
        print(f"{text[:60]!r} ({len(vec)} terms): {terms}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(parser(), encode, argv, intermixed=True)


if __name__ == "__main__":
    sys.exit(main())
