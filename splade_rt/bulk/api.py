"""`encode_corpus`: check everything cheap, vet the corpus, then encode only the shards not done.

The order is the contract with the user: options, export and input are checked against a previous
run before anything is read; every row is vetted before anything is written; and the output
directory is created only after that, so a run that fails early leaves nothing behind.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import CorpusError
from ..manifest import read_manifest
from ..runtime.providers import parse_device
from ..validation import positive_int
from .formats import ANSERINI_FACTOR, OUTPUT_FORMATS, file_formats, sinks_for
from .hints import on_command_line, option
from .plan import Plan, vet
from .readers import Fields, InputFile, resolve_inputs
from .shards import OutputDir
from .writers import ShardWriter

logger = logging.getLogger("splade_rt")

STATE_VERSION = 1
ENGINES = ("local", "ray")
ON_ERROR = ("stop", "skip")


@dataclass(frozen=True)
class CorpusOptions:
    """Every option of `splade-encode-corpus` (see `splade-encode-corpus --help` for each one)."""

    engine: str = "local"
    ray_address: str | None = None
    workers: int | None = None
    cpus_per_worker: float | None = None
    gpus_per_worker: float = 1.0
    device: str = "auto"
    batch_size: int = 32
    max_length: int | None = None
    top_k: int | None = None
    threshold: float | None = None
    format: str = "parquet"
    quantization_factor: float = ANSERINI_FACTOR
    qdrant: str | None = None
    collection: str | None = None
    id_field: str = "_id"
    text_field: str = "text"
    title_field: str | None = "title"
    on_error: str = "stop"
    shard_size: int = 10_000
    force: bool = False
    progress: bool = True
    verbose: bool = False  # engine="ray": Ray's own log lines, its workers' output and its progress bars

    def check(self, export_max_length: int) -> None:
        for name, value, allowed in (("engine", self.engine, ENGINES), ("format", self.format, file_formats()),
                                     ("on_error", self.on_error, ON_ERROR)):
            if value not in allowed:
                raise ValueError(f"{option(name, value)}: expected one of {', '.join(allowed)}")
        parse_device(self.device)  # a bad device is reported before the corpus is read
        for name in ("batch_size", "shard_size", "workers", "top_k"):
            value = getattr(self, name)
            if value is not None:
                positive_int(value, option(name))
        for name in ("cpus_per_worker", "gpus_per_worker", "quantization_factor"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{option(name)} must be positive, not {value!r}")
        if self.max_length is not None and not 2 <= self.max_length <= export_max_length:
            raise ValueError(f"{option('max_length', self.max_length)}: must be between 2 and the export's "
                             f"{export_max_length}")
        if (self.qdrant is None) != (self.collection is None):
            raise ValueError(f"{option('qdrant')} and {option('collection')} go together: "
                             f"{option('qdrant', 'PATH_OR_URL')} {option('collection', 'NAME')}")
        if self.ray_address is not None and self.engine != "ray":
            raise ValueError(f"{option('ray_address')} is for {option('engine', 'ray')}")

    def config(self) -> dict[str, Any]:
        """The options that change the output: a rerun must use the same ones to resume. The format's
        and the sinks' own options come from their rows."""
        keys = ["device", "max_length", "top_k", "threshold", "format", "id_field", "text_field", "title_field",
                "on_error", "shard_size"]
        for row in (OUTPUT_FORMATS[self.format], *sinks_for(self)):
            keys += row.options
        return {key: getattr(self, key) for key in keys}


@dataclass
class CorpusSummary:
    """What a call did: documents in the output, how many this call encoded, and how fast."""

    output: Path
    documents: int
    encoded: int
    shards: int
    seconds: float
    skipped: dict[str, int] = field(default_factory=dict)
    empty: int = 0  # documents with an empty text: in the output, with no terms (the rule of SpladeEncoder.encode)

    @property
    def documents_per_s(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        skipped = sum(self.skipped.values())
        extra = f", {self.empty} empty (no terms)" if self.empty else ""
        extra += f", {skipped} bad rows skipped ({_counts(self.skipped)})" if skipped else ""
        shards = f"{self.shards} shard" + ("s" if self.shards != 1 else "")
        return (f"{self.documents} documents in {shards} -> {self.output} ({self.encoded} encoded in "
                f"{self.seconds:.1f} s, {self.documents_per_s:.1f} documents/s{extra})")


def encode_corpus(export_dir: str | Path, input: str | Path, output_dir: str | Path, **options: Any) -> CorpusSummary:
    """Encode a corpus (a BEIR corpus.jsonl, JSONL, CSV or Parquet; a file or a directory) into sparse
    vectors, sharded, resumable and exactly-once; keyword options as `CorpusOptions`. Returns what
    was done; raises CorpusError (bad input, a different earlier run in output_dir) or ValueError.

    output_dir ends up holding only the shards (part-00000.parquet, ...), so it opens as it is with
    pyarrow.dataset.dataset, pandas.read_parquet, DuckDB, Spark or Anserini; the run record that
    makes reruns resume is the hidden file beside it (.NAME.splade-corpus.json, shards.py). A
    document with an empty text is kept, with no terms, and counted in the summary."""
    opts = CorpusOptions(**options)
    manifest = read_manifest(export_dir)
    opts.check(manifest.tokenizer.max_length)
    outputs = [OUTPUT_FORMATS[opts.format], *sinks_for(opts)]
    for row in outputs:
        row.check_installed()
    files = resolve_inputs(input)
    record = _record(manifest, files, opts)
    out = OutputDir(output_dir, outputs[0].suffix)
    previous = out.check(record, opts.force)
    engine = _engine(opts.engine)

    began = time.perf_counter()
    plan = vet(files, Fields(opts.id_field, opts.text_field, opts.title_field or None), opts.on_error)
    shards = plan.shard_count(opts.shard_size)
    state = {"format_version": STATE_VERSION, **record, "status": "running", "documents": plan.total,
             "shards": shards, "empty_documents": plan.empty, "skipped": plan.skipped,
             "skipped_examples": plan.examples,
             "options": {**asdict(opts), "export_dir": str(Path(export_dir).resolve())},
             "runs": (previous or {}).get("runs", [])}
    writer = _writer(out, outputs, export_dir, opts)
    try:
        out.start(state, fresh=previous is None)
        done = out.complete(shards)
        pending = [s for s in range(shards) if s not in done]
        vetted = time.perf_counter()
        encoded = _encode(engine, export_dir, plan, pending, opts, writer)
        seconds = time.perf_counter() - vetted
    finally:
        writer.close()
    summary = CorpusSummary(out.path, plan.total, encoded, shards, seconds, dict(plan.skipped), plan.empty)
    state["status"] = "complete"
    state["runs"].append({"engine": opts.engine, "workers": opts.workers, "device": opts.device,
                          "documents": encoded, "shards": len(pending), "vet_seconds": round(vetted - began, 3),
                          "seconds": round(seconds, 3), "documents_per_s": round(summary.documents_per_s, 2),
                          "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    out.save(state)
    if not on_command_line():  # the command prints this line itself
        logger.info("splade-encode-corpus: %s", summary.line())
    return summary


def _record(manifest, files: list[InputFile], opts: CorpusOptions) -> dict[str, Any]:
    """What a rerun must match: the export (its weights' and files' hashes, not its path, so a moved
    export still resumes), the input files and the output-defining options."""
    return {"export": {"model": manifest.source.get("model"), "weights_sha256": manifest.source.get("weights_sha256"),
                       "files": {name: entry.sha256 for name, entry in sorted(manifest.files.items())}},
            "input": [{"path": f.path, "format": f.format, "bytes": f.bytes} for f in files],
            "config": opts.config()}


def _writer(out: OutputDir, outputs: list, export_dir: str | Path, opts: CorpusOptions) -> ShardWriter:
    """The run's writers, from the format's row and the sinks' rows; a sink that fails to open
    (Qdrant unreachable) closes the ones already open."""
    opened = []
    try:
        for row in outputs:
            opened.append(row.open(Path(export_dir), opts))
    except BaseException:
        for writer in opened:
            writer.close()
        raise
    return ShardWriter(out, opened[0], keeps_text=any(row.keeps_text for row in outputs), sinks=opened[1:])


def _encode(engine, export_dir: str | Path, plan: Plan, pending: list[int], opts: CorpusOptions,
            writer: ShardWriter) -> int:
    """Shards with no rows (only an empty corpus has one) are published as they are; the engine
    gets the rest."""
    work = []
    for shard in pending:
        if plan.shard_rows(shard, opts.shard_size):
            work.append(shard)
        else:
            with writer.shard(shard, 0):
                pass
    return engine(export_dir, plan, work, opts, writer) if work else 0


def _engine(name: str):
    """The engine's entry point, imported now: a missing Ray is reported before any work."""
    if name == "local":
        from .local import run_local

        return run_local
    try:
        from .ray_engine import run_ray
    except ImportError as e:
        raise CorpusError(f"{option('engine', 'ray')} needs Ray Data and pyarrow: pip install "
                          f"'splade-rt[distributed]' ({e})") from None
    return run_ray


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{kind}: {n}" for kind, n in counts.items())
