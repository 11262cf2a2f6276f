"""What the runtime accepts as text, checked in one place: str, or a list of str, of valid Unicode."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def check_texts(texts: Any) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    if texts is None or isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Iterable):
        raise TypeError(f"texts must be a str or a list of str, not {type(texts).__name__}")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__} ({t!r:.40}), expected str")
    return texts


def raise_invalid_unicode(texts: Sequence[str], positions: Sequence[int] | None = None) -> None:
    """Name the first text that is not valid Unicode (a lone surrogate, as badly decoded or scraped text
    holds). An error rather than a silent repair: which replacement is right is the caller's choice.
    positions: each text's index in the caller's list, where texts is a part of it."""
    for i, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            where = i if positions is None else int(positions[i])
            raise ValueError(f"texts[{where}] is not valid Unicode: {text[e.start]!r} at character {e.start} is a lone "
                             "surrogate; repair the text first, e.g. text.encode('utf-8', 'replace').decode()"
                             ) from None
