"""SpladeEncoder: texts in, sparse vectors out, over an exported directory.

The hot path is: tokenize (Rust), sort by token count, cut batches by count and token budget,
run the fused graph (on the CPU, two batches at a time), and assemble CSR rows in input order.
Nothing here holds per-call state, so one encoder serves many threads (onnxruntime sessions are
thread-safe for run()).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DeviceError, ExportDirError
from ..manifest import (
    ATTENTION_MASK,
    INPUT_IDS,
    OUT_NZ_INDEX,
    OUT_NZ_VALUE,
    OUT_TOP_INDICES,
    OUT_TOP_VALUES,
    TOP_K,
    Manifest,
    read_manifest,
)
from ..validation import positive_int
from .batching import in_input_order, length_sorted_batches, pad_ids
from .embeddings import SparseEmbeddings, SparseVector, dot_scores
from .query_table import QueryTable
from .session import GpuSettings, Placement, cpu_twin, first_line, is_out_of_memory, open_session, run_options
from .texts import check_texts, raise_invalid_unicode

logger = logging.getLogger("splade_rt")

SIDE_BY_SIDE_MAX_HIDDEN = 256  # hidden size up to which the CPU runs two batches at a time by default
SMALL_INPUT_TOKENS = 64  # padded tokens at or below which the CPU runs one thread (see cpu_twin)


class SpladeEncoder:
    """Encode queries and documents into SPLADE sparse vectors with onnxruntime.

    device: "auto" (CUDA if its execution provider loads, else CPU with a warning saying why),
    "cuda"/"cuda:N" (an error if CUDA can't run), or "cpu". threads: intra-op threads for the CPU
    (default: the cores this process may use). workers: CPU batches in flight at once, each on
    threads // workers threads (default 2 for a small encoder, hidden size <= 256: while one batch
    is in its serial steps the other keeps the cores busy, peak memory that of two batches; 1 for a
    larger encoder, where two batches compete for cache; see the README's benchmarks). max_length:
    truncate below the export's max length. max_batch_tokens: padded tokens per graph run, at least
    max_length (default: the device's; 1024 on the CPU, where a batch's activations then stay in
    cache, 8192 on the GPU).

    device="tensorrt"/"tensorrt:N" runs the fp16 graph on onnxruntime's TensorRT EP (fp16 kernels, the
    CUDA EP behind it for what TensorRT can't take); it is never chosen by "auto", and raises
    DeviceError naming libnvinfer where TensorRT can't load. On the GPU devices:

    - max_batch: most texts per graph run (default: no limit on CPU and CUDA, 256 on TensorRT, whose
      engine is built for batches of 1..max_batch rows x 1..max_length tokens, one explicit shape
      profile, so a new shape never rebuilds it); a larger batch is run in parts.
    - trt_cache_dir: where TensorRT engines are kept (default ~/.cache/splade-rt/trt, or under
      $XDG_CACHE_HOME), in a subfolder per graph sha256 and profile. The first run builds the engine
      (minutes); later encoders with the same graph and profile load it.
    - gpu_mem_limit: bytes (or "8GiB") the CUDA memory arena may hold, and TensorRT's workspace. The
      arena grows to the next power of two (onnxruntime's default; kSameAsRequested held more memory
      over random shapes on an H100, fragmented).
    - arena_shrinkage: after each run, hand the arena's unused memory back to the device (flat
      memory for a cudaFree/cudaMalloc per batch; off by default).
    - pad_to_multiple_of: pad each batch's token length up to a multiple of this, so that few
      distinct shapes reach the device (off by default).
    - provider_options: onnxruntime provider options merged over splade-rt's for the device's
      provider (session.PROVIDERS lists them). On CUDA, {"sdpa_kernel": 0} gives onnxruntime back its
      own attention kernel choice, which on an H100 plans every new shape (fine for fixed shapes).

    A batch that runs out of memory is split in half and retried (one RuntimeWarning per encoder);
    batches as large are then split before they run. One text that doesn't fit raises DeviceError.
    """

    def __init__(self, path: str | Path, device: str = "auto", *, variant: str | None = None,
                 threads: int | None = None, workers: int | None = None, max_length: int | None = None,
                 max_batch_tokens: int | None = None, spinning: bool = False, verify: bool = True,
                 io_binding: bool | None = None, max_batch: int | None = None, trt_cache_dir: str | Path | None = None,
                 gpu_mem_limit: int | str | None = None, arena_shrinkage: bool = False,
                 pad_to_multiple_of: int | None = None, provider_options: dict[str, Any] | None = None) -> None:
        if workers is not None:
            positive_int(workers, "workers")
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
        if max_batch_tokens is not None and positive_int(max_batch_tokens, "max_batch_tokens") < self.max_length:
            raise ValueError(f"max_batch_tokens {max_batch_tokens} is below one full-length text ({self.max_length})")
        self._tokenizer = _load_tokenizer(self.manifest.verify_file(tok.file, verify), self.max_length)
        self.vocab = _Vocab(self._tokenizer, self.dim)
        # inference-free models: queries are a table lookup, no graph
        self.query_table = (QueryTable(self.manifest, verify, self.vocab)
                            if self.manifest.query_table is not None else None)
        self._pad_multiple = 1 if pad_to_multiple_of is None else positive_int(pad_to_multiple_of,
                                                                               "pad_to_multiple_of")
        settings = GpuSettings(gpu_mem_limit=gpu_mem_limit, max_batch=max_batch, trt_cache_dir=trt_cache_dir,
                               arena_shrinkage=arena_shrinkage, provider_options=provider_options or {})
        self.placement: Placement = open_session(self.manifest, device, variant=variant, threads=threads,
                                                 spinning=spinning, verify=verify, max_length=self.max_length,
                                                 settings=settings)
        self.max_batch_tokens = max_batch_tokens or max(self.placement.spec.batch_tokens, self.max_length)
        # IOBinding keeps inputs and the [batch, vocab] tensor on the device; on the CPU plain run() is cheaper.
        self._io_binding = self.placement.spec.io_binding if io_binding is None else io_binding
        if self._io_binding and self.placement.head is not None:
            raise ValueError(f"io_binding=True applies to the fused graphs; the native head (variant "
                             f"{self.placement.precision}) runs on the CPU's own memory: leave io_binding unset or "
                             "pass a fused graph's variant")
        self._run_options = run_options(self.placement)
        self._max_rows = self.placement.max_rows or sys.maxsize
        self._oom_tokens = sys.maxsize  # padded tokens of the smallest batch that ran out of memory
        self._oom_warned = False
        threads = self.placement.session.get_session_options().intra_op_num_threads
        on_cpu = self.placement.device == "cpu" and not self._io_binding
        # two batches side by side pay off where the vocab head dominates (a small encoder); with a
        # base-size encoder they compete for cache and memory bandwidth (README, "Encode")
        small_encoder = self.manifest.model.hidden_size <= SIDE_BY_SIDE_MAX_HIDDEN
        self.workers = min(workers or (2 if small_encoder else 1), threads) if on_cpu else 1
        self._worker_threads = max(1, threads // self.workers)
        # query-sized inputs run on one thread, only with a small encoder's screened graph: its int8
        # projection is cheap enough that thread wake-ups dominate; the fp32 graph's projection, and a
        # base-size encoder's layers, still gain from a second thread
        self._small_enabled = (on_cpu and small_encoder and threads > 1
                               and self.placement.precision in ("fp32-native", "fp32-screened", "int8", "int8-native"))
        self._threads = threads
        self._twins: dict[tuple[int, int], Any] = {}  # (intra-op, head) threads -> twin CPU session, made on first use
        self._twin_lock = threading.Lock()
        self._spinning = spinning
        self._truncation_reported = False
        self._serial_tokenizer_reported = self.placement.device == "cpu"  # on the CPU it is the default

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
        texts = check_texts(texts)
        top_k = _check_top_k(top_k if top_k is not None else max_active_dims)
        positive_int(batch_size, "batch_size")
        if not texts:
            return SparseEmbeddings.empty(self.dim, self.vocab)
        cut = 0.0 if threshold is None else float(threshold)
        k = min(int(top_k), self.dim) if top_k is not None else None

        if not self._serial_tokenizer_reported and len(texts) > 1 and tokenizer_is_serial():
            self._serial_tokenizer_reported = True
            logger.warning("splade-rt: TOKENIZERS_PARALLELISM=%s: texts are tokenized on one thread, and on %s the "
                           "tokenizer sets the pace (README, \"GPU\"); set it to true (tokenizers sets it to false "
                           "itself in a process that forked after using its threads)",
                           os.environ["TOKENIZERS_PARALLELISM"], self.device)
        encodings = self._tokenize(texts)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        truncated = sum(1 for e in encodings if e.overflowing)
        if truncated:
            # visible once per encoder (a 100,000-character text should not be cut unnoticed), then
            # at INFO so a production log is not flooded; the count is on every result
            level = logging.INFO if self._truncation_reported else logging.WARNING
            self._truncation_reported = True
            logger.log(level, "splade-rt: %d of %d texts truncated to %d tokens (result.truncated counts them; "
                       "later truncations are logged at INFO)", truncated, len(texts), self.max_length)
        # longest first: the biggest batch fails first, if at all
        done = length_sorted_batches(lengths, batch_size, self.max_batch_tokens)
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
        return self.query_table.encode(check_texts(texts), top_k, threshold)

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
        return [e.ids for e in self._tokenize(check_texts(texts))]

    # -- internals --------------------------------------------------------------------------------

    def _tokenize(self, texts: list[str]):
        if self.lowercase:
            texts = [t.lower() for t in texts]
        try:
            if len(texts) == 1:
                return [self._tokenizer.encode(texts[0])]
            return self._tokenizer.encode_batch_fast(texts) if hasattr(self._tokenizer, "encode_batch_fast") \
                else self._tokenizer.encode_batch(texts)
        except TypeError:  # tokenizers' "TextInputSequence must be str" for text that is not valid Unicode
            raise_invalid_unicode(texts)
            raise

    def _run(self, ids: np.ndarray, mask: np.ndarray, k: int | None, cut: float,
             session=None) -> SparseEmbeddings:
        wanted = [OUT_TOP_VALUES, OUT_TOP_INDICES] if k else [OUT_NZ_INDEX, OUT_NZ_VALUE]
        top = np.array([k or 1], dtype=np.int64)
        first, second = self._outputs(ids, mask, top, wanted, session)
        if k:
            return _csr_from_topk(first, second, cut, self.dim, self.vocab)
        return _csr_from_coo(first, second, cut, len(ids), self.dim, self.vocab)

    def _outputs(self, ids: np.ndarray, mask: np.ndarray, top: np.ndarray, wanted: list[str], session):
        """The wanted outputs for these rows. A batch over the placement's row limit (TensorRT's profile)
        runs in halves; so does one that runs out of memory: split, retried and joined, with one
        warning per encoder, and batches as large are split before they run from then on."""
        rows = len(ids)
        if rows > 1 and (rows > self._max_rows or ids.size >= self._oom_tokens):
            return self._halves(ids, mask, top, wanted, session)
        if ids.shape[1] % self._pad_multiple:
            width = -(-ids.shape[1] // self._pad_multiple) * self._pad_multiple
            ids = np.pad(ids, ((0, 0), (0, width - ids.shape[1])), constant_values=self.pad_id)
            mask = np.pad(mask, ((0, 0), (0, width - mask.shape[1])))
        try:
            if self._io_binding:
                return self._run_bound(ids, mask, top, wanted)
            if session is None:
                small = self._small_enabled and ids.size <= SMALL_INPUT_TOKENS
                # the native head still splits a query's vocab across every thread
                session = self._twin(1, self._threads) if small else self.placement.session
            return session.run(wanted, {INPUT_IDS: ids, ATTENTION_MASK: mask, TOP_K: top}, self._run_options)
        except Exception as e:
            if not is_out_of_memory(e):
                raise
            if rows == 1:
                raise DeviceError(f"one text of {ids.shape[1]} tokens runs out of memory on {self.device} "
                                  f"({first_line(e)}); raise gpu_mem_limit or lower max_length") from None
            self._out_of_memory(ids.shape, e)
            return self._halves(ids, mask, top, wanted, session)

    def _halves(self, ids: np.ndarray, mask: np.ndarray, top: np.ndarray, wanted: list[str], session):
        half = len(ids) // 2
        parts = []
        for rows in (slice(0, half), slice(half, None)):
            width = max(1, int(mask[rows].sum(axis=1).max()))  # each half padded to its own longest row
            parts.append(self._outputs(ids[rows, :width], mask[rows, :width], top, wanted, session))
        (a_first, a_second), (b_first, b_second) = parts
        if wanted[0] == OUT_TOP_VALUES:  # [rows, k] each
            return np.concatenate([a_first, b_first]), np.concatenate([a_second, b_second])
        b_first = b_first.copy()  # non-zeros: [2, nnz] (row, column) coordinates and [nnz] values
        b_first[0] += half
        return np.concatenate([a_first, b_first], axis=1), np.concatenate([a_second, b_second])

    def _out_of_memory(self, shape: tuple[int, ...], error: BaseException) -> None:
        self._oom_tokens = min(self._oom_tokens, shape[0] * shape[1])
        message = (f"splade-rt: a batch of {shape[0]} texts x {shape[1]} tokens ran out of memory on {self.device} "
                   f"({first_line(error)}); running it in halves, and splitting batches of {self._oom_tokens} "
                   "padded tokens or more before they run (a lower batch_size or max_batch_tokens, or a higher "
                   "gpu_mem_limit, avoids this)")
        if self._oom_warned:
            logger.info(message)
        else:
            self._oom_warned = True
            warnings.warn(message, RuntimeWarning, stacklevel=2)

    def _twin(self, threads: int, head_threads: int | None = None):
        key = (threads, head_threads or threads)
        if key not in self._twins:
            with self._twin_lock:
                if key not in self._twins:
                    self._twins[key] = cpu_twin(self.placement, self.manifest, threads, self._spinning, key[1])
        return self._twins[key]

    def _run_bound(self, ids: np.ndarray, mask: np.ndarray, top: np.ndarray, wanted: list[str]):
        """Inputs copied to the device once; only the wanted (small) outputs are bound to host memory:
        the [batch, vocab] tensor is never bound, so it never leaves the device."""
        import onnxruntime as ort

        memory = self.placement.spec.memory
        index = self.placement.device_id if memory != "cpu" else 0
        binding = self.placement.session.io_binding()  # one per call: encode stays thread-safe
        binding.bind_ortvalue_input(INPUT_IDS, ort.OrtValue.ortvalue_from_numpy(ids, memory, index))
        binding.bind_ortvalue_input(ATTENTION_MASK, ort.OrtValue.ortvalue_from_numpy(mask, memory, index))
        binding.bind_cpu_input(TOP_K, top)  # a shape input: TopK reads k from host memory
        for name in wanted:
            binding.bind_output(name, "cpu")
        self.placement.session.run_with_iobinding(binding, self._run_options)
        return [value.numpy() for value in binding.get_outputs()]

def _csr_from_topk(values: np.ndarray, indices: np.ndarray, cut: float, dim: int, vocab) -> SparseEmbeddings:
    keep = values > cut
    cols = np.where(keep, indices, dim)  # dropped entries sort last
    order = np.argsort(cols, axis=1, kind="stable")
    cols = np.take_along_axis(cols, order, axis=1)
    vals = np.take_along_axis(values, order, axis=1)
    keep = cols < dim
    indptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))])
    return SparseEmbeddings(indptr, cols[keep], vals[keep], dim, vocab)


def tokenizer_is_serial() -> bool:
    """tokenizers' own reading of TOKENIZERS_PARALLELISM: threads on unless set to one of these."""
    value = os.environ.get("TOKENIZERS_PARALLELISM")
    return value is not None and value.strip().lower() in ("", "off", "false", "f", "no", "n", "0")


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
    return None if top_k is None else positive_int(top_k, "top_k")


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
