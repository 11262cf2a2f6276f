"""The manifest format (`splade.json`): the one thing the exporter and the runtime share.

The exporter writes it; the runtime parses it once into typed records and trusts nothing else
about the directory: which ONNX file holds which precision (a row of variants.VARIANTS), how to
tokenize, the inference-free query table, and a hash of each file to catch corruption. It names no
execution provider: which graph runs on which device is the provider table's order
(runtime.providers), so a new provider needs no re-export. Every field is checked
at parse time, so a hand-edited or truncated manifest fails at load with one line naming the
field, not later with a KeyError from deep in the runtime. Kept dependency-free so the runtime can
import it without the exporter's stack.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ExportDirError
from .heads import DEFAULT_HEADS, HEADS, ROUTES, Head
from .variants import VARIANTS, Variant

MANIFEST_NAME = "splade.json"
# 2: model families, per-file providers that the runtime follows, the inference-free query table.
# 3: the fp32-native variant (a states graph and the native head's arrays).
# 4: the int8-native variant (the int8 encoder's states graph, the same head).
# 5: graphs record their precision only, no execution providers (versions 2-4 list them: ignored).
# 6: model.heads, the head kind of each route (heads.HEADS); earlier versions: SPLADE's head, and the
#    lookup for queries where a query table is present.
# Version 1 manifests (BERT only) parse with the defaults that version implied.
FORMAT_VERSION = 6

# Graph interface, fixed since format version 1.
INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
TOP_K = "top_k"
OUT_SPARSE = "sparse"  # [batch, vocab] float32
OUT_TOP_VALUES = "top_values"  # [batch, k] float32, descending
OUT_TOP_INDICES = "top_indices"  # [batch, k] int64
OUT_NZ_INDEX = "nonzero_index"  # [2, nnz] int64 (row, column), row-major order
OUT_NZ_VALUE = "nonzero_value"  # [nnz] float32
OUT_DENSE = "dense"  # [batch, hidden] float32: only the graphs of a head with a dense vector (heads.Head.dense)

# the native variants (variants.Variant.native) are states graphs ([batch, seq, hidden]) whose head
# runs in kernels/_head.c, with the manifest's native_head arrays; the others are fused graphs with
# the interface above
ACTIVATIONS = ("relu", "log1p_relu")
SIMILARITIES = ("dot", "cosine")


@dataclass(frozen=True)
class FileEntry:
    name: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class GraphFile(FileEntry):
    precision: str  # a variants.VARIANTS name
    data: str | None = None  # its weights file, beside it, for a graph past protobuf's 2 GiB (format 6)

    @property
    def variant(self) -> Variant:
        return VARIANTS[self.precision]


@dataclass(frozen=True)
class ModelInfo:
    architecture: str  # the transformers class exported, e.g. BertForMaskedLM
    model_type: str  # the family, e.g. bert, roberta
    vocab_size: int
    hidden_size: int
    num_layers: int
    pooling: str
    activation: str
    similarity: str
    heads: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_HEADS))  # route -> heads.HEADS name

    def head(self, route: str = "document") -> Head:
        return HEADS[self.heads[route]]


@dataclass(frozen=True)
class TokenizerInfo:
    file: str
    max_length: int
    lowercase: bool  # lowercase before tokenizing (sentence-transformers' do_lower_case)
    pad_id: int
    special_tokens: dict[str, int]


@dataclass(frozen=True)
class QueryTable:
    """Inference-free queries: a per-token weight table and the tokenizer of the query route."""

    file: str  # .npy float32 [vocab]
    tokenizer: str
    max_length: int | None  # truncation of the query tokenizer; None: none
    lowercase: bool


@dataclass(frozen=True)
class Manifest:
    path: Path  # the splade.json it was read from
    format_version: int
    model: ModelInfo
    tokenizer: TokenizerInfo
    graphs: tuple[GraphFile, ...]
    files: dict[str, FileEntry]  # every file of the export, graphs included, by name
    query_table: QueryTable | None = None
    native_head: str | None = None  # the native variants' head arrays (.npz: kernels.native_head.HEAD_ARRAYS)
    # provenance and records for people (not used to run): where it came from, how the graph was
    # built, what the parity check measured
    source: dict[str, Any] = field(default_factory=dict)
    graph_info: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)

    @property
    def directory(self) -> Path:
        return self.path.parent

    def graph(self, precision: str) -> GraphFile | None:
        return next((g for g in self.graphs if g.precision == precision), None)

    def verify_file(self, name: str, verify: bool = True) -> Path:
        """The file exists and, when verify, its sha256 is the manifest's: one clear error otherwise."""
        path = self.directory / name
        if not path.is_file():
            raise ExportDirError(f"{path}: missing (listed in the manifest)")
        entry = self.files.get(name)
        if verify and entry is not None and sha256_file(path) != entry.sha256:
            raise ExportDirError(f"{path}: contents differ from the manifest's hash (corrupt, truncated or "
                                 "replaced); re-export the model")
        if isinstance(entry, GraphFile) and entry.data is not None:  # onnxruntime reads it from beside the graph
            self.verify_file(entry.data, verify)
        return path


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_manifest(directory: str | Path) -> Manifest:
    """Load and validate `splade.json`: one ExportDirError naming the file and the field on any problem."""
    directory = Path(directory)
    if not directory.exists():
        raise ExportDirError(f"{directory}: no such directory (export a model into it first: "
                             f"splade-export MODEL -o {directory})")
    if not directory.is_dir():
        raise ExportDirError(f"{directory}: not a directory; pass the directory splade-export wrote")
    path = directory / MANIFEST_NAME
    if not path.is_file():
        hint = (f"it looks like a model, not an export: export it to a new directory with "
                f"splade-export {directory} -o {directory.name}-onnx/" if (directory / "config.json").is_file()
                else f"export a model into it with splade-export MODEL -o {directory}")
        raise ExportDirError(f"{path}: missing; {directory} is not a splade-rt export ({hint})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportDirError(f"{path}: corrupt manifest ({e}); re-run splade-export with --force") from None
    return parse_manifest(data, path)


def parse_manifest(data: Any, path: Path) -> Manifest:
    root = _Fields(data, path, "")
    version = root.int("format_version", minimum=1)
    if version > FORMAT_VERSION:
        raise ExportDirError(f"{path}: manifest format {version} is newer than this splade-rt understands "
                             f"({FORMAT_VERSION}); upgrade splade-rt")
    m, t = root.section("model"), root.section("tokenizer")
    model = ModelInfo(
        architecture=m.str("architecture"), model_type=m.str("model_type"),
        vocab_size=m.int("vocab_size", minimum=1), hidden_size=m.int("hidden_size", minimum=1),
        num_layers=m.int("num_layers", minimum=1), pooling=m.choice("pooling", ("max",)),
        activation=m.choice("activation", ACTIVATIONS), similarity=m.choice("similarity", SIMILARITIES),
        heads=_heads(m, data, path),
    )
    tokenizer = TokenizerInfo(
        file=t.str("file"), max_length=t.int("max_length", minimum=2), lowercase=t.bool("lowercase"),
        pad_id=t.int("pad_id", minimum=0), special_tokens=t.int_map("special_tokens"),
    )
    files: dict[str, FileEntry] = {}
    graphs: list[GraphFile] = []
    for name, entry in root.section("files").items():
        f = _Fields(entry, path, f"files.{name}.")
        size, digest = f.int("bytes", minimum=0), f.sha256("sha256")
        if "precision" in entry:
            data_file = f.str("data") if entry.get("data") is not None else None
            graphs.append(GraphFile(name, size, digest, f.choice("precision", tuple(VARIANTS)), data_file))
            files[name] = graphs[-1]
        else:
            files[name] = FileEntry(name, size, digest)
    if not graphs:
        raise ExportDirError(f"{path}: field 'files' lists no ONNX graph; re-run splade-export with --force")
    for needed in (tokenizer.file,):
        if needed not in files:
            raise ExportDirError(f"{path}: field 'files' has no entry for the tokenizer file '{needed}'")
    for graph in graphs:
        if graph.data is not None and graph.data not in files:
            raise ExportDirError(f"{path}: field 'files' has no entry for {graph.name}'s weights file '{graph.data}'")
    query_table = None
    if data.get("query_table") is not None:
        q = root.section("query_table")
        query_table = QueryTable(file=q.str("file"), tokenizer=q.str("tokenizer"),
                                 max_length=q.optional_int("max_length", minimum=1), lowercase=q.bool("lowercase"))
        for name, what in ((query_table.file, "file"), (query_table.tokenizer, "tokenizer")):
            if name not in files:
                raise ExportDirError(f"{path}: field 'files' has no entry for query_table.{what} '{name}'")
    native_head = None
    if any(g.variant.native for g in graphs):
        native_head = root.str("native_head")
        if native_head not in files:
            raise ExportDirError(f"{path}: field 'files' has no entry for native_head '{native_head}'")
    return Manifest(path=path, format_version=version, model=model, tokenizer=tokenizer, graphs=tuple(graphs),
                    files=files, query_table=query_table, native_head=native_head,
                    source=dict(data.get("source") or {}), graph_info=dict(data.get("graph") or {}),
                    parity=dict(data.get("parity") or {}))


def _heads(m: _Fields, data: dict, path: Path) -> dict[str, str]:
    """model.heads (format 6), or what older formats implied: SPLADE's head, the lookup for queries
    where a query table is present. A route's head must be a HEADS row; documents run a graph."""
    if "heads" not in m.data:
        return {**DEFAULT_HEADS, **({"query": "static-lookup"} if data.get("query_table") is not None else {})}
    h = m.section("heads")
    heads = {route: h.choice(route, tuple(HEADS)) for route in ROUTES}
    if not HEADS[heads["document"]].graph:
        raise h._fail("document", f"is {heads['document']!r}, which runs no graph; documents need a graph head")
    if (heads["query"] == "static-lookup") != (data.get("query_table") is not None):
        raise h._fail("query", "and query_table disagree (the static-lookup head is the query table)")
    return heads


def write_manifest(directory: str | Path, manifest: dict[str, Any]) -> Path:
    """Write the exporter's dict, after checking that it parses: a manifest the runtime would refuse is
    a bug in the exporter, caught before anything is published."""
    path = Path(directory) / MANIFEST_NAME
    parse_manifest(manifest, path)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


class _Fields:
    """Typed access to one JSON object of the manifest; each failure names the dotted field."""

    def __init__(self, data: Any, path: Path, prefix: str) -> None:
        if not isinstance(data, dict):
            what = f"field '{prefix.rstrip('.')}'" if prefix else "the manifest"
            raise ExportDirError(f"{path}: {what} is not a JSON object; re-run splade-export with --force")
        self.data, self.path, self.prefix = data, path, prefix

    def _fail(self, key: str, problem: str) -> ExportDirError:
        return ExportDirError(f"{self.path}: field '{self.prefix}{key}' {problem}; re-export the model with "
                              "this splade-rt (splade-export MODEL -o DIR --force)")

    def _get(self, key: str) -> Any:
        if key not in self.data:
            raise self._fail(key, "is missing")
        return self.data[key]

    def section(self, key: str) -> _Fields:
        value = self._get(key)
        if not isinstance(value, dict):
            raise self._fail(key, "is not a JSON object")
        return _Fields(value, self.path, f"{self.prefix}{key}.")

    def items(self):
        return self.data.items()

    def str(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str) or not value:
            raise self._fail(key, f"must be a non-empty string, not {value!r:.40}")
        return value

    def choice(self, key: str, allowed: tuple[str, ...]) -> str:
        value = self.str(key)
        if value not in allowed:
            raise self._fail(key, f"is {value!r}, expected one of {', '.join(allowed)}")
        return value

    def int(self, key: str, minimum: int) -> int:
        value = self._get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise self._fail(key, f"must be an integer >= {minimum}, not {value!r:.40}")
        return value

    def optional_int(self, key: str, minimum: int) -> int | None:
        return None if self.data.get(key) is None else self.int(key, minimum)

    def bool(self, key: str) -> bool:
        value = self._get(key)
        if not isinstance(value, bool):
            raise self._fail(key, f"must be true or false, not {value!r:.40}")
        return value

    def sha256(self, key: str) -> str:
        value = self.str(key)
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise self._fail(key, "is not a sha256 hex digest")
        return value

    def int_map(self, key: str) -> dict[str, int]:
        value = self._get(key)
        if not isinstance(value, dict) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                  for v in value.values()):
            raise self._fail(key, "must map names to integer token ids")
        return dict(value)
