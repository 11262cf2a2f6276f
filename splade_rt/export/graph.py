"""Torch -> ONNX: export the encoder body, fuse it with onnxruntime's BERT optimizer, append our head.

The body (embeddings, transformer layers, MLM transform) is exported with the TorchScript exporter:
onnxruntime's transformer optimizer recognises its BERT patterns (EmbedLayerNormalization,
Attention, SkipLayerNormalization, BiasGelu), which the dynamo exporter's graph does not get.
The vocab projection and pooling are not exported from torch: kernels.splade_head writes them.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..kernels import append_splade_head
from ..manifest import ATTENTION_MASK, INPUT_IDS
from .source import SourceModel

OPSET = 17
HIDDEN = "mlm_hidden"

# onnxruntime's float16 converter keeps these ops in float32 by default; TopK must stay fp16 on the
# GPU (a cast around it would copy the [batch, vocab] tensor twice), and our graph has none of the
# others that need fp32.
_FP16_KEEP_FP32 = ["Range", "CumSum", "NonMaxSuppression", "RoiAlign", "Resize", "Upsample"]


@dataclass
class ExportedGraphs:
    files: dict[str, Path]  # precision -> graph file
    fusions: dict[str, int]
    decoder_tied: bool


def load_mlm(directory: Path):
    """BertForMaskedLM in fp32, eager attention (the exported attention pattern the optimizer fuses)."""
    import torch
    from transformers import BertForMaskedLM

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    with _quiet():
        try:
            mlm = BertForMaskedLM.from_pretrained(str(directory), attn_implementation="eager",
                                                  dtype=torch.float32)
        except TypeError:  # transformers < 4.56 names it torch_dtype
            mlm = BertForMaskedLM.from_pretrained(str(directory), attn_implementation="eager",
                                                  torch_dtype=torch.float32)
    return mlm.eval()


def build_graphs(mlm, source: SourceModel, work: Path, *, vocab_chunk: int, fp16: bool = True,
                 screened: bool = True) -> ExportedGraphs:
    """fp32 (chunked), fp32-screened (exact, int8 screening: kernels.screening) and fp16 graphs."""
    import onnx
    import torch
    from onnxruntime.transformers.optimizer import optimize_model

    config = mlm.config
    body_path = work / "body.onnx"

    class MlmHidden(torch.nn.Module):
        """Everything before the vocab projection: BERT + the MLM head's dense/gelu/LayerNorm."""

        def __init__(self) -> None:
            super().__init__()
            self.bert = mlm.bert
            self.transform = mlm.cls.predictions.transform

        def forward(self, input_ids, attention_mask):
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                            token_type_ids=torch.zeros_like(input_ids))
            return self.transform(out[0])

    ids = torch.tensor([[1, 5, 7, 2, 0], [1, 5, 7, 9, 2]], dtype=torch.long) % config.vocab_size
    mask = (ids != 0).long()
    mask[1] = 1
    with _quiet(), torch.no_grad():
        torch.onnx.export(
            MlmHidden().eval(), (ids, mask), str(body_path), dynamo=False, opset_version=OPSET,
            input_names=[INPUT_IDS, ATTENTION_MASK], output_names=[HIDDEN], do_constant_folding=True,
            dynamic_axes={INPUT_IDS: {0: "batch", 1: "seq"}, ATTENTION_MASK: {0: "batch", 1: "seq"},
                          HIDDEN: {0: "batch", 1: "seq"}},
        )
        optimized = optimize_model(str(body_path), model_type="bert", num_heads=config.num_attention_heads,
                                   hidden_size=config.hidden_size, opt_level=0)
    fusions = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    if not any(op.domain == "com.microsoft" for op in optimized.model.opset_import):
        optimized.model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    body_path.unlink()

    decoder = mlm.cls.predictions.decoder
    weight = decoder.weight.detach().numpy().astype(np.float32)
    bias_param = decoder.bias if decoder.bias is not None else mlm.cls.predictions.bias
    bias = bias_param.detach().numpy().astype(np.float32)
    tied = decoder.weight.data_ptr() == mlm.bert.embeddings.word_embeddings.weight.data_ptr()

    center = hidden_mean(MlmHidden(), source) if screened else None

    def with_head(screened: bool):
        model = append_splade_head(copy.deepcopy(optimized.model), weight, bias, activation=source.activation,
                                   vocab_chunk=vocab_chunk, screened=screened, screen_center=center)
        model.producer_name = "splade-rt"
        return model

    fp32 = with_head(screened=False)
    files = {"fp32": work / "model.fp32.onnx"}
    onnx.save(fp32, str(files["fp32"]))
    if screened:
        files["fp32-screened"] = work / "model.screened.onnx"
        onnx.save(with_head(screened=True), str(files["fp32-screened"]))
    if fp16:
        files["fp16"] = work / "model.fp16.onnx"
        onnx.save(to_fp16(fp32), str(files["fp16"]))
    return ExportedGraphs(files=files, fusions=fusions, decoder_tied=tied)


def hidden_mean(mlm_hidden, source: SourceModel) -> np.ndarray:
    """The mean MLM-transformed hidden state over the parity texts' tokens: the screened graph
    quantizes states minus this mean (tighter bound; exact whatever the mean)."""
    import torch

    from .parity import reference_tokenize
    from .texts import parity_texts

    ids, mask = reference_tokenize(source.tokenizer_dir, parity_texts(), source.max_length, source.lowercase)
    with torch.no_grad():
        states = mlm_hidden(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    return states[mask.astype(bool)].astype(np.float64).mean(axis=0).astype(np.float32)


def to_fp16(model):
    """fp16 weights and compute, int64 inputs and float32 outputs, TopK kept in fp16.

    LayerNorm stays safe: the export emits LayerNormalization ops and the optimizer fuses them into
    (Skip/EmbedLayer)Normalization kernels, which accumulate in fp32 on CUDA; a decomposed
    Pow/ReduceMean LayerNorm, the known fp16 overflow, is refused rather than converted.
    """
    from onnxruntime.transformers.onnx_model import OnnxModel

    decomposed = [n.name for n in model.graph.node if n.op_type == "Pow"]
    if decomposed:
        raise RuntimeError(f"unfused LayerNorm (Pow nodes {decomposed[:3]}) would overflow in fp16")
    half = OnnxModel(copy.deepcopy(model))
    with _quiet():
        half.convert_float_to_float16(keep_io_types=True, op_block_list=_FP16_KEEP_FP32, use_symbolic_shape_infer=True)
    return half.model


@contextlib.contextmanager
def _quiet():
    """Exporters print pages of warnings about tracing; none of them is actionable for our users."""
    loggers = [logging.getLogger(n) for n in ("onnxruntime", "onnxruntime.transformers", "transformers", "torch.onnx")]
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
