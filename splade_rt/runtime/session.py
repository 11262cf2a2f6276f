"""Which graph runs where: device choice, provider checks, and the CPU fallback that says so.

onnxruntime silently drops to the CPU when the CUDA EP can't load its libraries (the session is
still created); users then see a slow "GPU" run (fastembed#247). We check the providers the session
actually got, and either raise (device="cuda") or warn once with the reason (device="auto").
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DeviceError, ExportDirError
from ..manifest import verify_file

logger = logging.getLogger("splade_rt")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


@dataclass
class Placement:
    session: Any  # onnxruntime.InferenceSession
    device: str  # "cuda" | "cpu"
    device_id: int
    file: str
    precision: str
    fallback_reason: str | None = None


def parse_device(device: str) -> tuple[str, int]:
    if not isinstance(device, str):
        raise TypeError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', not {type(device).__name__}")
    kind, _, index = device.partition(":")
    if kind not in ("auto", "cpu", "cuda") or (index and (kind != "cuda" or not index.isdigit())):
        raise ValueError(f"device {device!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return kind, int(index or 0)


def choose_file(manifest: dict, want: str, variant: str | None) -> tuple[str, str]:
    """(file name, precision): the variant if named, else fp16 for CUDA and, for the CPU, the exact
    int8-screened graph (same results as fp32, 2.2x its passages/s in the benchmark) before the
    plain fp32 one."""
    files = {info["precision"]: name for name, info in manifest["files"].items() if "precision" in info}
    if variant is not None:
        if variant not in files:
            raise ExportDirError(f"variant {variant!r} not in this export (has: {', '.join(sorted(files))})")
        return files[variant], variant
    order = ("fp16", "fp32", "fp32-screened") if want == "cuda" else ("fp32-screened", "fp32", "fp16")
    for precision in order:
        if precision in files:
            return files[precision], precision
    raise ExportDirError("the manifest lists no ONNX graph")


def session_options(threads: int | None, spinning: bool):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = 1
    # Spinning workers fight tokenizer/numpy threads on small machines: p99 51 ms -> 6 ms measured on 2 cores.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return opts


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


def cpu_twin(placement: Placement, directory: Path, threads: int, spinning: bool):
    """A CPU session over the same graph with fewer threads: for inputs too small to split across
    threads (waking a second worker for each of ~100 tiny ops costs more than it saves: query p50
    1.9 ms with 2 threads vs 1.5 ms with 1, measured on 2 cores), and for batches run side by side."""
    import onnxruntime as ort

    return ort.InferenceSession(str(directory / placement.file), session_options(threads, spinning),
                                providers=[CPU])


def open_session(directory: Path, manifest: dict, device: str, *, variant: str | None = None,
                 threads: int | None = None, spinning: bool = False, verify: bool = True) -> Placement:
    import onnxruntime as ort

    kind, device_id = parse_device(device)
    reason = None
    if kind in ("auto", "cuda"):
        available = ort.get_available_providers()
        if CUDA not in available:
            reason = (f"the installed onnxruntime has no CUDA execution provider (it has: {', '.join(available)}); "
                      "install onnxruntime-gpu (pip install 'splade-rt[gpu]')")
        else:
            name, precision = choose_file(manifest, "cuda", variant)
            verify_file(directory / name, manifest, verify)
            _preload_cuda(ort)
            try:
                session = ort.InferenceSession(str(directory / name), session_options(threads, spinning),
                                               providers=[(CUDA, {"device_id": device_id}), CPU])
            except Exception as e:  # noqa: BLE001 - e.g. no device, driver too old, bad device_id
                reason = f"the CUDA session failed to start ({str(e).splitlines()[0][:200]})"
            else:
                if CUDA in session.get_providers():
                    logger.info("splade-rt: %s on %s (device %d, %s)", name, CUDA, device_id, precision)
                    return Placement(session, "cuda", device_id, name, precision)
                reason = ("onnxruntime could not load the CUDA execution provider (CUDA or cuDNN libraries "
                          "missing or incompatible; onnxruntime's own log says which)")
        if kind == "cuda":
            raise DeviceError(f"device='cuda' but {reason}")
        warnings.warn(f"splade-rt: running on CPU: {reason}", RuntimeWarning, stacklevel=3)
    name, precision = choose_file(manifest, "cpu", variant)
    path = directory / name
    verify_file(path, manifest, verify)
    try:
        session = ort.InferenceSession(str(path), session_options(threads, spinning), providers=[CPU])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises several types for a bad file
        raise ExportDirError(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0][:200]})") from None
    logger.info("splade-rt: %s on %s (%s)", name, CPU, precision)
    return Placement(session, "cpu", 0, name, precision, fallback_reason=reason)


def _preload_cuda(ort) -> None:
    """Let onnxruntime find CUDA/cuDNN from the nvidia-* wheels (or torch's) when not on the loader path."""
    if hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()
        except Exception:  # noqa: BLE001 - best effort; the provider check reports the outcome
            pass
