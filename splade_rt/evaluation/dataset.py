"""Load a BEIR dataset directory (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) and vet it.

Everything is checked before any encoding starts: a typo in a qrels file found after ten minutes
of encoding a corpus wastes the ten minutes. Each problem is one DatasetError naming the file, the
line and an example of the bad value, so the user can fix the data without a debugger.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import DatasetError


@dataclass
class BeirDataset:
    """A vetted dataset: the corpus in file order, the evaluable queries and their graded qrels.

    Only queries with at least one qrel of grade > 0 are kept (the others cannot score anything and
    sentence-transformers' evaluator skips them too). qrels keep only grades > 0: a grade-0 row
    is the same as no row for every metric, and dropping it keeps the metric code free of that case.
    """

    corpus_ids: list[str]
    corpus_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, dict[str, float]]  # query id -> {corpus id: grade > 0}
    skipped_queries: int = 0  # queries in queries.jsonl without any relevant qrel


def load_beir(directory: str | Path, split: str = "test") -> BeirDataset:
    """Read and validate a BEIR directory; raises DatasetError naming the first problem found."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(f"{directory}: no such directory (expected a BEIR dataset: corpus.jsonl, queries.jsonl, "
                           "qrels/test.tsv)")
    corpus_file, queries_file = directory / "corpus.jsonl", directory / "queries.jsonl"
    qrels_file = directory / "qrels" / f"{split}.tsv"
    for path in (corpus_file, queries_file, qrels_file):
        if not path.is_file():
            raise DatasetError(f"{path}: missing (a BEIR dataset needs corpus.jsonl, queries.jsonl and "
                               f"qrels/{split}.tsv)")

    corpus = read_records(corpus_file, with_title=True)
    if not corpus:
        raise DatasetError(f"{corpus_file}: no documents")
    queries = read_records(queries_file, with_title=False)
    grades = _read_qrels(qrels_file)
    _check_ids(qrels_file, grades, queries, corpus, queries_file, corpus_file)

    qrels = {qid: {did: g for did, g in docs.items() if g > 0} for qid, docs in grades.items()}
    qrels = {qid: docs for qid, docs in qrels.items() if docs}
    query_ids = [qid for qid in queries if qid in qrels]  # queries.jsonl order, as sentence-transformers
    if not query_ids:
        raise DatasetError(f"{qrels_file}: no query has a relevant document (every score is 0 or below)")
    return BeirDataset(
        corpus_ids=list(corpus), corpus_texts=list(corpus.values()),
        query_ids=query_ids, query_texts=[queries[q] for q in query_ids],
        qrels={q: qrels[q] for q in query_ids}, skipped_queries=len(queries) - len(query_ids),
    )


def document_text(title: str | None, text: str) -> str:
    """A BEIR document as sentence-transformers' evaluator and BEIR's own loaders feed it to the
    model: title, one space, text; a missing or empty title adds nothing. The one home of this rule
    (evaluation, bulk encoding, benchmarks and tests all read documents through it)."""
    return (title + " " + text).strip() if title else text.strip()


def read_records(path: str | Path, *, with_title: bool, limit: int | None = None) -> dict[str, str]:
    """id -> text of a BEIR corpus.jsonl (with_title: title and text joined by document_text) or
    queries.jsonl, in file order, the first `limit` records only if given; raises DatasetError naming
    the line of the first bad record. The one reader of BEIR records: evaluation, benchmarks, tests."""
    records: dict[str, str] = {}
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if limit is not None and len(records) >= limit:
                break
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DatasetError(f"{path}:{number}: not UTF-8 ({e.reason} at byte {e.start})") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path}:{number}: malformed JSON line ({e.msg} at column {e.colno})") from None
            if not isinstance(record, dict):
                raise DatasetError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            rid, text = record.get("_id"), record.get("text")
            if rid is None or isinstance(rid, (dict, list)) or str(rid) == "":
                raise DatasetError(f"{path}:{number}: missing '_id' field")
            if not isinstance(text, str):
                what = "missing" if text is None else f"not a string ({type(text).__name__})"
                raise DatasetError(f"{path}:{number}: 'text' field {what} (id {rid!r})")
            rid = str(rid)  # some BEIR exports write integer ids; qrels always hold strings
            if rid in records:
                raise DatasetError(f"{path}:{number}: duplicate _id {rid!r}")
            if with_title:
                title = record.get("title")
                if title is not None and not isinstance(title, str):
                    raise DatasetError(f"{path}:{number}: 'title' field is not a string (id {rid!r})")
                text = document_text(title, text)
            records[rid] = text
    return records


def _read_qrels(path: Path) -> dict[str, dict[str, float]]:
    """query id -> {corpus id: grade}, all grades kept so that validation sees every row."""
    grades: dict[str, dict[str, float]] = {}
    with open(path, encoding="utf-8", errors="strict") as f:
        try:
            lines = f.read().splitlines()
        except UnicodeDecodeError as e:
            raise DatasetError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise DatasetError(f"{path}:{number}: expected 3 tab-separated fields (query-id, corpus-id, score), "
                               f"got {len(fields)}: {line[:80]!r}")
        qid, did, score = (x.strip() for x in fields)
        grade = _grade(score)
        if grade is None:
            if number == 1:  # the BEIR header: query-id corpus-id score
                continue
            raise DatasetError(f"{path}:{number}: score {score!r} is not a number")
        grades.setdefault(qid, {})[did] = grade
    return grades


def _grade(score: str) -> float | None:
    try:
        return float(int(score))
    except ValueError:
        pass
    try:
        value = float(score)
    except ValueError:
        return None
    return None if math.isnan(value) else value  # NaN is no grade


def _check_ids(qrels_file: Path, grades: dict[str, dict[str, float]], queries: dict[str, str],
               corpus: dict[str, str], queries_file: Path, corpus_file: Path) -> None:
    """qrels pointing at ids that don't exist mean a mismatched or truncated download: say so now,
    rather than silently scoring those documents as never retrieved."""
    unknown_q = [q for q in grades if q not in queries]
    if unknown_q:
        raise DatasetError(f"{qrels_file}: {len(unknown_q)} query id(s) not in {queries_file.name}, "
                           f"e.g. {unknown_q[0]!r}")
    unknown_d = list(dict.fromkeys(d for docs in grades.values() for d in docs if d not in corpus))
    if unknown_d:
        raise DatasetError(f"{qrels_file}: {len(unknown_d)} corpus id(s) not in {corpus_file.name}, "
                           f"e.g. {unknown_d[0]!r}")
