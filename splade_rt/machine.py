"""What this machine is and where splade-rt keeps its caches: the low-level readers every layer shares.

The runtime asks it whether the CPU has VNNI (runtime.cpu_choice) and where to cache TensorRT engines
and the CPU graph choice; the benchmarks record machine_info() beside every number and read the
process's memory with rss_mib()/peak_rss_mib(). Standard library only, so any layer may import it.
"""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import resource
from pathlib import Path
from typing import Any

# the vector extensions the int8 kernels use, in the order of what they add
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile")
# one-instruction int8 dot products: where the screened graph's int8 screen is fast
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_tile")


def cache_dir() -> Path:
    """splade-rt's cache folder: $XDG_CACHE_HOME/splade-rt, else ~/.cache/splade-rt (not created here)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "splade-rt"


def machine_info() -> dict[str, Any]:
    """The CPU (model, cores, int8-relevant extensions) and Python, for a result file: a throughput
    number means little without them (the int8 screen is fast only with VNNI)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            info = f.read().splitlines()
    except OSError:
        info = []
    cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")),
               platform.processor() or "unknown")
    flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    return {"cpu": cpu, "cores": os.cpu_count(), "isa": [f for f in ISA_FLAGS if f in flags],
            "python": platform.python_version(), "platform": platform.platform()}


def has_vnni(isa: list[str] | None = None) -> bool:
    """Whether the CPU (or the given ISA list) runs int8 dot products in one instruction."""
    isa = machine_info()["isa"] if isa is None else isa
    return any(flag in isa for flag in VNNI_FLAGS)


def _status_mib(field: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def rss_mib() -> float:
    """The process's resident memory now (VmRSS), in MiB; its peak where /proc is absent."""
    now = _status_mib("VmRSS")
    return now if now is not None else peak_rss_mib()


def peak_rss_mib() -> float:
    """VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child would inherit the peak of
    the (big) parent it was forked from."""
    peak = _status_mib("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def release_freed_memory() -> None:
    """Collect, then hand freed heap pages back to the system (glibc's malloc_trim; nothing elsewhere).
    An export builds and checks graph after graph: freed buffers otherwise stay in the process's heap,
    pinned by small live blocks above them (250k-term XLM-R, hidden 768: 0.5 GiB more before the last
    parity graph without it)."""
    gc.collect()
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)
