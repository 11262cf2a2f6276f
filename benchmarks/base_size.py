"""The base-size model of benchmarks.run (hidden 768, 12 layers, 30,522-token vocabulary), and its text.

No trained base-size SPLADE model can be fetched here, so the model is random with a SPLADE-like
head (benchmarks.random_models, the bundled model's WordPiece vocabulary). The encoder's cost is
that of any BERT-base; the screened graph's gain depends on how few vocab entries its bound lets
through, which depends on trained weights: the candidates per true non-zero measured on it are for
random weights, not a prediction for a trained model. Its passages are held-out SciFact ones (title
and text), max length 256.
"""

from __future__ import annotations

from pathlib import Path

from .common import CACHE, cached_export, collection_texts
from .random_models import make_model

MAX_LENGTH = 256
LABEL = "random BERT-base (768 x 12, vocab 30522), SPLADE-like head (z=4)"


def build(root: Path = CACHE / "base-size") -> tuple[Path, Path]:
    """The random base-size model and its export (cached: both take minutes on 2 cores)."""
    from splade_rt.export.source import default_model_dir

    model, export = root / "model", root / "export"
    if not (model / "config.json").is_file():
        make_model("bert", model, hidden=768, layers=12, heads=12, max_length=512, z=4.0,
                   tokenizer_dir=default_model_dir())
    cached_export(str(model), export, fp16=False, int8=True, max_length=MAX_LENGTH)
    return model, export


def held_out_passages(count: int = 96) -> list[str]:
    """SciFact passages the export's centring statistics never saw (they come from other text)."""
    passages, _ = collection_texts("scifact", documents=1000)
    return passages[-count:]
