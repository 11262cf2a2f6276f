"""The id -> token table: one home for every place that turns a vector's token ids into strings.

decode(), Elasticsearch rank_features, Anserini's term keys and the query-side helpers all read
the tokenizer's vocabulary the same way; an id the vocabulary lacks (a model whose output layer is
wider than its tokenizer, as some pad theirs to a multiple of 64) reads "[unused:ID]", so every
column still has a distinct key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def token_table(tokenizer: Any, size: int) -> list[str]:
    """id -> token for ids 0..size-1 of a tokenizers.Tokenizer (one get_vocab call: cheaper than an
    id_to_token call per id for a 250k vocabulary)."""
    tokens = [f"[unused:{i}]" for i in range(size)]
    for token, i in tokenizer.get_vocab().items():
        if i < size:
            tokens[i] = token
    return tokens


class Vocab(Sequence):
    """token_table, built on first use (decode, rank_features) rather than at load: most encoders never
    decode, and the table of a 250k vocabulary costs a noticeable fraction of a second to build."""

    def __init__(self, tokenizer: Any, size: int) -> None:
        self._tokenizer, self._size, self._tokens = tokenizer, size, None

    def _table(self) -> list[str]:
        if self._tokens is None:
            self._tokens = token_table(self._tokenizer, self._size)
        return self._tokens

    def __getitem__(self, i):
        return self._table()[i]

    def __len__(self) -> int:
        return self._size
