"""Length-sorted batching: the one home of how texts become padded batches and come back in order.

The encoder, splade-eval's torch reference and the benchmark scripts all cut batches this way:
texts sorted by token count (longest first, so the biggest batch runs, and fails if it must, first),
cut by row count and by a budget of padded tokens, each batch padded to its own longest row, and
the results put back in input order.

The encoder sorts by token count within windows (text_windows), so that tokenizing the next window
overlaps the graph runs of this one (runtime.pipeline): texts ordered by character count, longest
first, cut into windows of one batch, then twice, four times ... as many texts (at most
MAX_WINDOW_TEXTS), each window sorted by its exact token counts. The first window is small, so the
device starts after one batch's tokenizing; later ones are large, so they sort nearly as well as
one sort of every text would (benchmarks.host_ceiling records the padded tokens of both; at the
CPU's token budget, where batches are a few texts each, the two are about the same).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from .embeddings import SparseEmbeddings, concat

MAX_WINDOW_TEXTS = 4096  # the largest window: bounds the token ids in flight (a few MiB)


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


def text_windows(char_lengths: np.ndarray, batch_size: int, most: int = MAX_WINDOW_TEXTS) -> list[np.ndarray]:
    """Text indices by character count, longest first (ties in input order), cut into windows of
    batch_size, 2 x batch_size, 4 x ... texts, at most max(batch_size, most) each."""
    order = np.argsort(-np.asarray(char_lengths, dtype=np.int64), kind="stable")
    windows, start, size, cap = [], 0, batch_size, max(batch_size, most)
    while start < len(order):
        windows.append(order[start:start + size])
        start += size
        size = min(2 * size, cap)
    return windows


def window_batches(lengths: np.ndarray, special: int, batch_size: int, max_tokens: int) -> list[np.ndarray]:
    """A window's batches, as positions in the window: its texts with more than `special` tokens (the
    others have nothing to encode), longest first, cut by length_batches."""
    content = np.flatnonzero(lengths > special)
    order = content[np.argsort(-lengths[content], kind="stable")]
    return list(length_batches(order, lengths, batch_size, max_tokens))


def planned_batches(char_lengths: np.ndarray, lengths: np.ndarray, special: int, batch_size: int,
                    max_tokens: int) -> list[np.ndarray]:
    """The batches SpladeEncoder.encode runs, as text indices, from every text's character and token
    counts: for tests and benchmarks that count or replay its runs."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return [window[part] for window in text_windows(char_lengths, batch_size)
            for part in window_batches(lengths[window], special, batch_size, max_tokens)]


def pad_flat(ids: np.ndarray, starts: np.ndarray, lengths: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """input_ids and attention_mask [len(lengths), longest], right-padded, of the texts whose ids are
    ids[starts[j]:starts[j] + lengths[j]]: one gather and one masked store, no per-text step."""
    width = int(lengths.max())
    mask = np.arange(width) < lengths[:, None]
    before = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=before[1:])
    picks = np.repeat(starts - before, lengths) + np.arange(int(lengths.sum()))  # the texts' ids, end to end
    input_ids = np.full((len(lengths), width), pad_id, dtype=np.int64)
    input_ids[mask] = ids[picks]  # a row-major mask fills each row's first lengths[j] slots in order
    return input_ids, mask.astype(np.int64)


def gather_rows(count: int, rows: list[np.ndarray], counts: list[np.ndarray], cols: list[np.ndarray],
                vals: list[np.ndarray], dim: int, vocab=None, truncated: int = 0) -> SparseEmbeddings:
    """CSR of `count` texts in input order from batches' rows: batch b holds texts rows[b], with
    counts[b] terms each, their columns and values end to end. Texts in no batch have no terms."""
    if not rows:
        indptr = np.zeros(count + 1, dtype=np.int64)
        return SparseEmbeddings(indptr, np.zeros(0, np.int32), np.zeros(0, np.float32), dim, vocab, truncated)
    texts, per_text = np.concatenate(rows), np.concatenate(counts)
    terms = np.zeros(count, dtype=np.int64)
    terms[texts] = per_text
    indptr = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(terms, out=indptr[1:])
    # each term's place: its text's start in the output plus its offset within the text
    first = np.zeros(len(per_text), dtype=np.int64)
    np.cumsum(per_text[:-1], out=first[1:])
    total = int(per_text.sum())
    where = np.repeat(indptr[texts] - first, per_text) + np.arange(total)
    indices = np.empty(total, dtype=np.int32)
    values = np.empty(total, dtype=np.float32)
    indices[where] = np.concatenate(cols)
    values[where] = np.concatenate(vals)
    return SparseEmbeddings(indptr, indices, values, dim, vocab, truncated)
