"""The base-size model of benchmarks.run (hidden 768, 12 layers, 30,522-token vocabulary), and its text.

No trained base-size SPLADE model can be fetched here, so the model is random with a SPLADE-like
head (tests/random_models.py, the bundled model's WordPiece vocabulary). The encoder's cost is
that of any BERT-base; the screened graph's gain depends on how few vocab entries its bound lets
through, which depends on trained weights: the candidates per true non-zero measured on it are for
random weights, not a prediction for a trained model. Its passages are held-out SciFact ones (title
and text), max length 256.
"""

from __future__ import annotations

from pathlib import Path

from .common import CACHE, cached_export, collection_texts

MAX_LENGTH = 256
LABEL = "random BERT-base (768 x 12, vocab 30522), SPLADE-like head (z=4)"


CPU_EXPORT = {"fp16": False, "int8": True}  # the CPU benchmarks' graphs
GPU_EXPORT = {"fp16": True, "screened": False, "int8": False}  # benchmarks.gpu_check's: fp16 and fp32


def build(root: Path = CACHE / "base-size", *, size: tuple[int, int, int] = (768, 12, 12),
          export: dict | None = None, log=lambda _: None) -> tuple[Path, Path]:
    """The random model (size: hidden, layers, heads) and its export with the given export_model
    options (default CPU_EXPORT), both cached: they take minutes on 2 cores."""
    from random_models import make_model

    from splade_rt.export.source import default_model_dir

    model = root / "model"
    if not (model / "config.json").is_file():
        hidden, layers, heads = size
        make_model("bert", model, hidden=hidden, layers=layers, heads=heads, max_length=512, z=4.0,
                   tokenizer_dir=default_model_dir())
    out = cached_export(str(model), root / "export", max_length=MAX_LENGTH, log=log, **(export or CPU_EXPORT))
    return model, out


def held_out_passages(count: int = 96) -> list[str]:
    """SciFact passages the export's centring statistics never saw (they come from other text)."""
    passages, _ = collection_texts("scifact", documents=1000)
    return passages[-count:]
