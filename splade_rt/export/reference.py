"""The torch reference: what every graph is checked against, written once.

transformers' masked-LM model of the family (fp32, eager attention), its own tokenizer
(AutoTokenizer), and the pooling exactly as sentence-transformers' SpladePooling computes it. The
parity check, the screened graph's centring statistics and `splade-eval --reference` all use these
functions; sentence-transformers itself is not needed to export.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from .architectures import Architecture
from .source import SourceModel


def load_mlm(source: SourceModel):
    """The family's masked-LM class in fp32, eager attention (the exported pattern the optimizer fuses)."""
    import torch
    import transformers
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    cls = getattr(transformers, source.architecture.mlm_class)
    with quiet():
        mlm = cls.from_pretrained(str(source.directory), attn_implementation="eager", dtype=torch.float32)
    return mlm.eval()


def reference_tokenize(directory: Path, texts: list[str], max_length: int, lowercase: bool):
    """input_ids and attention_mask as sentence-transformers' Transformer module makes them."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(directory))
    if lowercase:
        texts = [t.lower() for t in texts]
    enc = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")
    return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)


def body_inputs(arch: Architecture, input_ids, attention_mask) -> dict:
    """The forward arguments of the family's body: segment ids (zeros) only where it takes them."""
    import torch

    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if arch.token_type_ids:
        inputs["token_type_ids"] = torch.zeros_like(input_ids)
    return inputs


@contextlib.contextmanager
def without_decoder(mlm, arch: Architecture):
    """The masked-LM model whose logits are the head-transformed hidden states (decoder = identity)."""
    import torch

    decoder = arch.attribute(mlm, arch.decoder)
    arch.set_attribute(mlm, arch.decoder, torch.nn.Identity())
    try:
        yield mlm
    finally:
        arch.set_attribute(mlm, arch.decoder, decoder)


def decoder_parameters(mlm, arch: Architecture) -> tuple[np.ndarray, np.ndarray, bool]:
    """(weight [vocab, hidden], bias [vocab], tied to the word embedding) of the vocab projection."""
    decoder = arch.attribute(mlm, arch.decoder)
    bias = decoder.bias if decoder.bias is not None else arch.attribute(mlm, arch.bias)
    # the parameters' own memory where they are fp32 already (read only): no copy of a 250k-row decoder
    weight = np.asarray(decoder.weight.detach().numpy(), dtype=np.float32)
    tied = decoder.weight.data_ptr() == arch.attribute(mlm, arch.embeddings).weight.data_ptr()
    return weight, np.asarray(bias.detach().numpy(), dtype=np.float32), tied


# the most [rows, seq, vocab] logits the reference holds at once (2^27 floats: 512 MiB, two copies alive)
REFERENCE_CELLS = 1 << 27


def reference_embeddings(mlm, arch: Architecture, input_ids: np.ndarray, attention_mask: np.ndarray,
                         activation: str, batch: int = 8) -> np.ndarray:
    """sentence-transformers' SpladePooling, written out: mask, relu, log1p (twice for log1p_relu), max.

    The model's own forward, decoder included, up to `batch` texts at a time, fewer where their
    [rows, seq, vocab] logits would pass REFERENCE_CELLS (a 250k vocabulary at 512 tokens: one text,
    512 MiB, not 4 GiB and its copies); the activation runs in place, as SpladePooling's does."""
    import torch

    vocab = int(mlm.config.vocab_size)
    batch = max(1, min(batch, REFERENCE_CELLS // max(1, input_ids.shape[1] * vocab)))
    rows = []
    with torch.no_grad():
        for i in range(0, len(input_ids), batch):
            ids = torch.from_numpy(input_ids[i:i + batch])
            mask = torch.from_numpy(attention_mask[i:i + batch])
            logits = mlm(**body_inputs(arch, ids, mask)).logits
            values = (logits * mask.unsqueeze(-1).to(logits.dtype)).relu_().log1p_()
            del logits
            if activation == "log1p_relu":
                values = values.log1p_()
            rows.append(values.max(dim=1).values.numpy())
            del values
    return np.concatenate(rows)


def hidden_mean(mlm, source: SourceModel, texts: list[str]) -> np.ndarray:
    """The mean head-transformed hidden state over the texts' real tokens: the screened graph
    quantizes states minus this mean (a tighter bound; exact whatever the mean)."""
    import torch

    ids, mask = reference_tokenize(source.directory, texts, source.max_length, source.lowercase)
    with torch.no_grad(), without_decoder(mlm, source.architecture):
        states = mlm(**body_inputs(source.architecture, torch.from_numpy(ids), torch.from_numpy(mask))).logits
    return states.numpy()[mask.astype(bool)].astype(np.float64).mean(axis=0).astype(np.float32)


def static_query_weights(query_dir: Path) -> np.ndarray:
    """The per-token weights [vocab] of a SparseStaticEmbedding module (inference-free query route)."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        path = query_dir / name
        if path.is_file():
            break
    else:
        raise FileNotFoundError(f"{query_dir}: no model.safetensors or pytorch_model.bin")
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        tensors = load_file(str(path))
    else:
        import torch

        tensors = {k: v.numpy() for k, v in torch.load(str(path), map_location="cpu", weights_only=True).items()}
    return np.asarray(tensors["weight"], dtype=np.float32)


def reference_static_queries(query_dir: Path, weights: np.ndarray, texts: list[str]) -> np.ndarray:
    """SparseStaticEmbedding written out: its tokenizer without special tokens, each present token's
    weight once (presence, not count), padding ignored. [len(texts), vocab]."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(query_dir))
    enc = tok(texts, padding=True, truncation=True, add_special_tokens=False, return_tensors="np")
    out = np.zeros((len(texts), len(weights)), dtype=np.float32)
    for r, (ids, mask) in enumerate(zip(enc["input_ids"], enc["attention_mask"])):
        present = np.unique(ids[mask.astype(bool)])
        out[r, present] = weights[present]
    return out


def tokenizer_max_length(model_dir: Path) -> int | None:
    """The truncation transformers' tokenizer applies with truncation=True and no max_length: its
    model_max_length, unless that is the 'no limit' sentinel (a huge number)."""
    from transformers import AutoTokenizer

    limit = AutoTokenizer.from_pretrained(str(model_dir)).model_max_length
    return int(limit) if isinstance(limit, int) and limit < 1_000_000 else None


@contextlib.contextmanager
def quiet():
    """Silence transformers', torch.onnx's and onnxruntime's chatter during export."""
    import io
    import logging
    import warnings

    loggers = [logging.getLogger(n) for n in ("transformers", "onnxruntime", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
