"""Exact sparse retrieval: every query scored against the whole corpus by dot product.

Evaluation must measure the encoder, not an index: no pruning, no approximate top-k. Scores are
computed one query chunk at a time (a sparse product, then a dense [chunk, n_docs] block) so the
memory bound is the chunk, not n_queries x n_docs. Ties are broken by document order so that
repeated runs, chunk sizes and machines all give the same ranking, hence the same metrics.
"""

from __future__ import annotations

import numpy as np

from ..validation import positive_int

DEFAULT_TOP_K = 100
DEFAULT_BLOCK_BYTES = 64 << 20  # dense score block per chunk


def search(queries, documents, top_k: int = DEFAULT_TOP_K, *, chunk_size: int | None = None,
           block_bytes: int = DEFAULT_BLOCK_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """Top-k documents per query by exact dot product: (doc indices, scores), each [n_queries, k].

    queries, documents: scipy.sparse CSR matrices [n, vocab] (SparseEmbeddings.to_csr()).
    k is min(top_k, n_docs); rows are sorted by descending score, then ascending document index.
    chunk_size: queries per score block (default: as many as fit block_bytes of float32 scores).
    """
    if queries.shape[1] != documents.shape[1]:
        raise ValueError(f"dimension mismatch: queries {queries.shape[1]} vs documents {documents.shape[1]}")
    top_k = positive_int(top_k, "top_k")
    n_queries, n_docs = queries.shape[0], documents.shape[0]
    k = min(top_k, n_docs)
    if chunk_size is None:
        chunk_size = max(1, block_bytes // (4 * max(n_docs, 1)))
    chunk_size = positive_int(chunk_size, "chunk_size")
    indices = np.zeros((n_queries, k), dtype=np.int64)
    scores = np.zeros((n_queries, k), dtype=np.float32)
    if n_queries == 0 or k == 0:
        return indices, scores
    doc_t = documents.T.tocsr()  # [vocab, n_docs]: sparse @ sparse stays sparse until the chunk block
    for start in range(0, n_queries, chunk_size):
        stop = min(start + chunk_size, n_queries)
        block = (queries[start:stop] @ doc_t).toarray().astype(np.float32, copy=False)
        indices[start:stop], scores[start:stop] = top_k_rows(block, k)
    return indices, scores


def top_k_rows(block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k largest values, ordered by (-value, column).

    argpartition picks an arbitrary subset among values tied with the k-th largest; rows where such
    ties cross the cut are re-selected by column order, so the result never depends on the
    partition algorithm (one query with no matching term ties the whole corpus at 0).
    """
    n_cols = block.shape[1]
    k = min(k, n_cols)
    if k == n_cols:
        picked = np.broadcast_to(np.arange(n_cols), block.shape).copy()
    else:
        picked = np.argpartition(-block, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(block, picked, axis=1)
    cut = values.min(axis=1, keepdims=True)
    crossing = np.flatnonzero((block >= cut).sum(axis=1) > k)
    for row in crossing:
        above = np.flatnonzero(block[row] > cut[row, 0])
        tied = np.flatnonzero(block[row] == cut[row, 0])[:k - len(above)]  # lowest columns first
        picked[row] = np.concatenate([above, tied])
        values[row] = block[row, picked[row]]
    order = np.lexsort((picked, -values), axis=1)
    return np.take_along_axis(picked, order, axis=1), np.take_along_axis(values, order, axis=1)
