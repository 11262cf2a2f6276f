"""One peer configuration, measured in its own process, inside that peer's own virtual environment.

Run by benchmarks.peers as `PEER_VENV/bin/python -I benchmarks/peer_worker.py MODE SPEC.json OUT`.
The peer's venv has neither splade_rt nor benchmarks installed; this file imports only
splade_rt.bench.measure and splade_rt.machine, from this checkout (their import needs numpy alone,
which every peer venv has), so that peers and splade-rt are timed by the same code. Everything else
comes in SPEC.json, everything goes out as a file. Modes:

- `prepare`: (sentence-transformers venv) save the model as a sentence-transformers SparseEncoder
  with its ONNX exports: plain (optimum's export, as `backend="onnx"` makes it), O3 and int8
  dynamic quantization (sentence-transformers' export helpers); with spec["backend"] "openvino"
  (the st-openvino venv) its OpenVINO exports instead: plain (optimum-intel's, as
  `backend="openvino"` makes it) and int8 static quantization (`export_static_quantized_openvino_model`,
  calibrated on spec's local texts, see prepare_openvino). Writes a JSON report to OUT.
- `run`: load one configuration, then measure it as splade_rt.bench.worker measures splade-rt:
  cold start (process start-up + import + load + first encode, from the parent's spawn), query
  latency at batch 1 (p50, p99), passages/s per batch size (measure.throughput), peak RSS, and the
  vectors of the first check_rows passages as {token id: weight} rows. Writes JSON to OUT.
- `encode`: encode documents and queries once (for a retrieval-quality evaluation made by the
  parent); writes their CSR arrays to OUT (.npz).

Configurations (spec["kind"]): "st" (sentence-transformers SparseEncoder, spec["backend"] torch,
onnx or openvino, spec["file_name"] the ONNX file or OpenVINO IR) and "fastembed" (fastembed
SparseTextEmbedding on a local directory holding an ONNX masked-LM export and its tokenizer).
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's splade_rt (-I left it out)
from splade_rt.bench.measure import query_latencies, throughput  # noqa: E402
from splade_rt.machine import peak_rss_mib  # noqa: E402

# fastembed 0.9 has no way to register a custom sparse model (TextEmbedding.add_custom_model is for
# dense models only). SpladePP, its SPLADE class, loads any local directory given as
# specific_model_path, but only under one of its registered names; this one's pooling
# (max over tokens of log1p(relu(logits)), masked) is SPLADE's.
FASTEMBED_SPLADE_NAME = "prithivida/Splade_PP_en_v1"
PACKAGES = ("sentence-transformers", "transformers", "optimum", "optimum-onnx", "onnxruntime", "onnx", "torch",
            "fastembed", "tokenizers", "numpy", "huggingface-hub", "optimum-intel", "openvino", "nncf", "datasets")
OPENVINO_INT8_SUFFIX = "qint8_quantized"  # export_static_quantized_openvino_model's default file suffix


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in PACKAGES:
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def st_mlm(model_dir: str):
    """The fill-mask Transformer where the installed sentence-transformers has it (6.x, which deprecates
    MLMTransformer), else MLMTransformer (5.x, the ONNX peer's venv), with SpladePooling max."""
    try:
        from sentence_transformers.base.modules import Transformer
        from sentence_transformers.sparse_encoder.modules import SpladePooling

        return [Transformer(model_dir, transformer_task="fill-mask"), SpladePooling(pooling_strategy="max")]
    except ImportError:
        from sentence_transformers.sparse_encoder.models import MLMTransformer, SpladePooling

        return [MLMTransformer(model_dir), SpladePooling(pooling_strategy="max")]


def load_st(model_dir: str, backend: str = "torch", file_name: str | None = None, threads: int | None = None,
            max_length: int | None = None):
    """A SparseEncoder from a sentence-transformers directory, or from a transformers *ForMaskedLM
    directory (st_mlm)."""
    from sentence_transformers import SparseEncoder

    if not (Path(model_dir) / "modules.json").is_file():
        if backend != "torch":
            raise ValueError(f"{model_dir}: not a sentence-transformers directory; run `prepare` first")
        model = SparseEncoder(modules=st_mlm(model_dir), device="cpu")
    else:
        kwargs = {}
        if backend == "onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
            kwargs = {"backend": "onnx", "model_kwargs": {"file_name": file_name or "onnx/model.onnx",
                                                          "provider": "CPUExecutionProvider",
                                                          "session_options": options}}
        elif backend == "openvino":  # OpenVINO's CPU plugin runs its own thread pool: OMP_NUM_THREADS misses it
            kwargs = {"backend": "openvino",
                      "model_kwargs": {"file_name": file_name or "openvino/openvino_model.xml",
                                       "ov_config": {"INFERENCE_NUM_THREADS": threads} if threads else {}}}
        model = SparseEncoder(model_dir, device="cpu", **kwargs)
    if max_length:
        model.max_seq_length = max_length
    return model


class STEncoder:
    def __init__(self, spec: dict) -> None:
        import torch

        torch.set_num_threads(spec["threads"])
        import sentence_transformers  # noqa: F401

        self.imported = time.time()
        self.model = load_st(spec["model_dir"], spec.get("backend", "torch"), spec.get("file_name"), spec["threads"],
                             spec.get("max_length"))
        self.details = openvino_details(self.model) if spec.get("backend") == "openvino" else {}

    def encode(self, texts: list[str], batch_size: int):
        return self.model.encode_document(texts, batch_size=batch_size, convert_to_tensor=True)

    def encode_query(self, texts: list[str], batch_size: int):
        return self.model.encode_query(texts, batch_size=batch_size, convert_to_tensor=True)

    def csr(self, result) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        coo = result.coalesce()
        rows, cols = coo.indices().numpy()
        values = coo.values().float().numpy()
        keep = values != 0
        rows, cols, values = rows[keep], cols[keep], values[keep]
        indptr = np.searchsorted(rows, np.arange(coo.shape[0] + 1))  # coalesced: sorted by row, then column
        return indptr, cols.astype(np.int32), values.astype(np.float32), int(coo.shape[1])


def openvino_details(model) -> dict:
    """The precision and threads OpenVINO compiled the model with (its CPU plugin picks bf16 by
    itself where the CPU has it, so "fp32" is checked, not assumed)."""
    out = {}
    try:
        compiled = model.transformers_model.request
        compiled = compiled.get_compiled_model() if hasattr(compiled, "get_compiled_model") else compiled
        for key in ("INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS", "PERFORMANCE_HINT"):
            with contextlib.suppress(Exception):
                value = compiled.get_property(key)  # the precision is an openvino Type: its name, "f32"
                name = value.get_type_name() if hasattr(value, "get_type_name") else str(value)
                out["openvino_" + key.lower()] = name
    except Exception as e:  # noqa: BLE001 (a detail: the run goes on without it)
        out["openvino_details_error"] = f"{type(e).__name__}: {e}"[:200]
    return out


class FastEmbedEncoder:
    def __init__(self, spec: dict) -> None:
        from fastembed import SparseTextEmbedding

        self.imported = time.time()
        self.model = SparseTextEmbedding(FASTEMBED_SPLADE_NAME, specific_model_path=spec["model_dir"],
                                         threads=spec["threads"], local_files_only=True)
        self.dim = int(spec.get("vocab_size", 30522))

    def encode(self, texts: list[str], batch_size: int):
        return list(self.model.embed(texts, batch_size=batch_size))

    def encode_query(self, texts: list[str], batch_size: int):
        return list(self.model.query_embed(texts, batch_size=batch_size))

    def csr(self, result) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        indptr = np.cumsum([0] + [len(e.indices) for e in result])
        cols = np.concatenate([e.indices for e in result]) if result else np.zeros(0)
        values = np.concatenate([e.values for e in result]) if result else np.zeros(0)
        keep = values != 0
        if not keep.all():
            row_of = np.repeat(np.arange(len(result)), np.diff(indptr))[keep]
            indptr = np.searchsorted(row_of, np.arange(len(result) + 1))
        return indptr, cols[keep].astype(np.int32), values[keep].astype(np.float32), self.dim


ENCODERS = {"st": STEncoder, "fastembed": FastEmbedEncoder}


def rows(enc, result, n: int) -> list[dict[int, float]]:
    indptr, cols, values, _ = enc.csr(result)
    return [{int(c): float(v) for c, v in zip(cols[indptr[r]:indptr[r + 1]], values[indptr[r]:indptr[r + 1]])}
            for r in range(min(n, len(indptr) - 1))]


def run(spec: dict, out_path: str) -> None:
    # the clock starts when the parent spawned this process (interpreter start-up counts, as in
    # splade_rt.bench), or failing that at this module's first line
    spawned = spec.get("spawned_at", time.time() - (time.perf_counter() - T0))
    enc = ENCODERS[spec["kind"]](spec)
    loaded = time.time()
    with open(spec["texts_file"], encoding="utf-8") as f:
        texts = json.load(f)
    passages, queries = texts["passages"], texts["queries"]
    enc.encode_query([queries[0]], 1)
    result = {"import_s": enc.imported - spawned, "load_s": loaded - enc.imported,
              "cold_start_s": time.time() - spawned, **query_latencies(enc.encode_query, queries)}
    out = None
    for bs in spec["batch_sizes"]:
        numbers, out = throughput(enc.encode, passages, bs, spec.get("passage_tokens"), spec.get("min_seconds", 0))
        result.update(numbers)
    result["vectors"] = rows(enc, out, spec["check_rows"]) if out is not None else []
    result["peak_rss_mib"] = peak_rss_mib()
    result.update(getattr(enc, "details", {}))
    result["versions"] = versions()
    write_json(result, out_path)


def encode(spec: dict, out_path: str) -> None:
    enc = ENCODERS[spec["kind"]](spec)
    with open(spec["texts_file"], encoding="utf-8") as f:
        texts = json.load(f)
    arrays = {}
    for part, method in (("documents", enc.encode), ("queries", enc.encode_query)):
        start = time.perf_counter()
        indptr, cols, values, dim = enc.csr(method(texts[part], spec["batch_size"]))
        arrays.update({f"{part}_indptr": indptr, f"{part}_indices": cols, f"{part}_data": values,
                       f"{part}_shape": np.array([len(indptr) - 1, dim]),
                       f"{part}_seconds": np.array(time.perf_counter() - start)})
    np.savez(out_path, **arrays)


def st_copy(source: str, out: Path) -> None:
    """source (a sentence-transformers or a *ForMaskedLM directory) saved as a writable
    sentence-transformers directory at out, without any export it had."""
    if out.exists():
        shutil.rmtree(out)
    if (Path(source) / "modules.json").is_file():
        shutil.copytree(source, out, ignore=shutil.ignore_patterns("onnx", "openvino"))
        for path in out.rglob("*"):  # a read-only source (shared/) copies read-only
            path.chmod(path.stat().st_mode | 0o200)
        out.chmod(out.stat().st_mode | 0o200)
    else:
        load_st(source).save(str(out))


def prepare(spec: dict, out_path: str) -> None:
    """The model as a sentence-transformers directory with onnx/model.onnx (the plain export that
    backend="onnx" makes), onnx/model_O3.onnx and onnx/model_qint8_<config>.onnx; with spec["backend"]
    "openvino", prepare_openvino's instead."""
    if spec.get("backend") == "openvino":
        prepare_openvino(spec, out_path)
        return
    from sentence_transformers import SparseEncoder, export_dynamic_quantized_onnx_model, export_optimized_onnx_model

    source, out = spec["model_dir"], Path(spec["out_dir"])
    st_copy(source, out)
    started = time.perf_counter()
    model = SparseEncoder(str(out), device="cpu", backend="onnx")  # no onnx/model.onnx yet: optimum exports it
    model.save_pretrained(str(out))
    exported = time.perf_counter() - started
    started = time.perf_counter()
    export_optimized_onnx_model(model, "O3", str(out))
    optimized = time.perf_counter() - started
    started = time.perf_counter()
    export_dynamic_quantized_onnx_model(model, spec["quantization"], str(out))
    quantized = time.perf_counter() - started
    files = {p.name: p.stat().st_size for p in sorted((out / "onnx").glob("*.onnx"))}
    write_json({"out_dir": str(out), "files": files, "max_seq_length": model.max_seq_length,
                "seconds": {"export": exported, "O3": optimized, "quantize": quantized}, "versions": versions()},
               out_path)


def prepare_openvino(spec: dict, out_path: str) -> None:
    """The model as a sentence-transformers directory with openvino/openvino_model.xml (optimum-intel's
    export, as backend="openvino" makes it and save_pretrained keeps it) and
    openvino/openvino_model_qint8_quantized.xml, sentence-transformers' documented int8 form:
    export_static_quantized_openvino_model with OVQuantizationConfig() (8-bit weights and activations,
    NNCF post-training static quantization).

    Its default calibration set is GLUE SST-2 from the hub, which the benchmarks cannot reach. The
    function takes no Dataset object, only dataset_name, config, split and column, passed on to
    datasets.load_dataset, which also reads a local directory of data files (as optimum-intel's
    get_calibration_dataset documents): so the parent's calibration texts (spec's texts file,
    "calibration") are written as one JSON-lines file in such a directory and named there. The rest
    (its tokenization, padded to 384, its sample count, its file name) is the function's own."""
    cache = Path.cwd() / "hf-cache"  # the worker's temporary directory: the calibration set's arrow cache
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE"):  # optimum-intel reads the old name
        os.environ[name] = str(cache)
    from optimum.intel import OVQuantizationConfig
    from sentence_transformers import SparseEncoder, export_static_quantized_openvino_model

    source, out = spec["model_dir"], Path(spec["out_dir"])
    st_copy(source, out)
    with open(spec["texts_file"], encoding="utf-8") as f:
        calibration = json.load(f)["calibration"]
    data = Path.cwd() / "calibration"
    data.mkdir(exist_ok=True)
    with open(data / "train.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": t}) + "\n" for t in calibration)
    started = time.perf_counter()
    model = SparseEncoder(str(out), device="cpu", backend="openvino")  # no openvino/ yet: optimum-intel exports it
    model.save_pretrained(str(out))
    exported = time.perf_counter() - started
    started = time.perf_counter()
    config = OVQuantizationConfig()
    export_static_quantized_openvino_model(model, config, str(out), dataset_name=str(data),
                                           dataset_config_name="default", dataset_split="train", column_name="text",
                                           file_suffix=OPENVINO_INT8_SUFFIX)
    quantized = time.perf_counter() - started
    shutil.rmtree(cache, ignore_errors=True)
    files = {p.name: p.stat().st_size for p in sorted((out / "openvino").glob("*.bin"))}
    if f"openvino_model_{OPENVINO_INT8_SUFFIX}.xml" not in {p.name for p in (out / "openvino").glob("*.xml")}:
        raise RuntimeError(f"export_static_quantized_openvino_model wrote no openvino_model_{OPENVINO_INT8_SUFFIX}.xml "
                           f"in {out / 'openvino'}: {sorted(p.name for p in (out / 'openvino').iterdir())}")
    write_json({"out_dir": str(out), "files": files, "max_seq_length": model.max_seq_length,
                "calibration": {"texts": len(calibration), "num_samples": config.num_samples,
                                "dataset": "local JSON lines (the parent's texts)"},
                "seconds": {"export": exported, "quantize": quantized}, "versions": versions()}, out_path)


def write_json(result: dict, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f)


def main(argv: list[str]) -> None:
    mode, spec_path, out_path = argv
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    {"run": run, "encode": encode, "prepare": prepare}[mode](spec, out_path)


if __name__ == "__main__":
    main(sys.argv[1:])
