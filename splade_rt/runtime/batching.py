"""Length-sorted batching: the one home of how texts become padded batches and come back in order.

The encoder, splade-eval's torch reference and the benchmark scripts all cut batches this way:
texts sorted by token count (longest first, so the biggest batch runs, and fails if it must, first),
cut by row count and by a budget of padded tokens, each batch padded to its own longest row, and
the results put back in input order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from .embeddings import SparseEmbeddings, concat


def length_batches(order: np.ndarray, lengths: np.ndarray, batch_size: int, max_tokens: int):
    """Cut the length-sorted order into batches of at most batch_size rows and max_tokens padded tokens."""
    start = 0
    while start < len(order):
        width = int(lengths[order[start]])  # longest in this batch: sorted descending
        rows = max(1, min(batch_size, max_tokens // max(width, 1)))
        yield order[start:start + rows]
        start += rows


def length_sorted_batches(lengths: np.ndarray, batch_size: int, max_tokens: int) -> list[np.ndarray]:
    """Row indices, longest first (equal lengths keep their input order), cut by length_batches."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return list(length_batches(np.argsort(-lengths, kind="stable"), lengths, batch_size, max_tokens))


def padded_batches(ids: Sequence[Sequence[int]], pad_id: int, batch_size: int,
                   max_tokens: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(rows, input_ids, attention_mask) for each length-sorted batch of the token id lists."""
    lengths = np.fromiter((len(row) for row in ids), dtype=np.int64, count=len(ids))
    for rows in length_sorted_batches(lengths, batch_size, max_tokens):
        input_ids, mask = pad_ids([ids[i] for i in rows], pad_id)
        yield rows, input_ids, mask


def pad_ids(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """input_ids and attention_mask [len(rows), longest row], right-padded."""
    width = max(map(len, rows))
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for r, row in enumerate(rows):
        ids[r, :len(row)] = row
        mask[r, :len(row)] = 1
    return ids, mask


def in_input_order(parts: list[SparseEmbeddings], batches: list[np.ndarray]) -> SparseEmbeddings:
    """The batches' rows (cut from a length-sorted order) back in the order of the input."""
    if len(parts) == 1 and np.array_equal(batches[0], np.arange(len(batches[0]))):
        return parts[0]
    return concat(parts).take(np.argsort(np.concatenate(batches), kind="stable"))
