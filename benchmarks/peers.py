"""The peers a user would pick instead of splade-rt, each run from its own virtual environment.

`python -m benchmarks.run` runs them beside splade-rt, on the bundled tiny model and on the random
base-size one (`--only st-onnx-int8 base-st-onnx-int8 ...` picks some).

sentence-transformers' ONNX backend needs optimum-onnx, which pins transformers<4.58 and so cannot
share the main environment (sentence-transformers 6 needs transformers 5). fastembed brings its own
onnxruntime and tokenizers pins. Its OpenVINO backend needs optimum-intel, whose optimum (~=2.3)
is not optimum-onnx's (2.1). So each peer gets a virtual environment that this module creates
itself, under benchmarks/.cache/venvs/<name>, from the pins in REQUIREMENTS below; it is kept
between runs and recreated when the pins (or the Python) change. Creating the ONNX ones takes about
two minutes with the local torch wheel, the OpenVINO one about three (its marker file records
each install's time).

The peers:
- `st-onnx`, `st-onnx-o3`, `st-onnx-int8`: sentence-transformers `SparseEncoder(..., backend="onnx")`
  on optimum's export of the model (what backend="onnx" makes and save_pretrained keeps), on its O3
  optimization (`export_optimized_onnx_model`) and on its int8 dynamic quantization
  (`export_dynamic_quantized_onnx_model`, the config that fits this CPU's flags). The exports are
  made once per model and pin set, in the peer's venv, under benchmarks/.cache/peer-models/.
- `fastembed`: `SparseTextEmbedding` on the same optimum export. fastembed 0.9 cannot register a
  custom sparse model (`add_custom_model` exists only on the dense TextEmbedding); its SPLADE class
  loads a local directory through `specific_model_path`, under its registered name
  "prithivida/Splade_PP_en_v1", whose pooling (max over tokens of log1p(relu(logits))) is SPLADE's.
  Nothing is fetched from a hub.
- `st-openvino`, `st-openvino-int8`: `SparseEncoder(..., backend="openvino")` (which
  sentence-transformers' efficiency docs name its fastest CPU option) on optimum-intel's export
  (what backend="openvino" makes and save_pretrained keeps, openvino/openvino_model.xml), and on its
  int8 form as sentence-transformers documents it: `export_static_quantized_openvino_model` with
  `OVQuantizationConfig()`, NNCF's post-training static quantization of weights and activations. Its
  default calibration set (GLUE SST-2) comes from the hub; the function takes no Dataset, but it
  passes dataset_name to datasets.load_dataset, which reads a local directory of data files, so
  the calibration set is CALIBRATION below (300 SciFact passages, none of them timed), written as a
  JSON-lines file. Made once per model and pin set, in the st-openvino venv, under peer-models/ too.
  Both run with INFERENCE_NUM_THREADS set to the run's threads (OpenVINO's CPU plugin has its own
  thread pool); the precision it compiled for is recorded (`openvino_inference_precision_hint`: its
  CPU plugin would pick bf16 by itself on a CPU with AMX or AVX-512 BF16).

Each configuration runs in its own process (benchmarks/peer_worker.py, in the peer's venv) and is
measured by the code that measures splade-rt (splade_rt.bench.measure); its vectors are compared with
sentence-transformers torch. For each int8 model (QUALITY_PAIRS), its retrieval loss on SciFact
(nDCG@10 at max length 256, and the active-term Jaccard of its vectors) against the same peer's fp32
export is measured too, with splade_rt.evaluation's search and metrics.

`benchmarks.run` calls `peer_configurations`, `run_peer` and `int8_quality`.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from splade_rt.machine import machine_info as machine

from .common import CACHE, HERE
from .peer_worker import FASTEMBED_SPLADE_NAME

VENVS = CACHE / "venvs"
PEER_MODELS = CACHE / "peer-models"
WORKER = HERE / "peer_worker.py"
MARKER = "splade-peer-pins.json"  # written last: a venv without it (a failed install) is made again
TORCH = "torch==2.13.0"  # the CPU wheel on these machines; installed alone, before everything else

# Versions that install together on Python 3.11: sentence-transformers 5.7 is the last release that
# allows transformers 4.x (6.x needs transformers>=5), and optimum-onnx 0.1.0 (optimum 2.1) needs
# transformers<4.58. onnxruntime is the main environment's, so every configuration runs the same one.
REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "st-onnx": (TORCH, "sentence-transformers==5.7.0", "transformers==4.57.6", "optimum==2.1.0",
                "optimum-onnx[onnxruntime]==0.1.0", "onnx==1.23.2", "onnxruntime==1.32.0", "tokenizers==0.22.2",
                "huggingface-hub==0.36.2", "numpy==2.4.6"),
    "fastembed": ("fastembed==0.9.1", "onnxruntime==1.32.0", "tokenizers==0.23.3", "huggingface-hub==1.33.0",
                  "numpy==2.4.6"),
    # optimum-intel 2.1 needs optimum~=2.3, so it cannot share st-onnx's optimum 2.1; the same
    # sentence-transformers and transformers as st-onnx, so the two backends differ only in their runtime.
    # optimum-intel 2.2 would add torchvision, whose PyPI wheel is built for CUDA torch. datasets is
    # for the int8 export's calibration set (a local one: see peer_worker.prepare_openvino).
    "st-openvino": (TORCH, "sentence-transformers==5.7.0", "transformers==4.57.6", "optimum==2.3.0",
                    "optimum-intel==2.1.0", "openvino==2026.4.1", "openvino-tokenizers==2026.4.1.0", "nncf==3.4.0",
                    "datasets==5.0.1", "tokenizers==0.22.2", "huggingface-hub==0.36.2", "numpy==2.4.6"),
}

# "venv": where the configuration runs; "export": the venv whose peer_worker `prepare` makes its model
# directory (EXPORTS: with which backend).
PEERS: dict[str, dict] = {
    "st-onnx": {"venv": "st-onnx", "export": "st-onnx", "kind": "st", "backend": "onnx",
                "file_name": "onnx/model.onnx", "label": "sentence-transformers ONNX backend (optimum export, fp32)"},
    "st-onnx-o3": {"venv": "st-onnx", "export": "st-onnx", "kind": "st", "backend": "onnx",
                   "file_name": "onnx/model_O3.onnx", "label": "sentence-transformers ONNX backend, O3 optimized"},
    "st-onnx-int8": {"venv": "st-onnx", "export": "st-onnx", "kind": "st", "backend": "onnx",
                     "file_name": "onnx/model_qint8_{quantization}.onnx",
                     "label": "sentence-transformers ONNX backend, int8 dynamic ({quantization}; lossy)"},
    "fastembed": {"venv": "fastembed", "export": "st-onnx", "kind": "fastembed",
                  "label": "fastembed SparseTextEmbedding (optimum export, fp32)"},
    "st-openvino": {"venv": "st-openvino", "export": "st-openvino", "kind": "st", "backend": "openvino",
                    "file_name": "openvino/openvino_model.xml",
                    "label": "sentence-transformers OpenVINO backend (optimum-intel export, fp32)"},
    "st-openvino-int8": {"venv": "st-openvino", "export": "st-openvino", "kind": "st", "backend": "openvino",
                         "file_name": "openvino/openvino_model_qint8_quantized.xml",
                         "label": "sentence-transformers OpenVINO backend, int8 static (NNCF, SciFact calibration; "
                                  "lossy)"},
}
EXPORTS = {"st-onnx": "onnx", "st-openvino": "openvino"}
# OpenVINO's int8 export is calibrated: on SciFact passages 1000-1299, which neither model's timed
# passages (the first ones, and 904-999 on the base-size model) include
CALIBRATION = ("scifact", 1000, 300)
QUALITY_MAX_LENGTH = 256
# each int8 model's retrieval loss, measured against the fp32 export of the same peer
QUALITY_PAIRS = {"st-onnx-int8": "st-onnx", "st-openvino-int8": "st-openvino"}
QUALITY_NAMES = {"st-onnx-int8": "sentence-transformers ONNX int8",
                 "st-openvino-int8": "sentence-transformers OpenVINO int8"}


class PeerError(RuntimeError):
    """A peer's venv or model could not be made; the message says why in one line."""


# -- virtual environments ------------------------------------------------------------------------


def base_python() -> Path:
    """The interpreter the running one was made from (a venv's own python would nest venvs)."""
    return Path(getattr(sys, "_base_executable", None) or sys.executable)


def venv_key(requirements: Sequence[str], python: Path | str, python_version: str | None = None) -> str:
    """What a venv is made from: the pins in install order, and the interpreter and its version."""
    blob = json.dumps({"requirements": list(requirements), "python": str(python),
                       "python_version": python_version or platform.python_version()})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def venv_python(target: Path) -> Path:
    return target / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def pip_install(python: Path, target: Path, requirements: Sequence[str], log_file: Path) -> None:
    """A new venv at target with the requirements; torch alone first, so that its local CPU wheel
    is the one installed (the second step, which pins it again, then leaves it where it is)."""
    torch = [r for r in requirements if r.split("==")[0].split("[")[0].strip().lower() == "torch"]
    steps = [[str(python), "-m", "venv", str(target)]]
    pip = [str(venv_python(target)), "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
    steps += ([pip + torch] if torch else []) + [pip + list(requirements)]
    with open(log_file, "a", encoding="utf-8") as log:
        for cmd in steps:
            log.write(f"$ {' '.join(cmd)}\n")
            log.flush()
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=3600, check=False)
            if proc.returncode != 0:
                lines = [ln for ln in log_file.read_text(encoding="utf-8").splitlines() if ln.strip()]
                errors = [ln for ln in lines if ln.startswith("ERROR")]
                raise PeerError(f"{' '.join(cmd[3:6])}... failed (exit {proc.returncode}): "
                                f"{(errors or lines or ['no output'])[-1][:300]} (log: {log_file})")


def ensure_venv(name: str, requirements: Sequence[str] | None = None, *, root: Path = VENVS,
                python: Path | None = None, install: Callable[[Path, Path, Sequence[str], Path], None] = pip_install,
                log: Callable[[str], None] = print) -> Path:
    """The python of the venv root/name, made (or made again) unless it was made from these same pins
    and interpreter. Raises PeerError if it cannot be made."""
    requirements = tuple(REQUIREMENTS[name] if requirements is None else requirements)
    python = python or base_python()
    key = venv_key(requirements, python)
    target = root / name
    marker = target / MARKER
    if marker.is_file() and venv_python(target).exists():
        try:
            if json.loads(marker.read_text()).get("key") == key:
                return venv_python(target)
        except ValueError:
            pass
        why = "its pins or Python changed"
    else:
        why = "none yet" if not target.exists() else "an earlier install did not finish"
    log(f"peers: making the venv {target} ({why}): {' '.join(requirements)}")
    if target.exists():
        shutil.rmtree(target)
    root.mkdir(parents=True, exist_ok=True)
    log_file = root / f"{name}.log"
    log_file.write_text("")
    started = time.perf_counter()
    install(python, target, requirements, log_file)
    freeze = subprocess.run([str(venv_python(target)), "-m", "pip", "freeze", "--disable-pip-version-check"],
                            capture_output=True, text=True, check=False).stdout.split()
    marker.write_text(json.dumps({"key": key, "python": str(python), "python_version": platform.python_version(),
                                  "requirements": list(requirements), "freeze": freeze,
                                  "install_s": round(time.perf_counter() - started, 1)}, indent=1) + "\n")
    return venv_python(target)


def installed(target_python: Path) -> dict[str, str]:
    """The versions pip installed in a venv made here, from its marker ({} for any other python)."""
    marker = target_python.parent.parent / MARKER
    if not marker.is_file():
        return {}
    pins = (line.split("==", 1) for line in json.loads(marker.read_text()).get("freeze", []) if "==" in line)
    return {name.lower(): version for name, version in pins}


# -- workers ------------------------------------------------------------------------------------


def _last_error(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith(" ") and "registered at" not in ln]
    errors = [ln for ln in lines if ln.split(":", 1)[0].endswith(("Error", "Exception", "Exit"))]
    return ((errors or lines or ["no output"])[-1])[:300]


def call_worker(python: Path | str, mode: str, spec: dict, threads: int, timeout: float, suffix: str = ".json",
                texts: dict | None = None) -> dict | Path:
    """Run peer_worker.py MODE in the given python; its JSON answer, or for `encode` the .npz path
    (in a temporary directory the caller must remove). Raises PeerError with the worker's last error."""
    tmp = Path(tempfile.mkdtemp(prefix="splade-peer-"))
    spec_path, out_path = tmp / "spec.json", tmp / f"out{suffix}"
    if texts is not None:
        (tmp / "texts.json").write_text(json.dumps(texts))
        spec = {**spec, "texts_file": str(tmp / "texts.json")}
    spec_path.write_text(json.dumps({**spec, "spawned_at": time.time()}))  # cold start counts from here
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "HF_HUB_DISABLE_TELEMETRY": "1", "FASTEMBED_CACHE_PATH": str(tmp / "fastembed-cache")}
    env.pop("PYTHONPATH", None)
    try:
        # -I: the peer's venv sees neither this repository nor PYTHONPATH, only its own packages
        proc = subprocess.run([str(python), "-I", str(WORKER), mode, str(spec_path), str(out_path)], cwd=tmp,
                              env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise PeerError(f"timed out after {timeout:.0f} s") from e
    if proc.returncode != 0 or not out_path.is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        raise PeerError(_last_error(proc.stderr or proc.stdout) if proc.returncode else "the worker wrote nothing")
    if suffix != ".json":
        return out_path
    result = json.loads(out_path.read_text())
    shutil.rmtree(tmp, ignore_errors=True)
    return result


def run_peer(spec: dict, timeout: float = 1800) -> dict:
    """One timed run of a configuration from peer_configurations, merged with benchmarks.run's common
    settings (threads, passages, queries, passage_tokens, batch_sizes, check_rows, min_seconds), as
    benchmarks.run.run_worker: its numbers and vectors, or {"error": why}."""
    keys = ("kind", "backend", "file_name", "model_dir", "threads", "batch_sizes", "min_seconds", "check_rows",
            "passage_tokens", "max_length", "vocab_size")
    try:
        result = call_worker(spec["python"], "run", {k: spec[k] for k in keys if k in spec}, spec["threads"],
                             timeout, texts={"passages": spec["passages"], "queries": spec["queries"]})
    except PeerError as e:
        return {"error": str(e)}
    result.pop("versions", None)  # in the configuration; run's summary takes the median of every other key
    return result


# -- models -------------------------------------------------------------------------------------


def quantization_config(isa: Iterable[str] | None = None) -> str:
    """sentence-transformers' dynamic quantization config for this CPU: avx512_vnni, avx512, avx2 or arm64."""
    isa = set(machine()["isa"] if isa is None else isa)
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    return "avx512_vnni" if "avx512_vnni" in isa else "avx512" if "avx512f" in isa else "avx2"


def model_stamp(model_dir: Path) -> list:
    return [[p.name, p.stat().st_size, int(p.stat().st_mtime)] for p in sorted(model_dir.rglob("*")) if p.is_file()]


def calibration_texts(spec: tuple[str, int, int] = CALIBRATION) -> list[str]:
    """The OpenVINO int8 export's calibration passages: CALIBRATION's slice of a shared collection,
    else (no shared data) the exporter's parity passages, repeated to the same count."""
    from .common import collection_texts

    name, start, count = spec
    texts = collection_texts(name, documents=start + count)[0][start:]
    if not texts:
        from splade_rt.export.texts import PASSAGES

        texts = (PASSAGES * count)[:count]
    return texts


def prepare_st_model(model_dir: Path, python: Path, backend: str = "onnx", quantization: str = "",
                     timeout: float = 3600, log: Callable[[str], None] = print) -> tuple[Path, dict]:
    """model_dir saved by the peer's sentence-transformers with its exports (cached per model, pin
    set, backend and quantization config or calibration texts): ONNX (plain, O3, int8 dynamic) or
    OpenVINO (plain, int8 static): (the directory, the prepare report)."""
    model_dir = Path(model_dir).resolve()
    texts = {"calibration": calibration_texts()} if backend == "openvino" else None
    what = [str(model_dir), model_stamp(model_dir), str(python), installed(python), quantization]
    if backend != "onnx":  # the ONNX exports' key, and so their cache, as before the OpenVINO ones
        what += [backend, hashlib.sha256(json.dumps(texts).encode()).hexdigest()]
    key = hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]
    out = PEER_MODELS / f"{model_dir.name}-{key}"
    marker = out / "peer-prepared.json"
    if marker.is_file():
        return out, json.loads(marker.read_text())
    log(f"peers: exporting {model_dir} to "
        + (f"ONNX (plain, O3, int8 {quantization})" if backend == "onnx" else
           f"OpenVINO (plain, int8 static on {len(texts['calibration'])} {CALIBRATION[0]} passages)") + f" in {out}")
    partial = out.with_name(out.name + ".partial")
    PEER_MODELS.mkdir(parents=True, exist_ok=True)
    report = call_worker(python, "prepare", {"model_dir": str(model_dir), "out_dir": str(partial), "backend": backend,
                                             "quantization": quantization}, 2, timeout, texts=texts)
    (partial / "peer-prepared.json").write_text(json.dumps({**report, "source": str(model_dir)}, indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    return out, json.loads(marker.read_text())


def fastembed_dir(st_dir: Path, max_length: int) -> Path:
    """A directory fastembed's SpladePP loads (specific_model_path): the optimum export as model.onnx
    (a hard link) and the tokenizer, truncating at max_length (fastembed reads the limit from
    tokenizer_config.json)."""
    out = st_dir / f"fastembed-{max_length}"
    if (out / "model.onnx").is_file():
        return out
    partial = st_dir / f"fastembed-{max_length}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    for name in ("model.onnx", "model.onnx_data"):
        if (st_dir / "onnx" / name).is_file():
            try:
                os.link(st_dir / "onnx" / name, partial / name)
            except OSError:
                shutil.copy2(st_dir / "onnx" / name, partial / name)
    for name in ("tokenizer.json", "config.json", "special_tokens_map.json", "vocab.txt"):
        if (st_dir / name).is_file():
            shutil.copy2(st_dir / name, partial / name)
    config = json.loads((st_dir / "tokenizer_config.json").read_text())
    config["model_max_length"] = config["max_length"] = max_length
    (partial / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    partial.rename(out)
    return out


def peer_configurations(model_dir: Path, *, max_length: int | None = None, only: Iterable[str] | None = None,
                        batch_sizes: Sequence[int] | None = (32,),
                        log: Callable[[str], None] = print) -> dict[str, dict]:
    """Each peer ready to run, as a benchmarks.run configuration: {name: spec} with "label", "peer":
    True, "python" (its venv's) and what peer_worker needs, or {"label", "unavailable": why}. Makes the
    venvs and the ONNX exports first (both cached).

    batch_sizes (None: the caller's): the peers pool the whole [batch, seq, vocab] logits tensor, at
    least four copies of it at once (fastembed: 10 GiB at batch 32 x 512 tokens on the tiny model),
    so by default they run batch 32 only: at 128 they would not fit in 24 GiB."""
    names = [n for n in PEERS if only is None or n in set(only)]
    if not names:
        return {}
    quantization = quantization_config()
    configs: dict[str, dict] = {}
    failed: dict[str, str] = {}
    prepared: dict[str, tuple[Path, dict]] = {}
    for venv in dict.fromkeys(PEERS[n]["export"] for n in names):  # every peer runs an export made in an st venv
        try:
            prepared[venv] = prepare_st_model(model_dir, ensure_venv(venv, log=log), EXPORTS[venv],
                                              quantization if EXPORTS[venv] == "onnx" else "", log=log)
        except PeerError as e:
            failed[venv] = str(e)
    for venv in dict.fromkeys(PEERS[n]["venv"] for n in names if PEERS[n]["export"] not in failed):
        if venv not in prepared:
            try:
                ensure_venv(venv, log=log)
            except PeerError as e:
                failed[venv] = str(e)
    for name in names:
        peer = PEERS[name]
        label = peer["label"].format(quantization=quantization)
        if peer["venv"] in failed or peer["export"] in failed:
            why = failed.get(peer["venv"]) or (f"needs the export from the {peer['export']} venv, which failed: "
                                               f"{failed[peer['export']]}")
            configs[name] = {"label": label, "unavailable": f"could not be set up: {why}"}
            continue
        st_dir, report = prepared[peer["export"]]
        python = venv_python(VENVS / peer["venv"])
        spec = {"label": label, "peer": True, "python": str(python), "kind": peer["kind"],
                "venv": str(VENVS / peer["venv"]), "versions": installed(python)}
        if batch_sizes is not None:
            spec["batch_sizes"] = list(batch_sizes)
        length = max_length or report["max_seq_length"]
        if peer["kind"] == "st":
            spec.update(backend=peer["backend"], file_name=peer["file_name"].format(quantization=quantization),
                        model_dir=str(st_dir), max_length=length)
        else:
            config = json.loads((st_dir / "config.json").read_text())
            spec.update(model_dir=str(fastembed_dir(st_dir, length)), vocab_size=config.get("vocab_size", 30522),
                        how=f"SparseTextEmbedding({FASTEMBED_SPLADE_NAME!r}, specific_model_path=<optimum export>)")
        configs[name] = spec
    return configs




# -- quality -------------------------------------------------------------------------------------


def int8_quality(configs: dict[str, dict], dataset_dir: Path, *, int8: str = "st-onnx-int8",
                 max_length: int = QUALITY_MAX_LENGTH, threads: int = 2, timeout: float = 3600,
                 log: Callable[[str], None] = print) -> dict:
    """nDCG@10 of a peer's fp32 export and of its int8 model (int8, a key of QUALITY_PAIRS) on a BEIR
    collection (exact search over the whole corpus, splade_rt.evaluation), and the int8 vectors'
    active-term Jaccard against fp32's."""
    import numpy as np

    from splade_rt import SparseEmbeddings
    from splade_rt.evaluation import load_beir, mean_metrics, search

    data = load_beir(dataset_dir)
    texts = {"documents": data.corpus_texts, "queries": data.query_texts}
    fp32 = QUALITY_PAIRS[int8]
    out: dict = {"dataset": Path(dataset_dir).name, "max_length": max_length, "documents": len(data.corpus_ids),
                 "queries": len(data.query_ids), "fp32": fp32, "int8": int8}
    vectors = {}
    for name in (fp32, int8):
        spec = configs.get(name, {})
        if "python" not in spec:
            return {**out, "error": f"{name} is not available"}
        log(f"peers: encoding {out['dataset']} with {name} (max length {max_length})")
        keys = ("kind", "backend", "file_name", "model_dir", "vocab_size")
        try:
            path = call_worker(spec["python"], "encode", {**{k: spec[k] for k in keys if k in spec},
                                                          "threads": threads, "max_length": max_length,
                                                          "batch_size": 32}, threads, timeout, ".npz", texts)
        except PeerError as e:
            return {**out, "error": f"{name}: {e}"}
        with np.load(path) as z:
            parts = {p: SparseEmbeddings(z[f"{p}_indptr"], z[f"{p}_indices"], z[f"{p}_data"],
                                         int(z[f"{p}_shape"][1])).to_csr() for p in texts}
            seconds = float(z["documents_seconds"])
        shutil.rmtree(path.parent, ignore_errors=True)
        top, _ = search(parts["queries"], parts["documents"], top_k=100)
        metrics = mean_metrics([[data.corpus_ids[i] for i in row] for row in top],
                               [data.qrels[q] for q in data.query_ids])
        out[name] = {"ndcg@10": metrics["ndcg@10"], "recall@10": metrics["recall@10"],
                     "document_active_dims": parts["documents"].getnnz() / parts["documents"].shape[0],
                     "docs_per_s": len(data.corpus_ids) / seconds}
        vectors[name] = parts
    out["ndcg@10_change"] = out[int8]["ndcg@10"] - out[fp32]["ndcg@10"]
    for part in texts:
        out[f"{part}_jaccard_vs_fp32"] = jaccard(vectors[fp32][part], vectors[int8][part])
    return out


def jaccard(a, b) -> float:
    """Mean over rows of |active terms in both| / |active terms in either| (scipy CSR rows)."""
    import numpy as np

    a, b = a.astype(bool).astype(np.int8), b.astype(bool).astype(np.int8)
    both = np.asarray(a.multiply(b).sum(axis=1)).ravel()
    either = a.getnnz(axis=1) + b.getnnz(axis=1) - both
    return float(np.mean(np.where(either > 0, both / np.maximum(either, 1), 1.0)))


def quality_line(q: dict) -> str:
    """int8_quality's result as one sentence under a results table."""
    int8 = q.get("int8", "st-onnx-int8")  # results written before the OpenVINO peers have the ONNX pair only
    fp32 = q.get("fp32", QUALITY_PAIRS[int8])
    if "error" in q:
        return f"{QUALITY_NAMES[int8]} retrieval loss: not measured ({q['error']})."
    return (f"{QUALITY_NAMES[int8]}: retrieval on {q['dataset']} ({q['documents']} documents, "
            f"{q['queries']} queries, max length {q['max_length']}, exact search): nDCG@10 "
            f"{q[int8]['ndcg@10']:.4f} against {q[fp32]['ndcg@10']:.4f} for the fp32 export "
            f"({q['ndcg@10_change']:+.4f}); active-term Jaccard against fp32: documents "
            f"{q['documents_jaccard_vs_fp32']:.4f}, queries {q['queries_jaccard_vs_fp32']:.4f}.")
