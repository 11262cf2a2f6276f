"""The provider table: every device kind splade-rt runs on is one row of PROVIDERS.

Each row names its onnxruntime execution provider, the graph precisions it prefers (best first: the
order in which the export's graphs are tried, so which graph runs where is decided here and not in
the manifest), whether it binds inputs on the device, the library whose absence stops it loading, and
a function that builds its provider options from the row and the user's settings (GpuSettings).
Everything else that knows about devices (session opening, parse_device, the CLIs' --device help,
Ray's GPU resources) reads this table, so a new device is one row plus its option builder.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..machine import cache_dir
from ..manifest import ATTENTION_MASK, INPUT_IDS, TOP_K, GraphFile
from ..validation import positive_int

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

DEFAULT_MAX_BATCH = 256  # rows of the TensorRT shape profile (the largest batch it is built for)
TRT_MAX_TOP_K = 3840  # TensorRT's TopK limit: the top_k range of the profile


@dataclass(frozen=True)
class GpuSettings:
    """The user's settings for the GPU rows (SpladeEncoder's keyword arguments of the same names)."""

    gpu_mem_limit: int | None = None  # bytes the CUDA arena (and TensorRT's workspace) may hold; None: no cap
    max_batch: int | None = None  # rows per graph run; TensorRT builds its profile for it (default 256)
    trt_cache_dir: str | Path | None = None  # root of the TensorRT engine cache (default ~/.cache/splade-rt/trt)
    arena_shrinkage: bool = False  # hand the arena's unused memory back to the device after each run
    provider_options: Mapping[str, Any] = field(default_factory=dict)  # merged over the row's options

    def __post_init__(self) -> None:
        if self.gpu_mem_limit is not None:
            object.__setattr__(self, "gpu_mem_limit", parse_bytes(self.gpu_mem_limit, "gpu_mem_limit"))
        if self.max_batch is not None:
            positive_int(self.max_batch, "max_batch")
        if not isinstance(self.provider_options, Mapping):
            raise TypeError(f"provider_options must be a dict, not {type(self.provider_options).__name__}")


_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1 << 10, "m": 1000**2, "mb": 1000**2, "mib": 1 << 20,
          "g": 1000**3, "gb": 1000**3, "gib": 1 << 30, "t": 1000**4, "tb": 1000**4, "tib": 1 << 40}


def parse_bytes(value: Any, name: str) -> int:
    """A byte count from an int or a string such as "8GiB", "8GB" or "512 MiB"."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return int(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", value) if isinstance(value, str) else None
    if match and match.group(2).lower() in _UNITS and float(match.group(1)) > 0:
        return int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    raise ValueError(f"{name} must be a positive number of bytes or a size such as '8GiB', not {value!r}")


@dataclass(frozen=True)
class Target:
    """What a row's provider options are built from: where, which graph, and the input shapes to expect."""

    device_id: int
    graph: GraphFile
    max_length: int  # longest sequence the encoder sends
    vocab_size: int
    settings: GpuSettings = GpuSettings()

    @property
    def max_batch(self) -> int:
        return self.settings.max_batch or DEFAULT_MAX_BATCH


def trt_cache_dir(target: Target) -> Path:
    """Engines for one graph and one profile: <root>/<graph sha256[:16]>/b<max batch>-s<max length>. Outside
    the export (which may be read-only and is shared by machines with different GPUs), keyed by the graph's
    hash so that a re-export never loads a stale engine, and by the profile so that none is rebuilt in place."""
    root = target.settings.trt_cache_dir
    if root is None:
        root = cache_dir() / "trt"
    return Path(root).expanduser() / target.graph.sha256[:16] / f"b{target.max_batch}-s{target.max_length}"


def _cpu_options(target: Target) -> dict[str, Any]:
    return {}


def _cuda_options(target: Target) -> dict[str, Any]:
    options: dict[str, Any] = {
        "device_id": target.device_id,
        # onnxruntime's own default, named so that it shows: over random shapes on a GPU, growing by
        # what each shape asks for (kSameAsRequested) left more memory held, fragmented (docs/design/gpu-memory.md)
        "arena_extend_strategy": "kNextPowerOfTwo",
        "use_tf32": 0,  # variant="fp32" stays fp32 (TF32 keeps 10 mantissa bits); the fp16 graph is unaffected
        # attention kernels allowed (onnxruntime's AttentionBackend bits; 2 = memory-efficient, the unfused
        # kernel stays as fallback): onnxruntime's own choice on an H100 (cuDNN flash attention) builds a
        # plan for every new (batch, length) shape, about 50 ms each, the same speed once seen
        # (docs/design/cuda-attention.md)
        "sdpa_kernel": 2,
    }
    if target.settings.gpu_mem_limit:
        options["gpu_mem_limit"] = int(target.settings.gpu_mem_limit)
    return options


def _profile(rows: int, seq: int, top_k: int) -> str:
    return f"{INPUT_IDS}:{rows}x{seq},{ATTENTION_MASK}:{rows}x{seq},{TOP_K}:{top_k}"


def _tensorrt_options(target: Target) -> dict[str, Any]:
    cache = str(trt_cache_dir(target))
    rows, seq, top = target.max_batch, target.max_length, min(target.vocab_size, TRT_MAX_TOP_K)
    options: dict[str, Any] = {
        "device_id": target.device_id,
        "trt_fp16_enable": True,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": cache,
        # one explicit profile covering every batch the encoder sends (it cuts batches to max_batch rows
        # and max_length tokens), so a new shape runs on the cached engine instead of rebuilding it.
        # Where TensorRT takes the TopK, top_k is a shape input: its profile is the range of k values
        # (TensorRT's TopK allows k <= 3840); elsewhere onnxruntime ignores the name
        "trt_profile_min_shapes": _profile(1, 1, 1),
        "trt_profile_opt_shapes": _profile(min(32, rows), seq, min(64, top)),
        "trt_profile_max_shapes": _profile(rows, seq, top),
    }
    if target.settings.gpu_mem_limit:
        options["trt_max_workspace_size"] = int(target.settings.gpu_mem_limit)
    return options


@dataclass(frozen=True)
class ProviderSpec:
    """One device kind: its onnxruntime provider and how splade-rt uses it."""

    kind: str
    provider: str
    label: str  # the provider's name in messages
    precisions: tuple[str, ...]  # preferred graph precisions, best first
    io_binding: bool  # keep inputs and the [batch, vocab] tensor on the device
    install: str  # what to install when the provider is absent
    library: str  # what is wrong when onnxruntime lists the provider but cannot load it
    build_options: Callable[[Target], dict[str, Any]]  # provider options from the target and user settings
    memory: str = "cpu"  # where bound inputs live (onnxruntime's OrtValue device name)
    arena: str = "cpu"  # its arena in onnxruntime's "memory.enable_memory_arena_shrinkage" run option
    behind: tuple[str, ...] = ()  # kinds whose providers take what this one can't run, in order
    auto: bool = False  # tried by device="auto"
    cache_dir: Callable[[Target], Path] | None = None  # a folder the provider writes, created before opening
    fixed_profile: bool = False  # built for batches up to (max_batch, max_length): larger ones run in parts
    # padded tokens per graph run by default (SpladeEncoder's max_batch_tokens): the GPU wants large
    # batches; on the CPU a batch's activations should stay in cache (benchmarks.cpu_fusions)
    batch_tokens: int = 8192

    @property
    def uses_gpu(self) -> bool:
        """Whether the row runs on a GPU (its bound inputs live in device memory): what a scheduler
        such as Ray must reserve a GPU for."""
        return self.memory != "cpu"

    def options(self, target: Target) -> dict[str, Any]:
        """The row's options with the user's provider_options merged over them."""
        return {**self.build_options(target), **target.settings.provider_options}

    def providers(self, target: Target) -> list[Any]:
        """The providers list for onnxruntime.InferenceSession: this row, the rows behind it, then the CPU."""
        rows = [self, *(PROVIDERS[kind] for kind in self.behind)]
        return [(row.provider, row.options(target)) for row in rows if row.provider != CPU] + [CPU]


PROVIDERS: dict[str, ProviderSpec] = {s.kind: s for s in (
    # CPU: the native head over the states graph where its kernel runs (AVX-512 VNNI), the exact
    # int8-screened graph (same results as fp32, faster), then plain fp32
    ProviderSpec("cpu", CPU, "CPU", ("fp32-native", "fp32-screened", "fp32"), io_binding=False, install="onnxruntime",
                 library="onnxruntime is broken", build_options=_cpu_options, batch_tokens=1024),
    ProviderSpec("cuda", CUDA, "CUDA", ("fp16", "fp32"), io_binding=True,
                 install="onnxruntime-gpu (pip install 'splade-rt[gpu]')",
                 library="its CUDA or cuDNN libraries (libcudart, libcublas, libcudnn) are missing or incompatible",
                 build_options=_cuda_options, memory="cuda", arena="gpu", auto=True),
    # TensorRT runs the fp16 graph with fp16 kernels; what it can't take runs on the CUDA EP behind it.
    # Never chosen by "auto": building an engine takes minutes the first time.
    ProviderSpec("tensorrt", TENSORRT, "TensorRT", ("fp16",), io_binding=True,
                 install="onnxruntime-gpu and TensorRT 10 (libnvinfer)",
                 library="TensorRT's library libnvinfer is missing or incompatible (TensorRT 10 needs libnvinfer.so.10 "
                         "on the loader path)",
                 build_options=_tensorrt_options, memory="cuda", arena="gpu", behind=("cuda",),
                 cache_dir=trt_cache_dir, fixed_profile=True),
)}


_OUT_OF_MEMORY = re.compile(r"out of memory|failed to allocate memory|available memory of \d+ is smaller|"
                            r"ALLOC_FAILED|cudaErrorMemoryAllocation", re.IGNORECASE)


def is_out_of_memory(error: BaseException) -> bool:
    """onnxruntime's ways of saying a run ran out of (device) memory: the arena's "Failed to allocate
    memory", its gpu_mem_limit check, CUDA's "out of memory", cuBLAS/cuDNN ALLOC_FAILED."""
    return bool(_OUT_OF_MEMORY.search(str(error)))


def parse_device(device: str) -> tuple[str, int]:
    expected = ", ".join(["'auto'", "'cpu'"] + [f"'{k}' or '{k}:N'" for k in PROVIDERS if k != "cpu"])
    if not isinstance(device, str):
        raise TypeError(f"device must be {expected}, not {type(device).__name__}")
    kind, _, index = device.partition(":")
    if kind not in ("auto", *PROVIDERS) or (index and (kind in ("auto", "cpu") or not index.isdigit())):
        raise ValueError(f"device {device!r}: expected {expected}")
    return kind, int(index or 0)


def device_help(default: str = "auto") -> str:
    """The --device help of every command, from the table: the kinds, what "auto" tries, and the
    command's default."""
    auto = " then ".join(s.label for s in PROVIDERS.values() if s.auto)
    kinds = ", ".join(k if k == "cpu" else f"{k}[:N]" for k in PROVIDERS)
    return f"where to run: auto ({auto} where it loads, else the CPU with a warning), {kinds} (default: {default})"
