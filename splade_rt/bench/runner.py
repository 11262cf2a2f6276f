"""Run one benchmark configuration in a fresh process (bench.worker) and read its result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def tokenizer_threads(spec: dict) -> str:
    """TOKENIZERS_PARALLELISM for a worker: on a GPU the tokenizer sets the pace, so its threads are on
    (serial tokenizing held splade-rt to a third of its speed on an H100, README); on the CPU they
    would take the cores the measured threads were given."""
    return "false" if spec.get("device", "cpu") == "cpu" else "true"


def run_worker(spec: dict, timeout: float, cwd: str | Path | None = None) -> dict:
    """The worker's result dict, or {"error": its last line} when it failed or timed out."""
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(json.dumps({**spec, "spawned_at": time.time()}))
        env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]), "TOKENIZERS_PARALLELISM": tokenizer_threads(spec),
               "HF_HUB_OFFLINE": "1"}
        try:
            proc = subprocess.run([sys.executable, "-m", "splade_rt.bench.worker", str(spec_path), str(out_path)],
                                  cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        if proc.returncode != 0 or not out_path.is_file():
            lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln and not ln.startswith(" ")
                     and "registered at" not in ln]
            return {"error": (lines[-1] if lines else f"exit code {proc.returncode}")[:300]}
        return json.loads(out_path.read_text())
