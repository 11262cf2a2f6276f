"""The host path as a pipeline: while the device runs batch i, the host packs batch i+1, assembles
batch i-1, and a tokenizer thread tokenizes the next window of texts.

Three kinds of work overlap, each where it releases the GIL or needs it least:

- a tokenizer thread turns the next window of texts into token ids (tokenizers releases the GIL,
  and with TOKENIZERS_PARALLELISM on spreads a window over its own threads);
- run threads (one on a GPU, `workers` on the CPU) each run one graph batch (onnxruntime releases
  the GIL for the whole run, device time included);
- the calling thread cuts and pads the batches (a few array operations each) and assembles each
  finished batch's vectors, in batch order.

Bounded memory: at most workers + 1 padded batches are submitted at once (the one running on each
run thread and one queued, so a run thread never waits for the host between batches), and the
tokenizer thread works one window ahead of the batches being run. Results come back in batch
order whatever order the runs finish in; the first error stops the pipeline (queued runs are
cancelled, running ones finish) and is raised in the calling thread.

Nothing here is shared between calls: each call makes its own threads, so many threads may call
one encoder at once (onnxruntime sessions are thread-safe for run()).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

W = TypeVar("W")  # a window of texts, as the encoder names them
T = TypeVar("T")  # a window's tokens
B = TypeVar("B")  # one padded batch
R = TypeVar("R")  # a batch's graph outputs


def run_pipelined(first: T, windows: Iterable[W], tokenize: Callable[[W], T], batches: Callable[[T], Iterator[B]],
                  run: Callable[[B], R], finish: Callable[[B, R], None], workers: int) -> None:
    """finish(batch, run(batch)) for every batch of every window, in order, overlapped as the module
    says. first: the first window, tokenized already (the caller has nothing else to do meanwhile);
    windows: the rest, tokenized one ahead on a thread of their own."""
    inflight: deque[tuple[B, Future]] = deque()
    ahead: Future | None = None
    tokenizer = ThreadPoolExecutor(1, thread_name_prefix="splade-rt-tokenize")
    runner = ThreadPoolExecutor(workers, thread_name_prefix="splade-rt-run")
    try:
        rest = iter(windows)
        tokens: T | None = first
        while tokens is not None:
            window = next(rest, None)
            ahead = tokenizer.submit(tokenize, window) if window is not None else None
            for batch in batches(tokens):
                inflight.append((batch, runner.submit(run, batch)))
                while len(inflight) > workers:
                    done, future = inflight.popleft()
                    finish(done, future.result())
            while inflight and inflight[0][1].done():  # finished while the batches were cut: assemble them now
                done, future = inflight.popleft()
                finish(done, future.result())
            tokens = ahead.result() if ahead is not None else None
            ahead = None
        while inflight:
            done, future = inflight.popleft()
            finish(done, future.result())
    finally:
        for _, future in inflight:
            future.cancel()
        if ahead is not None:
            ahead.cancel()
        runner.shutdown(wait=True, cancel_futures=True)
        tokenizer.shutdown(wait=True, cancel_futures=True)


class StageClock:
    """Seconds of work per stage of encode ("tokenize", "pack", "bind", "device", "assemble"), summed
    over the threads that did it: the benchmarks' split of the host's work (bench.host_ceiling).

    Each stage counts its thread's CPU time (time.thread_time), so stages overlapped on different
    threads are not double-counted by wall time; with TOKENIZERS_PARALLELISM=false the tokenizer's
    work is on the timed thread too. `events` (when keep_events) holds (stage, thread, start, end)
    in perf_counter seconds, for tests that check which stages overlapped."""

    def __init__(self, keep_events: bool = False) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.wall: dict[str, float] = defaultdict(float)  # perf_counter seconds, for stages that wait (device)
        self.events: list[tuple[str, str, float, float]] | None = [] if keep_events else None
        self._lock = threading.Lock()

    @contextmanager
    def stage(self, name: str):
        start, cpu = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            spent, end = time.thread_time() - cpu, time.perf_counter()
            with self._lock:
                self.seconds[name] += spent
                self.wall[name] += end - start
                if self.events is not None:
                    self.events.append((name, threading.current_thread().name, start, end))


def timed(clock: StageClock | None, stage: str) -> Any:
    """clock.stage(stage) where a clock is set (benchmarks, tests), else a no-op context."""
    return clock.stage(stage) if clock is not None else _NO_CLOCK


class _NoClock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NO_CLOCK = _NoClock()
