"""What a GPU run is measured by beyond the CPU's numbers: the card, its memory over a run, and what
crosses from the device to the host.

Nothing here needs a GPU to import or to run: without NVML (nvidia-ml-py) the memory sampler asks
nvidia-smi, and asked for the host's memory (a dry run on the CPU) it reads the process's RSS, so
a stand-in run fills the same fields. benchmarks.gpu_check and the bench worker use it.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..machine import rss_mib


def gpu_info(index: int = 0) -> dict[str, Any]:
    """The card's name, driver and memory (nvidia-smi), or name "none (...)" where there is no card."""
    try:
        out = subprocess.run(["nvidia-smi", f"--id={index}", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=20,
                             check=True).stdout
        name, driver, total = (x.strip() for x in out.strip().splitlines()[0].split(","))
        return {"name": name, "driver": driver, "memory_total_mib": float(total)}
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as e:
        return {"name": f"none ({type(e).__name__}: {str(e).strip()[:200]})", "driver": None,
                "memory_total_mib": None}


def _nvidia_smi_used(index: int) -> float:
    out = subprocess.run(["nvidia-smi", f"--id={index}", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, timeout=10, check=False).stdout
    return float(out.strip() or 0)


def gpu_reader(index: int = 0) -> tuple[Callable[[], float], str]:
    """A function giving this process's GPU memory in MiB, and what it reads: NVML's per-process figure
    where it has one, else the device's used memory less what was used when the reader was made (so
    run one configuration per process, on an otherwise idle GPU)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        base, pid = pynvml.nvmlDeviceGetMemoryInfo(handle).used, os.getpid()

        def read() -> float:
            try:
                for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    if proc.pid == pid and proc.usedGpuMemory:
                        return proc.usedGpuMemory / 2**20
            except pynvml.NVMLError:
                pass
            return max(0, pynvml.nvmlDeviceGetMemoryInfo(handle).used - base) / 2**20

        return read, "nvml (this process, or device used less the idle baseline)"
    except Exception:  # noqa: BLE001 - no NVML bindings or no driver: nvidia-smi, slower but there
        base = _nvidia_smi_used(index)
        return (lambda: max(0.0, _nvidia_smi_used(index) - base)), "nvidia-smi (device used less the idle baseline)"


class MemorySampler:
    """Peak memory over a run, polled in a thread every `interval` seconds: the GPU's (gpu_reader) or,
    with on_gpu=False, the process's RSS. peak() may be read at checkpoints; stop() ends the thread."""

    def __init__(self, on_gpu: bool, index: int = 0, interval: float = 0.005) -> None:
        self._read, self.source = gpu_reader(index) if on_gpu else (rss_mib, "process RSS")
        self.interval, self._peak, self._stop = interval, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak()
            time.sleep(self.interval)

    def peak(self) -> float:
        self._peak = max(self._peak, self._read())
        return round(self._peak, 1)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak()


class BindingSpy:
    """Stands in for an onnxruntime session: passes every call on, and records each IOBinding made on
    it (which inputs were bound and on which device, which outputs were bound to which device, the
    bytes handed back) and every plain run(), which would bypass IOBinding. summary() says whether
    the [batch, vocab] tensor stayed on the device."""

    def __init__(self, session) -> None:
        self.session = session
        self.bindings: list[dict[str, Any]] = []
        self.plain_runs = 0
        self._lock = threading.Lock()

    def io_binding(self):
        record: dict[str, Any] = {"inputs": {}, "cpu_inputs": [], "outputs": {}, "returned": [], "runs": 0}
        with self._lock:
            self.bindings.append(record)
        return _RecordingBinding(self.session.io_binding(), record)

    def run_with_iobinding(self, binding, *args, **kwargs):
        binding.record["runs"] += 1
        return self.session.run_with_iobinding(binding.binding, *args, **kwargs)

    def run(self, *args, **kwargs):
        with self._lock:
            self.plain_runs += 1
        return self.session.run(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.session, name)

    def summary(self, vocab: int) -> dict[str, Any]:
        ran = [b for b in self.bindings if b["runs"]]
        returned = [r for b in ran for r in b["returned"]]
        rows = sum(b["inputs"].get("input_ids", ("", (0, 0)))[1][0] for b in ran)
        return {
            "batches": len(ran),
            "outputs_bound": sorted({name for b in ran for name in b["outputs"]}),
            "output_devices": sorted({device for b in ran for device in b["outputs"].values()}),
            "input_devices": sorted({device for b in ran for device, _ in b["inputs"].values()}),
            "cpu_inputs": sorted({name for b in ran for name in b["cpu_inputs"]}),
            "plain_runs": self.plain_runs,
            "bytes_to_host": int(sum(nbytes for device, _, nbytes in returned if device == "cpu")),
            "bytes_if_dense": int(rows * vocab * 4),  # the [batch, vocab] float32 tensor, had it been copied
        }


class _RecordingBinding:
    def __init__(self, binding, record: dict[str, Any]) -> None:
        self.binding, self.record = binding, record

    def bind_ortvalue_input(self, name, value):
        self.record["inputs"][name] = (value.device_name().lower(), tuple(value.shape()))
        return self.binding.bind_ortvalue_input(name, value)

    def bind_input(self, name, device_type, device_id, element_type, shape, buffer_ptr):
        self.record["inputs"][name] = (str(device_type).lower(), tuple(shape))
        return self.binding.bind_input(name, device_type, device_id, element_type, shape, buffer_ptr)

    def bind_cpu_input(self, name, array):
        self.record["cpu_inputs"].append(name)
        return self.binding.bind_cpu_input(name, array)

    def bind_output(self, name, device_type="cpu", *args, **kwargs):
        self.record["outputs"][name] = str(device_type).lower()
        return self.binding.bind_output(name, device_type, *args, **kwargs)

    def bind_ortvalue_output(self, name, value):
        self.record["outputs"][name] = value.device_name().lower()
        return self.binding.bind_ortvalue_output(name, value)

    def get_outputs(self):
        values = self.binding.get_outputs()
        for value in values:
            shape = tuple(value.shape())
            itemsize = 8 if "int64" in value.data_type() else 2 if "float16" in value.data_type() else 4
            self.record["returned"].append((value.device_name().lower(), shape, int(np.prod(shape)) * itemsize))
        return values

    def __getattr__(self, name: str):
        return getattr(self.binding, name)
