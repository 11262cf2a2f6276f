"""The output directory: shard files published atomically, and the record that makes reruns safe.

Exactly-once rests on three rules. A shard is written under a temporary name and renamed into
place only when all its rows are in (after an fsync), so a shard file that exists is complete and
a crash leaves at most a temporary file, removed on the next run. Shard names come from the input
order alone, so a rerun knows which shards are done by listing the directory. And a rerun must
produce the same shards: the run record names the export, the input files and every option that
changes the output, and a rerun with any of them different stops before doing anything.

The record lives beside the directory, not in it (OUT/ -> .OUT.splade-corpus.json), so that a
finished OUT/ holds nothing but shards and opens as it is: pyarrow.dataset.dataset(OUT),
pandas.read_parquet(OUT), DuckDB's read_parquet('OUT/*.parquet'), Spark, and Anserini's
`IndexCollection -collection JsonVectorCollection -input OUT`. Anserini is what rules out every name
inside: JsonVectorCollection sets no file filter, and DocumentCollection's walker
(Files.walkFileTree) reads every file under -input, hidden or not, so any record in there is parsed
as a document and fails with a NullPointerException (no "vector" field). Earlier versions kept the
record inside, as splade-corpus.json: such a directory still resumes, and its record moves out.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from ..errors import CorpusError
from .hints import option

RECORD_SUFFIX = ".splade-corpus.json"
LEGACY_RECORD = "splade-corpus.json"  # inside the output directory: where earlier versions kept it
FRAGMENTS = ".fragments"  # the Ray engine's per-block output, merged into shards at the end
COMPARED = ("export", "input", "config")  # the record sections a rerun must match
_SHARD = re.compile(r"part-\d{5,}\.\w+")  # part-00000.parquet, part-00000.jsonl: the shard names of any format


def record_path(output_dir: str | Path) -> Path:
    """The run record of an output directory: the hidden file beside it, .NAME.splade-corpus.json."""
    path = Path(os.path.abspath(output_dir))
    if path.parent == path:
        raise CorpusError(f"{output_dir}: a file system root can't be an output directory")
    return path.parent / f".{path.name}{RECORD_SUFFIX}"


class OutputDir:
    """OUT_DIR/part-00000.parquet ... and, beside it, .OUT_DIR.splade-corpus.json."""

    def __init__(self, path: str | Path, suffix: str) -> None:
        self.path = Path(path)
        self.suffix = suffix
        self.state_path = record_path(self.path)
        self.legacy_path = self.path / LEGACY_RECORD

    def shard_path(self, shard: int) -> Path:
        return self.path / f"part-{shard:05d}{self.suffix}"

    def tmp_path(self, shard: int) -> Path:
        return self.path / f".part-{shard:05d}{self.suffix}.tmp-{os.getpid()}"

    @property
    def fragments(self) -> Path:
        return self.path / FRAGMENTS

    def complete(self, shards: int) -> set[int]:
        return {s for s in range(shards) if self.shard_path(s).is_file()}

    def check(self, record: dict[str, Any], force: bool) -> dict[str, Any] | None:
        """Before any work: the previous state to resume from, None for a fresh start. Raises when
        the directory holds someone else's files or a run with a different export, input or options."""
        if not self.path.exists():
            return None  # a record left beside a deleted directory is stale: start() replaces it
        if not self.path.is_dir():
            raise CorpusError(f"{self.path}: exists and is not a directory")
        source = next((p for p in (self.state_path, self.legacy_path) if p.is_file()), None)
        if source is None:
            if any(self.path.iterdir()):
                raise CorpusError(f"{self.path}: not empty and has no run record beside it ({self.state_path.name}), "
                                  "so it is no output of splade-encode-corpus; choose a new or empty directory")
            return None
        try:
            previous = json.loads(source.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            if force:
                return None
            raise CorpusError(f"{source}: corrupt ({e}); {option('force', True)} starts over") from None
        if force or not self._has_results():
            return None  # nothing encoded yet (an early failure, say a bad device): nothing to keep consistent
        for section in COMPARED:
            change = _first_difference(previous.get(section), record[section], section)
            if change:
                raise CorpusError(f"{self.path}: was written with a different {section} ({change}); rerun with the "
                                  f"same ones, pass {option('force', True)} to start over, or choose another "
                                  f"{option('output_dir')}")
        return previous

    def _has_results(self) -> bool:
        return any(_SHARD.fullmatch(p.name) for p in self.path.iterdir()) \
            or (self.fragments.is_dir() and any(self.fragments.rglob("*.parquet")))

    def start(self, state: dict[str, Any], fresh: bool) -> None:
        """Create the directory (only now: a run that fails vetting leaves nothing) and clear what a
        fresh start or a crashed run left: temporary files always, shards and fragments on a fresh start.
        The record is written beside the directory, and one an earlier version left inside is removed."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CorpusError(f"{self.path}: can't create the output directory ({e.strerror})") from None
        for item in self.path.iterdir():
            ours = item.name.startswith(".part-") and ".tmp-" in item.name
            if fresh:
                ours = ours or bool(_SHARD.fullmatch(item.name))
            if ours:
                item.unlink()
        if fresh and self.fragments.exists():
            shutil.rmtree(self.fragments)
        for stale in self.state_path.parent.glob(f"{self.state_path.name}.tmp-*"):
            stale.unlink(missing_ok=True)
        self.save(state)
        self.legacy_path.unlink(missing_ok=True)

    def publish(self, tmp: Path, shard: int) -> None:
        os.replace(tmp, self.shard_path(shard))
        _fsync_dir(self.path)

    def save(self, state: dict[str, Any]) -> None:
        tmp = self.state_path.with_name(f"{self.state_path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(state, f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.state_path)
        except OSError as e:
            raise CorpusError(f"{self.state_path}: can't write the run record beside {self.path} ({e.strerror})") \
                from None


def _first_difference(old: Any, new: Any, where: str) -> str | None:
    """'where.key: old -> new' for the first difference between two JSON values, None if equal."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(new) + [k for k in old if k not in new]:
            change = _first_difference(old.get(key), new.get(key), f"{where}.{key}")
            if change:
                return change
        return None
    if old != new:
        return f"{where}: {_short(old)} -> {_short(new)}"
    return None


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fsync_dir(path: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories can't be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
