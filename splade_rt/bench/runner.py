"""Run one measurement in a fresh process and read its result: a benchmark configuration
(bench.worker), or any module that takes `SPEC.json OUT.json` as its last two arguments.

start() and finish() are apart so that a caller can keep one job running beside others.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Job:
    """A measurement running in its own process; its spec and result files live in folder."""

    process: subprocess.Popen
    folder: Path


def tokenizer_threads(spec: dict) -> str:
    """TOKENIZERS_PARALLELISM for a worker: on a GPU the tokenizer sets the pace, so its threads are on
    (serial tokenizing held splade-rt to a third of its speed on an H100, docs/gpu.md); on the CPU they
    would take the cores the measured threads were given."""
    return "false" if spec.get("device", "cpu") == "cpu" else "true"


def start(command: list[str], spec: dict, cwd: str | Path | None = None) -> Job:
    """`python -m COMMAND... SPEC.json OUT.json` with the spec (spawned_at set: cold start counts from
    here), with the spec's threads for OpenMP, its device's tokenizer threads, and no hub."""
    folder = Path(tempfile.mkdtemp(prefix="splade-bench-"))
    (folder / "spec.json").write_text(json.dumps({**spec, "spawned_at": time.time()}))
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]), "TOKENIZERS_PARALLELISM": tokenizer_threads(spec),
           "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, "-m", *command, str(folder / "spec.json"), str(folder / "out.json")],
                               cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return Job(process, folder)


def finish(job: Job, timeout: float, log=None) -> dict:
    """The job's result dict; where it failed or timed out, what it wrote before (if anything) with
    "error": its last line of output (and its last lines to log, if given)."""
    try:
        output = job.process.communicate(timeout=max(1.0, timeout))[0] or ""
        failed = job.process.returncode != 0 and f"exit code {job.process.returncode}"
    except subprocess.TimeoutExpired:
        job.process.kill()
        output, failed = job.process.communicate()[0] or "", f"timed out after {timeout:.0f} s"
    out = job.folder / "out.json"
    written = out.is_file()
    result = json.loads(out.read_text()) if written else {}
    shutil.rmtree(job.folder, ignore_errors=True)
    if failed or not written:
        lines = [ln for ln in output.splitlines()  # a traceback's last line, not its source lines or torch's notes
                 if ln.strip() and not ln.startswith(" ") and "registered at" not in ln]
        for line in lines[-6:] if log else ():
            log(f"    | {line[:300]}")
        last = lines[-1] if lines and not str(failed).startswith("timed out") else failed or "no result written"
        result["error"] = str(last)[:300]
    return result


def run_worker(spec: dict, timeout: float, cwd: str | Path | None = None) -> dict:
    """One bench.worker configuration: its result dict, or {"error": its last line} when it failed."""
    return finish(start(["splade_rt.bench.worker"], spec, cwd), timeout)
