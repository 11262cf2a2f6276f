"""The models the tests build (no hub here): random-weight SPLADE models of every supported family,
and a model saved in sentence-transformers' layouts. The benchmarks build theirs with these too
(benchmarks.common puts this folder on the import path); this file imports nothing from them.

Each model gets a tokenizer of its family's kind (WordPiece for BERT and DistilBERT, byte-level BPE
for RoBERTa and ModernBERT, Unigram for XLM-RoBERTa), trained on a little text, and a SPLADE-like
head: the vocab projection is rescaled so that logits have unit spread over real tokens and the bias
is set around -z, so most logits are negative and a few per token are positive (z=2: ~2% of the
vocabulary per token; z=4 for a 30k vocabulary: a handful). The positives come from the token's
state, not the bias, so a wrong body, mask or tokenizer changes the vector and a parity test fails.
A multilingual-size vocabulary (LARGE_VOCABS: 105,879 for BERT, 250,002 for XLM-R) is the trained
tokenizer padded with filler tokens no text reaches (pad_vocabulary): every id up to vocab - 1 has a
random decoder row like the others, so the fillers are output terms too (z=4.5 for 250k: about one
positive logit per token).

Layouts: "transformers" (a *ForMaskedLM directory), "st-old" (sentence-transformers MLMTransformer +
SpladePooling, as sentence-transformers 5 wrote it: written by hand, since users still have such
directories), "st-new" (Transformer with the fill-mask task, saved by the installed
sentence-transformers) and "router" (an inference-free model: a Router whose query route is a
SparseStaticEmbedding table and whose document route is the MLM). sentence_transformers_copy saves
any *ForMaskedLM directory (the bundled model's) in the current layout.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FAMILIES = ("bert", "distilbert", "roberta", "xlm-roberta", "modernbert")
# multilingual vocabulary sizes (make_model's vocab=): bert-base-multilingual-uncased's and XLM-R's
LARGE_VOCABS = {"bert": 105_879, "xlm-roberta": 250_002}

_BERT_SPECIAL = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
_ROBERTA_SPECIAL = {"cls": "<s>", "pad": "<pad>", "sep": "</s>", "unk": "<unk>", "mask": "<mask>"}
_TOKENIZER = {  # family -> (kind, special tokens in id order)
    "bert": ("wordpiece", _BERT_SPECIAL), "distilbert": ("wordpiece", _BERT_SPECIAL),
    "roberta": ("bpe", _ROBERTA_SPECIAL), "modernbert": ("bpe", _BERT_SPECIAL),
    "xlm-roberta": ("unigram", _ROBERTA_SPECIAL),
}


def training_text() -> list[str]:
    from splade_rt.export.texts import PASSAGES, QUERIES

    extra = ("The cell membrane regulates protein transport. Gene expression in cancer cells differs. Rain, "
             "rivers and the sea shape the climate of a country. Music, songs and musicals; clowns and circus "
             "acts. Vaccines train the immune system; bones need vitamin D and calcium.")
    return QUERIES + PASSAGES + [extra, extra.upper(), extra.title()]


def make_tokenizer(family: str, directory: Path, max_length: int, vocab_size: int = 700, pad_to: int | None = None):
    """A fast tokenizer of the family's kind, saved to directory; returns the transformers tokenizer.
    pad_to: fill the trained vocabulary up to that many ids with filler tokens (pad_vocabulary)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    kind, special = _TOKENIZER[family]
    names = list(special.values())
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=special["unk"]))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=names)
    elif kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=names,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=names, unk_token=special["unk"])
    tok.train_from_iterator(training_text(), trainer)
    cls, sep = special["cls"], special["sep"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))])
    if pad_to is not None:
        tok = pad_vocabulary(tok, pad_to)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=max_length,
                                   **{f"{role}_token": token for role, token in special.items()})
    fast.save_pretrained(str(directory))
    return fast


def pad_vocabulary(tok, size: int):
    """The tokenizer with filler tokens "[unused<i>]" appended to its model's vocabulary, so that ids up
    to size - 1 exist (a multilingual model's vocabulary size on a tokenizer trained on a little text).
    No text tokenizes to a filler (WordPiece and byte-level BPE never reach them: the pre-tokenizers
    split off "[" and no merge builds them; Unigram scores them far below any segmentation), so the
    inputs are the trained tokenizer's, while the decoder has a row, and an output weight, for every id."""
    from tokenizers import Tokenizer

    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    have = len(vocab)
    if size < have:
        raise ValueError(f"pad_to {size} is below the trained vocabulary's {have} tokens")
    fillers = [f"[unused{i}]" for i in range(size - have)]
    if isinstance(vocab, list):  # Unigram: [piece, log-probability] rows, the id is the row
        vocab.extend([filler, -1000.0] for filler in fillers)
    else:
        vocab.update({filler: have + i for i, filler in enumerate(fillers)})
    return Tokenizer.from_str(json.dumps(data))


def _config(family: str, vocab: int, special: dict[str, int], hidden: int, layers: int, heads: int, positions: int):
    import transformers

    common = dict(vocab_size=vocab, pad_token_id=special["pad"])
    if family == "distilbert":
        return transformers.DistilBertConfig(dim=hidden, n_layers=layers, n_heads=heads, hidden_dim=4 * hidden,
                                             max_position_embeddings=positions, **common)
    if family == "modernbert":
        return transformers.ModernBertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                             intermediate_size=2 * hidden, max_position_embeddings=positions,
                                             global_attn_every_n_layers=2, local_attention=16,
                                             cls_token_id=special["cls"], sep_token_id=special["sep"],
                                             bos_token_id=special["cls"], eos_token_id=special["sep"], **common)
    cls = {"bert": transformers.BertConfig, "roberta": transformers.RobertaConfig,
           "xlm-roberta": transformers.XLMRobertaConfig}[family]
    if family != "bert":  # positions start after the padding index
        positions += special["pad"] + 1
        common.update(bos_token_id=special["cls"], eos_token_id=special["sep"])
    return cls(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=4 * hidden,
               max_position_embeddings=positions, **common)


def make_model(family: str, directory: Path, *, layout: str = "transformers", activation: str = "relu",
               hidden: int = 32, layers: int = 2, heads: int = 2, max_length: int = 64, z: float = 2.0,
               seed: int = 0, tokenizer_dir: Path | None = None, st_max_length: int | None = None,
               lowercase: bool = False, vocab: int | None = None) -> Path:
    """Build, save and return a random SPLADE model directory (see the module docstring).
    tokenizer_dir: reuse that tokenizer (e.g. the bundled WordPiece vocabulary) instead of training one.
    vocab: pad the trained tokenizer's vocabulary to that many ids (pad_vocabulary; LARGE_VOCABS)."""
    import torch
    import transformers
    from transformers import AutoTokenizer

    from splade_rt.export.architectures import ARCHITECTURES

    directory = Path(directory)
    model_dir = directory if layout in ("transformers", "st-old") else directory.with_name(directory.name + "-mlm")
    model_dir.mkdir(parents=True, exist_ok=True)
    if tokenizer_dir is None:
        tok = make_tokenizer(family, model_dir, max_length, pad_to=vocab)
    else:
        tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        tok.model_max_length = max_length
        tok.save_pretrained(str(model_dir))
    vocab = tok.get_vocab()
    special = {role: vocab[getattr(tok, f"{role}_token")] for role in ("pad", "cls", "sep", "unk", "mask")}
    arch = ARCHITECTURES[family]
    torch.manual_seed(seed)
    config = _config(family, len(vocab), special, hidden, layers, heads, max_length)
    model = getattr(transformers, arch.mlm_class)._from_config(config, attn_implementation="eager").eval()
    _splade_like_head(model, arch, tok, z, seed)
    model.save_pretrained(str(model_dir))
    if layout == "transformers":
        return model_dir
    if layout == "st-old":
        write_st_old(directory, activation, max_length=st_max_length, lowercase=lowercase, vocab=len(vocab))
        return directory
    return _save_st(model_dir, directory, layout, activation, st_max_length, lowercase, seed)


def _splade_like_head(model, arch, tok, z: float, seed: int) -> None:
    """Rescale the decoder so logits over real tokens have unit spread, and centre the bias near -z."""
    import torch

    from splade_rt.export.reference import body_inputs, without_decoder

    enc = tok(training_text(), padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad(), without_decoder(model, arch):
        states = model(**body_inputs(arch, enc["input_ids"], enc["attention_mask"])).logits
    states = states[enc["attention_mask"].bool()]
    decoder = arch.attribute(model, arch.decoder)
    with torch.no_grad():
        decoder.weight.mul_(1.0 / _logit_std(states, decoder.weight))
        bias = decoder.bias if decoder.bias is not None else arch.attribute(model, arch.bias)
        generator = torch.Generator().manual_seed(seed)
        bias.copy_(-z + 0.3 * torch.randn(bias.shape, generator=generator))


def _logit_std(states, weight, cells: int = 1 << 26) -> float:
    """The standard deviation of states @ weight.T; in vocab chunks of float64 sums where the logits
    would pass `cells` numbers (a large vocabulary: [tokens, 250k] is gigabytes)."""
    import torch

    if states.shape[0] * weight.shape[0] <= cells:
        return float((states @ weight.T).std())
    step = max(1, cells // states.shape[0])
    total = squares = 0.0
    for start in range(0, weight.shape[0], step):
        logits = (states @ weight[start:start + step].T).to(torch.float64)
        total += float(logits.sum())
        squares += float((logits * logits).sum())
    n = states.shape[0] * weight.shape[0]
    return float(((squares - total * total / n) / (n - 1)) ** 0.5)


def write_st_old(directory: Path, activation: str, *, max_length: int | None, lowercase: bool, vocab: int) -> None:
    """The layout sentence-transformers 5 wrote (MLMTransformer), written out since the installed
    version writes the new one."""
    (directory / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.sparse_encoder.models.MLMTransformer"},
        {"idx": 1, "name": "1", "path": "1_SpladePooling",
         "type": "sentence_transformers.sparse_encoder.models.SpladePooling"},
    ]))
    (directory / "config_sentence_transformers.json").write_text(json.dumps(
        {"model_type": "SparseEncoder", "similarity_fn_name": "dot", "prompts": {}}))
    st_cfg = {"do_lower_case": lowercase, **({"max_seq_length": max_length} if max_length else {})}
    (directory / "sentence_bert_config.json").write_text(json.dumps(st_cfg))
    (directory / "1_SpladePooling").mkdir(exist_ok=True)
    (directory / "1_SpladePooling" / "config.json").write_text(json.dumps(
        {"pooling_strategy": "max", "activation_function": activation, "word_embedding_dimension": vocab}))


def sentence_transformers_copy(model_dir: Path, out: Path) -> Path:
    """A transformers *ForMaskedLM directory saved as a sentence-transformers SparseEncoder in the
    installed version's layout (the fill-mask Transformer + SpladePooling max), to run
    sentence-transformers on the same weights."""
    return _save_st(Path(model_dir), Path(out), "st-new", "relu", None, False, 0)


def _save_st(model_dir: Path, directory: Path, layout: str, activation: str, max_length: int | None,
             lowercase: bool, seed: int) -> Path:
    """The current layout: sentence-transformers 6 deprecates MLMTransformer for this Transformer."""
    import torch
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Router, Transformer
    from sentence_transformers.sparse_encoder.modules import SparseStaticEmbedding, SpladePooling

    kwargs = {"max_seq_length": max_length} if max_length else {}
    transformer = Transformer(str(model_dir), transformer_task="fill-mask", do_lower_case=lowercase, **kwargs)
    document = [transformer, SpladePooling(pooling_strategy="max", activation_function=activation)]
    if layout == "st-new":
        modules = document
    else:
        generator = torch.Generator().manual_seed(seed)
        size = len(transformer.tokenizer.get_vocab())
        weight = torch.rand(size, generator=generator) * 3  # idf-like, ~1/4 of the vocabulary zero
        weight[torch.rand(size, generator=generator) < 0.25] = 0
        query = SparseStaticEmbedding(tokenizer=transformer.tokenizer, weight=weight, frozen=True)
        modules = [Router.for_query_document(query_modules=[query], document_modules=document)]
    SparseEncoder(modules=modules, similarity_fn_name="dot", device="cpu").save(str(directory))
    return directory


def max_abs_and_nonzero(reference: np.ndarray, candidate: np.ndarray,
                        boundary: float = 1e-6) -> tuple[float, float, bool]:
    """(max abs diff, that over the largest reference value, same non-zero terms on every row).

    A term counts as in both when it is non-zero in one and non-zero in the other, except that a
    weight below `boundary` may be zero on the other side: a logit within float rounding of 0 is
    positive in one implementation and not in the other (relu's edge), and nothing retrieves by it."""
    diff = float(np.abs(reference - candidate).max()) if reference.size else 0.0
    scale = float(np.abs(reference).max()) if reference.size else 1.0
    same = bool(((reference > boundary) <= (candidate != 0)).all()
                and ((candidate > boundary) <= (reference != 0)).all())
    return diff, diff / (scale or 1.0), same


def make_bge_m3(directory: Path, *, layout: str = "hub", hidden: int = 32, layers: int = 2, heads: int = 2,
                max_length: int = 64, bias: float = -0.4, seed: int = 0) -> Path:
    """A random model in bge-m3's layout: an XLM-RoBERTa encoder (XLMRobertaModel) with its tokenizer, and
    the heads FlagEmbedding reads beside it: sparse_linear.pt (Linear(hidden, 1)) and colbert_linear.pt
    (FlagEmbedding loads the sparse head only when both are there). The sparse linear is scaled so the
    tokens' weights have unit spread, centred at `bias`: about a third of them get a weight and the rest
    none; it leans towards the special tokens' states, which get large weights. So a wrong state, id or
    special-token rule changes the lexical weights.
    layout "hub": as BAAI/bge-m3 is published, with sentence-transformers' dense modules (Transformer,
    Pooling on [CLS], Normalize) beside it; "flagembedding": as FlagEmbedding's fine-tuning saves it."""
    import torch
    import transformers

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer("xlm-roberta", directory, max_length)
    tok.add_special_tokens({"bos_token": "<s>", "eos_token": "</s>"})  # as XLM-R's tokenizer names them
    tok.save_pretrained(str(directory))
    vocab = tok.get_vocab()
    special = {role: vocab[getattr(tok, f"{role}_token")] for role in ("pad", "cls", "sep", "unk", "mask")}
    torch.manual_seed(seed)
    config = _config("xlm-roberta", len(vocab), special, hidden, layers, heads, max_length)
    config.architectures = ["XLMRobertaModel"]
    model = transformers.XLMRobertaModel._from_config(config, attn_implementation="eager").eval()
    model.save_pretrained(str(directory))
    enc = tok(training_text(), padding=True, truncation=True, return_tensors="pt")
    real = enc["attention_mask"].bool()
    special_ids = torch.tensor([special["cls"], special["sep"]])
    with torch.no_grad():
        states = model(**enc).last_hidden_state
        special_tokens = real & torch.isin(enc["input_ids"], special_ids)
        others = states[real & ~special_tokens]
        # half random, half towards the special tokens' states: those get large weights, which only the
        # special-token rule removes
        toward = states[special_tokens].mean(0) - others.mean(0)
        weight = torch.randn(hidden, generator=torch.Generator().manual_seed(seed))
        weight = weight / weight.norm() + toward / toward.norm()
        weight = weight / float((others @ weight).std())
        sparse = torch.nn.Linear(hidden, 1)
        sparse.weight.copy_(weight[None])
        sparse.bias.fill_(bias - float((others @ weight).mean()))
    torch.save(sparse.state_dict(), directory / "sparse_linear.pt")
    torch.save(torch.nn.Linear(hidden, hidden).state_dict(), directory / "colbert_linear.pt")
    if layout == "hub":
        modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                   {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
        (directory / "modules.json").write_text(json.dumps(modules))
        (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_length,
                                                                         "do_lower_case": False}))
        (directory / "1_Pooling").mkdir(exist_ok=True)
        (directory / "1_Pooling" / "config.json").write_text(json.dumps(
            {"word_embedding_dimension": hidden, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
        (directory / "2_Normalize").mkdir(exist_ok=True)
    elif layout != "flagembedding":
        raise ValueError(f"layout {layout!r}: expected hub or flagembedding")
    return directory

