"""Which graph runs where: device choice, provider checks, and the CPU fallback that says so.

onnxruntime silently drops to the CPU when the CUDA EP can't load its libraries (the session is
still created); users then see a slow "GPU" run (fastembed#247). We check the providers the session
actually got, and either raise (device="cuda") or warn once with the reason (device="auto").

Devices are rows of one table (PROVIDERS); which graph a device runs is the manifest's word: the
graphs whose recorded providers include the device's, in the device's precision order.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any

from ..errors import DeviceError, ExportDirError
from ..manifest import GraphFile, Manifest

logger = logging.getLogger("splade_rt")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


@dataclass(frozen=True)
class ProviderSpec:
    """One device kind: its onnxruntime provider and how splade-rt uses it."""

    kind: str
    provider: str
    precisions: tuple[str, ...]  # preferred graph precisions, best first
    io_binding: bool  # keep inputs and the [batch, vocab] tensor on the device
    install: str  # what to install when the provider is absent

    def options(self, device_id: int) -> dict[str, Any]:
        return {"device_id": device_id} if self.kind != "cpu" else {}


PROVIDERS: dict[str, ProviderSpec] = {s.kind: s for s in (
    # CPU: the exact int8-screened graph (same results as fp32, faster), then plain fp32
    ProviderSpec("cpu", CPU, ("fp32-screened", "fp32"), io_binding=False, install="onnxruntime"),
    ProviderSpec("cuda", CUDA, ("fp16", "fp32"), io_binding=True,
                 install="onnxruntime-gpu (pip install 'splade-rt[gpu]')"),
)}


@dataclass
class Placement:
    session: Any  # onnxruntime.InferenceSession
    device: str  # a PROVIDERS kind
    device_id: int
    file: str
    precision: str
    fallback_reason: str | None = None

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


def choose_graph(manifest: Manifest, spec: ProviderSpec, variant: str | None) -> GraphFile:
    """The variant if named, else the best of the graphs the manifest records for this provider."""
    if variant is not None:
        graph = manifest.graph(variant)
        if graph is None:
            have = ", ".join(g.precision for g in manifest.graphs)
            raise ExportDirError(f"variant {variant!r} not in this export (has: {have})")
        return graph
    usable = {g.precision: g for g in manifest.graphs_for(spec.provider)}
    for precision in spec.precisions:
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


def cpu_twin(placement: Placement, manifest: Manifest, threads: int, spinning: bool):
    """A CPU session over the same graph with fewer threads: for inputs too small to split across
    threads (waking a second worker for each of ~100 tiny ops costs more than it saves), and for
    batches run side by side."""
    import onnxruntime as ort

    return ort.InferenceSession(str(manifest.directory / placement.file), session_options(threads, spinning),
                                providers=[CPU])


def open_session(manifest: Manifest, device: str, *, variant: str | None = None, threads: int | None = None,
                 spinning: bool = False, verify: bool = True) -> Placement:
    import onnxruntime as ort

    kind, device_id = parse_device(device)
    reason = None
    for spec in ([PROVIDERS["cuda"]] if kind == "auto" else [PROVIDERS[kind]] if kind != "cpu" else []):
        available = ort.get_available_providers()
        if spec.provider not in available:
            reason = (f"the installed onnxruntime has no {spec.provider} (it has: {', '.join(available)}); "
                      f"install {spec.install}")
            continue
        graph = choose_graph(manifest, spec, variant)
        path = manifest.verify_file(graph.name, verify)
        _preload_cuda(ort)
        try:
            session = ort.InferenceSession(str(path), session_options(threads, spinning),
                                           providers=[(spec.provider, spec.options(device_id)), CPU])
        except Exception as e:  # noqa: BLE001 - e.g. no device, driver too old, bad device_id
            reason = f"the {spec.provider} session failed to start ({str(e).splitlines()[0][:200]})"
            continue
        if spec.provider in session.get_providers():
            logger.info("splade-rt: %s on %s (device %d, %s)", graph.name, spec.provider, device_id, graph.precision)
            return Placement(session, spec.kind, device_id, graph.name, graph.precision)
        reason = (f"onnxruntime could not load the {spec.provider} (its CUDA or cuDNN libraries are missing or "
                  "incompatible; onnxruntime's own log says which)")
    if kind not in ("auto", "cpu"):
        raise DeviceError(f"device={device!r} but {reason}")
    if reason is not None:
        warnings.warn(f"splade-rt: running on CPU: {reason}", RuntimeWarning, stacklevel=3)
    graph = choose_graph(manifest, PROVIDERS["cpu"], variant)
    path = manifest.verify_file(graph.name, verify)
    try:
        session = ort.InferenceSession(str(path), session_options(threads, spinning), providers=[CPU])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises several types for a bad file
        raise ExportDirError(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0][:200]})") from None
    logger.info("splade-rt: %s on %s (%s)", graph.name, CPU, graph.precision)
    return Placement(session, "cpu", 0, graph.name, graph.precision, fallback_reason=reason)


def _preload_cuda(ort) -> None:
    """Let onnxruntime find CUDA/cuDNN from the nvidia-* wheels (or torch's) when not on the loader path."""
    if hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()
        except Exception:  # noqa: BLE001 - best effort; the provider check reports the outcome
            pass
