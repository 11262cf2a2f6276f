"""Which exact CPU graph is faster on this CPU: the int8-screened one or plain fp32.

(Where the native head runs, AVX-512 VNNI and the compiled extension, it comes first and needs no
choice: the provider table's CPU order, read by session.choose_graph. This module decides between
the two graphs behind it.)

The screened graph's speed comes from int8 dot products. CPUs with VNNI (AVX-512 VNNI, AVX-VNNI,
AMX) run them in one instruction, and there the screened graph wins by a wide margin; without VNNI
onnxruntime emulates them and the margin shrinks, possibly below zero for a base-size model whose
encoder dominates. Both graphs give the same vectors, so the choice is only about speed:

* with VNNI, the screened graph, no measurement;
* without, both graphs are timed once on a synthetic batch and the faster is kept; the result is
  cached per graph pair and CPU model (in ~/.cache/splade-rt/cpu-choice.json), so later loads
  cost nothing.

`SpladeEncoder(variant="fp32-native" | "fp32-screened" | "fp32")` forces one; `SPLADE_RT_CPU_GRAPH`
prefers one for a whole deployment.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from .. import machine
from ..manifest import ATTENTION_MASK, INPUT_IDS, TOP_K, Manifest
from .providers import PROVIDERS

logger = logging.getLogger("splade_rt")

ENV = "SPLADE_RT_CPU_GRAPH"


def cache_file() -> Path:
    return machine.cache_dir() / "cpu-choice.json"


def choose_cpu_precision(manifest: Manifest, session_factory, isa: list[str] | None = None) -> str | None:
    """The faster exact CPU precision for this CPU, or None to keep the default order.
    session_factory(precision) -> an onnxruntime session over that graph, for the one-off timing."""
    forced = os.environ.get(ENV)
    if forced:
        allowed = PROVIDERS["cpu"].precisions
        if forced not in allowed:
            raise ValueError(f"{ENV}={forced!r}: expected {', '.join(allowed)}")
        return forced
    screened, fp32 = manifest.graph("fp32-screened"), manifest.graph("fp32")
    if screened is None or fp32 is None or machine.has_vnni(isa):
        return None
    if not all((manifest.directory / g.name).is_file() for g in (screened, fp32)):
        return None  # an export trimmed to one of them (a deployment's copy): nothing to choose between
    info = machine.machine_info() if isa is None else {"cpu": "given", "isa": isa}
    key = f"{screened.sha256[:16]}:{fp32.sha256[:16]}:{info['cpu']}"
    cached = _read_cache().get(key)
    if cached in ("fp32-screened", "fp32"):
        return cached
    timings = {p: _time(session_factory(p), manifest) for p in ("fp32-screened", "fp32")}
    choice = min(timings, key=timings.get)
    logger.info("splade-rt: no VNNI on this CPU; timed the exact graphs once (%s), using %s",
                ", ".join(f"{p} {t * 1000:.1f} ms" for p, t in timings.items()), choice)
    _write_cache({**_read_cache(), key: choice})
    return choice


def _time(session, manifest: Manifest, rows: int = 8, tokens: int = 128, repeats: int = 3) -> float:
    """Best of a few runs on a synthetic batch of document-sized inputs."""
    vocab = manifest.model.vocab_size
    low = 1000 if vocab > 2000 else 0  # past BERT's special and unused ids, where the vocab has them
    tokens = min(tokens, manifest.tokenizer.max_length)  # a model with fewer positions
    ids = np.random.default_rng(0).integers(low, vocab, (rows, tokens), dtype=np.int64)
    feed = {INPUT_IDS: ids, ATTENTION_MASK: np.ones_like(ids), TOP_K: np.array([1], np.int64)}
    session.run(None, feed)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        best = min(best, time.perf_counter() - start)
    return best


def _read_cache() -> dict:
    try:
        return json.loads(cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_cache(data: dict) -> None:
    try:
        path = cache_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    except OSError:  # a read-only home: the choice is remade next time, nothing else changes
        pass
