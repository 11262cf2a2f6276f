"""The host's ceiling: how many passages/s the host side of encode can feed a device, on any machine.

The whole encode runs as a GPU gets it (IOBinding, one batch at a time, the GPU check's batch and
token budget), with the device's work replaced by replaying the outputs recorded from one real
run on this CPU. What is left is the host's work alone, in four parts:

- tokenize: the tokenizers library (lowercasing included);
- pack: the ids out of the tokenizer's Encodings, the length sort, padding each batch;
- bind: IOBinding's inputs bound and outputs fetched (on a GPU, the copies' host side);
- assemble: each batch's sparse rows from the non-zero arrays, then all rows in input order.

Two runs, each the best of `repeats`:

- one core: TOKENIZERS_PARALLELISM=false, each part's CPU seconds per passage (runtime.pipeline's
  StageClock, the thread's CPU time wherever the pipeline ran the part) and the whole process's
  CPU seconds per passage: per_core_passages_per_s, what one core of this CPU can feed;
- every core: tokenizers' threads on, wall time: passages_per_s, what this machine's host feeds.

The bar: host work beyond tokenizing (the process's CPU time less the tokenizer's) at most
BEYOND_TOKENIZE_BAR of the tokenizing time.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..machine import machine_info
from ..runtime import SpladeEncoder
from ..runtime.batching import length_sorted_batches, planned_batches
from ..runtime.pipeline import StageClock

BEYOND_TOKENIZE_BAR = 0.25
PARTS = ("tokenize", "pack", "bind", "assemble")


class Recorder:
    """A session spy: runs each IOBinding for real and keeps a copy of its outputs, in run order."""

    def __init__(self, session: Any) -> None:
        self.session, self.outputs = session, []

    def run_with_iobinding(self, binding: Any, run_options: Any = None) -> None:
        self.session.run_with_iobinding(binding, run_options)
        self.outputs.append([value.numpy().copy() for value in binding.get_outputs()])

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


class _ReplayBinding:
    """A real onnxruntime IOBinding (its binding costs are the host's) whose outputs are replayed."""

    def __init__(self, binding: Any) -> None:
        self.binding, self.shape, self.replayed = binding, None, None

    def bind_ortvalue_input(self, name: str, value: Any) -> None:
        self.binding.bind_ortvalue_input(name, value)
        if self.shape is None:
            self.shape = tuple(value.shape())

    def get_outputs(self) -> list[Any]:
        return self.replayed

    def __getattr__(self, name: str) -> Any:
        return getattr(self.binding, name)


class Replay:
    """A session that answers each run_with_iobinding with the next recorded outputs (as OrtValues in
    host memory, so fetching them costs what fetching a device's outputs costs the host)."""

    def __init__(self, session: Any, outputs: list[list[np.ndarray]]) -> None:
        import onnxruntime as ort

        self.session = session
        self.outputs = [[ort.OrtValue.ortvalue_from_numpy(a) for a in run] for run in outputs]
        self.shapes = [None] * len(outputs)
        self._next, self._lock = 0, threading.Lock()

    def rewind(self) -> None:
        self._next = 0

    def io_binding(self) -> _ReplayBinding:
        return _ReplayBinding(self.session.io_binding())

    def run_with_iobinding(self, binding: _ReplayBinding, run_options: Any = None) -> None:
        with self._lock:
            i, self._next = self._next, self._next + 1
        if i >= len(self.outputs):
            raise RuntimeError(f"replay: run {i + 1} asked for, {len(self.outputs)} recorded")
        if self.shapes[i] is not None and self.shapes[i] != binding.shape:
            raise RuntimeError(f"replay: run {i + 1} binds {binding.shape}, recorded {self.shapes[i]}")
        self.shapes[i] = binding.shape
        binding.replayed = self.outputs[i]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


@contextmanager
def tokenizer_threads(on: bool):
    """TOKENIZERS_PARALLELISM for the block (tokenizers reads it at every call)."""
    before = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if on else "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = before


def host_ceiling(export_dir: str | Path, texts: Sequence[str], *, batch_size: int = 256, max_length: int = 512,
                 variant: str = "fp16", repeats: int = 3) -> dict[str, Any]:
    """The report described in the module docstring, for these passages."""
    texts = list(texts)
    n = len(texts)
    enc = SpladeEncoder(export_dir, device="cpu", variant=variant, io_binding=True, max_length=max_length,
                        max_batch_tokens=batch_size * max_length, max_batch=batch_size)
    real = enc.placement.session
    recorder = enc.placement.session = Recorder(real)
    started = time.perf_counter()
    expected = enc.encode(texts, batch_size=batch_size)
    record_s = time.perf_counter() - started
    replay = enc.placement.session = Replay(real, recorder.outputs)

    def once(threads: bool) -> tuple[float, float, StageClock]:
        replay.rewind()
        enc.clock = clock = StageClock()
        with tokenizer_threads(threads):
            wall, cpu = time.perf_counter(), time.process_time()
            got = enc.encode(texts, batch_size=batch_size)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        enc.clock = None
        if not (np.array_equal(got.indptr, expected.indptr) and np.array_equal(got.indices, expected.indices)
                and np.array_equal(got.values, expected.values)):
            raise RuntimeError("replay: the replayed encode gave other vectors than the recorded one")
        return wall, cpu, clock

    serial = min((once(False) for _ in range(repeats)), key=lambda run: run[1])
    threaded = min((once(True) for _ in range(repeats)), key=lambda run: run[0])
    _, cpu, clock = serial
    per_passage = {part: clock.seconds.get(part, 0.0) / n for part in PARTS}
    tokenize = per_passage["tokenize"]
    beyond = cpu / n - tokenize  # everything else the process did: the parts and the pipeline's own glue
    lengths = np.array([len(ids) for ids in enc.tokenize(texts)])
    chars = np.array([len(t) for t in texts])
    return {
        "machine": machine_info(),
        "passages": n,
        "batch_size": batch_size,
        "max_length": max_length,
        "variant": variant,
        "mean_tokens": float(lengths.mean()),
        "runs_replayed": len(recorder.outputs),
        "record_s": record_s,
        "repeats": repeats,
        "per_passage_s": per_passage,
        "other_host_s": beyond - sum(per_passage[p] for p in PARTS[1:]),  # thread hand-offs, Python glue
        "host_cpu_per_passage_s": cpu / n,
        "per_core_passages_per_s": n / cpu,
        "passages_per_s": n / threaded[0],
        "cores": os.cpu_count(),
        "beyond_tokenize_ratio": beyond / tokenize,
        "parts_beyond_tokenize_ratio": sum(per_passage[p] for p in PARTS[1:]) / tokenize,
        "bar": BEYOND_TOKENIZE_BAR,
        "passed": beyond / tokenize <= BEYOND_TOKENIZE_BAR,
        # padded tokens over real tokens: the encoder's windows, and one length sort of every text
        "padding": {"windows": _padded(planned_batches(chars, lengths, enc._tokens.special, batch_size,
                                                       enc.max_batch_tokens), lengths),
                    "one_sort": _padded(length_sorted_batches(lengths, batch_size, enc.max_batch_tokens), lengths)},
    }


def _padded(batches: list[np.ndarray], lengths: np.ndarray) -> float:
    return float(sum(len(b) * lengths[b].max() for b in batches) / lengths.sum())


def describe(report: dict[str, Any]) -> str:
    """One line for a log: the host's passages/s and its split (microseconds per passage)."""
    us = {part: report["per_passage_s"][part] * 1e6 for part in PARTS}
    machine = report["machine"]
    return (f"host ceiling ({machine['cpu']}, {report['cores']} cores, batch {report['batch_size']}): "
            f"{report['per_core_passages_per_s']:,.0f} passages/s per core, {report['passages_per_s']:,.0f} on every "
            f"core; per passage tokenize {us['tokenize']:.0f} us, pack {us['pack']:.1f}, bind {us['bind']:.1f}, "
            f"assemble {us['assemble']:.1f}; host work beyond tokenizing {report['beyond_tokenize_ratio']:.1%} of it "
            f"(bar {report['bar']:.0%})")
