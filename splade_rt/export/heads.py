"""The exporter's side of each graph head kind (splade_rt.heads.HEADS): one EXPORT_HEADS entry each.

An entry says how to load the torch model in fp32, which states the encoder graph ends with, how
to write the head after them (kernels/), and the torch reference the parity check holds every
graph to, written out as the model's own library computes it. The rest of the export (fusion,
variants, parity bars, manifest, publishing) is the same for every head.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ModelSourceError
from .reference import body_inputs, decoder_parameters, load_mlm, quiet, reference_embeddings, without_decoder
from .source import SourceModel

# FlagEmbedding's BGEM3 drops these tokens' weights (its _process_token_weights)
FLAG_DROPPED_ROLES = ("cls_token", "eos_token", "pad_token", "unk_token")

Writer = Callable[[Any, bool], Any]  # (encoder onnx.ModelProto, screened) -> the graph with its head


@dataclass(frozen=True)
class ExportHead:
    name: str  # its splade_rt.heads.HEADS row
    load: Callable[[SourceModel], Any]  # the torch model, fp32, eager attention; .config is its config
    states: Callable[[Any, SourceModel], Any]  # a torch module: (input_ids, attention_mask) -> [B, S, H] states
    # (model, source, screen centre or None, vocab chunk) -> the head writer; the decoder (weight, bias)
    # when the head projects on the vocabulary (the native head's arrays), else None; whether that
    # weight is the word embedding (then stored once)
    writer: Callable[[Any, SourceModel, Any, int], tuple[Writer, tuple[np.ndarray, np.ndarray] | None, bool]]
    # (model, source, input_ids, attention_mask) -> sparse [N, vocab], and the dense [N, H] or None
    reference: Callable[[Any, SourceModel, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray | None]]
    reference_name: Callable[[SourceModel], str]  # what the parity report says it compared against
    architecture: Callable[[Any, SourceModel], str]  # the transformers class exported (manifest)


# -- splade-max: the masked-LM projection, max-pooled (kernels.splade_head) ---------------------------

def _mlm_states(mlm, source: SourceModel):
    import torch

    arch = source.architecture

    class MlmHidden(torch.nn.Module):
        """The MLM's head-transformed states: the model run with its decoder swapped for an identity."""

        def __init__(self) -> None:
            super().__init__()
            self.mlm = mlm

        def forward(self, input_ids, attention_mask):
            with without_decoder(self.mlm, arch):
                return self.mlm(**body_inputs(arch, input_ids, attention_mask)).logits

    return MlmHidden().eval()


def _splade_writer(mlm, source: SourceModel, center, vocab_chunk: int):
    from ..kernels import append_splade_head

    weight, bias, tied = decoder_parameters(mlm, source.architecture)

    def write(encoder, screened: bool):
        return append_splade_head(encoder, weight, bias, activation=source.activation, vocab_chunk=vocab_chunk,
                                  screened=screened, screen_center=center)

    return write, (weight, bias), tied


def _splade_reference(mlm, source: SourceModel, ids: np.ndarray, mask: np.ndarray):
    return reference_embeddings(mlm, source.architecture, ids, mask, source.activation), None


# -- token-max: bge-m3's per-token linear weight, max per id (kernels.token_head) ---------------------

def _load_token_max(source: SourceModel):
    """FlagEmbedding's model: AutoModel (fp32, eager attention) and the Linear(hidden, 1) of sparse_linear.pt."""
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    with quiet():
        encoder = AutoModel.from_pretrained(str(source.directory), attn_implementation="eager",
                                            dtype=torch.float32).eval()
    hidden = int(encoder.config.hidden_size)
    try:
        state = torch.load(str(source.head_file), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file: one line naming it
        raise ModelSourceError(f"{source.head_file}: unreadable ({type(e).__name__}: {str(e).splitlines()[0][:120]})")\
            from None
    shapes = {k: tuple(v.shape) for k, v in state.items()} if isinstance(state, dict) else {}
    if shapes != {"weight": (1, hidden), "bias": (1,)}:
        raise ModelSourceError(f"{source.head_file}: expected bge-m3's sparse head, a Linear({hidden}, 1) state dict "
                               f"(weight (1, {hidden}), bias (1,)), found {shapes or type(state).__name__}")
    linear = torch.nn.Linear(hidden, 1)
    linear.load_state_dict(state)

    class TokenMax(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder, self.sparse_linear, self.config = encoder, linear.eval(), encoder.config

    return TokenMax().eval()


def _token_states(model, source: SourceModel):
    import torch

    arch = source.architecture

    class LastHidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = model.encoder

        def forward(self, input_ids, attention_mask):
            return self.encoder(**body_inputs(arch, input_ids, attention_mask)).last_hidden_state

    return LastHidden().eval()


def flag_dropped_ids(source: SourceModel) -> list[int]:
    """The ids FlagEmbedding never weights: its tokenizer's cls, eos, pad and unk tokens."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(source.directory))
    roles = tok.special_tokens_map
    return sorted({int(tok.convert_tokens_to_ids(roles[r])) for r in FLAG_DROPPED_ROLES if r in roles})


def _token_writer(model, source: SourceModel, center, vocab_chunk: int):
    from ..kernels.token_head import append_token_head

    weight = model.sparse_linear.weight.detach().numpy().reshape(-1).astype(np.float32)
    bias = model.sparse_linear.bias.detach().numpy().astype(np.float32)
    vocab, dropped = int(model.config.vocab_size), flag_dropped_ids(source)

    def write(encoder, screened: bool):
        return append_token_head(encoder, weight, bias, vocab=vocab, dropped=dropped)

    return write, None, False


def reference_lexical(model, source: SourceModel, ids: np.ndarray, mask: np.ndarray, batch: int = 8):
    """FlagEmbedding's BGEM3 computation (M3 model forward + _process_token_weights), written out:

        h = AutoModel(input_ids, attention_mask).last_hidden_state          # [B, S, H], fp32
        w = relu(sparse_linear(h)).squeeze(-1)                              # a weight per token
        lexical[id] = max(w[s] for the tokens s with input_ids[s] == id      # the max over occurrences,
                          if id not in {cls, eos, pad, unk} and w[s] > 0)    # special tokens dropped
        dense = normalize(h[:, 0], dim=-1)                                  # the [CLS] state, L2-normalized

    Returned as [N, vocab] (zero where a term has no weight) and [N, H]."""
    import torch

    dropped = np.asarray(flag_dropped_ids(source), dtype=np.int64)
    vocab = int(model.config.vocab_size)
    sparse = np.zeros((len(ids), vocab), np.float32)
    dense = []
    with torch.no_grad():
        for i in range(0, len(ids), batch):
            t_ids, t_mask = torch.from_numpy(ids[i:i + batch]), torch.from_numpy(mask[i:i + batch])
            h = model.encoder(**body_inputs(source.architecture, t_ids, t_mask)).last_hidden_state
            weights = torch.relu(model.sparse_linear(h)).squeeze(-1).numpy()
            dense.append(torch.nn.functional.normalize(h[:, 0], dim=-1).numpy())
            for r, (row_ids, row_mask, row_w) in enumerate(zip(ids[i:i + batch], mask[i:i + batch], weights)):
                keep = (row_mask > 0) & ~np.isin(row_ids, dropped) & (row_w > 0)
                np.maximum.at(sparse[i + r], row_ids[keep], row_w[keep])
    return sparse, np.concatenate(dense)


EXPORT_HEADS: dict[str, ExportHead] = {h.name: h for h in (
    ExportHead("splade-max", load=load_mlm, states=_mlm_states, writer=_splade_writer, reference=_splade_reference,
               reference_name=lambda s: f"transformers {s.architecture.mlm_class} (fp32, torch) + "
                                        "sentence-transformers SpladePooling math",
               architecture=lambda mlm, s: s.architecture.mlm_class),
    ExportHead("token-max", load=_load_token_max, states=_token_states, writer=_token_writer,
               reference=reference_lexical,
               reference_name=lambda s: f"transformers AutoModel ({s.config.get('architectures', ['?'])[0]}, fp32, "
                                        "torch) + sparse_linear.pt + FlagEmbedding BGEM3 lexical-weight math",
               architecture=lambda model, s: type(model.encoder).__name__),
)}


def export_head(source: SourceModel) -> ExportHead:
    return EXPORT_HEADS[source.head]
