"""Progress bars: tqdm where it is installed, a one-line notice and no bar where it is not.

tqdm is optional (the runtime's dependencies are numpy, onnxruntime and tokenizers), so every
caller that offers a bar (SpladeEncoder.encode's show_progress_bar, splade-encode-corpus) gets it
from here and says the same thing when it is missing. Standard library only at import.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("splade_rt")


def progress_bar(total: int, enabled: bool, description: str, unit: str, **options: Any) -> Any | None:
    """A tqdm bar of `total` units (its rate is units/s), or None when off, when there is nothing to
    count, or when tqdm is missing (then one warning says how to get it). options go to tqdm."""
    if not enabled or total <= 0:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        logger.warning("splade-rt: no progress bar without tqdm (pip install tqdm)")
        return None
    return tqdm(total=total, desc=description, unit=unit, **options)
