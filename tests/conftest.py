"""Shared fixtures: one real export of the bundled model per session, tiny random models, real text."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from random_models import sentence_transformers_copy, write_st_old

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# No SPLADE_RT_CPU_GRAPH: the suite runs the CPU graph a user gets (the native head where its kernel
# runs, else the timed choice of runtime/cpu_choice.py); tests that need one graph name its variant.

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPLADE_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data"


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    from splade_rt.export.source import default_model_dir as bundled

    return bundled()


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory) -> Path:
    """The bundled real model, exported once (fp32, screened, fp16) for every test that needs a real graph."""
    from splade_rt.export.pipeline import export_model

    out = tmp_path_factory.mktemp("export") / "splade-tiny"
    export_model(None, out, log=lambda _: None)
    return out


@pytest.fixture(scope="session")
def st_dir(tmp_path_factory, default_model_dir) -> Path:
    """The bundled model saved by the installed sentence-transformers (its current layout)."""
    return sentence_transformers_copy(default_model_dir, tmp_path_factory.mktemp("st") / "splade-tiny-st")


@pytest.fixture(scope="session")
def real_pairs() -> tuple[list[str], list[str]]:
    """200 query/passage pairs of real text: SciFact queries with their relevant abstracts."""
    scifact = DATA / "scifact"
    if not (scifact / "corpus.jsonl").is_file():
        pytest.skip(f"real retrieval data not found at {scifact} (set SPLADE_SHARED)")
    from splade_rt.evaluation.dataset import read_records

    corpus = read_records(scifact / "corpus.jsonl", with_title=True)
    queries = read_records(scifact / "queries.jsonl", with_title=False)
    pairs = []
    with open(scifact / "qrels" / "test.tsv", encoding="utf-8") as f:
        next(f)
        for line in f:
            qid, did, _ = line.rstrip("\n").split("\t")
            pairs.append((queries[qid], corpus[did]))
            if len(pairs) == 200:
                break
    return [q for q, _ in pairs], [d for _, d in pairs]


def make_tiny_model(directory: Path, *, tied: bool = True, layout: str = "transformers",
                    activation: str = "relu", tokenizer_json: bool = True, seed: int = 0) -> Path:
    """A random BERT-MLM small enough to export in a second, with a real WordPiece vocabulary slice."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    words = ("the a of to and in is was for on with as by at from it that this be are what how why who capital "
             "city country music song musical clown egg boil water cell gene protein cancer vitamin bone immune "
             "vaccine climate weather rain river sea ##s ##ing ##ed ##er ##ly").split()
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(3)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(i) for i in range(10)] + list(".,?!'-")
    vocab += [f"##{chr(c)}" for c in range(ord("a"), ord("z") + 1)] + words
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, tie_word_embeddings=tied)
    model = BertForMaskedLM(config).eval()
    with torch.no_grad():  # larger logits than the init gives, so pooling yields many non-zeros
        model.cls.predictions.bias.normal_(0, 1.0)
        if not tied:
            model.cls.predictions.decoder.weight.normal_(0, 0.5)
    model_dir = directory
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(model_dir))
    (model_dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tok = BertTokenizerFast(vocab_file=str(model_dir / "vocab.txt"), do_lower_case=True, model_max_length=64)
    tok.save_pretrained(str(model_dir))
    if not tokenizer_json:
        (model_dir / "tokenizer.json").unlink()
    if layout == "sentence-transformers":
        write_st_old(directory, activation, max_length=48, lowercase=False, vocab=len(vocab))
    return directory
