"""What the benchmark scripts share: paths, texts, exports, graph inputs, result tables and figures.

Each helper lives here once; the scripts import it from here, never from one another. The
random-model builders belong to the tests (tests/random_models.py, which imports nothing from
here): this module puts that folder on the import path, and the scripts import `random_models`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = Path(os.environ.get("SPLADE_SHARED", REPO.parent / "shared"))
CACHE = HERE / ".cache"
COLLECTIONS = ("scifact", "vaswani", "cranfield", "cisi")
if str(REPO / "tests") not in sys.path:  # appended: it shadows nothing installed
    sys.path.append(str(REPO / "tests"))


def collection_texts(name: str, documents: int | None = None,
                     queries: int | None = None) -> tuple[list[str], list[str]]:
    """A shared collection's documents (title and text, as splade-eval reads them) and queries, in file
    order, the first `documents` / `queries` of them if given; ([], []) when it is not there."""
    from splade_rt.evaluation.dataset import read_records

    d = SHARED / "data" / name
    if not (d / "corpus.jsonl").is_file():
        return [], []
    return (list(read_records(d / "corpus.jsonl", with_title=True, limit=documents).values()),
            list(read_records(d / "queries.jsonl", with_title=False, limit=queries).values()))


def load_texts(quick: bool) -> tuple[list[str], list[str]]:
    """Passages from SciFact and Vaswani (mean ~ NQ passage length), queries from their query sets:
    the texts splade-bench times by default (splade_rt.bench.cli.figure_texts)."""
    from splade_rt.bench.cli import figure_texts

    n_pass, n_query = (32, 10) if quick else (512, 200)
    passages, queries = figure_texts(SHARED, n_pass, n_query)
    if not passages:  # no shared data: the exporter's parity texts, still real text
        from splade_rt.export.texts import PASSAGES, QUERIES

        passages, queries = (PASSAGES * 64)[:n_pass], (QUERIES * 25)[:n_query]
    return passages, queries


def graph_feeds(encoder, texts: list[str], batch_size: int = 32) -> list[dict[str, np.ndarray]]:
    """The graph's inputs for texts, batched as the encoder batches them (longest first, within its
    token budget), for scripts that run a graph session directly."""
    from splade_rt.runtime.batching import padded_batches

    return [{"input_ids": input_ids, "attention_mask": mask, "top_k": np.array([1], np.int64)}
            for _, input_ids, mask in padded_batches(encoder.tokenize(texts), encoder.pad_id, batch_size,
                                                     encoder.max_batch_tokens)]


def cached_export(model: str | None, out: Path, **kwargs) -> Path:
    """export_model(model, out, **kwargs), unless out holds an export made by the same exporter code
    with the same arguments: a change to the graphs or the kernels re-exports, nothing else does."""
    from splade_rt.export.pipeline import export_model

    options = {k: v for k, v in kwargs.items() if k != "log"}  # a function's repr differs per process
    code = hashlib.sha256(repr(sorted(options.items(), key=str)).encode())
    package = REPO / "splade_rt"
    for pattern in ("manifest.py", "variants.py", "export/*.py", "kernels/*.py", "kernels/*.c"):
        for path in sorted(package.glob(pattern)):
            code.update(path.read_bytes())
    stamp = out / ".exported-by"
    if not (out / "splade.json").is_file() or not stamp.is_file() or stamp.read_text() != code.hexdigest():
        export_model(model, out, force=True, **kwargs)
        stamp.write_text(code.hexdigest())
    return out


def prepare_models(st_dir: Path | None, naive: bool = True) -> dict[str, Path]:
    """Exports (chunked default with the opt-in int8 graph, and a one-chunk graph that materializes
    the logits) and an ST copy."""
    CACHE.mkdir(exist_ok=True)
    paths = {"chunked": CACHE / "export", **({"naive": CACHE / "export-unchunked"} if naive else {})}
    naive_kwargs = {"vocab_chunk": 30522, "screened": False, "fp16": False}
    for key, kwargs in (("chunked", {"int8": True}), ("naive", naive_kwargs)):
        if key in paths:
            cached_export(None, paths[key], log=lambda _: None, **kwargs)
    shared_st = SHARED / "models" / "splade-tiny-msmarco-st"
    if st_dir is None:
        st_dir = shared_st if shared_st.is_dir() else CACHE / "st"
        if not (st_dir / "modules.json").is_file():
            from random_models import sentence_transformers_copy

            from splade_rt.export.source import default_model_dir

            sentence_transformers_copy(default_model_dir(), st_dir)
    paths["st"] = st_dir
    return paths


def candidate_count(encoder, texts: list[str]) -> int:
    """The vocab entries the screen passes to the exact fp32 pass, summed over texts (its internal
    'candidate' tensor, exposed as an extra output of a copy of the graph)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    model = onnx.load(str(encoder.path / encoder.placement.file))
    model.graph.output.append(helper.make_tensor_value_info("candidate", TensorProto.BOOL, ["batch", "vocab"]))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return int(sum(session.run(["candidate"], feed)[0].sum() for feed in graph_feeds(encoder, texts)))


def script_parser(doc: str | None) -> argparse.ArgumentParser:
    """A benchmark script's command line: its docstring as the help, and --out for its results."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where to write the results")
    return parser


def save_figure(fig, path: Path, title: str, dpi: int = 110) -> None:
    """Title, lay out, write and release a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))  # room for the title above the axes' own
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def write_results(report: dict, out: Path, name: str, plot) -> Path:
    """REPORT as out/NAME-<cpu>.json and plot(report, png) beside it (name carries the date): a result
    file says which CPU it came from. Returns the path without its suffix."""
    slug = re.sub(r"[^a-z0-9]+", "-", report["machine"]["cpu"].lower()).strip("-")
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{name}-{slug}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, stem.with_suffix(".png"))
    print(f"wrote {stem}.json and .png")
    return stem


def cell(entry: dict, key: str, fmt: str) -> str:
    """A results-table cell: the entry's number formatted, "-" where it has none."""
    value = entry.get(key)
    return format(value, fmt) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def why_not(entry: dict) -> str:
    """Why a result entry has no numbers: its "skipped" or "unavailable" reason or its error, else ""."""
    return entry.get("skipped") or entry.get("unavailable") or ("failed: " + entry["error"] if "error" in entry else "")


def markdown_table(columns: list[str], rows: list[list]) -> list[str]:
    """A Markdown table's lines: header, rule, one line per row (a short row is padded with empty cells)."""
    return table_head(columns) + ["| " + " | ".join(str(c) for c in row + [""] * (len(columns) - len(row))) + " |"
                                  for row in rows]


def table_head(columns: list[str]) -> list[str]:
    """A Markdown table's header and rule rows."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
