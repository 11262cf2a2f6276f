"""What the indexes take: Parquet shards, Anserini JsonVectorCollection shards, Qdrant points.

Both engines end in the same place: `ShardWriter.shard(k, rows)` opens shard k under a temporary
name, takes the encoded rows in input order, and publishes the file only when exactly `rows` rows
went in. Qdrant upserts happen inside that window, before the rename: a published shard means its
points are in Qdrant too, and a shard redone after a crash upserts the same point ids again, which
Qdrant treats as an overwrite, not a duplicate.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorpusError
from .shards import OutputDir

# The naver/splade EncodeAnserini recipe, which wrote the pre-encoded corpora that Anserini's and
# Pyserini's SPLADE regressions index: weight * 100, rounded to the nearest integer, terms that
# round to 0 dropped. Lucene impact indexes store integer term frequencies, hence the rounding.
ANSERINI_FACTOR = 100
QDRANT_VECTOR = "splade"  # the sparse vector's name in the collection
QDRANT_BATCH = 256  # points per upsert request
_POINT_NAMESPACE = uuid.UUID("7b1b2c4e-5c1e-4b8a-9d0e-5b0a1f6c2d3e")  # point id = uuid5(namespace, doc id)


@dataclass
class Batch:
    """Encoded documents in input order, as CSR rows (the shape SparseEmbeddings has)."""

    ids: list[str]
    texts: list[str] | None  # only kept when the format writes them (Anserini's "contents")
    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray

    def rows(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        for i, rid in enumerate(self.ids):
            lo, hi = self.indptr[i], self.indptr[i + 1]
            yield rid, self.indices[lo:hi], self.values[lo:hi]


def parquet_schema():
    import pyarrow as pa

    return pa.schema([("id", pa.string()), ("indices", pa.list_(pa.int32())), ("values", pa.list_(pa.float32()))])


def to_arrow(batch: Batch):
    """The Parquet shard's columns for one batch (pyarrow list arrays built on the CSR buffers)."""
    import pyarrow as pa

    offsets = pa.array(np.asarray(batch.indptr, dtype=np.int32))
    return pa.table({
        "id": pa.array(batch.ids, pa.string()),
        "indices": pa.ListArray.from_arrays(offsets, pa.array(np.asarray(batch.indices, np.int32))),
        "values": pa.ListArray.from_arrays(offsets, pa.array(np.asarray(batch.values, np.float32))),
    }, schema=parquet_schema())


class _ParquetFile:
    def __init__(self, path: Path) -> None:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise CorpusError("Parquet output needs pyarrow: pip install 'splade-rt[distributed]' "
                              "(or --format anserini)") from None
        self._file = open(path, "wb")  # noqa: SIM115 - lives until close(), which ShardWriter always calls
        self._writer = pq.ParquetWriter(self._file, parquet_schema())

    def write(self, batch: Batch) -> None:
        self._writer.write_table(to_arrow(batch))

    def close(self) -> None:
        self._writer.close()
        _sync_close(self._file)


class _AnseriniFile:
    """JsonVectorCollection: {"id", "contents", "vector": {token: integer impact}} per line."""

    def __init__(self, path: Path, tokens: Sequence[str], factor: float) -> None:
        self._file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by close(), as above
        self._tokens, self._factor = tokens, factor

    def write(self, batch: Batch) -> None:
        texts = batch.texts if batch.texts is not None else [""] * len(batch.ids)
        lines = []
        for (rid, indices, values), text in zip(batch.rows(), texts):
            impacts = np.rint(values.astype(np.float64) * self._factor).astype(np.int64)
            keep = impacts > 0
            vector = {self._tokens[t]: q for t, q in zip(indices[keep].tolist(), impacts[keep].tolist())}
            lines.append(json.dumps({"id": rid, "contents": text, "vector": vector}, ensure_ascii=False))
        if lines:
            self._file.write("\n".join(lines) + "\n")

    def close(self) -> None:
        _sync_close(self._file)


def _sync_close(file) -> None:
    file.flush()
    os.fsync(file.fileno())
    file.close()


class QdrantSink:
    """Upserts sparse vectors through qdrant-client: a URL (http://, https://) is a server, anything
    else a directory for qdrant-client's embedded local mode (no server to run)."""

    def __init__(self, location: str, collection: str) -> None:
        try:
            from qdrant_client import QdrantClient, models
        except ImportError:
            raise CorpusError("--qdrant needs qdrant-client: pip install 'splade-rt[qdrant]'") from None
        self._models, self.collection = models, collection
        try:
            self.client = QdrantClient(url=location) if "://" in location else QdrantClient(path=location)
            if not self.client.collection_exists(collection):
                self.client.create_collection(collection, vectors_config={}, sparse_vectors_config={
                    QDRANT_VECTOR: models.SparseVectorParams()})
        except Exception as e:  # noqa: BLE001 - connection, lock and API errors all mean the same to the user
            raise CorpusError(f"--qdrant {location}: can't use collection {collection!r} ({str(e)[:200]})") from None

    def upsert(self, batch: Batch) -> None:
        models = self._models
        points = [models.PointStruct(id=point_id(rid), payload={"doc_id": rid}, vector={
            QDRANT_VECTOR: models.SparseVector(indices=indices.tolist(), values=values.tolist())})
            for rid, indices, values in batch.rows()]
        for start in range(0, len(points), QDRANT_BATCH):
            self.client.upsert(self.collection, points=points[start:start + QDRANT_BATCH], wait=True)

    def close(self) -> None:
        self.client.close()


def point_id(doc_id: str) -> str:
    """Qdrant takes unsigned integers or UUIDs as point ids, and document ids are any string: a UUID
    derived from the id keeps reruns idempotent; the id itself is in the payload as doc_id."""
    return str(uuid.uuid5(_POINT_NAMESPACE, doc_id))


def token_table(export_dir: str | Path) -> list[str]:
    """id -> token of the export's tokenizer, for Anserini's term keys (both engines use this one)."""
    from tokenizers import Tokenizer

    from ..manifest import read_manifest

    manifest = read_manifest(export_dir)
    tokenizer = Tokenizer.from_file(str(manifest.verify_file(manifest.tokenizer.file)))
    return [tokenizer.id_to_token(i) or f"[unused:{i}]" for i in range(manifest.model.vocab_size)]


class ShardWriter:
    """Opens, fills and publishes shards in the chosen format (and upserts to Qdrant when asked)."""

    def __init__(self, out: OutputDir, fmt: str, *, tokens: Sequence[str] | None = None,
                 factor: float = ANSERINI_FACTOR, qdrant: QdrantSink | None = None) -> None:
        self.out, self.format, self.tokens, self.factor, self.qdrant = out, fmt, tokens, factor, qdrant

    @property
    def keeps_text(self) -> bool:
        return self.format == "anserini"

    @contextmanager
    def shard(self, shard: int, rows: int) -> Iterator[_ShardHandle]:
        tmp = self.out.tmp_path(shard)
        file = _ParquetFile(tmp) if self.format == "parquet" else _AnseriniFile(tmp, self.tokens, self.factor)
        handle = _ShardHandle(file, self.qdrant)
        try:
            yield handle
            if handle.rows != rows:
                raise CorpusError(f"shard {shard}: {handle.rows} rows encoded, {rows} expected; rerun to redo it")
        except BaseException:
            _discard(file, tmp)
            raise
        file.close()
        self.out.publish(tmp, shard)


class _ShardHandle:
    def __init__(self, file: Any, qdrant: QdrantSink | None) -> None:
        self._file, self._qdrant, self.rows = file, qdrant, 0

    def write(self, batch: Batch) -> None:
        self._file.write(batch)
        if self._qdrant is not None:
            self._qdrant.upsert(batch)
        self.rows += len(batch.ids)


def _discard(file: Any, tmp: Path) -> None:
    try:
        file.close()
    finally:
        tmp.unlink(missing_ok=True)


def suffix_of(fmt: str) -> str:
    return {"parquet": ".parquet", "anserini": ".jsonl"}[fmt]
