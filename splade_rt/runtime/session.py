"""Opening sessions: which graph runs where, provider checks, and the CPU fallback that says so.

onnxruntime silently drops to the CPU when the CUDA EP can't load its libraries (the session is
still created); users then see a slow "GPU" run (fastembed#247). The providers the session actually
got are checked, and either raise (device="cuda") or warn once with the reason (device="auto").

The devices are the rows of runtime.providers.PROVIDERS and the graphs the rows of
splade_rt.variants.VARIANTS; the code below reads both tables and has no branch per device or
per variant. A device runs the first graph of its row's precision order that the export has and
that can run here.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import DeviceError, ExportDirError
from ..manifest import GraphFile, Manifest
from ..variants import VARIANTS, Variant
from .providers import CPU, DEFAULT_MAX_BATCH, PROVIDERS, GpuSettings, ProviderSpec, Target, parse_device

logger = logging.getLogger("splade_rt")


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
    settings: GpuSettings = field(default_factory=GpuSettings)
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

    @property
    def variant(self) -> Variant:
        return VARIANTS[self.precision]


def native_unavailable() -> str | None:
    """Why the native head can't run here (no AVX-512 VNNI, no compiled extension), None where it can."""
    from ..kernels.native_head import unavailable

    return unavailable()


def why_not_here(variant: Variant) -> str | None:
    """Why a variant can't run on this machine, None where it can: only the native ones need more than
    onnxruntime."""
    return native_unavailable() if variant.native else None


def choose_graph(manifest: Manifest, spec: ProviderSpec, variant: str | None,
                 prefer: str | None = None) -> GraphFile:
    """The variant if named, else the first graph of the export in the row's precision order that can run
    here (`prefer` first: the CPU choice). One line saying what to do where the export lacks the variant
    (re-export with the option that writes it) or it can't run here (the variant with the same vectors)."""
    if variant is not None:
        row = VARIANTS.get(variant) if isinstance(variant, str) else None
        if row is None:
            raise ValueError(f"variant {variant!r}: expected one of {', '.join(VARIANTS)}")
        graph = manifest.graph(variant)
        if graph is None:
            have = ", ".join(g.precision for g in manifest.graphs)
            raise ExportDirError(f"variant {variant!r} not in this export (has: {have}); re-export with "
                                 f"{row.how_to_export(_reexport(manifest))}")
        if row.native and spec.kind != "cpu":
            raise DeviceError(f"variant {variant!r} runs on the CPU only (its head is a CPU kernel); on "
                              f"{spec.label}, variant={row.twin!r} gives the same vectors")
        why = why_not_here(row)
        if why:
            raise DeviceError(f"variant {variant!r} can't run here: {why}; variant={row.fallback!r} gives "
                              "the same vectors")
        return graph
    usable = {g.precision: g for g in manifest.graphs if why_not_here(g.variant) is None}
    for precision in dict.fromkeys(((prefer,) if prefer else ()) + spec.precisions):
        if precision in usable:
            return usable[precision]
    raise ExportDirError(f"{manifest.path}: no graph {spec.label} runs (it runs {', '.join(spec.precisions)}; the "
                         f"export has {', '.join(g.precision for g in manifest.graphs)}); re-export the model")


def _reexport(manifest: Manifest) -> str:
    """The command that re-exports this export's model in place, for a hint."""
    ref = str(manifest.source.get("model") or "MODEL")
    model = "" if ref.startswith("default:") else f"{ref} "
    return f"splade-export {model}-o {manifest.directory} --force"


def session_options(threads: int | None, spinning: bool):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = 1
    # Spinning workers fight tokenizer/numpy threads on small machines (docs/design/cpu-threads.md).
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
    if kind == "auto" and isinstance(variant, str) and variant in VARIANTS and VARIANTS[variant].native:
        tried = []  # a CPU kernel's variant, asked for by name: the CPU, with nothing to warn about
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
        # one line through the "splade_rt" logger (shown on stderr even where logging is not set up)
        logger.warning("splade-rt: running on CPU: %s", reason)
    prefer = None if variant else _cpu_choice(manifest, threads, spinning, verify)
    graph = choose_graph(manifest, PROVIDERS["cpu"], variant, prefer)
    path = manifest.verify_file(graph.name, verify)
    head = None
    if graph.variant.native:
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
