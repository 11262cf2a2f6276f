"""The measurements every benchmark reports, written once: latency, throughput, vector agreement (the
machine and memory readers are splade_rt.machine's).

No dependency beyond numpy, so a plain `pip install splade-rt` can measure itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def query_latencies(encode: Callable[[list[str], int], Any], queries: Sequence[str]) -> dict[str, float]:
    """p50/p99 of one query at a time (batch 1), tokenizer included, after one warm-up call."""
    encode([queries[0]], 1)
    seconds = []
    for q in queries:
        start = time.perf_counter()
        encode([q], 1)
        seconds.append(time.perf_counter() - start)
    return {"query_p50_ms": float(np.percentile(seconds, 50) * 1000),
            "query_p99_ms": float(np.percentile(seconds, 99) * 1000)}


def median_ms(fn: Callable[[], Any], runs: int, warmup: int = 3) -> float:
    """Median milliseconds of `runs` calls of fn, after `warmup` untimed ones (one fixed shape, seen)."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds) * 1000)


def throughput(encode: Callable[[list[str], int], Any], passages: list[str], batch_size: int, tokens: int | None,
               min_seconds: float = 0.0) -> tuple[dict[str, float], Any]:
    """Passages/s and tokens/s at one batch size: passes over all passages until min_seconds have gone
    by, the median pass counts (one pass slowed by a neighbour on a shared machine does not decide),
    after a whole untimed pass: every shape a pass uses has run once (a GPU provider may plan each new
    shape). Returns the numbers and the last output."""
    encode(passages, batch_size)
    passes, started, out = [], time.perf_counter(), None
    while not passes or time.perf_counter() - started < min_seconds:
        start = time.perf_counter()
        out = encode(passages, batch_size)
        passes.append(time.perf_counter() - start)
    seconds = float(np.median(passes))
    numbers = {f"passes_b{batch_size}": len(passes), f"passages_per_s_b{batch_size}": len(passages) / seconds}
    if tokens is not None:
        numbers[f"tokens_per_s_b{batch_size}"] = tokens / seconds
    return numbers, out


def compare_rows(reference: list[dict], rows: list[dict], k: int = 64) -> dict:
    """Sparse rows ({token id: weight}, keys may be JSON strings) against the reference rows: max abs
    difference and mean top-k overlap by the export parity check's own definitions, and which terms
    are active (the mean Jaccard of the active-term sets, the share of rows whose sets are equal)."""
    from splade_rt.export.parity import compare

    def dense(sparse_rows: list[dict], dim: int) -> np.ndarray:
        out = np.zeros((len(sparse_rows), dim), np.float32)
        for r, row in enumerate(sparse_rows):
            out[r, [int(t) for t in row]] = list(row.values())
        return out

    n = min(len(reference), len(rows))
    dim = 1 + max((int(t) for row in reference[:n] + rows[:n] for t in row), default=0)
    stats = compare(dense(reference[:n], dim), dense(rows[:n], dim), top=k)
    terms = [({int(t) for t in a}, {int(t) for t in b}) for a, b in zip(reference[:n], rows[:n])]
    return {"max_abs_diff": stats["max_abs_diff"], f"top{k}_overlap": stats[f"top{k}_overlap_mean"],
            "active_term_jaccard": float(np.mean([len(a & b) / len(a | b) if a | b else 1.0 for a, b in terms])),
            "same_active_terms": float(np.mean([a == b for a, b in terms]))}
