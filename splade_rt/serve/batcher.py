"""MicroBatcher: many threads or coroutines, one encoder, shared graph runs.

A single-text encode pays a whole graph run for one row: session overhead, thread wake-ups, a
matrix product too thin to fill the cores (or the GPU). Callers hand their texts to the batcher
instead; dispatcher threads gather what is queued into one `encode` call per lane (side, top_k,
threshold), and that call sorts the gathered texts by token count and cuts graph runs of similar
lengths by the encoder's own max_batch_tokens. Each caller gets its own rows back, in its order.

A gathering is sent when its texts reach max_batch_tokens, or when its oldest text has waited
max_wait_ms, whichever comes first, with at most `runs` gatherings in flight. One caller's texts are
never split across gatherings, and a gathering of one caller's texts is encoded exactly as the
encoder's own method encodes them (same batches, same bits); texts that shared a run with others'
equal their single-text encodes within float rounding (1e-6). Token counts for the budget are
estimated from the text's length (a text is tokenized once, inside encode) unless the caller passes
exact ones. The queue is bounded: a call that would take it past max_queue texts
raises OverloadedError at once. A text whose gathering fails is retried alone, so one bad text
fails only its own call. close() (or leaving a `with` block) answers everything already queued.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import OverloadedError
from ..runtime.embeddings import SparseEmbeddings, concat
from ..runtime.texts import check_texts, raise_invalid_unicode
from ..validation import positive_int

logger = logging.getLogger("splade_rt")

QUERY, DOCUMENT = "query", "document"
CHARS_PER_TOKEN = 4  # the budget's estimate of a text's tokens: WordPiece averages ~4-5 characters of English
RUNS_PER_WORKER = 4  # graph runs per CPU worker in one gathering: balanced load at a per-run cost measured small


@dataclass(frozen=True)
class BatchDefaults:
    """A device's defaults: wait and budget trade a text's latency against graph-run size."""

    max_wait_ms: float
    batch_runs: int  # gathered tokens per dispatch, in the encoder's own max_batch_tokens (its graph-run size)
    runs: int  # gatherings in flight at once: while one is in Python (tokenize, assemble), another runs
    max_queue: int


# per encoder.device kind; a device kind not listed takes GPU_DEFAULTS. The CPU's: one gathering at a time,
# cut into one-thread runs side by side (as many as the encoder's workers), a run of the encoder's own size
# each: as efficient per text as the same callers' single-text runs, where a second gathering in flight
# (runs=2) put more threads than cores to work and cost ~8% more CPU per text (benchmarks/serve.py,
# docs/serve.md). The GPU's: two in flight, so the host prepares one while the device runs the other
# (not measured yet: no GPU at hand).
DEVICE_DEFAULTS: dict[str, BatchDefaults] = {
    "cpu": BatchDefaults(max_wait_ms=2.0, batch_runs=2, runs=1, max_queue=1024),
}
GPU_DEFAULTS = BatchDefaults(max_wait_ms=2.0, batch_runs=1, runs=2, max_queue=4096)


@dataclass(frozen=True)
class BatchReport:
    """One gathering's run, as MicroBatcher(on_batch=...) receives it (e.g. for metrics)."""

    side: str
    texts: int
    tokens: int  # the budget's count (estimated unless the callers passed token counts)
    queue_seconds: list[float]  # per text: from submit until its gathering started
    run_seconds: float
    failed: int  # texts whose encode raised


class _Call:
    """One caller's texts: done when each has its row (or one has failed)."""

    __slots__ = ("future", "remaining", "rows", "truncated")

    def __init__(self, count: int) -> None:
        self.future: Future = Future()
        self.rows: list[SparseEmbeddings | None] = [None] * count
        self.remaining = count
        self.truncated = 0


class _Item:
    __slots__ = ("call", "enqueued", "position", "text", "tokens")

    def __init__(self, call: _Call, position: int, text: str, tokens: int, enqueued: float) -> None:
        self.call, self.position, self.text, self.tokens, self.enqueued = call, position, text, tokens, enqueued


Lane = tuple[str, "int | None", "float | None"]  # (side, top_k, threshold): texts encoded in one call share these


class MicroBatcher:
    """Gathers concurrent encode_query / encode_document calls into shared graph runs.

        with MicroBatcher(SpladeEncoder("out/")) as mb:
            q = mb.encode_query("what is splade")            # from any number of threads
            d = await mb.aencode_document(["a passage"])      # or coroutines

    Results are SparseEmbeddings exactly as the encoder's own methods return them. max_batch_tokens:
    tokens gathered per dispatch (default: the device's, a multiple of encoder.max_batch_tokens);
    max_wait_ms: the longest a text waits for others to join it; max_queue: texts accepted and not
    yet answered, past which a call raises OverloadedError; runs: gatherings encoded at once;
    on_batch: called with a BatchReport after each gathering (on a dispatcher thread; it must be quick).
    Inference-free models encode queries by a table lookup with no graph: those are answered at
    once on the caller's thread, not queued.
    """

    def __init__(self, encoder: Any, *, max_batch_tokens: int | None = None, max_wait_ms: float | None = None,
                 max_queue: int | None = None, runs: int | None = None,
                 on_batch: Callable[[BatchReport], None] | None = None) -> None:
        defaults = DEVICE_DEFAULTS.get(encoder.device, GPU_DEFAULTS)
        self.encoder = encoder
        self.max_batch_tokens = (positive_int(max_batch_tokens, "max_batch_tokens") if max_batch_tokens is not None
                                 else defaults.batch_runs * encoder.max_batch_tokens)
        wait = defaults.max_wait_ms if max_wait_ms is None else float(max_wait_ms)
        if not wait >= 0:
            raise ValueError(f"max_wait_ms must be a number >= 0, not {max_wait_ms!r}")
        self.max_wait_ms = wait
        self.max_queue = positive_int(max_queue, "max_queue") if max_queue is not None else defaults.max_queue
        self.runs = positive_int(runs, "runs") if runs is not None else defaults.runs
        self.on_batch = on_batch
        self._wait = wait / 1000.0
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._lanes: dict[Lane, deque[_Item]] = {}
        self._lane_tokens: dict[Lane, int] = {}
        self._in_flight = 0  # texts accepted and not yet answered
        self._closed = False
        self._threads = [threading.Thread(target=self._dispatch, name=f"splade-microbatch-{i}", daemon=True)
                         for i in range(self.runs)]
        for thread in self._threads:
            thread.start()

    # -- public API -------------------------------------------------------------------------------

    def __repr__(self) -> str:
        return (f"MicroBatcher({self.encoder!r}, max_batch_tokens={self.max_batch_tokens}, "
                f"max_wait_ms={self.max_wait_ms}, max_queue={self.max_queue}, runs={self.runs})")

    def encode_query(self, texts: str | Sequence[str], *, top_k: int | None = None, threshold: float | None = None,
                     max_active_dims: int | None = None, **kwargs: Any) -> SparseEmbeddings:
        """As SpladeEncoder.encode_query, through shared graph runs (batch_size, show_progress_bar: ignored)."""
        return self.submit(texts, QUERY, top_k=_top_k(top_k, max_active_dims, kwargs), threshold=threshold).result()

    def encode_document(self, texts: str | Sequence[str], *, top_k: int | None = None,
                        threshold: float | None = None, max_active_dims: int | None = None,
                        **kwargs: Any) -> SparseEmbeddings:
        """As SpladeEncoder.encode_document, through shared graph runs."""
        return self.submit(texts, DOCUMENT, top_k=_top_k(top_k, max_active_dims, kwargs),
                           threshold=threshold).result()

    encode = encode_document  # SpladeEncoder.encode is the document side too

    async def aencode_query(self, texts: str | Sequence[str], *, top_k: int | None = None,
                            threshold: float | None = None, max_active_dims: int | None = None,
                            **kwargs: Any) -> SparseEmbeddings:
        """encode_query for asyncio: the event loop is free while the texts wait and run."""
        future = self.submit(texts, QUERY, top_k=_top_k(top_k, max_active_dims, kwargs), threshold=threshold)
        return await asyncio.wrap_future(future)

    async def aencode_document(self, texts: str | Sequence[str], *, top_k: int | None = None,
                               threshold: float | None = None, max_active_dims: int | None = None,
                               **kwargs: Any) -> SparseEmbeddings:
        future = self.submit(texts, DOCUMENT, top_k=_top_k(top_k, max_active_dims, kwargs), threshold=threshold)
        return await asyncio.wrap_future(future)

    def submit(self, texts: str | Sequence[str], side: str = DOCUMENT, *, top_k: int | None = None,
               threshold: float | None = None, tokens: Sequence[int] | None = None) -> Future:
        """Queue the texts; a concurrent.futures.Future of their SparseEmbeddings. Bad input (a non-str,
        text that is not valid Unicode, a bad top_k) raises here, before anything is queued; so does a
        full queue (OverloadedError). tokens: each text's exact token count, where the caller has them."""
        if side not in (QUERY, DOCUMENT):
            raise ValueError(f"side must be {QUERY!r} or {DOCUMENT!r}, not {side!r}")
        texts = check_texts(texts)
        raise_invalid_unicode(texts)  # raises naming the first bad text; returns when all are valid
        top_k = None if top_k is None else positive_int(top_k, "top_k")
        threshold = None if threshold is None else float(threshold)
        if side == QUERY and self.encoder.query_table is not None:  # inference-free: a lookup, no graph to share
            done: Future = Future()
            done.set_result(self.encoder.encode_query(texts, top_k=top_k, threshold=threshold))
            return done
        count = len(texts)
        if tokens is None:
            limit = self.encoder.max_length
            tokens = [min(limit, 2 + len(t) // CHARS_PER_TOKEN) for t in texts]
        elif len(tokens) != count:
            raise ValueError(f"tokens: {len(tokens)} counts for {count} texts")
        call = _Call(count)
        if not count:
            call.future.set_result(SparseEmbeddings.empty(self.encoder.dim, self.encoder.vocab))
            return call.future
        if count > self.max_queue:
            raise ValueError(f"{count} texts in one call exceed max_queue={self.max_queue}: encode large lists "
                             "with SpladeEncoder.encode directly (it batches them itself), or raise max_queue")
        lane: Lane = (side, top_k, threshold)
        now = time.perf_counter()
        with self._lock:
            if self._closed:
                raise RuntimeError("this MicroBatcher is closed: it takes no new texts")
            if self._in_flight + count > self.max_queue:
                raise OverloadedError(f"overloaded: {self._in_flight} texts queued or running, max_queue="
                                      f"{self.max_queue}; retry later")
            self._in_flight += count
            queue = self._lanes.get(lane)
            if queue is None:
                queue = self._lanes[lane] = deque()
                self._lane_tokens[lane] = 0
            was_empty = not queue
            before = self._lane_tokens[lane]
            queue.extend(_Item(call, i, text, int(n), now) for i, (text, n) in enumerate(zip(texts, tokens)))
            self._lane_tokens[lane] = before + sum(int(n) for n in tokens)
            if was_empty or (before < self.max_batch_tokens <= self._lane_tokens[lane]):
                self._ready.notify()  # a new deadline to keep, or a full budget to send now
        return call.future

    @property
    def queued(self) -> int:
        """Texts accepted and not yet answered (waiting or in a run)."""
        return self._in_flight

    @property
    def healthy(self) -> bool:
        """Open, and every dispatcher thread alive."""
        return not self._closed and all(t.is_alive() for t in self._threads)

    def close(self, timeout: float | None = None) -> None:
        """Take no new texts, answer every queued one, and stop the dispatcher threads."""
        with self._lock:
            self._closed = True
            self._ready.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)

    def __enter__(self) -> MicroBatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- dispatch ---------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        while True:
            with self._ready:
                taken = self._next_gathering()
            if taken is None:
                return
            lane, items = taken
            try:
                self._run(lane, items)
            except BaseException as e:  # a dispatcher must survive any failure of one gathering
                logger.exception("splade-rt: micro-batcher gathering failed")
                self._deliver(items, {}, {id(item): e for item in items})

    def _next_gathering(self) -> tuple[Lane, list[_Item]] | None:
        """(lane, items) to encode next, waiting for a full budget or the oldest text's deadline; None
        once closed and drained. Called with the lock held."""
        while True:
            lane = self._oldest_lane()
            if lane is None:
                if self._closed:
                    return None
                self._ready.wait()
                continue
            queue = self._lanes[lane]
            left = queue[0].enqueued + self._wait - time.perf_counter()
            if self._lane_tokens[lane] < self.max_batch_tokens and left > 0 and not self._closed:
                self._ready.wait(left)
                continue
            items, spent, dropped = [], 0, 0
            # a caller's texts stay together (they are queued side by side), so that one request alone is
            # encoded exactly as the encoder encodes it; the encoder still cuts runs by its own token budget
            while queue and (not items or spent + queue[0].tokens <= self.max_batch_tokens
                             or queue[0].call is items[-1].call):
                item = queue.popleft()
                self._lane_tokens[lane] -= item.tokens
                if item.call.future.cancelled():  # its caller gave up (asyncio cancellation): no run for it
                    dropped += 1
                    continue
                items.append(item)
                spent += item.tokens
            self._in_flight -= dropped
            if any(self._lanes.values()):
                self._ready.notify()  # more is queued: another dispatcher may take it
            if items:
                return lane, items

    def _oldest_lane(self) -> Lane | None:
        oldest, first = None, float("inf")
        for lane, queue in self._lanes.items():
            if queue and queue[0].enqueued < first:
                oldest, first = lane, queue[0].enqueued
        return oldest

    def _run(self, lane: Lane, items: list[_Item]) -> None:
        side, top_k, threshold = lane
        started = time.perf_counter()
        texts = [item.text for item in items]
        rows: dict[int, SparseEmbeddings] = {}
        errors: dict[int, BaseException] = {}
        shared = any(item.call is not items[0].call for item in items)
        try:
            result = self._encode(side, texts, top_k, threshold, shared)
        except Exception as e:  # noqa: BLE001 - retried text by text below, so it fails only its own call
            if len(items) == 1:
                errors[id(items[0])] = e
            else:
                for item in items:
                    try:
                        rows[id(item)] = self._encode(side, [item.text], top_k, threshold)
                    except Exception as one:  # noqa: BLE001 - this text's own failure, for its own caller
                        errors[id(item)] = one
        else:
            cut = self._truncated_rows(texts, result)
            for i, item in enumerate(items):
                rows[id(item)] = _row(result, i, cut[i])
        finished = time.perf_counter()
        self._deliver(items, rows, errors)
        if self.on_batch is not None:
            report = BatchReport(side, len(items), sum(item.tokens for item in items),
                                 [started - item.enqueued for item in items], finished - started, len(errors))
            try:
                self.on_batch(report)
            except Exception:  # a metrics hook must never stop the dispatcher
                logger.exception("splade-rt: micro-batcher on_batch hook failed")

    def _encode(self, side: str, texts: list[str], top_k: int | None, threshold: float | None,
                shared: bool = False) -> SparseEmbeddings:
        """One encode call. A gathering of one caller's texts is encoded exactly as the encoder's own method
        encodes them (bit for bit: same batches). A shared one (shared=True): the encoder sorts by length and
        cuts graph runs by its token budget itself; where it runs batches side by side on one-thread CPU
        workers, rows per run are cut too, into RUNS_PER_WORKER runs per worker: in one run every thread
        would work on one batch (threads waiting on one another), and in one run per worker the longest
        texts would all land in the first while the other worker idles."""
        method = self.encoder.encode_query if side == QUERY else self.encoder.encode_document
        workers = int(getattr(self.encoder, "workers", 1))
        if not shared:
            return method(texts, top_k=top_k, threshold=threshold)
        # one run at a time (a GPU, a large CPU encoder): as many rows per run as the token budget allows
        rows = -(-len(texts) // (workers * RUNS_PER_WORKER)) if workers > 1 else len(texts)
        return method(texts, top_k=top_k, threshold=threshold, batch_size=max(1, rows))

    def _truncated_rows(self, texts: list[str], result: SparseEmbeddings) -> list[int]:
        """Per text, 1 if the encoder cut it at max_length: the gathering's count says how many; with
        several texts, those whose tokens fill max_length are the ones (rarely run: most runs cut none)."""
        if not result.truncated:
            return [0] * len(texts)
        if len(texts) == 1:
            return [1]
        limit = self.encoder.max_length
        return [int(len(ids) >= limit) for ids in self.encoder.tokenize(texts)]

    def _deliver(self, items: list[_Item], rows: dict[int, SparseEmbeddings],
                 errors: dict[int, BaseException]) -> None:
        finished: list[_Call] = []
        failed: list[tuple[_Call, BaseException]] = []
        with self._lock:
            self._in_flight -= len(items)
            for item in items:
                call = item.call
                if call.remaining <= 0:  # already failed by another of its texts
                    continue
                error = errors.get(id(item))
                if error is not None:
                    call.remaining = 0
                    failed.append((call, error))
                    continue
                row = rows[id(item)]
                call.rows[item.position] = row
                call.truncated += row.truncated
                call.remaining -= 1
                if call.remaining == 0:
                    finished.append(call)
        for call, error in failed:
            _settle(call.future, error=error)
        for call in finished:
            result = call.rows[0] if len(call.rows) == 1 else concat(call.rows)
            result.truncated = call.truncated
            _settle(call.future, result=result)


def _row(result: SparseEmbeddings, i: int, truncated: int) -> SparseEmbeddings:
    """Row i as its own one-row batch (views of the gathering's arrays: no copy)."""
    lo, hi = int(result.indptr[i]), int(result.indptr[i + 1])
    return SparseEmbeddings(np.array([0, hi - lo]), result.indices[lo:hi], result.values[lo:hi], result.dim,
                            result.vocab, truncated)


def _settle(future: Future, *, result: Any = None, error: BaseException | None = None) -> None:
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:  # cancelled by its caller meanwhile
        pass


def _top_k(top_k: int | None, max_active_dims: int | None, kwargs: dict[str, Any]) -> int | None:
    """top_k or its alias; the encoder's batching arguments are accepted and mean nothing here."""
    unknown = set(kwargs) - {"batch_size", "show_progress_bar"}
    if unknown:
        raise TypeError(f"unexpected keyword argument {sorted(unknown)[0]!r}")
    return top_k if top_k is not None else max_active_dims
