"""Batches too large for the device, run in halves: after an out-of-memory error, and over a row limit.

A batch that runs out of (GPU) memory is split in half, each half padded to its own longest row,
retried and joined, with one RuntimeWarning per encoder (then INFO lines); batches as large in
padded tokens are split before they run from then on, so the device is not asked again for what
it could not hold. One text that does not fit alone raises DeviceError. A batch over the
placement's row limit (TensorRT's shape profile, or the user's max_batch) runs in halves too.
A half keeps its place in the batch, so the encoder names the one text that did not fit.
"""

from __future__ import annotations

import logging
import sys
import threading
import warnings
from collections.abc import Callable

import numpy as np

from ..errors import DeviceError
from ..manifest import OUT_TOP_VALUES
from .providers import is_out_of_memory
from .session import first_line

logger = logging.getLogger("splade_rt")

Outputs = list[np.ndarray]


class OneTextOutOfMemory(DeviceError):
    """One text that runs out of memory alone; row: its position in the batch that was run."""

    def __init__(self, message: str, row: int) -> None:
        super().__init__(message)
        self.row = row


class MemorySplit:
    """One encoder's out-of-memory state: the smallest batch (in padded tokens) that ran out."""

    def __init__(self, device: str, max_rows: int | None) -> None:
        self.device = device
        self.max_rows = max_rows or sys.maxsize
        self.oom_tokens = sys.maxsize  # padded tokens of the smallest batch that ran out of memory
        self._warned = False
        self._lock = threading.Lock()  # batches run side by side may run out at once: one warning

    def run(self, ids: np.ndarray, mask: np.ndarray, wanted: list[str],
            run: Callable[[np.ndarray, np.ndarray], Outputs], first: int = 0) -> Outputs:
        """run(ids, mask)'s outputs (the `wanted` names, top-k or non-zeros), in halves where needed.
        first: the first row's position in the batch asked for (halves of halves know where they are)."""
        rows = len(ids)
        if rows > 1 and (rows > self.max_rows or ids.size >= self.oom_tokens):
            return self._halves(ids, mask, wanted, run, first)
        try:
            return run(ids, mask)
        except Exception as e:
            if not is_out_of_memory(e):
                raise
            if rows == 1:
                raise OneTextOutOfMemory(f"{int(mask.sum())} tokens alone run out of memory on {self.device} "
                                         f"({first_line(e)}); raise gpu_mem_limit or lower max_length", first) from None
            self._out_of_memory(ids.shape, e)
            return self._halves(ids, mask, wanted, run, first)

    def _halves(self, ids: np.ndarray, mask: np.ndarray, wanted: list[str],
                run: Callable[[np.ndarray, np.ndarray], Outputs], first: int) -> Outputs:
        half = len(ids) // 2
        parts = []
        for start, rows in ((first, slice(0, half)), (first + half, slice(half, None))):
            width = max(1, int(mask[rows].sum(axis=1).max()))  # each half padded to its own longest row
            parts.append(self.run(ids[rows, :width], mask[rows, :width], wanted, run, start))
        (a_first, a_second, *a_rows), (b_first, b_second, *b_rows) = parts
        rows = [np.concatenate(pair) for pair in zip(a_rows, b_rows)]  # per-row outputs after those (dense)
        if wanted[0] == OUT_TOP_VALUES:  # [rows, k] each
            return [np.concatenate([a_first, b_first]), np.concatenate([a_second, b_second]), *rows]
        b_first = b_first.copy()  # non-zeros: [2, nnz] (row, column) coordinates and [nnz] values
        b_first[0] += half
        return [np.concatenate([a_first, b_first], axis=1), np.concatenate([a_second, b_second]), *rows]

    def _out_of_memory(self, shape: tuple[int, ...], error: BaseException) -> None:
        with self._lock:
            self.oom_tokens = min(self.oom_tokens, shape[0] * shape[1])
            first, self._warned = not self._warned, True
        message = (f"splade-rt: a batch of {shape[0]} texts x {shape[1]} tokens ran out of memory on {self.device} "
                   f"({first_line(error)}); running it in halves, and splitting batches of {self.oom_tokens} "
                   "padded tokens or more before they run (a lower batch_size or max_batch_tokens, or a higher "
                   "gpu_mem_limit, avoids this)")
        if first:
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        else:
            logger.info(message)
