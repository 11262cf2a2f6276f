"""The output directory: shard files published atomically, and the record that makes reruns safe.

Exactly-once rests on three rules. A shard is written under a temporary name and renamed into
place only when all its rows are in (after an fsync), so a shard file that exists is complete and
a crash leaves at most a temporary file, removed on the next run. Shard names come from the input
order alone, so a rerun knows which shards are done by listing the directory. And a rerun must
produce the same shards: `splade-corpus.json` records the export, the input files and every option
that changes the output, and a rerun with any of them different stops before doing anything.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..errors import CorpusError

STATE_NAME = "splade-corpus.json"
FRAGMENTS = ".fragments"  # the Ray engine's per-block output, merged into shards at the end
SUFFIXES = (".parquet", ".jsonl")
COMPARED = ("export", "input", "config")  # the record sections a rerun must match


class OutputDir:
    """OUT_DIR/part-00000.parquet ... and OUT_DIR/splade-corpus.json."""

    def __init__(self, path: str | Path, suffix: str) -> None:
        self.path = Path(path)
        self.suffix = suffix
        self.state_path = self.path / STATE_NAME

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
            return None
        if not self.path.is_dir():
            raise CorpusError(f"{self.path}: exists and is not a directory")
        if not self.state_path.is_file():
            if any(self.path.iterdir()):
                raise CorpusError(f"{self.path}: not empty and holds no {STATE_NAME}, so it is no output of "
                                  "splade-encode-corpus; choose a new or empty directory")
            return None
        try:
            previous = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            if force:
                return None
            raise CorpusError(f"{self.state_path}: corrupt ({e}); pass --force to start over") from None
        if force or not self._has_results():
            return None  # nothing encoded yet (an early failure, say a bad device): nothing to keep consistent
        for section in COMPARED:
            change = _first_difference(previous.get(section), record[section], section)
            if change:
                raise CorpusError(f"{self.path}: was written with a different {section} ({change}); rerun with the "
                                  "same ones, pass --force to start over, or choose another -o")
        return previous

    def _has_results(self) -> bool:
        return any(p.name.startswith("part-") and p.suffix in SUFFIXES for p in self.path.iterdir()) \
            or (self.fragments.is_dir() and any(self.fragments.rglob("*.parquet")))

    def start(self, state: dict[str, Any], fresh: bool) -> None:
        """Create the directory (only now: a run that fails vetting leaves nothing) and clear what a
        fresh start or a crashed run left: temporary files always, shards and fragments on a fresh start."""
        self.path.mkdir(parents=True, exist_ok=True)
        for item in self.path.iterdir():
            ours = item.name.startswith(".part-") and ".tmp-" in item.name
            if fresh:
                ours = ours or (item.name.startswith("part-") and item.suffix in SUFFIXES)
            if ours:
                item.unlink()
        if fresh and self.fragments.exists():
            shutil.rmtree(self.fragments)
        self.save(state)

    def publish(self, tmp: Path, shard: int) -> None:
        os.replace(tmp, self.shard_path(shard))
        _fsync_dir(self.path)

    def save(self, state: dict[str, Any]) -> None:
        tmp = self.path / f".{STATE_NAME}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(state, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_path)


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
