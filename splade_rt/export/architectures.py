"""The model families splade-export takes: one registry entry each, keyed by the config's model_type.

An entry says everything the exporter needs to know about a family, so adding one is one entry:
the transformers masked-LM class, where the vocab projection (decoder) and its bias live, the
word embedding it may be tied to, whether the body takes token_type_ids, the weight-name prefix of
the MLM head (to refuse a dense checkpoint before loading it), the family's special tokens, and
the onnxruntime optimizer model type that fuses its layers.

The encoder body and the MLM head transform are reached the same way for every family: the
masked-LM model is run with its decoder swapped for an identity, so its "logits" are the
transformed hidden states the vocab projection reads. That is exactly the computation the family's
own forward does, without hand-copying each head's dense/activation/LayerNorm order.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ModelSourceError


@dataclass(frozen=True)
class Architecture:
    model_type: str  # config.json's model_type
    mlm_class: str  # transformers class holding body, head transform and decoder
    decoder: str  # attribute path of the vocab projection (nn.Linear [vocab, hidden])
    bias: str | None  # attribute path of the decoder bias when it is a separate parameter
    embeddings: str  # attribute path of the word embedding the decoder may be tied to
    head_prefixes: tuple[str, ...]  # weight-name prefixes only an MLM checkpoint has
    token_type_ids: bool  # the body takes segment ids (fed as zeros, inside the graph)
    special_tokens: dict[str, str]  # role -> the family's usual token, when the tokenizer names none
    optimizer: str | None  # onnxruntime.transformers optimizer model_type, None: no fusion pass

    def attribute(self, model, path: str):
        for name in path.split("."):
            model = getattr(model, name)
        return model

    def set_attribute(self, model, path: str, value) -> None:
        *parents, name = path.split(".")
        for parent in parents:
            model = getattr(model, parent)
        setattr(model, name, value)


_BERT_TOKENS = {"cls": "[CLS]", "sep": "[SEP]", "pad": "[PAD]", "unk": "[UNK]", "mask": "[MASK]"}
_ROBERTA_TOKENS = {"cls": "<s>", "sep": "</s>", "pad": "<pad>", "unk": "<unk>", "mask": "<mask>"}

ARCHITECTURES: dict[str, Architecture] = {a.model_type: a for a in (
    Architecture("bert", "BertForMaskedLM", decoder="cls.predictions.decoder", bias="cls.predictions.bias",
                 embeddings="bert.embeddings.word_embeddings", head_prefixes=("cls.predictions.",),
                 token_type_ids=True, special_tokens=_BERT_TOKENS, optimizer="bert"),
    Architecture("distilbert", "DistilBertForMaskedLM", decoder="vocab_projector", bias=None,
                 embeddings="distilbert.embeddings.word_embeddings",
                 head_prefixes=("vocab_projector.", "vocab_transform."), token_type_ids=False,
                 special_tokens=_BERT_TOKENS, optimizer="bert"),
    Architecture("roberta", "RobertaForMaskedLM", decoder="lm_head.decoder", bias="lm_head.bias",
                 embeddings="roberta.embeddings.word_embeddings", head_prefixes=("lm_head.",),
                 token_type_ids=False, special_tokens=_ROBERTA_TOKENS, optimizer="bert"),
    Architecture("xlm-roberta", "XLMRobertaForMaskedLM", decoder="lm_head.decoder", bias="lm_head.bias",
                 embeddings="roberta.embeddings.word_embeddings", head_prefixes=("lm_head.",),
                 token_type_ids=False, special_tokens=_ROBERTA_TOKENS, optimizer="bert"),
    # ModernBERT: rotary, alternating local/global attention. The BERT optimizer fuses its LayerNorms
    # and GELUs but not its attention, which stays as exported.
    Architecture("modernbert", "ModernBertForMaskedLM", decoder="decoder", bias=None,
                 embeddings="model.embeddings.tok_embeddings", head_prefixes=("head.", "decoder."),
                 token_type_ids=False, special_tokens=_BERT_TOKENS, optimizer="bert"),
)}


def architecture_for(model_type: str | None, ref: str, classes: list[str]) -> Architecture:
    """The registry entry for a config's model_type, or one line naming the family and what is supported."""
    arch = ARCHITECTURES.get(str(model_type))
    if arch is None:
        raise ModelSourceError(
            f"{ref}: model family '{model_type}' ({', '.join(classes) or 'unknown class'}) is not supported; "
            f"splade-export takes masked-LM SPLADE models of these families: {', '.join(ARCHITECTURES)}"
        )
    return arch
