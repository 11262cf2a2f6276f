"""The screened graph and the native head against the fp32 graph on every document and query of
the shared collections.

    python -m benchmarks.screening_check [--export DIR]

Issue bar: values within 1e-5 and the same non-zero set, row by row. Also counts the screen's
candidates (vocab entries recomputed in fp32) per text against the non-zeros: how tight the bound
is. The native head (where its kernel runs) is held to the same bar. Writes
results/screening-check-<date>.json with per-collection counts, max abs diff and mismatches.
"""

from __future__ import annotations

import json
import time
from datetime import date
from pathlib import Path

import numpy as np

from splade_rt.export.parity import SCREENED_MAX_ABS_DIFF

from .common import COLLECTIONS, SHARED, candidate_count, collection_texts, prepare_models, script_parser


def main(argv: list[str] | None = None) -> int:
    from splade_rt import SpladeEncoder

    p = script_parser(__doc__)
    p.add_argument("--export", type=Path)
    args = p.parse_args(argv)
    export = args.export or prepare_models(None, naive=False)["chunked"]
    from splade_rt.kernels.native_head import unavailable

    screened = SpladeEncoder(export, device="cpu", variant="fp32-screened")
    fp32 = SpladeEncoder(export, device="cpu", variant="fp32")
    native = SpladeEncoder(export, device="cpu", variant="fp32-native") if unavailable() is None else None
    rows, ok = [], True
    for name in COLLECTIONS:
        documents, queries = collection_texts(name)
        texts = documents + queries
        if not texts:
            print(f"{name}: not found under {SHARED / 'data'}, skipped", flush=True)
            continue
        t = time.perf_counter()
        a = screened.encode(texts)
        ta = time.perf_counter() - t
        t = time.perf_counter()
        b = fp32.encode(texts)
        tb = time.perf_counter() - t
        same_rows, max_diff = agreement(a, b)
        candidates = candidate_count(screened, texts)
        row = {"collection": name, "texts": len(texts), "rows_with_same_nonzero_set": same_rows,
               "max_abs_diff": max_diff, "nnz": a.nnz, "candidates": candidates,
               "candidates_per_nonzero": round(candidates / max(a.nnz, 1), 3),
               "screened_s": round(ta, 1), "fp32_s": round(tb, 1), "speedup": round(tb / ta, 2)}
        ok = ok and same_rows == len(texts) and max_diff <= SCREENED_MAX_ABS_DIFF
        if native is not None:
            t = time.perf_counter()
            c = native.encode(texts)
            row["native_s"] = round(time.perf_counter() - t, 1)
            row["native_rows_with_same_nonzero_set"], row["native_max_abs_diff"] = agreement(c, b)
            ok = ok and row["native_rows_with_same_nonzero_set"] == len(texts) and \
                row["native_max_abs_diff"] <= SCREENED_MAX_ABS_DIFF
        rows.append(row)
        print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"date": date.today().isoformat(), "max_length": screened.max_length, "passed": ok,
              "native_head": unavailable() or "checked", "rows": rows}
    (args.out / f"screening-check-{report['date']}.json").write_text(json.dumps(report, indent=2) + "\n")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def agreement(a, b) -> tuple[int, float]:
    """Rows with the same non-zero set, and the largest value difference (nan unless every row agrees)."""
    same_rows = int(sum(np.array_equal(x.indices, y.indices) for x, y in zip(a, b)))
    return same_rows, float(np.abs(a.values - b.values).max()) if same_rows == len(a) else float("nan")


if __name__ == "__main__":
    raise SystemExit(main())
