"""NativeSession: the native variants (fp32-native, int8-native) behind the fused graphs' run() interface.

onnxruntime runs the export's states graph; kernels.native_head pools the states. Answering the same
output names as the fused graphs (dense, top-k, non-zeros) keeps the encoder's batching, twins and
side-by-side workers free of a branch for it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..kernels.native_head import NativeHead
from ..manifest import (
    ATTENTION_MASK,
    INPUT_IDS,
    OUT_NZ_INDEX,
    OUT_NZ_VALUE,
    OUT_SPARSE,
    OUT_TOP_INDICES,
    OUT_TOP_VALUES,
    TOP_K,
)


class NativeSession:
    """The states graph's onnxruntime session and the head. head_threads: the threads that split the
    vocab (the encoder's threads for a batch-1 query, 1 for batches run side by side)."""

    def __init__(self, session: Any, head: NativeHead, head_threads: int) -> None:
        self.session, self.head, self.head_threads = session, head, head_threads

    def get_providers(self) -> list[str]:
        return self.session.get_providers()

    def get_session_options(self):
        return self.session.get_session_options()

    def run(self, wanted: list[str] | None, feed: dict[str, np.ndarray], run_options=None) -> list[np.ndarray]:
        mask = feed[ATTENTION_MASK]
        (states,) = self.session.run(None, {INPUT_IDS: feed[INPUT_IDS], ATTENTION_MASK: mask}, run_options)
        rows = len(states)
        indptr, cols, vals = self.head(states, mask, self.head_threads)
        names = wanted or [OUT_SPARSE, OUT_TOP_VALUES, OUT_TOP_INDICES, OUT_NZ_INDEX, OUT_NZ_VALUE]
        results: dict[str, np.ndarray] = {
            OUT_NZ_INDEX: np.stack([np.repeat(np.arange(rows, dtype=np.int64), np.diff(indptr)),
                                    cols.astype(np.int64)]),  # row-major, as the graphs' NonZero
            OUT_NZ_VALUE: vals,
        }
        if {OUT_SPARSE, OUT_TOP_VALUES, OUT_TOP_INDICES} & set(names):
            dense = results[OUT_SPARSE] = self.head.dense(rows, indptr, cols, vals)
            k = min(int(np.asarray(feed.get(TOP_K, [1])).reshape(-1)[0]), self.head.vocab)
            # descending values, ties by lower index, as onnxruntime's TopK
            part = np.sort(np.argpartition(-dense, k - 1, axis=1)[:, :k], axis=1)
            order = np.take_along_axis(part, np.argsort(-np.take_along_axis(dense, part, axis=1), axis=1,
                                                        kind="stable"), axis=1)
            results[OUT_TOP_VALUES] = np.take_along_axis(dense, order, axis=1)
            results[OUT_TOP_INDICES] = order.astype(np.int64)
        return [results[name] for name in names]
