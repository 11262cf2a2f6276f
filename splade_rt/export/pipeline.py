"""One export, start to finish: resolve, export, check, write the manifest, then publish atomically.

Everything is built in a temporary directory beside the output and renamed into place only after
the parity check passed, so a failed or interrupted export leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from ..errors import ExportDirError, SpladeError
from ..kernels import DEFAULT_VOCAB_CHUNK
from ..manifest import (
    ATTENTION_MASK, FORMAT_VERSION, INPUT_IDS, OUT_NZ_INDEX, OUT_NZ_VALUE, OUT_SPARSE, OUT_TOP_INDICES,
    OUT_TOP_VALUES, TOP_K, read_manifest, sha256_file, verify_file, write_manifest,
)
from .source import SourceModel, resolve_source

_PROVIDERS = {
    "fp32": ["CPUExecutionProvider"],
    "fp32-screened": ["CPUExecutionProvider"],
    "fp16": ["CUDAExecutionProvider", "TensorrtExecutionProvider"],
}


class ParityError(SpladeError):
    """The exported graph does not reproduce the torch reference."""


def export_model(
    model: str | None,
    out: str | Path,
    *,
    force: bool = False,
    max_length: int | None = None,
    vocab_chunk: int = DEFAULT_VOCAB_CHUNK,
    fp16: bool = True,
    screened: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    start = time.perf_counter()
    out = Path(out).expanduser()
    if out.exists() and not force:
        raise ExportDirError(f"{out}: already exists; pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise ExportDirError(f"{out}: exists and is not a directory")
    source = resolve_source(model)
    if max_length is not None:
        if max_length < 2 or max_length > source.max_length:
            raise SpladeError(f"--max-length {max_length}: must be between 2 and the model's {source.max_length}")
        source.max_length = max_length
    work = _make_workdir(out)
    try:
        from .graph import build_graphs, load_mlm
        from .parity import check_parity, summary_lines

        log(f"exporting {source.ref} ({source.layout} layout, max length {source.max_length})")
        mlm = load_mlm(source.directory)
        graphs = build_graphs(mlm, source, work, vocab_chunk=vocab_chunk, fp16=fp16, screened=screened)
        tokenizer_json = _write_tokenizer(source, work)
        log("checking parity against the torch reference")
        parity = check_parity(mlm, source, graphs.files, tokenizer_json)
        for line in summary_lines(parity):
            log(line)
        manifest = _manifest(source, mlm, graphs, tokenizer_json, parity, vocab_chunk)
        manifest["export_seconds"] = round(time.perf_counter() - start, 2)
        write_manifest(work, manifest)
        if not parity["passed"]:
            raise ParityError("exported graph failed the parity check (numbers above); nothing was written")
        _publish(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log(f"wrote {out} in {manifest['export_seconds']:.1f} s: "
        + ", ".join(f"{name} {info['bytes'] / 2**20:.1f} MiB" for name, info in manifest["files"].items()))
    return manifest


def recheck(out: str | Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Re-run the parity check of an existing export against its recorded source and update the manifest."""
    from .graph import load_mlm
    from .parity import check_parity, summary_lines

    out = Path(out)
    manifest = read_manifest(out)
    for name in manifest["files"]:
        verify_file(out / name, manifest, True)
    ref = manifest["source"]["model"]
    source = resolve_source(None if ref.startswith("default:") else ref)
    source.max_length = manifest["tokenizer"]["max_length"]
    if source.weights_sha256() != manifest["source"]["weights_sha256"]:
        raise ExportDirError(f"{ref}: weights changed since the export (hash differs); re-export with --force")
    mlm = load_mlm(source.directory)
    graphs = {info["precision"]: out / name for name, info in manifest["files"].items() if name.endswith(".onnx")}
    parity = check_parity(mlm, source, graphs, out / manifest["tokenizer"]["file"])
    for line in summary_lines(parity):
        log(line)
    manifest["parity"] = parity
    write_manifest(out, manifest)
    if not parity["passed"]:
        raise ParityError(f"{out}: parity check failed (numbers above)")
    return manifest


def _make_workdir(out: Path) -> Path:
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))
    except OSError as e:
        raise ExportDirError(f"{out}: cannot write there ({e.strerror}); choose another -o directory") from None


def _publish(work: Path, out: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    work.chmod(0o777 & ~umask)  # mkdtemp made it private; the export is an ordinary directory
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{int(time.time())}")
        out.rename(old)
    work.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_tokenizer(source: SourceModel, work: Path) -> Path:
    target = work / "tokenizer.json"
    original = source.tokenizer_dir / "tokenizer.json"
    if original.is_file():
        shutil.copyfile(original, target)
    else:  # vocab.txt only: let transformers build the fast tokenizer once, here
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(str(source.tokenizer_dir), use_fast=True).backend_tokenizer.save(str(target))
    return target


def _special_tokens(tokenizer_json: Path) -> dict[str, int]:
    vocab = json.loads(tokenizer_json.read_text(encoding="utf-8"))["model"]["vocab"]
    names = {"cls": "[CLS]", "sep": "[SEP]", "pad": "[PAD]", "unk": "[UNK]", "mask": "[MASK]"}
    return {k: vocab[v] for k, v in names.items() if v in vocab}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("splade-rt", "torch", "transformers", "onnx", "onnxruntime", "tokenizers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _manifest(source, mlm, graphs, tokenizer_json, parity, vocab_chunk) -> dict[str, Any]:
    from .graph import OPSET

    cfg = mlm.config
    entries = {
        path.name: {"precision": precision, "providers": _PROVIDERS[precision], "bytes": path.stat().st_size,
                    "sha256": sha256_file(path)}
        for precision, path in graphs.files.items()
    }
    entries["tokenizer.json"] = {"bytes": tokenizer_json.stat().st_size, "sha256": sha256_file(tokenizer_json)}
    return {
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": {"model": source.ref, "path": str(source.directory), "layout": source.layout,
                   "weights_file": source.weights_file.name, "weights_sha256": source.weights_sha256()},
        "model": {"architecture": "BertForMaskedLM", "model_type": cfg.model_type, "vocab_size": cfg.vocab_size,
                  "hidden_size": cfg.hidden_size, "num_layers": cfg.num_hidden_layers,
                  "num_heads": cfg.num_attention_heads, "pooling": source.pooling, "activation": source.activation,
                  "similarity": source.similarity, "decoder_tied_to_embeddings": graphs.decoder_tied},
        "tokenizer": {"file": "tokenizer.json", "max_length": source.max_length, "lowercase": source.lowercase,
                      "special_tokens": _special_tokens(tokenizer_json), "pad_id": cfg.pad_token_id or 0},
        "graph": {"opset": OPSET, "inputs": [INPUT_IDS, ATTENTION_MASK, TOP_K],
                  "outputs": [OUT_SPARSE, OUT_TOP_VALUES, OUT_TOP_INDICES, OUT_NZ_INDEX, OUT_NZ_VALUE],
                  "vocab_chunk": vocab_chunk, "fusions": graphs.fusions},
        "files": entries,
        "versions": _versions(),
        "parity": parity,
    }
