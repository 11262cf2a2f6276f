"""SpladeEncoder: texts in, sparse vectors out, over an exported directory.

The hot path is a pipeline (runtime.pipeline): texts ordered by length and tokenized a window at
a time (batching.text_windows) on a thread of their own, each window cut into batches by count and
token budget and padded, the fused graph run on each batch (on the CPU, two batches at a time:
runtime.scheduling), and each batch's rows assembled from the graph's top-k or non-zero arrays
(runtime.outputs) while the next batch runs; the rows are put in input order at the end. A batch
too large for the device runs in halves (runtime.out_of_memory). Per-call state lives in the call
(_Call), so one encoder serves many threads (onnxruntime sessions are thread-safe for run()).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DeviceError
from ..manifest import (
    ATTENTION_MASK,
    INPUT_IDS,
    OUT_DENSE,
    OUT_NZ_INDEX,
    OUT_NZ_VALUE,
    OUT_TOP_INDICES,
    OUT_TOP_VALUES,
    TOP_K,
    Manifest,
    read_manifest,
)
from ..progress import progress_bar
from ..validation import positive_int
from .batching import gather_rows, pad_flat, text_windows, window_batches
from .embeddings import SparseAndDense, SparseEmbeddings, SparseVector, dot_scores
from .out_of_memory import MemorySplit, OneTextOutOfMemory
from .outputs import rows_from_nonzeros, rows_from_topk
from .pipeline import StageClock, run_pipelined, timed
from .providers import GpuSettings
from .query_table import QueryTable
from .scheduling import CpuSchedule
from .session import Placement, first_line, open_session, run_options
from .texts import check_texts
from .tokens import TextTokenizer, Tokens, tokenizer_is_serial
from .vocab import Vocab

logger = logging.getLogger("splade_rt")

__all__ = ["SpladeEncoder", "tokenizer_is_serial"]


class SpladeEncoder:
    """Encode queries and documents into SPLADE sparse vectors with onnxruntime.

    device: "auto" (CUDA if its execution provider loads, else CPU with a warning saying why),
    "cuda"/"cuda:N" (an error if CUDA can't run), or "cpu". threads: intra-op threads for the CPU
    (default: the cores this process may use). workers: CPU batches in flight at once, each on
    threads // workers threads (default 2 for a small encoder, hidden size <= 256: while one batch
    is in its serial steps the other keeps the cores busy, peak memory that of two batches; 1 for a
    larger encoder, where two batches compete for cache; see runtime.scheduling). max_length:
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
      provider (providers.PROVIDERS lists them). On CUDA, {"sdpa_kernel": 0} gives onnxruntime back its
      own attention kernel choice, which on an H100 plans every new shape (fine for fixed shapes).

    A batch that runs out of memory is split in half and retried (one RuntimeWarning per encoder);
    batches as large are then split before they run. One text that doesn't fit raises DeviceError.

    clock: a pipeline.StageClock to add each stage's seconds to (benchmarks: bench.host_ceiling);
    None (the default) times nothing.
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
        self._tokens = TextTokenizer(self.manifest.verify_file(tok.file, verify), self.max_length, self.lowercase)
        self.vocab = Vocab(self._tokens.tokenizer, self.dim)
        # the route's head (splade_rt.heads): inference-free models' queries are a table lookup, no graph
        self.head = self.manifest.model.head("document")
        self.query_table = (QueryTable(self.manifest, verify, self.vocab)
                            if not self.manifest.model.head("query").graph else None)
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
        self._memory = MemorySplit(self.placement.device, self.placement.max_rows)
        self._schedule = CpuSchedule(self.placement, self.manifest, workers, spinning, self._io_binding)
        self.workers = self._schedule.workers
        self.clock: StageClock | None = None
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
               max_active_dims: int | None = None, dense: bool = False) -> SparseEmbeddings | SparseAndDense:
        """Sparse vectors in input order. top_k (alias max_active_dims) keeps each row's k largest
        weights, computed on the device; threshold drops weights <= threshold. dense: also return the
        dense vector of a head that gives one (bge-m3), from the same graph runs (SparseAndDense).

        A text with nothing to encode (empty, whitespace only, or only characters the tokenizer
        drops, such as control characters) gets a vector with no terms, and no graph runs for it.
        sentence-transformers returns the vector of the special tokens alone there ([CLS] [SEP]:
        a handful of terms that match any document's); the corpus command follows this rule too.

        An error in a batch's run names its texts by index ("text 17: ...", or "texts 3, 8, 17
        and 5 more (one batch): ..." for a batch of several), as the same kind of exception."""
        texts = check_texts(texts)
        top_k = _check_top_k(top_k if top_k is not None else max_active_dims)
        positive_int(batch_size, "batch_size")
        if dense and not self.head.dense:
            raise ValueError(f"dense=True: this export's head ({self.head.name}) gives no dense vector; a bge-m3 "
                             "export (head token-max) does")
        if not texts:
            empty = SparseEmbeddings.empty(self.dim, self.vocab)
            return SparseAndDense(empty, np.zeros((0, self.manifest.model.hidden_size), np.float32)) if dense \
                else empty
        if not self._serial_tokenizer_reported and len(texts) > 1 and tokenizer_is_serial():
            self._serial_tokenizer_reported = True
            logger.warning("splade-rt: TOKENIZERS_PARALLELISM=%s: texts are tokenized on one thread, and on %s the "
                           "tokenizer sets the pace (docs/gpu.md); set it to true (tokenizers sets it to false "
                           "itself in a process that forked after using its threads)",
                           os.environ["TOKENIZERS_PARALLELISM"], self.device)
        k = min(int(top_k), self.dim) if top_k is not None else None
        call = _Call(self, texts, k, 0.0 if threshold is None else float(threshold), batch_size, dense)
        bar = progress_bar(len(texts), show_progress_bar, "Encoding", "text")
        try:
            result = call.encode(bar)
        finally:
            if bar is not None:
                bar.close()
        truncated = (result.sparse if dense else result).truncated
        if truncated:
            # visible once per encoder (a 100,000-character text should not be cut unnoticed), then
            # at INFO so a production log is not flooded; the count is on every result
            level = logging.INFO if self._truncation_reported else logging.WARNING
            self._truncation_reported = True
            logger.log(level, "splade-rt: %d of %d texts truncated to %d tokens: the rest of each is not encoded "
                       "(said once; later truncations are logged at INFO)", truncated, len(texts), self.max_length)
        return result

    def encode_query(self, texts: str | Sequence[str], *, top_k: int | None = None, threshold: float | None = None,
                     max_active_dims: int | None = None, **kwargs: Any) -> SparseEmbeddings:
        """Queries: through the graph, or for an inference-free model through its token weight table
        (no graph runs; the other keyword arguments of encode are accepted and not needed). A query
        with no tokens gets a vector with no terms either way (see encode)."""
        if self.query_table is None:
            return self.encode(texts, top_k=top_k, threshold=threshold, max_active_dims=max_active_dims, **kwargs)
        if kwargs.get("dense"):
            raise ValueError("dense=True: this export's queries are a token weight table lookup (no graph, no dense "
                             "vector)")
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
        """Token ids exactly as the encoder feeds them to the graph (after truncation); a text with
        only the special tokens is not fed at all (see encode)."""
        return self._tokens.ids(check_texts(texts))

    # -- internals --------------------------------------------------------------------------------

    def _run(self, ids: np.ndarray, mask: np.ndarray, top: np.ndarray, wanted: list[str],
                 side_by_side: bool) -> list[np.ndarray]:
        """The wanted outputs for these rows; in halves where the batch is over the row limit or runs
        out of memory (runtime.out_of_memory)."""
        return self._memory.run(ids, mask, wanted, lambda i, m: self._run_once(i, m, top, wanted, side_by_side))

    def _run_once(self, ids: np.ndarray, mask: np.ndarray, top: np.ndarray, wanted: list[str],
                  side_by_side: bool) -> list[np.ndarray]:
        if ids.shape[1] % self._pad_multiple:
            width = -(-ids.shape[1] // self._pad_multiple) * self._pad_multiple
            ids = np.pad(ids, ((0, 0), (0, width - ids.shape[1])), constant_values=self.pad_id)
            mask = np.pad(mask, ((0, 0), (0, width - mask.shape[1])))
        if self._io_binding:
            return self._run_bound(ids, mask, top, wanted)
        session = self._schedule.session(ids.size, side_by_side)
        with timed(self.clock, "device"):
            return session.run(wanted, {INPUT_IDS: ids, ATTENTION_MASK: mask, TOP_K: top}, self._run_options)

    def _run_bound(self, ids: np.ndarray, mask: np.ndarray, top: np.ndarray, wanted: list[str]) -> list[np.ndarray]:
        """Inputs copied to the device once; only the wanted (small) outputs are bound to host memory:
        the [batch, vocab] tensor is never bound, so it never leaves the device."""
        import onnxruntime as ort

        session = self.placement.session
        with timed(self.clock, "bind"):
            memory = self.placement.spec.memory
            index = self.placement.device_id if memory != "cpu" else 0
            binding = session.io_binding()  # one per call: encode stays thread-safe
            binding.bind_ortvalue_input(INPUT_IDS, ort.OrtValue.ortvalue_from_numpy(ids, memory, index))
            binding.bind_ortvalue_input(ATTENTION_MASK, ort.OrtValue.ortvalue_from_numpy(mask, memory, index))
            binding.bind_cpu_input(TOP_K, top)  # a shape input: TopK reads k from host memory
            for name in wanted:
                binding.bind_output(name, "cpu")
        with timed(self.clock, "device"):
            session.run_with_iobinding(binding, self._run_options)
        with timed(self.clock, "bind"):
            return [value.numpy() for value in binding.get_outputs()]


@dataclass(frozen=True)
class _Batch:
    rows: np.ndarray  # the texts' indices in the call, in batch order
    ids: np.ndarray
    mask: np.ndarray


class _Call:
    """One encode call: its texts and options, and the rows its batches have given so far.

    Tokenizing runs on the pipeline's tokenizer thread and graph runs on its run threads; cutting,
    padding and assembling stay on the calling thread, so the state below needs no lock."""

    def __init__(self, encoder: SpladeEncoder, texts: list[str], k: int | None, cut: float, batch_size: int,
                 dense: bool = False) -> None:
        self.enc, self.texts, self.k, self.cut, self.batch_size = encoder, texts, k, cut, batch_size
        self.wanted = [OUT_TOP_VALUES, OUT_TOP_INDICES] if k else [OUT_NZ_INDEX, OUT_NZ_VALUE]
        self.dense: np.ndarray | None = None
        if dense:  # zeros for the texts no graph runs for
            self.wanted.append(OUT_DENSE)
            self.dense = np.zeros((len(texts), encoder.manifest.model.hidden_size), np.float32)
        self.top = np.array([k or 1], dtype=np.int64)
        self.side_by_side = False
        self.truncated = 0
        self.rows: list[np.ndarray] = []
        self.counts: list[np.ndarray] = []
        self.cols: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []
        self.bar: Any = None

    def encode(self, bar: Any) -> SparseEmbeddings | SparseAndDense:
        enc, self.bar = self.enc, bar
        windows = text_windows(np.fromiter(map(len, self.texts), dtype=np.int64, count=len(self.texts)),
                               self.batch_size)
        first = self.tokenize(windows[0])
        if len(windows) == 1 and len(first[1]) <= 1:  # one batch (a query): nothing to overlap
            for batch in self.batches(first):
                self.finish(batch, self.run(batch))
        else:
            self.side_by_side = enc.workers > 1
            run_pipelined(first, windows[1:], self.tokenize, self.batches, self.run, self.finish, enc.workers)
        with timed(enc.clock, "assemble"):
            result = gather_rows(len(self.texts), self.rows, self.counts, self.cols, self.vals, enc.dim, enc.vocab,
                                 self.truncated)
        if bar is not None:
            bar.update(len(self.texts) - bar.n)  # the texts with nothing to encode
        return result if self.dense is None else SparseAndDense(result, self.dense)

    def tokenize(self, window: np.ndarray) -> tuple[Tokens, list[np.ndarray]]:
        """A window's tokens and its batches (positions in the window), on the tokenizer thread."""
        enc = self.enc
        tokens = enc._tokens.tokens(self.texts, window, enc.clock)
        with timed(enc.clock, "pack"):
            parts = window_batches(tokens.lengths, enc._tokens.special, self.batch_size, enc.max_batch_tokens)
        return tokens, parts

    def batches(self, tokenized: tuple[Tokens, list[np.ndarray]]) -> Iterator[_Batch]:
        """The window's batches, each padded when it is next to run (the calling thread)."""
        tokens, parts = tokenized
        self.truncated += tokens.truncated
        for part in parts:
            with timed(self.enc.clock, "pack"):
                ids, mask = pad_flat(tokens.ids, tokens.starts[part], tokens.lengths[part], self.enc.pad_id)
            yield _Batch(tokens.rows[part], ids, mask)

    def run(self, batch: _Batch) -> list[np.ndarray]:
        """The batch's graph outputs (a run thread); an error names the batch's texts."""
        try:
            return self.enc._run(batch.ids, batch.mask, self.top, self.wanted, self.side_by_side)
        except OneTextOutOfMemory as e:
            raise DeviceError(f"text {int(batch.rows[e.row])}: {e}") from None
        except Exception as e:  # noqa: BLE001 - re-raised as its own kind, naming the texts
            raise _naming(e, batch.rows) from None

    def finish(self, batch: _Batch, outputs: list[np.ndarray]) -> None:
        """The batch's rows from its outputs (the calling thread, while later batches run)."""
        with timed(self.enc.clock, "assemble"):
            if self.k:
                counts, cols, vals = rows_from_topk(outputs[0], outputs[1], self.cut)
            else:
                counts, cols, vals = rows_from_nonzeros(outputs[0], outputs[1], self.cut, len(batch.rows))
            if self.dense is not None:
                self.dense[batch.rows] = outputs[2]
            self.rows.append(batch.rows)
            self.counts.append(counts)
            self.cols.append(cols)
            self.vals.append(vals)
        if self.bar is not None:
            self.bar.update(len(batch.rows))


def _naming(error: Exception, rows: np.ndarray) -> Exception:
    """The error as the same kind of exception, its one line led by the batch's texts."""
    picked = np.sort(rows)
    if len(picked) == 1:
        where = f"text {int(picked[0])}"
    else:
        more = f" and {len(picked) - 3} more" if len(picked) > 3 else ""
        where = f"texts {', '.join(map(str, picked[:3].tolist()))}{more} (one batch)"
    message = f"{where}: {first_line(error)}"
    try:
        return type(error)(message)
    except Exception:  # noqa: BLE001 - an exception type that wants other arguments
        return RuntimeError(message)


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
