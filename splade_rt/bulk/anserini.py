"""Anserini's impact format, both sides: documents as JsonVectorCollection shards, and queries in the
pre-tokenized form its impact search takes, quantized by one function so that the two always agree.

Lucene impact indexes store integer term frequencies. The naver/splade EncodeAnserini recipe, which
wrote the pre-encoded corpora of Anserini's and Pyserini's SPLADE regressions, makes one of a weight:
round(weight * 100), terms that round to 0 dropped. Queries go the same way: Anserini's own ONNX
query encoders (SparseEncoder.flatten) repeat each token as many times as its integer weight, and
`-impact -pretokenized` search splits on whitespace and counts the repeats back into weights.

    IndexCollection -collection JsonVectorCollection -input OUT -index IDX \\
        -generator DefaultLuceneDocumentGenerator -impact -pretokenized
    SearchCollection -index IDX -topics topics.tsv -topicReader TsvString -output run.txt \\
        -impact -pretokenized -hits 1000

A document with no terms (an empty text) is written with an empty vector; Anserini counts it as
"empty" and leaves it out of the index, where no query could have matched it anyway.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .writers import Batch, sync_close

logger = logging.getLogger("splade_rt")

ANSERINI_FACTOR = 100  # the SPLADE recipes' quantization factor


def quantize(indices: np.ndarray, values: np.ndarray, tokens: Sequence[str], factor: float) -> dict[str, int]:
    """{token: round(weight x factor)} with the terms that round to 0 dropped: a document's "vector"
    and a query's weights alike. numpy rounds halves to even; a weight exactly on a half is rare
    and the same on both sides, which is what a search needs."""
    impacts = np.rint(np.asarray(values, dtype=np.float64) * factor).astype(np.int64)
    keep = impacts > 0
    return {tokens[t]: q for t, q in zip(np.asarray(indices)[keep].tolist(), impacts[keep].tolist())}


def token_table(export_dir: str | Path) -> list[str]:
    """id -> token of the export's tokenizer, for Anserini's term keys (both engines and the query
    side use this one): runtime.vocab's table, the one decode() and rank_features read."""
    from tokenizers import Tokenizer

    from ..manifest import read_manifest
    from ..runtime.vocab import token_table as vocab_table

    manifest = read_manifest(export_dir)
    tokenizer = Tokenizer.from_file(str(manifest.verify_file(manifest.tokenizer.file)))
    return vocab_table(tokenizer, manifest.model.vocab_size)


class AnseriniWriter:
    """JsonVectorCollection shards: {"id", "contents", "vector": {token: integer impact}} per line."""

    def __init__(self, tokens: Sequence[str], factor: float) -> None:
        self.tokens, self.factor = tokens, factor

    def open(self, path: Path) -> _AnseriniFile:
        return _AnseriniFile(path, self.tokens, self.factor)

    def close(self) -> None:
        pass


class _AnseriniFile:
    def __init__(self, path: Path, tokens: Sequence[str], factor: float) -> None:
        self._file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by close(), which ShardWriter calls
        self._tokens, self._factor = tokens, factor

    def write(self, batch: Batch) -> None:
        texts = batch.texts if batch.texts is not None else [""] * len(batch.ids)
        lines = [json.dumps({"id": rid, "contents": text, "vector": quantize(indices, values, self._tokens,
                                                                              self._factor)}, ensure_ascii=False)
                 for (rid, indices, values), text in zip(batch.rows(), texts)]
        if lines:
            self._file.write("\n".join(lines) + "\n")

    def close(self) -> None:
        sync_close(self._file)


def anserini_queries(encoder: Any, texts: str | Sequence[str], *, factor: float = ANSERINI_FACTOR,
                     top_k: int | None = None, threshold: float | None = None,
                     batch_size: int = 32) -> list[dict[str, int]]:
    """Queries quantized as `--format anserini` quantizes documents: {token: round(weight x factor)}
    per query, zero terms dropped, the same token strings. Use the factor the corpus was encoded
    with (its run record's config.quantization_factor). `encoder` is a SpladeEncoder (its
    encode_query runs, so an inference-free model's query table is used) or an export directory,
    opened on the CPU. To search with Anserini, write them with `write_anserini_topics`."""
    if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not factor > 0:
        raise ValueError(f"factor must be a positive number, not {factor!r}")
    if isinstance(encoder, (str, Path)):
        from ..runtime import SpladeEncoder

        encoder = SpladeEncoder(encoder, device="cpu")
    vectors = encoder.encode_query(texts, top_k=top_k, threshold=threshold, batch_size=batch_size)
    tokens = token_table(encoder.path)
    return [quantize(v.indices, v.values, tokens, factor) for v in vectors]


def write_anserini_topics(path: str | Path, encoder: Any, queries: Mapping[str, str], **options: Any) -> Path:
    """Queries (id -> text) as the topics file of Anserini's impact search: one `qid TAB tokens` line
    per query, each token repeated as many times as its impact (what Anserini's own SPLADE query
    encoders send), for `SearchCollection -topicReader TsvString -impact -pretokenized`. Keyword
    options as `anserini_queries`. A query with no terms left (an empty text) is left out, with a
    warning: it matches nothing, and TsvString fails on a line with nothing after the tab. Returns
    the path written."""
    for qid in queries:
        if not isinstance(qid, str) or not qid or qid != qid.strip() or any(c in qid for c in "\t\r\n"):
            raise ValueError(f"query id {qid!r}: must be a non-empty string with no tab, line break, or space "
                             "at either end (Anserini's topic reader trims and splits on them)")
    weights = anserini_queries(encoder, list(queries.values()), **options)
    path = Path(path)
    left_out = [qid for qid, vector in zip(queries, weights) if not vector]
    with open(path, "w", encoding="utf-8") as f:
        for qid, vector in zip(queries, weights):
            if vector:
                f.write(qid + "\t" + flatten(vector) + "\n")
    if left_out:
        logger.warning("splade-rt: %d of %d queries have no terms and are left out of %s (first: %r)",
                       len(left_out), len(queries), path, left_out[0])
    return path


def flatten(vector: Mapping[str, int]) -> str:
    """Each token repeated by its impact, space-separated: Anserini's SparseEncoder.flatten."""
    return " ".join(" ".join([token] * impact) for token, impact in vector.items())
