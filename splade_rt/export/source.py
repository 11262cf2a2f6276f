"""Find and vet the model to export: hub id, transformers directory or sentence-transformers directory.

Everything a user can get wrong about the model (wrong kind, missing files, offline hub) is caught
here, before torch loads anything, and reported as one ModelSourceError line naming the fix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import ModelSourceError
from ..manifest import sha256_file
from .architectures import Architecture, architecture_for

DEFAULT_MODEL = "splade-tiny-msmarco"  # bundled under splade_rt/models/, used when no model is named
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_HUB_PATTERNS = ["*.json", "*.txt", "*/config.json", "*/*.json", "sentencepiece.bpe.model"]
SPARSE_LINEAR = "sparse_linear.pt"  # bge-m3's sparse head (FlagEmbedding): Linear(hidden, 1), a torch state dict
_FLAG_FILES = (SPARSE_LINEAR, "colbert_linear.pt")  # what FlagEmbedding's M3 layout has beside the encoder


@dataclass
class SourceModel:
    ref: str  # what the user named (hub id, path, or the default's name)
    directory: Path  # the masked-LM model: config.json, weights, tokenizer
    layout: str  # "transformers" | "sentence-transformers" | "sentence-transformers-router"
    config: dict
    architecture: Architecture
    weights_file: Path
    max_length: int
    lowercase: bool  # sentence-transformers' do_lower_case: lowercase before tokenizing
    pooling: str
    activation: str
    similarity: str
    query_route: Path | None = None  # inference-free models: the SparseStaticEmbedding directory
    head: str = "splade-max"  # the document route's head kind (splade_rt.heads.HEADS)
    head_file: Path | None = None  # token-max: the sparse_linear.pt beside the encoder

    def weights_sha256(self) -> str:
        return sha256_file(self.weights_file)


def default_model_dir() -> Path:
    return Path(str(resources.files("splade_rt") / "models" / DEFAULT_MODEL))


def resolve_source(model: str | None) -> SourceModel:
    """Turn what the user typed into a vetted local model directory."""
    if model is None:
        return inspect_directory(default_model_dir(), ref=f"default:{DEFAULT_MODEL}")
    path = Path(model).expanduser()
    if path.exists():
        return inspect_directory(path, ref=model)
    if _looks_like_hub_id(model):
        return inspect_directory(_download(model), ref=model)
    raise ModelSourceError(f"{model}: no such directory, and not a Hugging Face hub id (owner/name)")


def _looks_like_hub_id(model: str) -> bool:
    parts = model.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not model.startswith((".", "~")) and "\\" not in model


def _download(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - the export extra installs it
        raise ModelSourceError("huggingface_hub is needed to download models: "
                               "pip install 'splade-rt[export]'") from None
    try:
        return Path(snapshot_download(repo_id, allow_patterns=[*_HUB_PATTERNS, *_weights_patterns(repo_id),
                                                               SPARSE_LINEAR]))
    except Exception as e:  # noqa: BLE001 - offline, unknown repo, gated, HTTP errors: one line for the user
        name = type(e).__name__
        raise ModelSourceError(
            f"{repo_id}: could not download from the Hugging Face hub ({name}: {str(e).splitlines()[0][:160]}); "
            "if this machine is offline, pass a local model directory instead, "
            "e.g. splade-export path/to/splade-model -o out/"
        ) from None


def _weights_patterns(repo_id: str) -> list[str]:
    """One weights file: safetensors where the repository has it, else pytorch_model.bin (bge-m3's
    repository has only the .bin). Both where the listing fails (offline, from the local cache)."""
    try:
        from huggingface_hub import list_repo_files

        files = set(list_repo_files(repo_id))
        names = [next((w for w in _WEIGHT_FILES if w in files), _WEIGHT_FILES[0])]
    except Exception:  # noqa: BLE001 - snapshot_download says what is wrong, or serves the cache
        names = list(_WEIGHT_FILES)
    return [pattern for name in names for pattern in (name, f"*/{name}")]


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelSourceError(f"{path}: unreadable JSON ({e})") from None
    if not isinstance(data, (dict, list)):
        raise ModelSourceError(f"{path}: unexpected JSON content")
    return data


def inspect_directory(directory: Path, ref: str) -> SourceModel:
    if not directory.is_dir():
        raise ModelSourceError(f"{directory}: not a directory; pass a model directory or a hub id")
    if any((directory / name).is_file() for name in _FLAG_FILES):
        return _inspect_flag_m3(directory, ref)
    pooling, activation, max_length, lowercase, similarity = "max", "relu", None, False, "dot"
    model_dir, layout, query_dir = directory, "transformers", None
    modules_file = directory / "modules.json"
    if modules_file.is_file():
        modules = _read_modules(modules_file)
        model_dir, pooling_dir, query_dir = modules.model, modules.pooling, modules.query
        layout = "sentence-transformers-router" if modules.router else "sentence-transformers"
        cfg = _read_json(pooling_dir / "config.json") if (pooling_dir / "config.json").is_file() else {}
        pooling = cfg.get("pooling_strategy", "max")
        activation = cfg.get("activation_function", "relu")
        st_cfg_file = model_dir / "sentence_bert_config.json"
        if st_cfg_file.is_file():
            st_cfg = _read_json(st_cfg_file)
            max_length = st_cfg.get("max_seq_length")
            lowercase = bool(st_cfg.get("do_lower_case", False))
        top_cfg = directory / "config_sentence_transformers.json"
        if top_cfg.is_file():
            similarity = _read_json(top_cfg).get("similarity_fn_name") or "dot"
    if pooling != "max":
        raise ModelSourceError(
            f"{ref}: pooling '{pooling}' is not supported: splade-rt fuses max pooling (SPLADE v2 and later) by "
            "reducing before the activation, which sum pooling (SPLADE v1) does not allow"
        )
    if activation not in ("relu", "log1p_relu"):
        raise ModelSourceError(f"{ref}: SPLADE activation '{activation}' is not supported (relu or log1p_relu)")

    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise ModelSourceError(f"{model_dir}: no config.json; not a transformers model directory")
    config = _read_json(config_file)
    classes = config.get("architectures") or []
    arch = architecture_for(config.get("model_type"), ref, classes)
    weights = next((model_dir / w for w in _WEIGHT_FILES if (model_dir / w).is_file()), None)
    if weights is None:
        raise ModelSourceError(f"{model_dir}: no model weights ({' or '.join(_WEIGHT_FILES)})")
    if classes and arch.mlm_class not in classes:
        raise ModelSourceError(
            f"{ref}: {', '.join(classes)} is a dense (non-MLM) model: SPLADE needs the masked-LM head "
            f"({arch.mlm_class}), whose vocabulary logits become the sparse weights"
        )
    if weights.suffix == ".safetensors":
        _check_mlm_head(weights, ref, arch)
    if not (model_dir / "tokenizer.json").is_file() and not (model_dir / "vocab.txt").is_file():
        raise ModelSourceError(f"{model_dir}: no tokenizer (tokenizer.json or vocab.txt)")
    positions = _positions(config, arch)
    if max_length is None:
        max_length = _tokenizer_limit(model_dir, positions)
    _check_vocab(model_dir, config, ref)
    return SourceModel(
        ref=ref, directory=model_dir, layout=layout, config=config, architecture=arch, weights_file=weights,
        max_length=int(min(max_length, positions)), lowercase=lowercase, pooling=pooling, activation=activation,
        similarity=similarity, query_route=query_dir,
    )


@dataclass
class _Modules:
    model: Path  # the masked-LM transformer's directory
    pooling: Path  # SpladePooling's directory
    query: Path | None  # SparseStaticEmbedding's directory (inference-free query route)
    router: bool


_MLM_MODULES = ("MLMTransformer", "Transformer")
_DENSE_MODULES = ("Pooling", "Normalize", "Dense")


def _read_modules(modules_file: Path) -> _Modules:
    """The MLM, pooling and (for a Router) static query module directories of a sentence-transformers model."""
    modules = _read_json(modules_file)
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ModelSourceError(f"{modules_file}: expected a list of modules")
    root = modules_file.parent
    kinds = [(_kind(m.get("type")), root / m.get("path", "")) for m in modules]
    if len(kinds) == 1 and kinds[0][0] == "Router":
        return _read_router(kinds[0][1], root)
    model, pooling = _document_route(kinds, root)
    return _Modules(model, pooling, None, router=False)


def _kind(module_type) -> str:
    return str(module_type or "").rsplit(".", 1)[-1]


def _document_route(kinds: list[tuple[str, Path]], root: Path) -> tuple[Path, Path]:
    names = [k for k, _ in kinds]
    dense = [k for k in names if k in _DENSE_MODULES]
    if dense:
        raise ModelSourceError(f"{root}: a dense sentence-transformers model ({dense[0]} module): not a SPLADE "
                               f"sparse encoder (a bge-m3 model has its sparse head in {SPARSE_LINEAR} beside "
                               "config.json)")
    if len(kinds) != 2 or names[0] not in _MLM_MODULES or names[1] != "SpladePooling":
        raise ModelSourceError(f"{root}: modules {', '.join(names) or 'none'} are not supported; a SPLADE model is "
                               "a masked-LM Transformer (or MLMTransformer) followed by SpladePooling")
    model_dir, pooling_dir = kinds[0][1], kinds[1][1]
    st_cfg = model_dir / "sentence_bert_config.json"
    task = _read_json(st_cfg).get("transformer_task", "fill-mask") if st_cfg.is_file() else "fill-mask"
    if task != "fill-mask":
        raise ModelSourceError(f"{model_dir}: Transformer task '{task}': SPLADE needs the masked-LM logits "
                               "(transformer_task 'fill-mask')")
    return model_dir, pooling_dir


def _read_router(path: Path, root: Path) -> _Modules:
    """A Router: the document route must be MLM + SpladePooling; the query route the same modules or a
    SparseStaticEmbedding (an inference-free model, whose queries are a per-token weight lookup)."""
    config_file = path / "router_config.json"
    if not config_file.is_file():
        raise ModelSourceError(f"{config_file}: missing (a Router module's routes are defined there)")
    config = _read_json(config_file)
    types, structure = config.get("types"), config.get("structure")
    if not isinstance(types, dict) or not isinstance(structure, dict):
        raise ModelSourceError(f"{config_file}: expected 'types' and 'structure' objects")
    parameters = config.get("parameters") or {}
    mappings = {str(k).replace('"', "'"): v for k, v in (parameters.get("route_mappings") or {}).items()}

    def route(task: str) -> list[str]:
        name = next((mappings[k] for k in (f"('{task}', 'text')", f"('{task}', None)") if k in mappings), None)
        name = name or (task if task in structure else parameters.get("default_route"))
        if name not in structure:
            raise ModelSourceError(f"{config_file}: no '{task}' route (routes: {', '.join(structure)})")
        return list(structure[name])

    def modules(ids: list[str]) -> list[tuple[str, Path]]:
        return [(_kind(types.get(i)), path / i) for i in ids]

    document, query = route("document"), route("query")
    model, pooling = _document_route(modules(document), root)
    if query == document:
        return _Modules(model, pooling, None, router=True)
    query_modules = modules(query)
    if [k for k, _ in query_modules] != ["SparseStaticEmbedding"]:
        raise ModelSourceError(f"{config_file}: query route {', '.join(k for k, _ in query_modules)} is not supported "
                               "(SparseStaticEmbedding, or the document route's modules)")
    return _Modules(model, pooling, query_modules[0][1], router=True)


def _check_mlm_head(weights: Path, ref: str, arch: Architecture) -> None:
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="np") as f:
            keys = list(f.keys())
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for a bad file
        raise ModelSourceError(f"{weights}: unreadable weights ({type(e).__name__}: {e})") from None
    if not any(k.startswith(arch.head_prefixes) for k in keys):
        raise ModelSourceError(
            f"{ref}: {weights.name} has no masked-LM head ({', '.join(p + '*' for p in arch.head_prefixes)}): "
            f"a dense {arch.model_type} checkpoint is not a SPLADE model"
        )


def _inspect_flag_m3(directory: Path, ref: str) -> SourceModel:
    """bge-m3's layout, as the hub publishes it (the encoder at the top, sentence-transformers' dense
    modules beside it) or as FlagEmbedding's fine-tuning saves it (encoder, tokenizer, sparse_linear.pt,
    colbert_linear.pt): the encoder's last hidden states and the token-max head (heads.HEADS)."""
    head_file = directory / SPARSE_LINEAR
    if not head_file.is_file():
        raise ModelSourceError(f"{directory}: no {SPARSE_LINEAR}: bge-m3's sparse head (a Linear(hidden, 1) that "
                               "FlagEmbedding saves beside the encoder) is missing; copy it from the model's "
                               "repository")
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise ModelSourceError(f"{directory}: no config.json; not a transformers model directory")
    config = _read_json(config_file)
    arch = architecture_for(config.get("model_type"), ref, config.get("architectures") or [])
    weights = next((directory / w for w in _WEIGHT_FILES if (directory / w).is_file()), None)
    if weights is None:
        raise ModelSourceError(f"{directory}: no model weights ({' or '.join(_WEIGHT_FILES)})")
    if not (directory / "tokenizer.json").is_file():
        raise ModelSourceError(f"{directory}: no tokenizer.json")
    max_length = None
    st_cfg = directory / "sentence_bert_config.json"
    if st_cfg.is_file():
        max_length = _read_json(st_cfg).get("max_seq_length")
    positions = _positions(config, arch)
    if max_length is None:
        max_length = _tokenizer_limit(directory, positions)
    _check_vocab(directory, config, ref)
    return SourceModel(ref=ref, directory=directory, layout="flagembedding-m3", config=config, architecture=arch,
                       weights_file=weights, max_length=int(min(max_length, positions)), lowercase=False,
                       pooling="max", activation="relu", similarity="dot", head="token-max", head_file=head_file)


def _positions(config: dict, arch: Architecture) -> int:
    """Tokens the position embeddings cover (RoBERTa-style models start after the padding index)."""
    positions = int(config.get("max_position_embeddings", 512))
    if arch.model_type in ("roberta", "xlm-roberta"):
        positions -= int(config.get("pad_token_id", 1)) + 1
    return positions


def _tokenizer_limit(model_dir: Path, positions: int) -> int:
    tok_cfg_file = model_dir / "tokenizer_config.json"
    limit = (_read_json(tok_cfg_file) if tok_cfg_file.is_file() else {}).get("model_max_length", positions)
    return limit if isinstance(limit, int) and limit <= positions else positions


def _check_vocab(model_dir: Path, config: dict, ref: str) -> None:
    """Every token id the tokenizer gives has a row in the model: a tokenizer from another model would
    index past the embedding (an error deep in onnxruntime) or score the wrong terms."""
    tokenizer_file = model_dir / "tokenizer.json"
    if not tokenizer_file.is_file():
        return
    data = _read_json(tokenizer_file)
    vocab = (data.get("model") or {}).get("vocab")
    ids = list(vocab.values()) if isinstance(vocab, dict) else list(range(len(vocab or [])))
    ids += [t.get("id", 0) for t in data.get("added_tokens") or [] if isinstance(t, dict)]
    size = int(config.get("vocab_size", 0))
    if ids and max(ids) >= size:
        raise ModelSourceError(f"{ref}: the tokenizer has token ids up to {max(ids)} but the model's vocabulary is "
                               f"{size} (config.json vocab_size): tokenizer.json is not this model's")
