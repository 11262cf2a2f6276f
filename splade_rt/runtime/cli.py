"""`splade-encode`: encode texts with an export and print their top terms (a smoke test for users)."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import SpladeError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="splade-encode", description="Encode texts with a splade-export directory.")
    p.add_argument("export_dir")
    p.add_argument("texts", nargs="*", help="texts to encode (default: one per line from stdin)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--top", type=int, default=10, help="terms to print per text")
    p.add_argument("--json", action="store_true", help="print Qdrant-style JSON vectors instead")
    args = p.parse_intermixed_args(argv)
    texts = args.texts or [line.rstrip("\n") for line in sys.stdin]
    try:
        from ..runtime import SpladeEncoder

        enc = SpladeEncoder(args.export_dir, device=args.device)
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
