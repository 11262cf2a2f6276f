"""The vetting pass and the shard plan: every row checked before a single one is encoded.

A malformed line found after an hour of encoding wastes the hour, and a duplicate id can only be
seen with the whole corpus in view, which no Ray read task has. So one streaming pass reads every
file first. It either stops at the first bad row with its file and line (the default), or records
which rows to skip and why (`on_error="skip"`). What it leaves is small: per file, the position of
its first accepted row in the corpus and the duplicate rows to pass over. From that, any reader of
any file (a local loop or a Ray read task) numbers the accepted rows the same way. Shard k is
positions [k * shard_size, (k + 1) * shard_size): names follow from the input order alone.

Duplicates are found from 64-bit hashes of the ids (8 bytes a row, plus 8 for where the row is),
and only hash collisions are re-read to compare the ids themselves: 8.8M MS MARCO ids take about
140 MB here (twice that while sorting) instead of the ~1 GB a Python set of strings would.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ..errors import CorpusError
from .hints import option
from .readers import Fields, InputFile, read_rows

_MASK = (1 << 64) - 1
_ROW_BITS = 40  # a row's place packed as file index << 40 | row number (files of up to 10^12 rows)


@dataclass
class Plan:
    """What the vetting pass found; enough for any reader to number accepted rows identically."""

    files: list[InputFile]
    fields: Fields
    first: list[int]  # corpus position of each file's first accepted row
    accepted: list[int]  # accepted rows per file
    duplicates: dict[int, frozenset[int]] = field(default_factory=dict)  # file -> row numbers skipped as such
    skipped: dict[str, int] = field(default_factory=dict)  # problem kind -> rows skipped
    empty: int = 0  # accepted rows with an empty text (encoded with no terms, as SpladeEncoder.encode does)
    examples: dict[str, str] = field(default_factory=dict)  # problem kind -> the first one, with its place

    @property
    def total(self) -> int:
        return sum(self.accepted)

    def shard_count(self, shard_size: int) -> int:
        """At least one: an empty corpus still gets one (empty) shard, so its output is a valid dataset."""
        return max(1, -(-self.total // shard_size))

    def shard_range(self, shard: int, shard_size: int) -> tuple[int, int]:
        start = shard * shard_size
        return start, min(start + shard_size, self.total)

    def shard_rows(self, shard: int, shard_size: int) -> int:
        start, end = self.shard_range(shard, shard_size)
        return end - start

    def accepted_rows(self, index: int, stream) -> Iterator[tuple[int, str, str]]:
        """(position, id, text) of one file's accepted rows, read from `stream`; checks the count
        against the vetting pass, so a file changed since then stops the run instead of shifting
        every later document into the wrong shard."""
        source, position = self.files[index], self.first[index]
        skip = self.duplicates.get(index, frozenset())
        for row in read_rows(source, stream, self.fields):
            if row.problem is None and row.number not in skip:
                yield position, row.id, row.text
                position += 1
        if position - self.first[index] != self.accepted[index]:
            raise CorpusError(f"{source.path}: changed while being encoded ({position - self.first[index]} rows "
                              f"now, {self.accepted[index]} when vetted); rerun to vet it again")

    def files_for(self, positions: list[tuple[int, int]]) -> list[int]:
        """The files holding any of the given [start, end) position ranges: the others need no reading."""
        return [i for i, (first, n) in enumerate(zip(self.first, self.accepted))
                if n and any(start < first + n and first < end for start, end in positions)]


def vet(files: list[InputFile], fields: Fields, on_error: str = "stop") -> Plan:
    """Read every row once. on_error="stop" raises CorpusError at the first bad row, naming its file
    and line; "skip" counts each kind of problem and keeps the first example of each."""
    plan = Plan(files=files, fields=fields, first=[], accepted=[])
    hashes, places = array("Q"), array("q")
    for index, source in enumerate(files):
        plan.first.append(len(hashes))
        with open(source.path, "rb") as stream:
            for row in read_rows(source, stream, fields):
                if row.problem is not None:
                    _reject(plan, source, row.number, row.problem, on_error)
                    continue
                plan.empty += not row.text
                hashes.append(hash(row.id) & _MASK)
                places.append(index << _ROW_BITS | row.number)
        plan.accepted.append(len(hashes) - plan.first[index])
    _drop_duplicates(plan, np.frombuffer(hashes, dtype=np.uint64), np.frombuffer(places, dtype=np.int64), on_error)
    return plan


def _reject(plan: Plan, source: InputFile, number: int, problem: tuple[str, str], on_error: str) -> None:
    kind, message = problem
    if on_error == "stop":
        raise CorpusError(f"{source.at(number)}: {message} ({option('on_error', 'skip')} skips such rows)")
    plan.skipped[kind] = plan.skipped.get(kind, 0) + 1
    plan.examples.setdefault(kind, f"{source.at(number)}: {message}")


def _drop_duplicates(plan: Plan, hashes: np.ndarray, places: np.ndarray, on_error: str) -> None:
    """Every later occurrence of an id is a duplicate of its first (in input order)."""
    order = np.argsort(hashes, kind="stable")
    same = np.flatnonzero(hashes[order][1:] == hashes[order][:-1])
    if not same.size:
        return
    suspects = np.unique(np.concatenate([order[same], order[same + 1]]))  # accepted-row indexes, input order
    ids = _ids_at(plan, places[suspects])
    first_seen: dict[str, int] = {}
    dropped: dict[int, set[int]] = {}
    for place in places[suspects].tolist():
        rid = ids[place]
        if rid not in first_seen:
            first_seen[rid] = place
            continue
        index, number = divmod(place, 1 << _ROW_BITS)
        first = plan.files[first_seen[rid] >> _ROW_BITS].at(first_seen[rid] & ((1 << _ROW_BITS) - 1))
        _reject(plan, plan.files[index], number, ("duplicate id", f"duplicate id {rid!r} (first at {first})"),
                on_error)
        dropped.setdefault(index, set()).add(number)
    plan.duplicates = {index: frozenset(numbers) for index, numbers in dropped.items()}
    removed_before = 0
    for index in range(len(plan.files)):
        plan.first[index] -= removed_before
        plan.accepted[index] -= len(dropped.get(index, ()))
        removed_before += len(dropped.get(index, ()))


def _ids_at(plan: Plan, places: np.ndarray) -> dict[int, str]:
    """The ids at the given packed places: a second read, of only the files that hold any of them."""
    wanted = set(places.tolist())
    found: dict[int, str] = {}
    for index in sorted({p >> _ROW_BITS for p in wanted}):
        with open(plan.files[index].path, "rb") as stream:
            for row in read_rows(plan.files[index], stream, plan.fields):
                place = index << _ROW_BITS | row.number
                if place in wanted and row.problem is None:
                    found[place] = row.id
    return found


def rows_of(plan: Plan, shards: list[int], shard_size: int) -> Iterator[tuple[int, str, str]]:
    """(position, id, text) of the accepted rows in the given shards, in input order, reading only
    the files that hold them."""
    ranges = [plan.shard_range(s, shard_size) for s in shards]
    wanted = set(shards)
    for index in plan.files_for(ranges):
        with open(plan.files[index].path, "rb") as stream:
            for position, rid, text in plan.accepted_rows(index, stream):
                if position // shard_size in wanted:
                    yield position, rid, text
