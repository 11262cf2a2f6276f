"""SpladeEncoder: texts in, sparse vectors out, over an exported directory.

The hot path is: tokenize (Rust), sort by token count, cut batches by count and token budget,
run the fused graph (on the CPU, two batches at a time), and assemble CSR rows in input order.
Nothing here holds per-call state, so one encoder serves many threads (onnxruntime sessions are
thread-safe for run()).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ExportDirError
from ..manifest import (
    ATTENTION_MASK, INPUT_IDS, OUT_NZ_INDEX, OUT_NZ_VALUE, OUT_TOP_INDICES, OUT_TOP_VALUES, TOP_K, Manifest,
    read_manifest,
)
from .batching import in_input_order, length_batches, pad_ids
from .embeddings import SparseEmbeddings, SparseVector, dot_scores
from .query_table import QueryTable
from .session import Placement, cpu_twin, open_session

logger = logging.getLogger("splade_rt")

DEFAULT_BATCH_TOKENS = 8192
SMALL_INPUT_TOKENS = 64  # padded tokens at or below which the CPU runs one thread (see cpu_twin)


class SpladeEncoder:
    """Encode queries and documents into SPLADE sparse vectors with onnxruntime.

    device: "auto" (CUDA if its execution provider loads, else CPU with a warning saying why),
    "cuda"/"cuda:N" (an error if CUDA can't run), or "cpu". threads: intra-op threads for the CPU
    (default: the cores this process may use). workers: CPU batches in flight at once, each on
    threads // workers threads (default 2: while one batch is in its serial steps the other keeps
    the cores busy, +5% passages/s for the screened graph in the benchmark on 2 cores; peak memory
    is that of two batches). max_length: truncate below the export's max length.
    """

    def __init__(self, path: str | Path, device: str = "auto", *, variant: str | None = None,
                 threads: int | None = None, workers: int | None = None, max_length: int | None = None,
                 max_batch_tokens: int = DEFAULT_BATCH_TOKENS, spinning: bool = False, verify: bool = True,
                 io_binding: bool | None = None) -> None:
        if workers is not None and (not isinstance(workers, (int, np.integer)) or isinstance(workers, bool)
                                    or workers < 1):
            raise ValueError(f"workers must be a positive integer, not {workers!r}")
        self.path = Path(path)
        self.manifest: Manifest = read_manifest(self.path)
        tok = self.manifest.tokenizer
        self.max_length = tok.max_length
        if max_length is not None:
            if not 2 <= max_length <= self.max_length:
                raise ValueError(f"max_length {max_length}: must be between 2 and the export's {self.max_length}")
            self.max_length = max_length
        self.lowercase = tok.lowercase
        self.pad_id = tok.pad_id
        self.dim = self.manifest.model.vocab_size
        self.similarity_fn_name = self.manifest.model.similarity
        if max_batch_tokens < self.max_length:
            raise ValueError(f"max_batch_tokens {max_batch_tokens} is below one full-length text ({self.max_length})")
        self.max_batch_tokens = max_batch_tokens
        self._tokenizer = _load_tokenizer(self.manifest.verify_file(tok.file, verify), self.max_length)
        self.vocab = _Vocab(self._tokenizer, self.dim)
        # inference-free models: queries are a table lookup, no graph
        self.query_table = (QueryTable(self.manifest, verify, self.vocab)
                            if self.manifest.query_table is not None else None)
        self.placement: Placement = open_session(self.manifest, device, variant=variant, threads=threads,
                                                 spinning=spinning, verify=verify)
        # IOBinding keeps inputs and the [batch, vocab] tensor on the device; on the CPU plain run() is cheaper.
        self._io_binding = self.placement.spec.io_binding if io_binding is None else io_binding
        threads = self.placement.session.get_session_options().intra_op_num_threads
        on_cpu = self.placement.device == "cpu" and not self._io_binding
        self.workers = min(workers or 2, threads) if on_cpu else 1
        self._worker_threads = max(1, threads // self.workers)
        # query-sized inputs run on one thread, only with the screened graph: its int8 projection is
        # cheap enough that thread wake-ups dominate; the fp32 graph's projection still gains from a
        # second thread (5.2 vs 3.2 ms)
        self._small_enabled = on_cpu and self.placement.precision == "fp32-screened" and threads > 1
        self._twins: dict[int, Any] = {}  # intra-op threads -> twin CPU session, made on first use
        self._twin_lock = threading.Lock()
        self._spinning = spinning

    # -- public API -------------------------------------------------------------------------------

    @property
    def device(self) -> str:
        return self.placement.device

    @property
    def provider(self) -> str:
        return self.placement.session.get_providers()[0]

    def __repr__(self) -> str:
        return (f"SpladeEncoder({str(self.path)!r}, device={self.device!r}, graph={self.placement.file!r}, "
                f"max_length={self.max_length})")

    def encode(self, texts: str | Sequence[str], *, batch_size: int = 32, top_k: int | None = None,
               threshold: float | None = None, show_progress_bar: bool = False,
               max_active_dims: int | None = None) -> SparseEmbeddings:
        """Sparse vectors in input order. top_k (alias max_active_dims) keeps each row's k largest
        weights, computed on the device; threshold drops weights <= threshold."""
        texts = _check_texts(texts)
        top_k = _check_top_k(top_k if top_k is not None else max_active_dims)
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")
        if not texts:
            return SparseEmbeddings.empty(self.dim, self.vocab)
        cut = 0.0 if threshold is None else float(threshold)
        k = min(int(top_k), self.dim) if top_k is not None else None

        encodings = self._tokenize(texts)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        truncated = sum(1 for e in encodings if e.overflowing)
        if truncated:
            logger.info("splade-rt: %d of %d texts truncated to %d tokens", truncated, len(texts), self.max_length)
        order = np.argsort(-lengths, kind="stable")  # longest first: the biggest batch fails first, if at all
        done = list(length_batches(order, lengths, batch_size, self.max_batch_tokens))
        session = self._twin(self._worker_threads) if self.workers > 1 and len(done) > 1 else None

        def run(rows: np.ndarray) -> SparseEmbeddings:
            ids, mask = pad_ids([encodings[i].ids for i in rows], self.pad_id)
            return self._run(ids, mask, k, cut, session)

        parts = []
        bar = _progress(len(texts), show_progress_bar)
        with ThreadPoolExecutor(self.workers) if session is not None else nullcontext() as pool:
            for rows, part in zip(done, pool.map(run, done) if pool else map(run, done)):  # in batch order
                parts.append(part)
                if bar is not None:
                    bar.update(len(rows))
        if bar is not None:
            bar.close()
        result = in_input_order(parts, done)
        result.truncated = truncated
        return result

    def encode_query(self, texts: str | Sequence[str], *, top_k: int | None = None, threshold: float | None = None,
                     max_active_dims: int | None = None, **kwargs: Any) -> SparseEmbeddings:
        """Queries: through the graph, or for an inference-free model through its token weight table
        (no graph runs; the other keyword arguments of encode are accepted and not needed)."""
        if self.query_table is None:
            return self.encode(texts, top_k=top_k, threshold=threshold, max_active_dims=max_active_dims, **kwargs)
        top_k = _check_top_k(top_k if top_k is not None else max_active_dims)
        return self.query_table.encode(_check_texts(texts), top_k, threshold)

    def encode_document(self, texts: str | Sequence[str], **kwargs: Any) -> SparseEmbeddings:
        return self.encode(texts, **kwargs)

    def similarity(self, a: SparseEmbeddings | SparseVector, b: SparseEmbeddings | SparseVector) -> np.ndarray:
        """Dot products [len(a), len(b)] (the SPLADE score), as a dense numpy array."""
        a, b = _as_batch(a, self.dim), _as_batch(b, self.dim)
        scores = dot_scores(a, b)
        if self.similarity_fn_name == "cosine":
            norms_a = _row_norms(a)[:, None]
            norms_b = _row_norms(b)[None, :]
            scores = scores / np.maximum(norms_a * norms_b, 1e-12)
        return scores

    def decode(self, vector: SparseVector | SparseEmbeddings, top_k: int | None = None):
        """[(token, weight), ...] by descending weight; a list of those for a batch."""
        if isinstance(vector, SparseEmbeddings):
            return [v.decode(top_k) for v in vector]
        if isinstance(vector, SparseVector):
            return SparseVector(vector.indices, vector.values, vector.dim, self.vocab).decode(top_k)
        raise TypeError(f"decode takes a SparseVector or SparseEmbeddings, not {type(vector).__name__}")

    def tokenize(self, texts: str | Sequence[str]) -> list[list[int]]:
        """Token ids exactly as the encoder feeds them to the graph (after truncation)."""
        return [e.ids for e in self._tokenize(_check_texts(texts))]

    # -- internals --------------------------------------------------------------------------------

    def _tokenize(self, texts: list[str]):
        if self.lowercase:
            texts = [t.lower() for t in texts]
        if len(texts) == 1:
            return [self._tokenizer.encode(texts[0])]
        return self._tokenizer.encode_batch_fast(texts) if hasattr(self._tokenizer, "encode_batch_fast") \
            else self._tokenizer.encode_batch(texts)

    def _run(self, ids: np.ndarray, mask: np.ndarray, k: int | None, cut: float,
             session=None) -> SparseEmbeddings:
        wanted = [OUT_TOP_VALUES, OUT_TOP_INDICES] if k else [OUT_NZ_INDEX, OUT_NZ_VALUE]
        top = np.array([k or 1], dtype=np.int64)
        if self._io_binding:
            first, second = self._run_bound(ids, mask, top, wanted)
        else:
            if session is None:
                small = self._small_enabled and ids.size <= SMALL_INPUT_TOKENS
                session = self._twin(1) if small else self.placement.session
            first, second = session.run(wanted, {INPUT_IDS: ids, ATTENTION_MASK: mask, TOP_K: top})
        if k:
            return _csr_from_topk(first, second, cut, self.dim, self.vocab)
        return _csr_from_coo(first, second, cut, len(ids), self.dim, self.vocab)

    def _twin(self, threads: int):
        if threads not in self._twins:
            with self._twin_lock:
                if threads not in self._twins:
                    self._twins[threads] = cpu_twin(self.placement, self.manifest, threads, self._spinning)
        return self._twins[threads]

    def _run_bound(self, ids: np.ndarray, mask: np.ndarray, top: np.ndarray, wanted: list[str]):
        """Inputs copied to the device once; only the wanted (small) outputs are bound to host memory:
        the [batch, vocab] tensor is never bound, so it never leaves the device."""
        import onnxruntime as ort

        kind, index = self.placement.device, self.placement.device_id
        binding = self.placement.session.io_binding()
        binding.bind_ortvalue_input(INPUT_IDS, ort.OrtValue.ortvalue_from_numpy(ids, kind, index))
        binding.bind_ortvalue_input(ATTENTION_MASK, ort.OrtValue.ortvalue_from_numpy(mask, kind, index))
        binding.bind_cpu_input(TOP_K, top)  # a shape input: TopK reads k from host memory
        for name in wanted:
            binding.bind_output(name, "cpu")
        self.placement.session.run_with_iobinding(binding)
        return [value.numpy() for value in binding.get_outputs()]


def _check_texts(texts: Any) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    if texts is None or isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Iterable):
        raise TypeError(f"texts must be a str or a list of str, not {type(texts).__name__}")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__} ({t!r:.40}), expected str")
    return texts


def _csr_from_topk(values: np.ndarray, indices: np.ndarray, cut: float, dim: int, vocab) -> SparseEmbeddings:
    keep = values > cut
    cols = np.where(keep, indices, dim)  # dropped entries sort last
    order = np.argsort(cols, axis=1, kind="stable")
    cols = np.take_along_axis(cols, order, axis=1)
    vals = np.take_along_axis(values, order, axis=1)
    keep = cols < dim
    indptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))])
    return SparseEmbeddings(indptr, cols[keep], vals[keep], dim, vocab)


def _csr_from_coo(coords: np.ndarray, values: np.ndarray, cut: float, rows: int, dim: int, vocab) -> SparseEmbeddings:
    keep = values > cut  # NonZero is row-major: columns already ascend within a row
    row = coords[0][keep]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(row, minlength=rows))])
    return SparseEmbeddings(indptr, coords[1][keep], values[keep], dim, vocab)


def _row_norms(x: SparseEmbeddings) -> np.ndarray:
    rows = np.repeat(np.arange(len(x)), x.active_dims)
    return np.sqrt(np.bincount(rows, weights=x.values.astype(np.float64) ** 2, minlength=len(x)))


def _as_batch(x: SparseEmbeddings | SparseVector, dim: int) -> SparseEmbeddings:
    if isinstance(x, SparseEmbeddings):
        return x
    if isinstance(x, SparseVector):
        return SparseEmbeddings(np.array([0, len(x)]), x.indices, x.values, x.dim, x.vocab)
    raise TypeError(f"expected SparseEmbeddings or SparseVector, not {type(x).__name__}")


def _check_top_k(top_k: Any) -> int | None:
    if top_k is not None and (not isinstance(top_k, (int, np.integer)) or isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer, not {top_k!r}")
    return top_k


def _load_tokenizer(path: Path, max_length: int):
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception on bad JSON
        raise ExportDirError(f"{path}: not a valid tokenizers file ({str(e)[:160]})") from None
    tokenizer.no_padding()  # we pad per batch to its longest row
    tokenizer.enable_truncation(max_length)
    return tokenizer


class _Vocab(Sequence):
    """id -> token, built on first use (decode, rank_features) rather than at load."""

    def __init__(self, tokenizer, size: int) -> None:
        self._tokenizer, self._size, self._tokens = tokenizer, size, None

    def _table(self) -> list[str]:
        if self._tokens is None:
            tokens = [f"[unused:{i}]" for i in range(self._size)]
            for token, i in self._tokenizer.get_vocab().items():
                if i < self._size:
                    tokens[i] = token
            self._tokens = tokens
        return self._tokens

    def __getitem__(self, i):
        return self._table()[i]

    def __len__(self) -> int:
        return self._size


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        logger.warning("splade-rt: show_progress_bar needs tqdm (pip install tqdm); encoding without it")
        return None
    return tqdm(total=total, desc="Encoding", unit="text")
