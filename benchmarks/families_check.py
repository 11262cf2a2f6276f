"""The screened graph against the fp32 graph for every supported family, on real text.

    python -m benchmarks.families_check [--documents 1000] [--queries 300]

The screen is architecture-independent: it sees only the head-transformed states and the decoder.
This checks that on each family's own states (random models with a SPLADE-like head,
tests/random_models.py, tokenizers of the family's kind), over SciFact documents and queries:
every row must have the same non-zero set and values within the parity bar. Also counts the
screen's candidates per true non-zero. Writes results/families-check-<date>.json.
"""

from __future__ import annotations

import json
from datetime import date

import numpy as np

from splade_rt.export.parity import SCREENED_MAX_ABS_DIFF

from .common import CACHE, candidate_count, collection_texts, script_parser


def main(argv: list[str] | None = None) -> int:
    from random_models import FAMILIES, make_model

    from splade_rt import SpladeEncoder
    from splade_rt.export.pipeline import export_model

    p = script_parser(__doc__)
    p.add_argument("--documents", type=int, default=1000)
    p.add_argument("--queries", type=int, default=300)
    args = p.parse_args(argv)
    documents, queries = collection_texts("scifact", args.documents, args.queries)
    texts = documents + queries
    rows, ok = [], True
    for family in FAMILIES:
        root = CACHE / "families" / family
        model = make_model(family, root / "model", hidden=64, layers=2, heads=2, max_length=128, seed=1)
        export_model(str(model), root / "export", force=True, fp16=False, log=lambda _: None)
        screened = SpladeEncoder(root / "export", device="cpu", variant="fp32-screened")
        fp32 = SpladeEncoder(root / "export", device="cpu", variant="fp32")
        a, b = screened.encode(texts), fp32.encode(texts)
        same_rows = int(sum(np.array_equal(x.indices, y.indices) for x, y in zip(a, b)))
        max_diff = float(np.abs(a.values - b.values).max()) if same_rows == len(texts) else float("nan")
        row = {"family": family, "texts": len(texts), "rows_with_same_nonzero_set": same_rows,
               "max_abs_diff": max_diff, "active_dims_mean": round(a.nnz / len(texts), 1),
               "candidates_per_nonzero": round(candidate_count(screened, texts) / max(a.nnz, 1), 3)}
        ok = ok and same_rows == len(texts) and max_diff <= SCREENED_MAX_ABS_DIFF
        rows.append(row)
        print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"date": date.today().isoformat(), "command": "python -m benchmarks.families_check",
              "model": "random, hidden 64, 2 layers, max length 128, SPLADE-like head (z=2)",
              "passed": ok, "rows": rows}
    (args.out / f"families-check-{report['date']}.json").write_text(json.dumps(report, indent=2) + "\n")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
