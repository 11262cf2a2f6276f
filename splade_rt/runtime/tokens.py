"""Texts to token ids: the export's tokenizer, ids as flat arrays, and which texts have no tokens.

Token ids leave tokenizers' Encoding objects once per window of texts, into one flat int64 array
(np.fromiter over the chained id lists: a C loop, no numpy call per text), with each text's start
and length beside it. Padding a batch is then array indexing (batching.pad_flat), and nothing
per text is kept but its ids: an Encoding also holds its tokens' strings and offsets, several
times the ids' memory, which a window of thousands of long texts would otherwise hold in flight.

A text with no tokens beyond the special ones the tokenizer adds to every text (an empty or
whitespace-only text, or one of characters the tokenizer drops, such as control characters) has
nothing to encode: it is never run, and its vector has no terms.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ExportDirError
from .pipeline import timed
from .texts import raise_invalid_unicode


@dataclass(frozen=True)
class Tokens:
    """Some texts' token ids end to end: text j's are ids[starts[j]:starts[j] + lengths[j]]."""

    rows: np.ndarray  # int64: each text's index in the caller's list
    ids: np.ndarray  # int64
    starts: np.ndarray  # int64
    lengths: np.ndarray  # int64
    truncated: int  # how many of the texts were cut at the max length


class TextTokenizer:
    """The export's tokenizer, truncating at max_length, with the export's lowercasing."""

    def __init__(self, path: Path, max_length: int, lowercase: bool) -> None:
        from tokenizers import Tokenizer

        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception on bad JSON
            raise ExportDirError(f"{path}: not a valid tokenizers file ({str(e)[:160]})") from None
        tokenizer.no_padding()  # batches are padded to their own longest row
        tokenizer.enable_truncation(max_length)
        self.tokenizer, self.max_length, self.lowercase = tokenizer, max_length, lowercase
        # what every text gets: a text with no more tokens than these has no content
        self.special = tokenizer.num_special_tokens_to_add(False)

    def encodings(self, texts: Sequence[str], positions: Sequence[int] | None = None) -> list[Any]:
        """tokenizers Encodings of the texts; positions: their indices in the caller's list (for errors)."""
        if self.lowercase:
            texts = [t.lower() for t in texts]
        try:
            if len(texts) == 1:
                return [self.tokenizer.encode(texts[0])]
            batch = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)  # no offsets
            return batch(list(texts))
        except TypeError:  # tokenizers' "TextInputSequence must be str" for text that is not valid Unicode
            raise_invalid_unicode(texts, positions)
            raise

    def tokens(self, texts: Sequence[str], rows: np.ndarray, clock: Any = None) -> Tokens:
        """The ids of texts[rows] as flat arrays; clock (pipeline.StageClock) times "tokenize" (the
        tokenizer itself) apart from "pack" (the ids out of the Encodings, the part this code owns)."""
        with timed(clock, "tokenize"):
            encodings = self.encodings([texts[i] for i in rows], rows)
        with timed(clock, "pack"):
            lengths = np.fromiter(map(len, encodings), dtype=np.int64, count=len(encodings))
            ids = np.fromiter(chain.from_iterable(e.ids for e in encodings), dtype=np.int64, count=int(lengths.sum()))
            starts = np.zeros(len(lengths), dtype=np.int64)
            np.cumsum(lengths[:-1], out=starts[1:])
            # only a text at the max length can have been cut: ask the few of those, not every text
            truncated = sum(1 for i in np.flatnonzero(lengths >= self.max_length) if encodings[i].overflowing)
        return Tokens(np.asarray(rows, dtype=np.int64), ids, starts, lengths, truncated)

    def ids(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.encodings(texts)]


def tokenizer_is_serial() -> bool:
    """tokenizers' own reading of TOKENIZERS_PARALLELISM: threads on unless set to one of these."""
    value = os.environ.get("TOKENIZERS_PARALLELISM")
    return value is not None and value.strip().lower() in ("", "off", "false", "f", "no", "n", "0")
