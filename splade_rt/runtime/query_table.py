"""Inference-free queries: tokenize, look each present token's weight up, done.

Models such as OpenSearch's inference-free sparse encoders score queries with a static per-token
table (sentence-transformers' SparseStaticEmbedding in a Router's query route). No graph runs:
a query costs a tokenizer call and a numpy gather. The rules are SparseStaticEmbedding's: no
special tokens, each distinct token counted once whatever its repeats, truncation at the query
tokenizer's own max length.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ExportDirError
from ..manifest import Manifest
from .embeddings import SparseEmbeddings
from .texts import raise_invalid_unicode


class QueryTable:
    def __init__(self, manifest: Manifest, verify: bool = True, vocab: Sequence[str] | None = None) -> None:
        from tokenizers import Tokenizer

        table = manifest.query_table
        assert table is not None
        path = manifest.verify_file(table.file, verify)
        try:
            weights = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ExportDirError(f"{path}: not a readable .npy weight table ({e})") from None
        if weights.shape != (manifest.model.vocab_size,) or weights.dtype != np.float32:
            raise ExportDirError(f"{path}: weight table is {weights.dtype} {weights.shape}, expected float32 "
                                 f"({manifest.model.vocab_size},)")
        self.weights = weights
        tok_path = manifest.verify_file(table.tokenizer, verify)
        self._tokenizer = Tokenizer.from_file(str(tok_path))
        self._tokenizer.no_padding()
        if table.max_length:
            self._tokenizer.enable_truncation(table.max_length)
        else:
            self._tokenizer.no_truncation()
        self.lowercase = table.lowercase
        self.dim = manifest.model.vocab_size
        self.vocab = vocab

    def ids(self, texts: list[str]) -> list[list[int]]:
        if self.lowercase:
            texts = [t.lower() for t in texts]
        try:
            if len(texts) == 1:
                return [self._tokenizer.encode(texts[0], add_special_tokens=False).ids]
            return [e.ids for e in self._tokenizer.encode_batch(texts, add_special_tokens=False)]
        except TypeError:  # tokenizers' "TextInputSequence must be str" for text that is not valid Unicode
            raise_invalid_unicode(texts)
            raise

    def encode(self, texts: list[str], top_k: int | None, threshold: float | None) -> SparseEmbeddings:
        """Sparse rows in input order. threshold drops weights <= it; without one, every non-zero
        weight is kept, negative ones included, as sentence-transformers returns them."""
        rows_idx, rows_val = [], []
        for ids in self.ids(texts):
            cols = np.unique(np.asarray(ids, dtype=np.int32))  # presence, ascending
            vals = self.weights[cols]
            keep = vals > threshold if threshold is not None else vals != 0
            cols, vals = cols[keep], vals[keep]
            if top_k is not None and len(cols) > top_k:
                best = np.sort(np.argsort(-vals, kind="stable")[:top_k])
                cols, vals = cols[best], vals[best]
            rows_idx.append(cols)
            rows_val.append(vals)
        indptr = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum([len(c) for c in rows_idx], out=indptr[1:])
        return SparseEmbeddings(indptr, np.concatenate(rows_idx) if rows_idx else np.zeros(0, np.int32),
                                np.concatenate(rows_val) if rows_val else np.zeros(0, np.float32), self.dim,
                                self.vocab)
