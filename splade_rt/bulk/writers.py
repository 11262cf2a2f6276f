"""Where encoded rows go: shard files of the chosen format (formats.py), and sinks such as Qdrant.

Both engines end in the same place: `ShardWriter.shard(k, rows)` opens shard k under a temporary
name, takes the encoded rows in input order, and publishes the file only when exactly `rows` rows
went in. Sinks take each batch inside that window, before the rename: a published shard means its
points are in Qdrant too, and a shard redone after a crash upserts the same point ids again, which
Qdrant treats as an overwrite, not a duplicate.

A format's writer is opened once per run and opens one file per shard (`open(path)` -> an object
with `write(Batch)` and `close()`); a sink's writer takes batches itself (`write(Batch)`); both have
`close()`, called once at the end of the run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import CorpusError
from .hints import option
from .shards import OutputDir

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


class ShardFile(Protocol):
    def write(self, batch: Batch) -> None: ...
    def close(self) -> None: ...


class FileWriter(Protocol):
    """A format's writer for one run: opens one shard file at a time."""

    def open(self, path: Path) -> ShardFile: ...
    def close(self) -> None: ...


class Sink(Protocol):
    """A writer that takes every batch beside the shard files (Qdrant)."""

    def write(self, batch: Batch) -> None: ...
    def close(self) -> None: ...


# -- Parquet ------------------------------------------------------------------------------------------------------

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


class ParquetWriter:
    """Parquet shards: id (string), indices (list<int32>), values (list<float32>), one file per shard."""

    def open(self, path: Path) -> _ParquetFile:
        return _ParquetFile(path)

    def close(self) -> None:
        pass


class _ParquetFile:
    def __init__(self, path: Path) -> None:
        import pyarrow.parquet as pq

        self._file = open(path, "wb")  # noqa: SIM115 - lives until close(), which ShardWriter always calls
        self._writer = pq.ParquetWriter(self._file, parquet_schema())

    def write(self, batch: Batch) -> None:
        self._writer.write_table(to_arrow(batch))

    def close(self) -> None:
        self._writer.close()
        sync_close(self._file)


def sync_close(file) -> None:
    """Flush, fsync and close: a shard is renamed into place only once its bytes are on disk."""
    file.flush()
    os.fsync(file.fileno())
    file.close()


# -- Qdrant -------------------------------------------------------------------------------------------------------

class QdrantSink:
    """Upserts sparse vectors through qdrant-client: a URL (http://, https://) is a server, anything
    else a directory for qdrant-client's embedded local mode (no server to run)."""

    def __init__(self, location: str, collection: str) -> None:
        from qdrant_client import QdrantClient, models

        self._models, self.collection = models, collection
        try:
            self.client = QdrantClient(url=location) if "://" in location else QdrantClient(path=location)
            if not self.client.collection_exists(collection):
                self.client.create_collection(collection, vectors_config={}, sparse_vectors_config={
                    QDRANT_VECTOR: models.SparseVectorParams()})
        except Exception as e:  # noqa: BLE001 - connection, lock and API errors all mean the same to the user
            raise CorpusError(f"{option('qdrant', location)}: can't use collection {collection!r} "
                              f"({str(e)[:200]})") from None

    def write(self, batch: Batch) -> None:
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


# -- shards -------------------------------------------------------------------------------------------------------

class ShardWriter:
    """Opens, fills and publishes shards in the chosen format, and hands every batch to the sinks."""

    def __init__(self, out: OutputDir, file: FileWriter, *, keeps_text: bool = False,
                 sinks: Sequence[Sink] = ()) -> None:
        self.out, self.file, self.keeps_text, self.sinks = out, file, keeps_text, list(sinks)

    @contextmanager
    def shard(self, shard: int, rows: int) -> Iterator[_ShardHandle]:
        tmp = self.out.tmp_path(shard)
        file = self.file.open(tmp)
        handle = _ShardHandle(file, self.sinks)
        try:
            yield handle
            if handle.rows != rows:
                raise CorpusError(f"shard {shard}: {handle.rows} rows encoded, {rows} expected; rerun to redo it")
        except BaseException:
            _discard(file, tmp)
            raise
        file.close()
        self.out.publish(tmp, shard)

    def close(self) -> None:
        """Close the format's writer and every sink, all of them even if one fails."""
        errors = []
        for writer in (self.file, *self.sinks):
            try:
                writer.close()
            except Exception as e:  # noqa: BLE001 - the others still close; the first error is raised after
                errors.append(e)
        if errors:
            raise errors[0]


class _ShardHandle:
    def __init__(self, file: ShardFile, sinks: list[Sink]) -> None:
        self._file, self._sinks, self.rows = file, sinks, 0

    def write(self, batch: Batch) -> None:
        self._file.write(batch)
        for sink in self._sinks:
            sink.write(batch)
        self.rows += len(batch.ids)


def _discard(file: ShardFile, tmp: Path) -> None:
    try:
        file.close()
    finally:
        tmp.unlink(missing_ok=True)
