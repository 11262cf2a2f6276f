"""The manifest format (`splade.json`): the one thing the exporter and the runtime share.

The exporter writes it; the runtime reads it and trusts nothing else about the directory: which
ONNX file to run on which device, how to tokenize, and a hash of each file to catch corruption.
Kept dependency-free so the runtime can import it without the exporter's stack.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .errors import ExportDirError

MANIFEST_NAME = "splade.json"
FORMAT_VERSION = 1

# Graph interface, fixed by format version 1.
INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
TOP_K = "top_k"
OUT_SPARSE = "sparse"  # [batch, vocab] float32
OUT_TOP_VALUES = "top_values"  # [batch, k] float32, descending
OUT_TOP_INDICES = "top_indices"  # [batch, k] int64
OUT_NZ_INDEX = "nonzero_index"  # [2, nnz] int64 (row, column), row-major order
OUT_NZ_VALUE = "nonzero_value"  # [nnz] float32


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """Load and validate `splade.json`, raising ExportDirError with the file named on any problem."""
    directory = Path(directory)
    if not directory.exists():
        raise ExportDirError(f"{directory}: no such directory (export a model first: splade-export MODEL -o {directory})")
    if not directory.is_dir():
        raise ExportDirError(f"{directory}: not a directory; pass the directory splade-export wrote")
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise ExportDirError(
            f"{path}: missing; {directory} is not a splade-rt export (run splade-export MODEL -o {directory})"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportDirError(f"{path}: corrupt manifest ({e}); re-run splade-export with --force") from None
    if not isinstance(manifest, dict):
        raise ExportDirError(f"{path}: corrupt manifest (not a JSON object); re-run splade-export with --force")
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise ExportDirError(f"{path}: no format_version; re-run splade-export with --force")
    if version > FORMAT_VERSION:
        raise ExportDirError(
            f"{path}: manifest format {version} is newer than this splade-rt understands ({FORMAT_VERSION}); "
            "upgrade splade-rt"
        )
    for key in ("files", "tokenizer", "model"):
        if not isinstance(manifest.get(key), dict):
            raise ExportDirError(f"{path}: '{key}' section missing; re-run splade-export with --force")
    return manifest


def write_manifest(directory: str | Path, manifest: dict[str, Any]) -> Path:
    path = Path(directory) / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def verify_file(path: Path, manifest: dict, verify: bool) -> None:
    """The file exists and, when verify, its sha256 is the manifest's: a clear error naming it otherwise."""
    if not path.is_file():
        raise ExportDirError(f"{path}: missing (listed in the manifest)")
    expected = manifest["files"].get(path.name, {}).get("sha256")
    if verify and expected and sha256_file(path) != expected:
        raise ExportDirError(f"{path}: contents differ from the manifest's hash (corrupt, truncated or "
                             "replaced); re-export the model")
