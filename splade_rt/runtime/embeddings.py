"""Sparse results in the shapes vector databases and search engines take.

A batch is one CSR matrix (indptr, indices, values): rows in input order, column indices ascending
within a row, only non-zero weights stored. Everything else (dicts, Qdrant, Elasticsearch
rank_features, scipy, dense) is a view built from it on demand.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SparseVector:
    """One text's vector: token ids (ascending) and their weights."""

    indices: np.ndarray  # int32
    values: np.ndarray  # float32
    dim: int
    vocab: Sequence[str] | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def to_dict(self) -> dict[int, float]:
        return dict(zip(self.indices.tolist(), self.values.tolist()))

    def to_dense(self) -> np.ndarray:
        out = np.zeros(self.dim, dtype=np.float32)
        out[self.indices] = self.values
        return out

    def top(self, k: int | None = None) -> list[tuple[int, float]]:
        """(token id, weight) pairs by descending weight."""
        order = np.argsort(-self.values, kind="stable")[:k]
        return list(zip(self.indices[order].tolist(), self.values[order].tolist()))

    def decode(self, top_k: int | None = None) -> list[tuple[str, float]]:
        if self.vocab is None:
            raise ValueError("this vector carries no vocabulary to decode with")
        return [(self.vocab[i], w) for i, w in self.top(top_k)]


class SparseEmbeddings:
    """A batch of sparse vectors stored as CSR, in the order the texts were given."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, dim: int,
                 vocab: Sequence[str] | None = None, truncated: int = 0) -> None:
        self.indptr = np.asarray(indptr, dtype=np.int64)
        self.indices = np.asarray(indices, dtype=np.int32)
        self.values = np.asarray(values, dtype=np.float32)
        self.dim = int(dim)
        self.vocab = vocab
        self.truncated = int(truncated)  # how many input texts were cut at the max length

    @classmethod
    def empty(cls, dim: int, vocab: Sequence[str] | None = None) -> SparseEmbeddings:
        return cls(np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), dim, vocab)

    @classmethod
    def from_dense(cls, dense: np.ndarray, vocab: Sequence[str] | None = None) -> SparseEmbeddings:
        dense = np.atleast_2d(np.asarray(dense, dtype=np.float32))
        rows, cols = np.nonzero(dense)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(dense)))])
        return cls(indptr, cols, dense[rows, cols], dense.shape[1], vocab)

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def __getitem__(self, item: int | slice) -> SparseVector | SparseEmbeddings:
        if isinstance(item, slice):
            rows = range(len(self))[item]
            return self.take(list(rows))
        n = len(self)
        if not -n <= item < n:
            raise IndexError(f"row {item} out of range for {n} vectors")
        item %= n
        lo, hi = self.indptr[item], self.indptr[item + 1]
        return SparseVector(self.indices[lo:hi], self.values[lo:hi], self.dim, self.vocab)

    def __iter__(self) -> Iterator[SparseVector]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"SparseEmbeddings({len(self)} x {self.dim}, {self.nnz} non-zeros, {self.truncated} truncated)"

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    @property
    def active_dims(self) -> np.ndarray:
        """Non-zero weights per row."""
        return np.diff(self.indptr)

    def take(self, rows: Sequence[int]) -> SparseEmbeddings:
        """These rows, in this order (repeats allowed), as a new batch."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size and not (rows.min() >= 0 and rows.max() < len(self)):
            raise IndexError(f"rows out of range for {len(self)} vectors")
        counts = self.active_dims[rows]
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        # each kept term's source: its row's start here plus its offset within the row
        flat = np.repeat(self.indptr[rows] - indptr[:-1], counts) + np.arange(int(indptr[-1]))
        return SparseEmbeddings(indptr, self.indices[flat], self.values[flat], self.dim, self.vocab)

    def to_dense(self) -> np.ndarray:
        out = np.zeros((len(self), self.dim), dtype=np.float32)
        rows = np.repeat(np.arange(len(self)), self.active_dims)
        out[rows, self.indices] = self.values
        return out

    def to_csr(self):
        """scipy.sparse.csr_matrix [n, vocab] (scipy is optional: pip install scipy)."""
        try:
            from scipy.sparse import csr_matrix
        except ImportError:
            raise ImportError("to_csr() needs scipy: pip install scipy (or splade-rt[eval])") from None
        return csr_matrix((self.values, self.indices, self.indptr), shape=(len(self), self.dim))

    def to_dicts(self) -> list[dict[int, float]]:
        return [v.to_dict() for v in self]

    def to_qdrant(self) -> list[dict[str, list]]:
        """Qdrant sparse vectors: {"indices": [...], "values": [...]}, accepted as models.SparseVector(**d)."""
        return [{"indices": v.indices.tolist(), "values": v.values.tolist()} for v in self]

    def to_rank_features(self) -> list[dict[str, float]]:
        """Elasticsearch / OpenSearch `rank_features` / `sparse_vector` values: {token: weight}.

        Tokens are the field keys as they are; Elasticsearch reads a '.' in a key as an object path,
        so map the field before indexing tokens such as '.' (its docs recommend dot-free names).
        """
        if self.vocab is None:
            raise ValueError("rank_features need token strings: this batch carries no vocabulary")
        return [{self.vocab[i]: w for i, w in zip(v.indices.tolist(), v.values.tolist())} for v in self]

    def decode(self, row: int, top_k: int | None = None) -> list[tuple[str, float]]:
        return self[row].decode(top_k)


@dataclass(frozen=True)
class SparseAndDense:
    """Both vectors of a head that gives a dense one too (bge-m3: heads.HEADS "token-max"), from the
    same graph runs: encode(..., dense=True). dense: [texts, hidden] float32, L2-normalized [CLS]
    states (FlagEmbedding's dense_vecs); a text with nothing to encode (see encode) gets zeros."""

    sparse: SparseEmbeddings
    dense: np.ndarray

    def __len__(self) -> int:
        return len(self.sparse)


def concat(parts: Sequence[SparseEmbeddings]) -> SparseEmbeddings:
    if not parts:
        raise ValueError("nothing to concatenate")
    offsets = np.cumsum([0] + [p.nnz for p in parts[:-1]])
    indptr = np.concatenate([[0]] + [p.indptr[1:] + off for p, off in zip(parts, offsets)])
    return SparseEmbeddings(indptr, np.concatenate([p.indices for p in parts]),
                            np.concatenate([p.values for p in parts]), parts[0].dim, parts[0].vocab,
                            sum(p.truncated for p in parts))


def dot_scores(a: SparseEmbeddings, b: SparseEmbeddings, block_bytes: int = 64 << 20) -> np.ndarray:
    """Exact dot products [len(a), len(b)] without a dense [n, vocab] copy of the larger side.

    scipy's sparse product when it is installed; otherwise the smaller side is made dense in row
    blocks and the other side's non-zeros are gathered from it.
    """
    if a.dim != b.dim:
        raise ValueError(f"dimension mismatch: {a.dim} vs {b.dim}")
    try:
        from scipy.sparse import csr_matrix  # noqa: F401
    except ImportError:
        pass
    else:
        return np.asarray((a.to_csr() @ b.to_csr().T).todense(), dtype=np.float32)
    if len(a) > len(b):
        return dot_scores(b, a, block_bytes).T
    out = np.zeros((len(a), len(b)), dtype=np.float32)
    rows_per_block = max(1, block_bytes // (4 * a.dim))
    b_rows = np.repeat(np.arange(len(b)), b.active_dims)
    for start in range(0, len(a), rows_per_block):
        dense = a[start:start + rows_per_block].to_dense()  # [r, vocab]
        products = dense[:, b.indices] * b.values  # [r, nnz(b)]
        block = np.zeros((len(dense), len(b)), dtype=np.float64)
        np.add.at(block.T, b_rows, products.T)
        out[start:start + len(dense)] = block
    return out
