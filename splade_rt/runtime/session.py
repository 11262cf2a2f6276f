"""Which graph runs where: device choice, provider checks, and the CPU fallback that says so.

onnxruntime silently drops to the CPU when the CUDA EP can't load its libraries (the session is
still created); users then see a slow "GPU" run (fastembed#247). We check the providers the session
actually got, and either raise (device="cuda") or warn once with the reason (device="auto").

Devices are rows of one table (PROVIDERS): each row names its provider, the graph precisions it
prefers, whether it binds inputs on the device, the library whose absence stops it loading, and a
function that builds its provider options from the row and the user's settings (GpuSettings). The
code below reads the table and has no branch per device. Which graph a device runs is the
manifest's word: the graphs whose recorded providers include the device's, in the row's order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DeviceError, ExportDirError
from ..manifest import ATTENTION_MASK, INPUT_IDS, NATIVE_TWINS, TOP_K, GraphFile, Manifest
from ..validation import positive_int

logger = logging.getLogger("splade_rt")

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
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "splade-rt" / "trt"
    return Path(root).expanduser() / target.graph.sha256[:16] / f"b{target.max_batch}-s{target.max_length}"


def _cpu_options(target: Target) -> dict[str, Any]:
    return {}


def _cuda_options(target: Target) -> dict[str, Any]:
    options: dict[str, Any] = {
        "device_id": target.device_id,
        # onnxruntime's own default, named so that it shows: over random shapes on a GPU, growing by
        # what each shape asks for (kSameAsRequested) left more memory held, fragmented (README)
        "arena_extend_strategy": "kNextPowerOfTwo",
        "use_tf32": 0,  # variant="fp32" stays fp32 (TF32 keeps 10 mantissa bits); the fp16 graph is unaffected
        # attention kernels allowed (onnxruntime's AttentionBackend bits; 2 = memory-efficient, the unfused
        # kernel stays as fallback): onnxruntime's own choice on an H100 (cuDNN flash attention) builds a
        # plan for every new (batch, length) shape, about 50 ms each, the same speed once seen (README)
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


def run_options(placement: Placement):
    """onnxruntime RunOptions for every run of this placement, or None when the defaults do."""
    if not placement.settings.arena_shrinkage:
        return None
    import onnxruntime as ort

    options = ort.RunOptions()
    index = placement.device_id if placement.spec.arena != "cpu" else 0
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", f"{placement.spec.arena}:{index}")
    return options


@dataclass
class Placement:
    session: Any  # onnxruntime.InferenceSession, or a NativeSession over one (the native variants)
    device: str  # a PROVIDERS kind
    device_id: int
    file: str
    precision: str
    fallback_reason: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # the provider options the session was given
    settings: GpuSettings = GpuSettings()
    head: Any = None  # a native variant's NativeHead, shared by its twins

    @property
    def max_rows(self) -> int | None:
        """Rows per run: TensorRT's profile bounds them; elsewhere only the user's max_batch does."""
        if self.settings.max_batch:
            return self.settings.max_batch
        return DEFAULT_MAX_BATCH if self.spec.fixed_profile else None

    @property
    def spec(self) -> ProviderSpec:
        return PROVIDERS[self.device]


def parse_device(device: str) -> tuple[str, int]:
    expected = ", ".join(["'auto'", "'cpu'"] + [f"'{k}' or '{k}:N'" for k in PROVIDERS if k != "cpu"])
    if not isinstance(device, str):
        raise TypeError(f"device must be {expected}, not {type(device).__name__}")
    kind, _, index = device.partition(":")
    if kind not in ("auto", *PROVIDERS) or (index and (kind in ("auto", "cpu") or not index.isdigit())):
        raise ValueError(f"device {device!r}: expected {expected}")
    return kind, int(index or 0)


def _native_unavailable() -> str | None:
    from ..kernels.native_head import unavailable

    return unavailable()


# precisions that need more than onnxruntime, and why they can't run here (None: they can)
_RUNS_HERE: dict[str, Callable[[], str | None]] = {precision: _native_unavailable for precision in NATIVE_TWINS}
# what to run instead of a native variant that can't run here: the same vectors through onnxruntime
_SAME_VECTORS = {"fp32-native": "fp32-screened", "int8-native": "int8"}


def choose_graph(manifest: Manifest, spec: ProviderSpec, variant: str | None,
                 prefer: str | None = None) -> GraphFile:
    """The variant if named, else the best of the graphs the manifest records for this provider that
    can run here: `prefer` first (the CPU choice), then the row's precision order."""
    if variant is not None:
        graph = manifest.graph(variant)
        if graph is None:
            have = ", ".join(g.precision for g in manifest.graphs)
            raise ExportDirError(f"variant {variant!r} not in this export (has: {have})")
        why = _RUNS_HERE[variant]() if variant in _RUNS_HERE else None
        if why:
            raise DeviceError(f"variant {variant!r} can't run here: {why}; variant={_SAME_VECTORS[variant]!r} gives "
                              "the same vectors")
        return graph
    usable = {g.precision: g for g in manifest.graphs_for(spec.provider)
              if g.precision not in _RUNS_HERE or _RUNS_HERE[g.precision]() is None}
    for precision in dict.fromkeys(((prefer,) if prefer else ()) + spec.precisions):
        if precision in usable:
            return usable[precision]
    raise ExportDirError(f"{manifest.path}: no graph recorded for {spec.provider} "
                         f"(graphs: {', '.join(f'{g.name} {list(g.providers)}' for g in manifest.graphs)})")


def session_options(threads: int | None, spinning: bool):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = 1
    # Spinning workers fight tokenizer/numpy threads on small machines (README, "Encode").
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return opts


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


def cpu_twin(placement: Placement, manifest: Manifest, threads: int, spinning: bool, head_threads: int = 1):
    """A CPU session over the same graph with fewer threads: for inputs too small to split across
    threads (waking a second worker for each of ~100 tiny ops costs more than it saves), and for
    batches run side by side. head_threads: the native head's (it splits even a query's vocab well)."""
    return _cpu_session(manifest, placement.file, threads, spinning, placement.head, head_threads)


def _cpu_session(manifest: Manifest, file: str, threads: int | None, spinning: bool, head=None,
                 head_threads: int | None = None):
    """An onnxruntime CPU session over the file; wrapped with the native head for a native variant."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(manifest.directory / file), session_options(threads, spinning), providers=[CPU])
    if head is None:
        return session
    from .native_session import NativeSession

    return NativeSession(session, head, head_threads or session.get_session_options().intra_op_num_threads)


def open_session(manifest: Manifest, device: str, *, variant: str | None = None, threads: int | None = None,
                 spinning: bool = False, verify: bool = True, max_length: int | None = None,
                 settings: GpuSettings | None = None) -> Placement:
    """A session on the device asked for. An explicit device that can't run raises DeviceError in one line
    naming what is missing; "auto" tries the rows marked auto (CUDA), then warns once and runs on the CPU."""
    import onnxruntime as ort

    kind, device_id = parse_device(device)
    settings = settings or GpuSettings()
    max_length = max_length or manifest.tokenizer.max_length
    reason = None
    tried = [s for s in PROVIDERS.values() if s.auto] if kind == "auto" else [] if kind == "cpu" else [PROVIDERS[kind]]
    for spec in tried:
        available = ort.get_available_providers()
        if spec.provider not in available:
            reason = (f"the installed onnxruntime has no {spec.label} execution provider (it has: "
                      f"{', '.join(available)}); {_both_builds() or 'install ' + spec.install}")
            continue
        graph = choose_graph(manifest, spec, variant)
        path = manifest.verify_file(graph.name, verify)
        target = Target(device_id, graph, max_length, manifest.model.vocab_size, settings)
        if spec.cache_dir is not None:
            folder = spec.cache_dir(target)
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise DeviceError(f"{spec.label} cache folder {folder}: cannot create it ({e.strerror}); "
                                  "set trt_cache_dir to a writable folder") from None
        _preload_cuda(ort)
        providers = spec.providers(target)
        try:
            session = ort.InferenceSession(str(path), session_options(threads, spinning), providers=providers)
        except Exception as e:  # noqa: BLE001 - e.g. no device, driver too old, bad device_id
            reason = f"the {spec.label} session failed to start ({first_line(e)})"
            continue
        if spec.provider in session.get_providers():
            logger.info("splade-rt: %s on %s (device %d, %s)", graph.name, spec.provider, device_id, graph.precision)
            return Placement(session, spec.kind, device_id, graph.name, graph.precision,
                             options=dict(providers[0][1]), settings=settings)
        reason = (f"onnxruntime could not load the {spec.label} execution provider: {spec.library} "
                  "(onnxruntime's own log says which)")
    if kind not in ("auto", "cpu"):
        raise DeviceError(f"device={device!r} but {reason}")
    if reason is not None:
        warnings.warn(f"splade-rt: running on CPU: {reason}", RuntimeWarning, stacklevel=3)
    prefer = None if variant else _cpu_choice(manifest, threads, spinning, verify)
    graph = choose_graph(manifest, PROVIDERS["cpu"], variant, prefer)
    path = manifest.verify_file(graph.name, verify)
    head = None
    if graph.precision in NATIVE_TWINS:
        from ..kernels.native_head import NativeHead

        assert manifest.native_head is not None  # parse_manifest requires it beside a native graph
        model = manifest.model
        head = NativeHead.load(manifest.verify_file(manifest.native_head, verify), model.activation,
                               model.vocab_size, model.hidden_size)
    try:
        session = _cpu_session(manifest, graph.name, threads, spinning, head)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises several types for a bad file
        raise ExportDirError(f"{path}: onnxruntime cannot load it ({first_line(e)})") from None
    logger.info("splade-rt: %s on %s (%s)", graph.name, CPU, graph.precision)
    return Placement(session, "cpu", 0, graph.name, graph.precision, fallback_reason=reason, settings=settings,
                     head=head)


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def _both_builds() -> str | None:
    """Where onnxruntime and onnxruntime-gpu are both installed (pip install 'splade-rt[gpu]' brings
    both), what to do: they share one package folder, and a GPU provider missing means the CPU
    build's files won there, so installing the GPU build again changes nothing."""
    from importlib import metadata

    try:
        cpu, gpu = metadata.version("onnxruntime"), metadata.version("onnxruntime-gpu")
    except metadata.PackageNotFoundError:
        return None
    return (f"onnxruntime {cpu} and onnxruntime-gpu {gpu} are both installed, in one package folder where the "
            "CPU build's files won: pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu")


def _preload_cuda(ort) -> None:
    """Let onnxruntime find CUDA/cuDNN from the nvidia-* wheels (or torch's) when not on the loader path."""
    if hasattr(ort, "preload_dlls"):
        with contextlib.suppress(Exception):  # best effort; the provider check reports the outcome
            ort.preload_dlls()


def _cpu_choice(manifest: Manifest, threads: int | None, spinning: bool, verify: bool) -> str | None:
    """The faster exact CPU graph for this CPU (runtime.cpu_choice), None to keep the table's order."""
    import onnxruntime as ort

    from .cpu_choice import choose_cpu_precision

    def session(precision: str):
        path = manifest.verify_file(manifest.graph(precision).name, verify)
        return ort.InferenceSession(str(path), session_options(threads, spinning), providers=[CPU])

    return choose_cpu_precision(manifest, session)
