"""Corpus files to rows: BEIR corpus.jsonl, any JSONL, CSV/TSV or Parquet, one file or a directory.

Each row is read from a binary stream and checked in one place, so the vetting pass, the local
engine and the Ray read tasks (which get pyarrow streams from Ray's file system layer) accept and
reject exactly the same rows, and number them the same way: the line of a JSONL row, the first line
of a CSV record, the 1-based row of a Parquet file. That number is what an error message names and
what the shard plan is built from, so it must not depend on who reads the file.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple

from ..errors import CorpusError
from ..evaluation.dataset import document_text
from .hints import option

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv",
           ".parquet": "parquet", ".pq": "parquet"}
PARQUET_BATCH = 4096  # rows decoded at a time from a Parquet file
CSV_FIELD_LIMIT = 1 << 30


@dataclass(frozen=True)
class Fields:
    """Which record fields hold the id, the text and the (optional) title."""

    id: str = "_id"
    text: str = "text"
    title: str | None = "title"


@dataclass(frozen=True)
class InputFile:
    path: str  # absolute
    format: str  # jsonl | csv | tsv | parquet
    bytes: int

    def at(self, number: int) -> str:
        """Where a row is, as an error names it: path:line for text files, the row for Parquet."""
        return f"{self.path}: row {number}" if self.format == "parquet" else f"{self.path}:{number}"


class Row(NamedTuple):
    """One input row: either id and text (title already joined; "" for an empty document, which is
    encoded with no terms), or the reason it can't be encoded."""

    number: int
    id: str | None
    text: str | None
    problem: tuple[str, str] | None = None  # (kind, message), kind one of KINDS


KINDS = ("not UTF-8", "malformed", "missing field", "duplicate id")


def resolve_inputs(path: str | Path) -> list[InputFile]:
    """The files to read, in the order that defines shard numbers: a file, a BEIR dataset directory
    (its corpus.jsonl only: queries.jsonl beside it is not corpus), or every supported file under a
    directory in sorted path order (hidden files and folders left out)."""
    root = Path(path)
    if root.is_file():
        return [_input_file(root)]
    if not root.is_dir():
        raise CorpusError(f"{root}: no such file or directory")
    if (root / "corpus.jsonl").is_file():
        return [_input_file(root / "corpus.jsonl")]
    found = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in FORMATS
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not found:
        raise CorpusError(f"{root}: no corpus files in it (looked for {', '.join(sorted(FORMATS))})")
    return [_input_file(p) for p in found]


def _input_file(path: Path) -> InputFile:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise CorpusError(f"{path}: unsupported file type {path.suffix!r} "
                          f"(expected one of {', '.join(sorted(FORMATS))})")
    return InputFile(str(path.resolve()), fmt, path.stat().st_size)


def read_rows(source: InputFile, stream: IO[bytes], fields: Fields) -> Iterator[Row]:
    """Every row of one file, in file order, good or bad. File-level problems (a CSV header or a
    Parquet schema without the id or text column, an unreadable Parquet file) raise CorpusError:
    no row of such a file could be encoded, so skipping them one by one would only hide the cause."""
    if source.format == "parquet":
        yield from _parquet_rows(source, stream, fields)
    elif source.format == "jsonl":
        yield from _jsonl_rows(stream, fields)
    else:
        yield from _csv_rows(source, stream, fields, source.format)


def _jsonl_rows(stream: IO[bytes], fields: Fields) -> Iterator[Row]:
    for number, raw in enumerate(stream, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield Row(number, None, None, ("not UTF-8", f"not UTF-8 ({e.reason} at byte {e.start})"))
            continue
        if not line.strip():
            continue  # a blank line (often the last) is no record
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            yield Row(number, None, None, ("malformed", f"malformed JSON line ({e.msg} at column {e.colno})"))
            continue
        if not isinstance(record, dict):
            yield Row(number, None, None, ("malformed", f"expected a JSON object, got {type(record).__name__}"))
            continue
        yield _row(number, record, fields)


def _csv_rows(source: InputFile, stream: IO[bytes], fields: Fields, fmt: str) -> Iterator[Row]:
    # Lines are decoded with surrogateescape so one bad byte costs one record, not the rest of the file.
    # The csv module's default field limit (128 KiB) is below a long document's text.
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="")
    # TSV has no quoting (MS MARCO's and BEIR's .tsv files hold bare '"'); CSV quotes as RFC 4180 does.
    reader = (csv.reader(text, delimiter="\t", quoting=csv.QUOTE_NONE) if fmt == "tsv"
              else csv.reader(text))
    try:
        header = next(reader, None)
    except csv.Error as e:
        raise CorpusError(f"{source.at(1)}: malformed header ({e})") from None
    if header is None:
        return
    _check_columns(source, header, fields)
    start = reader.line_num + 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield Row(start, None, None, ("malformed", f"malformed CSV record ({e})"))
            start = reader.line_num + 1
            continue
        number, start = start, reader.line_num + 1
        if not values:
            continue
        if any(_has_bad_bytes(v) for v in values):
            yield Row(number, None, None, ("not UTF-8", "not UTF-8 (undecodable bytes in this record)"))
        elif len(values) != len(header):
            yield Row(number, None, None, ("malformed", f"expected {len(header)} fields, got {len(values)}"))
        else:
            yield _row(number, dict(zip(header, values)), fields)


def _has_bad_bytes(value: str) -> bool:
    return any("\udc80" <= c <= "\udcff" for c in value)


def _parquet_rows(source: InputFile, stream: IO[bytes], fields: Fields) -> Iterator[Row]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise CorpusError(f"{source.path}: reading Parquet needs pyarrow (pip install 'splade-rt[distributed]')") \
            from None
    try:
        parquet = pq.ParquetFile(stream)
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError and others for a bad file
        raise CorpusError(f"{source.path}: not a readable Parquet file ({str(e)[:160]})") from None
    names = parquet.schema_arrow.names
    _check_columns(source, names, fields)
    columns = [c for c in (fields.id, fields.text, fields.title) if c and c in names]
    number = 0
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH, columns=columns):
        for record in batch.to_pylist():
            number += 1
            yield _row(number, record, fields)


def _check_columns(source: InputFile, names: list[str], fields: Fields) -> None:
    for field, name in (("id_field", fields.id), ("text_field", fields.text)):
        if name not in names:
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise CorpusError(f"{source.path}: no column {name!r} (columns: {shown}); name it with {option(field)}")


def _row(number: int, record: Mapping[str, Any], fields: Fields) -> Row:
    """Check one record's fields and join title and text the way the evaluator does."""
    rid = record.get(fields.id)
    if rid is None or rid == "":
        return Row(number, None, None, ("missing field", f"missing id field {fields.id!r}"))
    if isinstance(rid, bool) or not isinstance(rid, (str, int)):
        message = f"id field {fields.id!r} is {type(rid).__name__}, expected a string or an integer"
        return Row(number, None, None, ("malformed", message))
    rid = str(rid)
    text = record.get(fields.text)
    if not isinstance(text, str):
        what = "missing" if text is None else f"not a string ({type(text).__name__})"
        return Row(number, rid, None, ("missing field", f"text field {fields.text!r} {what} (id {rid!r})"))
    title = record.get(fields.title) if fields.title else None
    if title is not None and not isinstance(title, str):
        return Row(number, rid, None, ("malformed", f"title field {fields.title!r} is not a string (id {rid!r})"))
    return Row(number, rid, document_text(title, text))
