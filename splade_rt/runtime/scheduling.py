"""CPU scheduling: how many batches run side by side, and which session runs each one.

Two choices, both measured on the CPU (docs/design/cpu-threads.md):

- side by side: with a small encoder (hidden size <= SIDE_BY_SIDE_MAX_HIDDEN) the vocab head
  dominates, and while one batch is in its serial steps a second keeps the cores busy, so by
  default two batches run at once, each on threads // 2 threads, for the peak memory of two
  batches. A base-size encoder's batches compete for cache and memory bandwidth: one at a time.
- one thread for query-sized inputs (<= SMALL_INPUT_TOKENS padded tokens) where the variant's
  vocab head is screened in int8 or native (the variant table's screened_head): its projection is
  cheap enough that waking a second thread for each of ~100 tiny ops costs more than it saves.
  A base-size encoder's layers, and an unscreened fp32 head, still gain from the threads.

The extra sessions are twins over the same graph file with fewer threads (session.cpu_twin), made
on first use and kept. On a GPU (or with IOBinding) nothing here applies: one batch at a time on
the placement's session.
"""

from __future__ import annotations

import threading
from typing import Any

from ..manifest import Manifest
from ..variants import VARIANTS
from .session import Placement, cpu_twin

SIDE_BY_SIDE_MAX_HIDDEN = 256  # hidden size up to which the CPU runs two batches at a time by default
SMALL_INPUT_TOKENS = 64  # padded tokens at or below which the CPU runs one thread


class CpuSchedule:
    """The side-by-side workers and the twin sessions of one encoder. workers: the user's (None: the
    default above); io_binding: the encoder binds its inputs (then one batch at a time)."""

    def __init__(self, placement: Placement, manifest: Manifest, workers: int | None, spinning: bool,
                 io_binding: bool) -> None:
        self._placement, self._manifest, self._spinning = placement, manifest, spinning
        threads = placement.session.get_session_options().intra_op_num_threads
        on_cpu = placement.device == "cpu" and not io_binding
        small_encoder = manifest.model.hidden_size <= SIDE_BY_SIDE_MAX_HIDDEN
        self.threads = threads
        self.workers = min(workers or (2 if small_encoder else 1), threads) if on_cpu else 1
        self.worker_threads = max(1, threads // self.workers)
        variant = VARIANTS.get(placement.precision)
        self.small_enabled = bool(on_cpu and small_encoder and threads > 1 and variant is not None
                                  and variant.screened_head)
        self.twins: dict[tuple[int, int], Any] = {}  # (intra-op, head) threads -> twin CPU session
        self._lock = threading.Lock()

    def session(self, padded_tokens: int, side_by_side: bool) -> Any:
        """The session for one batch: a worker twin when batches run side by side, the one-thread twin
        for a query-sized input, else the placement's own session (read at each call)."""
        if side_by_side:
            return self.twin(self.worker_threads)
        if self.small_enabled and padded_tokens <= SMALL_INPUT_TOKENS:
            return self.twin(1, self.threads)  # the native head still splits a query's vocab across every thread
        return self._placement.session

    def twin(self, threads: int, head_threads: int | None = None) -> Any:
        key = (threads, head_threads or threads)
        if key not in self.twins:
            with self._lock:
                if key not in self.twins:
                    self.twins[key] = cpu_twin(self._placement, self._manifest, threads, self._spinning, key[1])
        return self.twins[key]
