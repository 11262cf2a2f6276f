"""Inference-free queries: the latency of a table-lookup query against sentence-transformers'.

    python -m benchmarks.inference_free [--rounds 20]

The model is a random Router model of the OpenSearch kind (DistilBERT document route with
log1p_relu, SparseStaticEmbedding query route, the bundled 30,522-token WordPiece vocabulary), built
by tests/random_models.py. The query side has no network to run, so its cost is the tokenizer
and the lookup: p50 and p99 per query at batch 1, tokenizer included, over SciFact and Vaswani
queries, for splade-rt's encode_query and sentence-transformers' encode_query on the same model,
in the same run. Also checks that both give the same vectors. Writes
results/inference-free-<date>.{json,md}.
"""

from __future__ import annotations

import json
import time
from datetime import date

import numpy as np

from splade_rt.machine import machine_info

from .common import CACHE, cached_export, load_texts, script_parser


def latencies(encode, queries: list[str], rounds: int) -> list[float]:
    for q in queries[:20]:  # warm-up
        encode(q)
    out = []
    for _ in range(rounds):
        for q in queries:
            start = time.perf_counter()
            encode(q)
            out.append(time.perf_counter() - start)
    return out


def summary(seconds: list[float]) -> dict[str, float]:
    us = np.asarray(seconds) * 1e6
    return {"p50_us": round(float(np.percentile(us, 50)), 1), "p99_us": round(float(np.percentile(us, 99)), 1),
            "mean_us": round(float(us.mean()), 1)}


def main(argv: list[str] | None = None) -> int:
    from random_models import make_model
    from sentence_transformers import SparseEncoder

    from splade_rt import SpladeEncoder
    from splade_rt.export.source import default_model_dir

    p = script_parser(__doc__)
    p.add_argument("--rounds", type=int, default=20)
    args = p.parse_args(argv)
    root = CACHE / "inference-free"
    model = root / "model"
    if not (model / "modules.json").is_file():
        make_model("distilbert", model, layout="router", activation="log1p_relu", hidden=64, layers=2, heads=2,
                   max_length=512, z=4.0, tokenizer_dir=default_model_dir())
    cached_export(str(model), root / "export", fp16=False, log=lambda _: None)
    _, queries = load_texts(quick=False)

    enc = SpladeEncoder(root / "export", device="cpu")
    st = SparseEncoder(str(model), device="cpu")
    ours = enc.encode_query(queries).to_dense()
    theirs = st.encode_query(queries, convert_to_tensor=True).to_dense().numpy()
    rows = {
        "splade-rt encode_query (table lookup)": summary(latencies(enc.encode_query, queries, args.rounds)),
        "sentence-transformers encode_query": summary(latencies(
            lambda q: st.encode_query([q], convert_to_tensor=True), queries, max(1, args.rounds // 4))),
    }
    report = {"date": date.today().isoformat(), "machine": machine_info(), "queries": len(queries),
              "rounds": args.rounds, "identical_to_sentence_transformers": bool(np.array_equal(ours, theirs)),
              "command": "python -m benchmarks.inference_free", "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"inference-free-{report['date']}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    m = report["machine"]
    lines = [f"Inference-free queries, batch 1, tokenizer included. Machine: {m['cpu']}, {m['cores']} cores "
             f"({', '.join(m['isa'])}); {report['date']}; {len(queries)} queries x {args.rounds} rounds; "
             f"identical vectors: {report['identical_to_sentence_transformers']}. Command: `{report['command']}`.",
             "", "| configuration | p50 us | p99 us | mean us |", "|---|---|---|---|"]
    lines += [f"| {name} | {r['p50_us']} | {r['p99_us']} | {r['mean_us']} |" for name, r in rows.items()]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if report["identical_to_sentence_transformers"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
