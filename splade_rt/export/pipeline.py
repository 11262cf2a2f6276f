"""One export, start to finish: resolve, export, check, write the manifest, then publish atomically.

Everything is built in a temporary directory beside the output and renamed into place only after
the parity check passed, so a failed or interrupted export leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import ExportDirError, ModelSourceError, SpladeError
from ..kernels import DEFAULT_VOCAB_CHUNK
from ..machine import peak_rss_mib
from ..manifest import FORMAT_VERSION, read_manifest, sha256_file, write_manifest
from .source import SourceModel, resolve_source

QUERY_WEIGHTS = "query_weights.npy"
QUERY_TOKENIZER = "query_tokenizer.json"


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
    int8: bool = False,
    activation: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Export `model` (hub id, directory, None: the bundled model) to `out`. activation: the SPLADE
    activation of a plain transformers directory, which records none (sentence-transformers models
    say theirs in SpladePooling's config). int8: also write the opt-in, lossy int8-encoder graph."""
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
    if activation is not None:
        if activation not in ("relu", "log1p_relu"):
            raise SpladeError(f"--activation {activation}: expected relu or log1p_relu")
        if source.head != "splade-max":
            raise SpladeError(f"--activation {activation}: SPLADE's activation; {source.ref} has the {source.head} "
                              "head (bge-m3's lexical weights take relu)")
        if source.layout != "transformers" and activation != source.activation:
            raise SpladeError(f"--activation {activation}: the model's SpladePooling says {source.activation}")
        source.activation = activation
    work = _make_workdir(out)
    try:
        from .graph import build_graphs
        from .heads import export_head
        from .parity import check_parity, summary_lines

        log(f"exporting {source.ref} ({source.architecture.model_type}, {source.layout} layout, {source.head} head, "
            f"max length {source.max_length})")
        mlm = export_head(source).load(source)
        graphs = build_graphs(mlm, source, work, vocab_chunk=vocab_chunk, fp16=fp16, screened=screened, int8=int8)
        tokenizer_json = _write_tokenizer(source.directory, work / "tokenizer.json")
        query_table = _write_query_table(source, work)
        log("checking parity against the torch reference")
        parity = check_parity(mlm, source, graphs.files, tokenizer_json, query_table)
        for line in summary_lines(parity):
            log(line)
        manifest = _manifest(source, mlm, graphs, tokenizer_json, query_table, parity, vocab_chunk)
        manifest["export_seconds"] = round(time.perf_counter() - start, 2)
        manifest["export_peak_rss_bytes"] = int(peak_rss_mib() * 2**20)  # this process's, so far (VmHWM)
        write_manifest(work, manifest)
        if not parity["passed"]:
            raise ParityError("exported graph failed the parity check (numbers above); nothing was written")
        _publish(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log(f"wrote {out} in {manifest['export_seconds']:.1f} s, peak RSS "
        f"{manifest['export_peak_rss_bytes'] / 2**30:.2f} GiB: "
        + ", ".join(f"{name} {info['bytes'] / 2**20:.1f} MiB" for name, info in manifest["files"].items()))
    return manifest


def recheck(out: str | Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Re-run the parity check of an existing export against its recorded source and update the manifest."""
    from .heads import export_head
    from .parity import check_parity, summary_lines

    out = Path(out)
    manifest = read_manifest(out)
    for name in manifest.files:
        manifest.verify_file(name)
    ref = str(manifest.source.get("model", ""))
    if not ref:
        raise ExportDirError(f"{manifest.path}: field 'source.model' is missing; cannot find the model to check "
                             "against")
    source = resolve_source(None if ref.startswith("default:") else ref)
    source.max_length = manifest.tokenizer.max_length
    if source.weights_sha256() != manifest.source.get("weights_sha256"):
        raise ExportDirError(f"{ref}: weights changed since the export (hash differs); re-export with --force")
    mlm = export_head(source).load(source)
    graphs = {g.precision: out / g.name for g in manifest.graphs}
    query = manifest.query_table
    query_table = (out / query.file, out / query.tokenizer) if query is not None else None
    parity = check_parity(mlm, source, graphs, out / manifest.tokenizer.file, query_table)
    for line in summary_lines(parity):
        log(line)
    data = json.loads(manifest.path.read_text(encoding="utf-8"))
    data["parity"] = parity
    write_manifest(out, data)
    if not parity["passed"]:
        raise ParityError(f"{out}: parity check failed (numbers above)")
    return manifest


def _make_workdir(out: Path) -> Path:
    parent = out.parent if str(out.parent) else Path(".")
    blocker = next((p for p in [parent, *parent.parents] if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise ExportDirError(f"{out}: cannot write there ({blocker} is a file, not a directory); choose another "
                             "-o directory")
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


def _write_tokenizer(model_dir: Path, target: Path) -> Path:
    original = model_dir / "tokenizer.json"
    if original.is_file():
        shutil.copyfile(original, target)
    else:  # vocab.txt only: let transformers build the fast tokenizer once, here
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(str(model_dir)).backend_tokenizer.save(str(target))
    return target


def _write_query_table(source: SourceModel, work: Path) -> tuple[Path, Path] | None:
    """An inference-free model's query route: its per-token weights and its own tokenizer."""
    if source.query_route is None:
        return None
    import numpy as np

    from .reference import static_query_weights

    weights = static_query_weights(source.query_route)
    vocab = int(source.config["vocab_size"])
    if weights.shape != (vocab,):
        raise ModelSourceError(f"{source.query_route}: query weights have shape {weights.shape}, expected ({vocab},) "
                               "(one weight per vocabulary token)")
    table = work / QUERY_WEIGHTS
    np.save(table, weights)
    return table, _write_tokenizer(source.query_route, work / QUERY_TOKENIZER)


def _special_tokens(model_dir: Path, arch) -> dict[str, int]:
    """Special token ids by role, as the model's tokenizer names them (the family's defaults otherwise)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    vocab = tok.get_vocab()
    out = {}
    for role, default in arch.special_tokens.items():
        token = getattr(tok, f"{role}_token", None) or default
        if token in vocab:
            out[role] = int(vocab[token])
    return out


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("splade-rt", "torch", "transformers", "onnx", "onnxruntime", "tokenizers"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


def _entry(path: Path, **extra: Any) -> dict[str, Any]:
    return {**extra, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _manifest(source, mlm, graphs, tokenizer_json, query_table, parity, vocab_chunk) -> dict[str, Any]:
    from .graph import CPU_UNFUSED, OPSET
    from .heads import export_head
    from .reference import tokenizer_max_length

    cfg, arch = mlm.config, source.architecture
    # each graph's precision only: which graph runs on which device is the provider table's order
    entries = {path.name: _entry(path, precision=precision, **({"data": graphs.data[precision].name}
                                                              if precision in graphs.data else {}))
               for precision, path in graphs.files.items()}
    entries.update({path.name: _entry(path) for path in graphs.data.values()})
    entries[tokenizer_json.name] = _entry(tokenizer_json)
    native_head = graphs.native_head
    if native_head is not None:
        entries[native_head.name] = _entry(native_head)
    special = _special_tokens(source.directory, arch)
    query, query_head = None, source.head
    if query_table is not None:
        table, query_tokenizer = query_table
        entries[table.name] = _entry(table)
        entries[query_tokenizer.name] = _entry(query_tokenizer)
        query_head = "static-lookup"
        query = {"file": table.name, "tokenizer": query_tokenizer.name,
                 "max_length": tokenizer_max_length(source.query_route), "lowercase": False}
    return {
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": {"model": source.ref, "path": str(source.directory), "layout": source.layout,
                   "weights_file": source.weights_file.name, "weights_sha256": source.weights_sha256()},
        "model": {"architecture": export_head(source).architecture(mlm, source), "model_type": arch.model_type,
                  "vocab_size": cfg.vocab_size, "heads": {"document": source.head, "query": query_head},
                  "hidden_size": cfg.hidden_size, "num_layers": cfg.num_hidden_layers,
                  "num_heads": cfg.num_attention_heads, "pooling": source.pooling, "activation": source.activation,
                  "similarity": source.similarity, "decoder_tied_to_embeddings": graphs.decoder_tied},
        "tokenizer": {"file": tokenizer_json.name, "max_length": source.max_length, "lowercase": source.lowercase,
                      "special_tokens": special, "pad_id": special.get("pad", 0)},
        "query_table": query,
        "native_head": native_head.name if native_head is not None else None,
        # the graph interface is fixed by the format version (manifest.py); this records how it was built
        "graph": {"opset": OPSET, "vocab_chunk": vocab_chunk, "fusions": graphs.fusions, "optimizer": arch.optimizer,
                  "cpu_unfused": list(CPU_UNFUSED)},
        "files": entries,
        "versions": _versions(),
        "parity": parity,
    }

