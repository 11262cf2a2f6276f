"""Multilingual vocabularies at a realistic hidden size: the export's peak RSS, then passages/s at
batch 32 and peak RSS at batch 32 x 256 for every CPU variant and for sentence-transformers torch
(SparseEncoder), in the same run.

    python -m benchmarks.large_vocab [--layers 4] [--passages 32] [--quick]

Models: random, hidden 768 (12 heads), `--layers` layers, with a SPLADE-like head over a 105,879-term
WordPiece (BERT) and a 250,002-term Unigram (XLM-R) vocabulary: the trained tokenizer padded with
filler tokens (tests/random_models.py, LARGE_VOCABS; z=4.5). Each is exported once with --int8 and
--max-length 256 (cached), in its own process; its manifest records the export's peak RSS.

Text: held-out SciFact passages (title and text, $SPLADE_SHARED/data/scifact), truncated to 256
tokens: with these small trained tokenizers every passage reaches 256, so each batch is 32 x 256.
Each configuration runs in its own process (splade_rt.bench.worker) under a 14 GiB address-space
cap, so its RSS is its own and no run can swap the machine; one untimed pass over the passages,
then a timed one. sentence-transformers pools [batch, seq, vocab] logits (8.2 GB at 32 x 256 x
250,002, and a masked copy): where batch 32 passes the cap it is also run at batch 16, and the
ratio is against that. Native-head variants need AVX-512 VNNI: where it is absent they are listed
with the variant the runtime runs instead. fp16 is the GPU graph: checked by the export, not timed
on a CPU.

Writes benchmarks/results/large-vocab-<date>-<cpu>.{json,png}.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from .common import CACHE, REPO, collection_texts, save_figure, script_parser, write_results

SHAPES = (("bert", 105_879), ("xlm-roberta", 250_002))
HIDDEN, HEADS, MAX_LENGTH, BATCH = 768, 12, 256, 32
CAP_BYTES = 14 << 30  # each worker's address-space limit
TIMED_VARIANTS = ("fp32", "fp32-screened", "fp32-native", "int8", "int8-native")


def build(family: str, vocab: int, layers: int, hidden: int, root: Path) -> tuple[Path, Path]:
    """The random model (cached) and its export, made in a child process (cached_export: re-exported
    when the exporter's code changes), so that the export's peak RSS is its own."""
    model, out = root / "model", root / "export"
    if not (model / "config.json").is_file():
        from random_models import make_model

        make_model(family, model, hidden=hidden, layers=layers, heads=max(2, hidden // 64), max_length=512,
                   vocab=vocab, z=4.5, seed=3)
    code = ("from benchmarks.common import cached_export; "
            f"cached_export({str(model)!r}, __import__('pathlib').Path({str(out)!r}), int8=True, "
            f"max_length={MAX_LENGTH}, activation='relu')")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
    return model, out


def capped(spec: dict, timeout: float) -> dict:
    """run_worker under CAP_BYTES of address space (inherited by the child, restored here after)."""
    from splade_rt.bench.runner import finish, start

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (CAP_BYTES, hard))
    try:
        job = start(["splade_rt.bench.worker"], spec, REPO)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    return finish(job, timeout)


def measure_family(family: str, vocab: int, model: Path, export: Path, passages: list[str],
                   queries: list[str], log) -> dict:
    from splade_rt.bench.measure import compare_rows
    from splade_rt.kernels.native_head import unavailable
    from splade_rt.manifest import read_manifest
    from splade_rt.variants import VARIANTS

    manifest = json.loads(read_manifest(export).path.read_text())
    base = {"threads": 2, "passages": passages, "queries": queries, "passage_tokens": None, "check_rows": 8,
            "max_length": MAX_LENGTH, "min_seconds": 0}
    rows = {}
    st_spec = {**base, "kind": "st", "mlm_dir": str(model), "activation": "relu"}
    for batch in (BATCH, BATCH // 2):
        name = f"sentence-transformers torch b{batch}"
        log(f"  {family}: {name}")
        rows[name] = capped({**st_spec, "batch_sizes": [batch]}, timeout=3600)
        rows[name]["batch_size"] = batch
        if "error" not in rows[name]:
            break
    reference = next((r for r in rows.values() if "vectors" in r), None)
    why_native = unavailable()
    for precision in TIMED_VARIANTS:
        name = f"splade-rt {precision}"
        if VARIANTS[precision].native and why_native:
            rows[name] = {"skipped": f"{why_native}: the runtime runs {VARIANTS[precision].fallback} instead "
                                     "(its row)"}
            continue
        log(f"  {family}: {name}")
        rows[name] = capped({**base, "kind": "rt", "export_dir": str(export), "variant": precision,
                             "batch_sizes": [BATCH]}, timeout=3600)
        rows[name]["batch_size"] = BATCH
    rows["splade-rt fp16"] = {"skipped": "the GPU graph (CUDA, TensorRT): checked by the export's parity, not "
                                         "timed on a CPU"}
    st = reference or {}
    st_vectors = st.get("vectors")
    st_rate = st.get(f"passages_per_s_b{st.get('batch_size', BATCH)}")
    for row in rows.values():
        rate = row.get(f"passages_per_s_b{row.get('batch_size', BATCH)}")
        if rate and st_rate:
            row["x_st"] = rate / st_rate
        if st_vectors is not None and "vectors" in row:
            row["vs_st"] = compare_rows(st_vectors, row["vectors"])
        row.pop("vectors", None)
        if "peak_rss_mib" in row and "peak_rss_mib" in st:
            row["rss_of_st"] = row["peak_rss_mib"] / st["peak_rss_mib"]
    return {"family": family, "vocab": vocab, "export_peak_rss_bytes": manifest.get("export_peak_rss_bytes"),
            "export_seconds": manifest.get("export_seconds"),
            "parity_passed": manifest["parity"]["passed"], "rows": rows}


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(report["models"]), figsize=(6 * len(report["models"]), 7), squeeze=False)
    for col, entry in enumerate(report["models"]):
        named = [(n, r) for n, r in entry["rows"].items() if "peak_rss_mib" in r]
        names = [n.replace("sentence-transformers", "ST").replace("splade-rt ", "") for n, _ in named]
        colors = ["#999999" if n.startswith("sentence") else "#1f77b4" for n, _ in named]
        rates = [r.get(f"passages_per_s_b{r.get('batch_size', BATCH)}", 0) for _, r in named]
        bars = axes[0][col].barh(names[::-1], rates[::-1], color=colors[::-1])
        axes[0][col].bar_label(bars, fmt="%.2f", fontsize=8, padding=2)
        axes[0][col].set_xlabel("passages/s (256 tokens)")
        axes[0][col].set_title(f"{entry['family']}, vocab {entry['vocab']:,}", fontsize=9)
        bars = axes[1][col].barh(names[::-1], [r["peak_rss_mib"] / 1024 for _, r in named][::-1], color=colors[::-1])
        axes[1][col].bar_label(bars, fmt="%.2f GiB", fontsize=8, padding=2)
        axes[1][col].set_xlabel("peak RSS, GiB")
    save_figure(fig, path, f"large vocabularies: random {report['model']}, {report['machine']['cpu']} "
                           f"({report['machine']['cores']} cores), batch {BATCH} x {MAX_LENGTH}")


def main(argv: list[str] | None = None) -> int:
    from splade_rt.machine import machine_info

    p = script_parser(__doc__)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--passages", type=int, default=32, help="held-out SciFact passages (batches of 32)")
    p.add_argument("--quick", action="store_true", help="hidden 64, 2 layers, 8 passages: a smoke run")
    args = p.parse_args(argv)
    hidden, layers, count = (64, 2, 8) if args.quick else (HIDDEN, args.layers, args.passages)
    passages, queries = collection_texts("scifact", documents=1000, queries=3)
    if not passages:
        print("large_vocab: SciFact not found under $SPLADE_SHARED/data/scifact", file=sys.stderr)
        return 2
    passages = passages[-count:]  # held out: not the parity texts, not the tokenizer's training text
    started = time.perf_counter()
    report = {"date": date.today().isoformat(), "machine": machine_info(),
              "command": " ".join(["python -m benchmarks.large_vocab", *(sys.argv[1:] if argv is None else argv)]),
              "model": f"hidden {hidden}, {layers} layers, SPLADE-like head (z=4.5)", "max_length": MAX_LENGTH,
              "batch_size": BATCH, "passages": len(passages), "threads": 2, "models": []}
    for family, vocab in SHAPES:
        root = CACHE / "large-vocab" / f"{family}-{vocab}-{hidden}x{layers}"
        print(f"{family} ({vocab:,} terms): model and export", flush=True)
        model, export = build(family, vocab, layers, hidden, root)
        entry = measure_family(family, vocab, model, export, passages, queries, lambda m: print(m, flush=True))
        report["models"].append(entry)
        print(json.dumps({k: v for k, v in entry.items() if k != "rows"}), flush=True)
        for name, row in entry["rows"].items():
            rate = row.get(f"passages_per_s_b{row.get('batch_size', BATCH)}")
            print(f"  {name}: " + (f"{rate:.2f} passages/s, peak RSS {row['peak_rss_mib']:.0f} MiB"
                                   if rate else row.get("skipped") or row.get("error", "?")), flush=True)
    report["wall_s"] = time.perf_counter() - started
    write_results(report, args.out, f"large-vocab-{report['date']}{'-quick' if args.quick else ''}", plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
