"""The output-format table: every place splade-encode-corpus writes vectors to is a row of OUTPUT_FORMATS.

A row is a shard file format (a suffix: one file per shard in OUT_DIR) or a sink (no suffix: it
takes every batch beside the shard files, and the option named by `enabled_by` turns it on). It
names what must be installed (checked before any work, so a missing package costs no vetting
pass), the options that shape its output (kept in the run record, so a rerun with other values is
refused), whether it needs the texts, and its writer: `open(export_dir, options)` -> the run's
writer (writers.py says what a writer is). `--format`'s choices and help, the install check, the
shard suffix and the rerun record all read this table: a new output format is one row plus its writer.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CorpusError
from .anserini import ANSERINI_FACTOR, AnseriniWriter, token_table
from .hints import option
from .writers import ParquetWriter, QdrantSink


@dataclass(frozen=True)
class OutputFormat:
    name: str
    suffix: str | None  # the shard file's suffix; None for a sink
    help: str  # one line for --format's help (or the enabling option's)
    open: Callable[[Path, Any], Any]  # (export_dir, CorpusOptions) -> the run's writer
    needs: tuple[str, str] | None = None  # (module to import, what to install) when not a core dependency
    keeps_text: bool = False  # its writer needs each document's text
    options: tuple[str, ...] = ()  # the CorpusOptions fields that shape its output
    enabled_by: str | None = None  # a sink: the CorpusOptions field whose value turns it on

    @property
    def is_sink(self) -> bool:
        return self.suffix is None

    def check_installed(self) -> None:
        """Raises CorpusError naming what to install when the row's package is missing."""
        if self.needs is None:
            return
        module, install = self.needs
        try:
            importlib.import_module(module)
        except ImportError:
            what = option(self.enabled_by) if self.is_sink else option("format", self.name)
            raise CorpusError(f"{what} needs {install}") from None


OUTPUT_FORMATS: dict[str, OutputFormat] = {f.name: f for f in (
    OutputFormat("parquet", ".parquet", "id, indices, values per shard (default); reads as it is with pyarrow, "
                 "pandas, DuckDB or Spark", lambda export_dir, options: ParquetWriter(),
                 needs=("pyarrow.parquet", "pyarrow: pip install 'splade-rt[distributed]'")),
    OutputFormat("anserini", ".jsonl", "Anserini's JsonVectorCollection (index with -impact -pretokenized; "
                 "queries: splade_rt.bulk.write_anserini_topics)",
                 lambda export_dir, options: AnseriniWriter(token_table(export_dir), options.quantization_factor),
                 keeps_text=True, options=("quantization_factor",)),
    OutputFormat("qdrant", None, "also upsert into Qdrant: a URL, or a path (embedded local mode)",
                 lambda export_dir, options: QdrantSink(options.qdrant, options.collection),
                 needs=("qdrant_client", "qdrant-client: pip install 'splade-rt[qdrant]'"),
                 options=("qdrant", "collection"), enabled_by="qdrant"),
)}


def file_formats() -> tuple[str, ...]:
    """The names --format takes: the rows that write shard files."""
    return tuple(name for name, row in OUTPUT_FORMATS.items() if not row.is_sink)


def format_help() -> str:
    """--format's help, one clause per shard file format."""
    return "; ".join(f"{name}: {OUTPUT_FORMATS[name].help}" for name in file_formats())


def sinks_for(options: Any) -> list[OutputFormat]:
    """The sink rows the options turn on."""
    return [row for row in OUTPUT_FORMATS.values() if row.is_sink and getattr(options, row.enabled_by) is not None]


__all__ = ["ANSERINI_FACTOR", "OUTPUT_FORMATS", "OutputFormat", "file_formats", "format_help", "sinks_for"]
