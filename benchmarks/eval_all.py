"""Retrieval quality of every graph variant on the four shared collections, with the torch run.

    python -m benchmarks.eval_all [--export DIR] [--max-length 256] [--no-reference]

Runs splade-eval per collection and variant (fp32-screened, fp32-native, fp32, fp16 and the lossy
opt-in int8 and int8-native, on the CPU) and, once per collection, the torch reference; writes
results/eval-<date>.json and .md. The reference nDCG@10 figures are the shared data README's (an
independent fp32 implementation, max length 256).
"""

from __future__ import annotations

import json
import time
from datetime import date
from pathlib import Path

from .common import COLLECTIONS, SHARED, prepare_models, script_parser

PUBLISHED_NDCG10 = {"scifact": 0.644, "vaswani": 0.373, "cranfield": 0.363, "cisi": 0.301}  # graded gains
VARIANTS = ("fp32-screened", "fp32-native", "fp32", "fp16", "int8", "int8-native")


def main(argv: list[str] | None = None) -> int:
    from splade_rt.evaluation.cli import evaluate

    p = script_parser(__doc__)
    p.add_argument("--export", type=Path, help="export directory (default: the benchmark's own export)")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--no-reference", action="store_true", help="skip the torch runs")
    p.add_argument("--datasets", nargs="*", default=list(COLLECTIONS))
    args = p.parse_args(argv)
    export = args.export or prepare_models(None)["chunked"]
    rows, started = [], time.perf_counter()
    for name in args.datasets:
        for i, variant in enumerate(VARIANTS):
            with_ref = i == 0 and not args.no_reference
            print(f"[{time.perf_counter() - started:6.0f}s] {name} {variant}{' + torch reference' if with_ref else ''}",
                  flush=True)
            report = evaluate(export, SHARED / "data" / name, variant=variant, device="cpu",
                              max_length=args.max_length, reference=with_ref)
            rows.append({"dataset": name, "variant": variant, "published_ndcg@10": PUBLISHED_NDCG10.get(name),
                         **{k: report[k] for k in ("metrics", "docs_per_second", "document_active_dims",
                                                   "query_active_dims", "documents", "queries")}})
            if with_ref:
                ref = report["reference"]
                rows.append({"dataset": name, "variant": "torch reference",
                             "published_ndcg@10": PUBLISHED_NDCG10.get(name),
                             **{k: ref[k] for k in ("metrics", "docs_per_second", "document_active_dims",
                                                    "query_active_dims")}})
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"eval-{date.today().isoformat()}"
    (args.out / f"{stem}.json").write_text(json.dumps({"max_length": args.max_length, "rows": rows}, indent=2) + "\n")
    lines = [(f"Retrieval quality, max length {args.max_length}, exact dot-product search over each whole corpus "
              f"(`python -m benchmarks.eval_all`)."), "",
             "| dataset | variant | nDCG@10 | vs published | vs torch | MRR@10 | MAP@100 | recall@10 | docs/s "
             "| doc dims |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    torch_ndcg = {r["dataset"]: r["metrics"]["ndcg@10"] for r in rows if r["variant"] == "torch reference"}
    for r in rows:
        m = r["metrics"]
        vs_torch = f"{m['ndcg@10'] - torch_ndcg[r['dataset']]:+.4f}" if r["dataset"] in torch_ndcg else "-"
        published = r["published_ndcg@10"]
        vs_published = "-" if published is None else f"{m['ndcg@10'] - published:+.4f}"
        lines.append(f"| {r['dataset']} | {r['variant']} | {m['ndcg@10']:.4f} | {vs_published} | {vs_torch} | "
                     f"{m['mrr@10']:.4f} | "
                     f"{m['map@100']:.4f} | {m['recall@10']:.4f} | {r['docs_per_second']:.1f} | "
                     f"{r['document_active_dims']:.1f} |")
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
