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

DEFAULT_MODEL = "splade-tiny-msmarco"  # bundled under splade_rt/models/, used when no model is named
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_HUB_PATTERNS = ["*.json", "*.txt", "model.safetensors", "*/config.json", "*/*.json"]


@dataclass
class SourceModel:
    ref: str  # what the user named (hub id, path, or the default's name)
    directory: Path  # holds config.json and the weights
    layout: str  # "transformers" | "sentence-transformers"
    config: dict
    weights_file: Path
    tokenizer_dir: Path
    max_length: int
    lowercase: bool  # sentence-transformers' do_lower_case: lowercase before tokenizing
    pooling: str
    activation: str
    similarity: str

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
        raise ModelSourceError("huggingface_hub is needed to download models: pip install 'splade-rt[export]'") from None
    try:
        return Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS))
    except Exception as e:  # offline, unknown repo, gated, HTTP errors: all end the same way for the user
        name = type(e).__name__
        raise ModelSourceError(
            f"{repo_id}: could not download from the Hugging Face hub ({name}: {str(e).splitlines()[0][:160]}); "
            "if this machine is offline, pass a local model directory instead, "
            "e.g. splade-export path/to/splade-model -o out/"
        ) from None


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
    pooling, activation, max_length, lowercase, similarity = "max", "relu", None, False, "dot"
    model_dir, layout = directory, "transformers"
    modules_file = directory / "modules.json"
    if modules_file.is_file():
        layout = "sentence-transformers"
        model_dir, pooling_dir = _read_modules(modules_file)
        if pooling_dir is not None:
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
    model_type = config.get("model_type")
    archs = config.get("architectures") or []
    if model_type != "bert":
        raise ModelSourceError(
            f"{ref}: architecture '{model_type}' ({', '.join(archs) or 'unknown'}) is not supported; "
            "splade-rt exports BERT masked-LM SPLADE models (BertForMaskedLM)"
        )
    weights = next((model_dir / w for w in _WEIGHT_FILES if (model_dir / w).is_file()), None)
    if weights is None:
        raise ModelSourceError(f"{model_dir}: no model weights ({' or '.join(_WEIGHT_FILES)})")
    if archs and "BertForMaskedLM" not in archs:
        raise ModelSourceError(
            f"{ref}: {', '.join(archs)} is a dense (non-MLM) model: SPLADE needs the masked-LM head "
            "(BertForMaskedLM), whose vocabulary logits become the sparse weights"
        )
    if weights.suffix == ".safetensors":
        _check_mlm_head(weights, ref)
    if not (model_dir / "tokenizer.json").is_file() and not (model_dir / "vocab.txt").is_file():
        raise ModelSourceError(f"{model_dir}: no tokenizer (tokenizer.json or vocab.txt)")
    tok_cfg_file = model_dir / "tokenizer_config.json"
    tok_cfg = _read_json(tok_cfg_file) if tok_cfg_file.is_file() else {}
    positions = int(config.get("max_position_embeddings", 512))
    if max_length is None:
        max_length = tok_cfg.get("model_max_length", positions)
        if not isinstance(max_length, int) or max_length > positions:
            max_length = positions
    return SourceModel(
        ref=ref, directory=model_dir, layout=layout, config=config, weights_file=weights,
        tokenizer_dir=model_dir, max_length=int(min(max_length, positions)), lowercase=lowercase,
        pooling=pooling, activation=activation, similarity=similarity,
    )


def _read_modules(modules_file: Path) -> tuple[Path, Path | None]:
    """Return (transformer dir, pooling dir) from a sentence-transformers modules.json."""
    modules = _read_json(modules_file)
    if not isinstance(modules, list):
        raise ModelSourceError(f"{modules_file}: expected a list of modules")
    root = modules_file.parent
    model_dir = pooling_dir = None
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        path = root / module.get("path", "")
        if kind in ("MLMTransformer", "Transformer") and model_dir is None:
            model_dir = path
        elif kind == "SpladePooling":
            pooling_dir = path
        elif kind in ("Pooling", "Normalize", "Dense"):
            raise ModelSourceError(
                f"{root}: a dense sentence-transformers model ({kind} module): not a SPLADE sparse encoder"
            )
        else:
            raise ModelSourceError(f"{root}: module {module.get('type')} is not supported (MLMTransformer + SpladePooling)")
    if model_dir is None or pooling_dir is None:
        raise ModelSourceError(f"{root}: modules.json must name an MLMTransformer and a SpladePooling module")
    return model_dir, pooling_dir


def _check_mlm_head(weights: Path, ref: str) -> None:
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="np") as f:
            keys = list(f.keys())
    except Exception as e:
        raise ModelSourceError(f"{weights}: unreadable weights ({type(e).__name__}: {e})") from None
    if not any(k.startswith("cls.predictions.") for k in keys):
        raise ModelSourceError(
            f"{ref}: {weights.name} has no masked-LM head (cls.predictions.*): a dense BERT is not a SPLADE model"
        )

