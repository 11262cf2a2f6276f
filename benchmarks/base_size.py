"""A base-size model (hidden 768, 12 layers, 30,522-token vocabulary): splade-rt's graphs against
sentence-transformers torch, same run, same machine.

    python -m benchmarks.base_size [--passages 96] [--repeats 3]

No trained base-size SPLADE model can be fetched here, so the model is random with a SPLADE-like
head (benchmarks.random_models, the bundled model's WordPiece vocabulary). The encoder's cost is
that of any BERT-base; the screened graph's gain depends on how few vocab entries its bound lets
through, which depends on trained weights: the candidates per true non-zero measured here are for
random weights, not a prediction for a trained model. Passages are SciFact's (title and text), max
length 256, batch 32; each configuration runs `--repeats` timed passes after a warm-up, the median
counts. Writes results/base-size-<date>.{json,md,png}.
"""

from __future__ import annotations

import json
import statistics
import time
from datetime import date
from pathlib import Path

import numpy as np

from splade_rt.bench.measure import machine_info

from .common import CACHE, candidate_count, collection_texts, save_figure, script_parser
from .random_models import make_model, max_abs_and_nonzero

BATCH = 32
MAX_LENGTH = 256


def build(root: Path) -> tuple[Path, Path]:
    """The random base-size model and its export (cached: both take minutes on 2 cores)."""
    from splade_rt.export.pipeline import export_model
    from splade_rt.export.source import default_model_dir

    model, export = root / "model", root / "export"
    if not (model / "config.json").is_file():
        make_model("bert", model, hidden=768, layers=12, heads=12, max_length=512, z=4.0,
                   tokenizer_dir=default_model_dir())
    if not (export / "splade.json").is_file():
        export_model(str(model), export, force=True, fp16=False, int8=True, max_length=MAX_LENGTH)
    return model, export


def nonzero_jaccard(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean over rows of |active terms in both| / |active terms in either|."""
    a, b = reference > 0, candidate > 0
    union = np.maximum((a | b).sum(axis=1), 1)
    return round(float(((a & b).sum(axis=1) / union).mean()), 4)


def timed(encode, passages: list[str], repeats: int) -> tuple[float, np.ndarray]:
    """(median passages/s over the timed passes, the dense vectors of the last pass)."""
    encode(passages[:BATCH])  # warm-up
    rates, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = encode(passages)
        rates.append(len(passages) / (time.perf_counter() - start))
    return statistics.median(rates), out


def main(argv: list[str] | None = None) -> int:
    import torch
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    from splade_rt import SpladeEncoder

    p = script_parser(__doc__)
    p.add_argument("--passages", type=int, default=96)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    model_dir, export = build(CACHE / "base-size")
    passages, _ = collection_texts("scifact", documents=1000)
    passages = passages[-args.passages:]  # held out: the export's centring statistics use other text
    threads = torch.get_num_threads()

    st = SparseEncoder(modules=[Transformer(str(model_dir), transformer_task="fill-mask", max_seq_length=MAX_LENGTH),
                                SpladePooling(pooling_strategy="max")], device="cpu")
    rows = {}
    def st_encode(texts: list[str]) -> np.ndarray:
        return st.encode_document(texts, batch_size=BATCH, convert_to_tensor=True).to_dense().numpy()

    rate, reference = timed(st_encode, passages, args.repeats)
    rows["sentence-transformers torch fp32"] = {"passages_per_s": rate}
    st = None  # free its memory before the next configuration
    for label, variant in (("splade-rt fp32 graph", "fp32"), ("splade-rt exact int8-screened (default)",
                                                            "fp32-screened"),
                           ("splade-rt int8 encoder (lossy, opt-in)", "int8")):
        enc = SpladeEncoder(export, device="cpu", variant=variant)
        rate, got = timed(lambda t, enc=enc: enc.encode_document(t, batch_size=BATCH).to_dense(), passages,
                          args.repeats)
        diff, rel, same = max_abs_and_nonzero(reference, got)
        row = {"passages_per_s": rate, "max_abs_diff": diff, "max_rel_diff": rel, "same_nonzero_set": same,
               "nonzero_jaccard": nonzero_jaccard(reference, got)}
        if variant in ("fp32-screened", "int8"):
            nnz = int((got > 0).sum())
            row["candidates_per_nonzero"] = round(candidate_count(enc, passages) / max(nnz, 1), 3)
            row["active_dims_mean"] = round(nnz / len(passages), 1)
        rows[label] = row
        del enc
    base = rows["sentence-transformers torch fp32"]["passages_per_s"]
    for row in rows.values():
        row["x_sentence_transformers"] = round(row["passages_per_s"] / base, 2)
        row["passages_per_s"] = round(row["passages_per_s"], 2)
    report = {"date": date.today().isoformat(), "machine": machine_info(), "threads": threads,
              "model": "random BERT-base (768 x 12, vocab 30522), SPLADE-like head (z=4)",
              "passages": len(passages), "max_length": MAX_LENGTH, "batch": BATCH, "repeats": args.repeats,
              "command": "python -m benchmarks.base_size", "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"base-size-{report['date']}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    plot(report, stem.with_suffix(".png"))
    print(markdown(report))
    return 0


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"Base-size model: {report['model']}. Machine: {m['cpu']}, {m['cores']} cores "
             f"({', '.join(m['isa'])}), {report['threads']} threads; {report['date']}; {report['passages']} SciFact "
             f"passages, max length {report['max_length']}, batch {report['batch']}, median of {report['repeats']} "
             f"passes. Command: `{report['command']}`.", "",
             "| configuration | passages/s | x ST torch | max abs diff vs ST | same non-zero set | "
             "active-term Jaccard vs ST | screen candidates per non-zero |", "|---|---|---|---|---|---|---|"]
    for name, r in report["rows"].items():
        diff = f"{r['max_abs_diff']:.1e}" if "max_abs_diff" in r else "-"
        lines.append(f"| {name} | {r['passages_per_s']} | {r['x_sentence_transformers']:.2f}x | {diff} | "
                     f"{r.get('same_nonzero_set', '-')} | {r.get('nonzero_jaccard', '-')} | "
                     f"{r.get('candidates_per_nonzero', '-')} |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["rows"])
    values = [report["rows"][n]["passages_per_s"] for n in names]
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.barh(names, values, color=["#999999", "#4c72b0", "#55a868", "#c44e52"][:len(names)])
    ax.set_xlabel(f"passages/s, batch {report['batch']}, max length {report['max_length']}")
    save_figure(fig, path, f"Base-size random SPLADE model, {report['machine']['cores']} cores, {report['date']}")


if __name__ == "__main__":
    raise SystemExit(main())
