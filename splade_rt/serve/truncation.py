"""Token counts before truncation, and truncation from the left, for the server's TEI options.

The encoder truncates on the right, inside its own tokenizer call. TEI's `truncate: false` needs the
count before any truncation (a text over max_length is an error, not cut), and
`truncation_direction: "left"` keeps a text's end. Both use a second tokenizer, read from the same
export's tokenizer file with truncation off; the left cut is made on the text itself, at the start
of the word where the kept tokens begin, and checked by tokenizing the cut text again, so the
encoder sees exactly the suffix of tokens it was promised. When the cut falls inside a word, the
rest of that word is dropped too: the encoder takes text, and a word piece such as `##ing` cannot
start one (TEI, which feeds token ids, keeps such a piece).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

WORD_STARTS_TRIED = 8  # word starts tried for a left cut that re-tokenizes to the same suffix


class TokenCounter:
    def __init__(self, encoder: Any) -> None:
        from tokenizers import Tokenizer

        manifest = encoder.manifest
        path = manifest.verify_file(manifest.tokenizer.file, False)  # the encoder has verified it
        self._tokenizer = Tokenizer.from_file(str(path))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self.lowercase = encoder.lowercase
        self.max_length = encoder.max_length
        self.special = len(self._tokenizer.encode("").ids)  # [CLS] [SEP] and the like, added to every text

    def _prepare(self, texts: Sequence[str]) -> list[str]:
        return [t.lower() for t in texts] if self.lowercase else list(texts)

    def count(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text as the encoder would feed them, special tokens included, before truncation."""
        prepared = self._prepare(texts)
        if len(prepared) == 1:
            return [len(self._tokenizer.encode(prepared[0]).ids)]
        return [len(e.ids) for e in self._tokenizer.encode_batch(prepared)]

    def cut_left(self, text: str) -> tuple[str, int]:
        """(the text to encode, its tokens with special tokens): the text itself when it fits, else its
        end from the first word start at which at most max_length tokens remain."""
        prepared = self._prepare([text])[0]
        full = self._tokenizer.encode(prepared, add_special_tokens=False)
        keep = self.max_length - self.special
        n = len(full.ids)
        if n <= keep:
            return text, n + self.special
        words, offsets = full.word_ids, full.offsets
        start, tried = n - keep, 0
        while start < n and tried < WORD_STARTS_TRIED:
            while 0 < start < n and words[start] is not None and words[start] == words[start - 1]:
                start += 1  # inside a word: move to the next word's first token
            if start >= n:
                break
            cut = prepared[offsets[start][0]:]
            ids = self._tokenizer.encode(cut, add_special_tokens=False).ids
            if ids == full.ids[start:]:
                return cut, len(ids) + self.special
            start, tried = start + 1, tried + 1
        raise ValueError("truncation_direction 'left': this text cannot be cut at a word start that this "
                         "model's tokenizer reads back as the same tokens; send it shorter, or use 'right'")
