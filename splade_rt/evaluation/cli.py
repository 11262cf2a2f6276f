"""`splade-eval`: retrieval quality of an export on a BEIR dataset, optionally against torch.

Parity checks on a handful of texts say the graph matches torch; this says whether what users
care about (nDCG, recall) survives the export, the fp16 graph and a shorter max length. The
runtime path imports no torch; --reference loads it only when asked.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..cli_support import add_verbose, device_arg, device_help, output_file, run, variant_choices, variant_help
from ..errors import SpladeError
from ..runtime.embeddings import SparseEmbeddings
from ..validation import positive_int_arg
from .dataset import BeirDataset, load_beir
from .metrics import GAINS, MAX_K, mean_metrics, metric_names
from .search import search

REFERENCE_BATCH_TOKENS = 2048  # torch materialises [tokens, vocab] fp32 logits: 2048 x 30522 x 4 B = 250 MB


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="splade-eval",
                                description="Evaluate a splade-export directory on a BEIR retrieval dataset.")
    p.add_argument("export_dir", help="a directory written by splade-export")
    p.add_argument("dataset_dir", help="BEIR layout: corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    p.add_argument("--split", default="test", help="qrels file to evaluate (default: test)")
    p.add_argument("--variant", default=None, choices=variant_choices(), metavar="VARIANT", help=variant_help())
    p.add_argument("--device", default="auto", type=device_arg, help=device_help())
    p.add_argument("--max-length", type=positive_int_arg, default=None,
                   help="truncate texts below the export's max length")
    p.add_argument("--batch-size", type=positive_int_arg, default=32)
    p.add_argument("--gains", choices=GAINS, default="graded",
                   help="nDCG's gain for a relevant document: its qrel grade (graded, the default: BEIR, "
                        "pytrec_eval, MTEB) or 1 (binary: sentence-transformers' evaluators and model cards)")
    p.add_argument("--reference", action="store_true",
                   help="also encode with the torch source model and print the difference per metric")
    p.add_argument("--json", metavar="OUT.json", type=output_file, default=None,
                   help="write every number to this file")
    add_verbose(p)
    return p


def _run(args: argparse.Namespace) -> int:
    report = evaluate(args.export_dir, args.dataset_dir, split=args.split, variant=args.variant,
                      device=args.device, max_length=args.max_length, batch_size=args.batch_size,
                      gains=args.gains, reference=args.reference, verbose=args.verbose)
    print("\n".join(format_report(report)))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(parser(), _run, argv)


def evaluate(export_dir: str | Path, dataset_dir: str | Path, *, split: str = "test", variant: str | None = None,
             device: str = "auto", max_length: int | None = None, batch_size: int = 32, gains: str = "graded",
             reference: bool = False, verbose: bool = False) -> dict[str, Any]:
    """Every number splade-eval prints, as one JSON-ready dict. The dataset is loaded and vetted
    before the encoder (cheap, and its errors are the likeliest), so a bad file fails in a second.
    gains: nDCG's convention, "graded" or "binary" (see evaluation.metrics); the report says which.
    verbose: say why device="auto" runs on the CPU (a command line's --verbose)."""
    from ..runtime.cli import load_encoder

    if gains not in GAINS:
        raise ValueError(f"gains must be one of {GAINS}, not {gains!r}")
    data = load_beir(dataset_dir, split)
    enc = load_encoder("splade-eval", export_dir, device=device, variant=variant, max_length=max_length,
                       verbose=verbose)
    start = time.perf_counter()
    docs = enc.encode_document(data.corpus_texts, batch_size=batch_size)
    doc_seconds = time.perf_counter() - start
    start = time.perf_counter()
    queries = enc.encode_query(data.query_texts, batch_size=batch_size)
    query_seconds = time.perf_counter() - start
    report: dict[str, Any] = {
        "export_dir": str(export_dir), "dataset": str(dataset_dir), "split": split,
        "graph": enc.placement.file, "provider": enc.provider, "device": enc.device,
        "max_length": enc.max_length, "batch_size": batch_size, "gains": gains,
        "queries": len(data.query_ids), "documents": len(data.corpus_ids), "skipped_queries": data.skipped_queries,
    }
    report.update(_score(queries, docs, data, doc_seconds, query_seconds, gains))
    if reference:
        ref = _score_reference(export_dir, data, enc.max_length, batch_size, gains)
        ref["diff"] = {name: report["metrics"][name] - ref["metrics"][name] for name in metric_names()}
        report["reference"] = ref
    return report


def _score(queries: SparseEmbeddings, docs: SparseEmbeddings, data: BeirDataset, doc_seconds: float,
           query_seconds: float, gains: str) -> dict[str, Any]:
    start = time.perf_counter()
    top, _ = search(queries.to_csr(), docs.to_csr(), top_k=MAX_K)
    search_seconds = time.perf_counter() - start
    rankings = [[data.corpus_ids[i] for i in row] for row in top]
    return {
        "metrics": mean_metrics(rankings, [data.qrels[q] for q in data.query_ids], gains),
        "query_active_dims": float(np.mean(queries.active_dims)),
        "document_active_dims": float(np.mean(docs.active_dims)),
        "truncated_queries": queries.truncated, "truncated_documents": docs.truncated,
        "encode_seconds": {"documents": doc_seconds, "queries": query_seconds},
        "docs_per_second": len(docs) / doc_seconds if doc_seconds > 0 else None,
        "search_seconds": search_seconds,
    }


# -- the torch reference ------------------------------------------------------------------------


def reference_model_dir(export_dir: str | Path) -> Path:
    """The model the export was made from. The bundled default is found by package location, not by
    the recorded path: the export may come from another checkout or virtual environment."""
    from ..manifest import read_manifest

    source = read_manifest(export_dir).source
    ref, path = str(source.get("model", "")), str(source.get("path", ""))
    if ref.startswith("default:") or path.startswith("default:"):
        from ..export.source import default_model_dir

        return default_model_dir()
    if not path or not Path(path).is_dir():
        raise SpladeError(f"{export_dir}: the export's source model {path or ref!r} is not a directory here; "
                          "--reference needs the model the export was made from")
    return Path(path)


def _score_reference(export_dir: str | Path, data: BeirDataset, max_length: int, batch_size: int,
                     gains: str) -> dict[str, Any]:
    from ..manifest import read_manifest

    manifest = read_manifest(export_dir)
    model_dir = reference_model_dir(export_dir)
    encode = _reference_encoder(model_dir, max_length, manifest.tokenizer.lowercase, manifest.model.activation,
                                batch_size)
    start = time.perf_counter()
    docs = encode(data.corpus_texts)
    doc_seconds = time.perf_counter() - start
    start = time.perf_counter()
    queries = encode(data.query_texts)
    result = _score(queries, docs, data, doc_seconds, time.perf_counter() - start, gains)
    result["model_dir"] = str(model_dir)
    return result


def _reference_encoder(model_dir: Path, max_length: int, lowercase: bool, activation: str, batch_size: int):
    """transformers' tokenizer and the torch reference the export's parity check uses (its head's:
    export.heads), batched by length like the runtime so padding doesn't dominate the CPU time."""
    try:
        import torch  # noqa: F401
        from transformers import AutoTokenizer
    except ImportError:
        raise SpladeError("--reference needs torch and transformers: pip install 'splade-rt[export]'") from None

    from ..export.heads import export_head
    from ..export.source import resolve_source
    from ..runtime.batching import in_input_order, padded_batches

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), use_fast=True)
    source = resolve_source(str(model_dir))
    source.activation = activation  # what the export recorded (a transformers directory records none)
    head = export_head(source)  # the export's parity reference: SpladePooling's math, or FlagEmbedding's
    model = head.load(source)  # no weight-loading bar: it would break the one-line-per-fact output
    vocab_size = int(model.config.vocab_size)

    def encode(texts: list[str]) -> SparseEmbeddings:
        if lowercase:
            texts = [t.lower() for t in texts]
        ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
        parts, done = [], []
        for rows, batch, mask in padded_batches(ids, tokenizer.pad_token_id or 0, batch_size, REFERENCE_BATCH_TOKENS):
            dense = head.reference(model, source, batch, mask)[0]
            parts.append(SparseEmbeddings.from_dense(dense))
            done.append(rows)
        if not parts:
            return SparseEmbeddings.empty(vocab_size)
        return in_input_order(parts, done)

    return encode


# -- output ---------------------------------------------------------------------------------------


def format_report(report: dict[str, Any]) -> list[str]:
    ref = report.get("reference")
    enc = report["encode_seconds"]
    lines = [
        (f"dataset {report['dataset']} ({report['split']}): {report['queries']} queries "
         f"({report['skipped_queries']} without a relevant document skipped), {report['documents']} documents"),
        (f"graph {report['graph']} on {report['provider']}, max length {report['max_length']}, "
         f"batch size {report['batch_size']}"),
        (f"encode: {report['documents']} documents in {enc['documents']:.1f} s ({_rate(report)} docs/s, "
         f"{report['truncated_documents']} truncated to {report['max_length']} tokens), "
         f"{report['queries']} queries in {enc['queries']:.2f} s; "
         f"search {report['search_seconds']:.2f} s"),
        f"mean active dims: queries {report['query_active_dims']:.1f}, documents {report['document_active_dims']:.1f}",
        "ndcg gains: " + _GAINS_NOTE[report["gains"]],
    ]
    if ref:
        lines.append(f"reference (torch, {ref['model_dir']}): {ref['encode_seconds']['documents']:.1f} s for documents "
                     f"({_rate(ref)} docs/s), mean active dims: queries "
                     f"{ref['query_active_dims']:.1f}, documents {ref['document_active_dims']:.1f}")
    lines.append("")
    lines.append(f"{'metric':<14}{'splade-rt':>10}" + (f"{'reference':>11}{'diff':>11}" if ref else ""))
    for name in metric_names():
        value = report["metrics"][name]
        row = f"{name:<14}{value:>10.4f}"
        if ref:
            row += f"{ref['metrics'][name]:>11.4f}{ref['diff'][name]:>+11.4f}"
        lines.append(row)
    return lines


_GAINS_NOTE = {
    "graded": "graded (a relevant document gains its qrel grade: BEIR / pytrec_eval; --gains binary for "
              "sentence-transformers' evaluator)",
    "binary": "binary (every relevant document gains 1: sentence-transformers' evaluator; --gains graded for "
              "BEIR / pytrec_eval)",
}


def _rate(part: dict[str, Any]) -> str:
    return "n/a" if part["docs_per_second"] is None else f"{part['docs_per_second']:.1f}"


if __name__ == "__main__":
    sys.exit(main())
