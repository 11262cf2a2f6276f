"""`splade-encode`: encode texts with an export and print their top terms (a smoke test for users)."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any

from ..errors import SpladeError


def load_encoder(prog: str, path, **kwargs: Any):
    """SpladeEncoder for a command line: a CPU fallback under device='auto' is one plain line on
    stderr (no Python warning with a source path), said only when the user asked for more than auto
    or for --verbose output; errors stay SpladeError for the caller's one-line handler."""
    from .encoder import SpladeEncoder

    verbose = kwargs.pop("verbose", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        encoder = SpladeEncoder(path, **kwargs)
    for w in caught:
        if verbose and issubclass(w.category, RuntimeWarning):
            print(f"{prog}: {str(w.message).removeprefix('splade-rt: ')}", file=sys.stderr)
        elif not issubclass(w.category, RuntimeWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return encoder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="splade-encode", usage="%(prog)s EXPORT_DIR [TEXT ...] [options]",
        description="Encode texts with a splade-export directory and print their top terms. Texts come from "
                    "the command line or, when none is given, one per line from standard input.")
    p.add_argument("export_dir", metavar="EXPORT_DIR", nargs="?", help="a directory written by splade-export")
    p.add_argument("texts", metavar="TEXT", nargs="*", help="texts to encode (none: one per line from stdin)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--top", type=int, default=10, help="terms to print per text")
    p.add_argument("--json", action="store_true", help="print Qdrant-style JSON vectors instead")
    p.add_argument("--verbose", action="store_true", help="say why auto chose the CPU")
    args = p.parse_intermixed_args(argv)
    if args.export_dir is None:
        p.error("EXPORT_DIR is required (texts are optional: without them, one text per line is read from stdin)")
    texts = args.texts or [line.rstrip("\n") for line in sys.stdin]
    try:
        enc = load_encoder("splade-encode", args.export_dir, device=args.device, verbose=args.verbose)
        vectors = enc.encode(texts)
    except (SpladeError, TypeError, ValueError) as e:
        print(f"splade-encode: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(vectors.to_qdrant()))
        return 0
    print(f"# {enc.provider}, graph {enc.placement.file}, {len(texts)} texts")
    for text, vec in zip(texts, vectors):
        terms = ", ".join(f"{t} {w:.2f}" for t, w in enc.decode(vec, top_k=args.top))
        print(f"{text[:60]!r} ({len(vec)} terms): {terms}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
