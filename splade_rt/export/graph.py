"""Torch -> ONNX: export the encoder body and MLM head transform, fuse them with onnxruntime's
optimizer, append our head.

The body is exported with the TorchScript exporter: onnxruntime's transformer optimizer recognises
its patterns (EmbedLayerNormalization, Attention, SkipLayerNormalization, BiasGelu), which the
dynamo exporter's graph does not get. The vocab projection and pooling are not exported from
torch: kernels.splade_head writes them. The family (export.architectures) says which optimizer
model type applies; the head is the same for every family.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..heads import HEADS
from ..kernels.native_head import head_arrays
from ..machine import release_freed_memory
from ..manifest import ATTENTION_MASK, INPUT_IDS
from ..variants import VARIANTS
from .heads import Writer, export_head
from .reference import hidden_mean, quiet
from .source import SourceModel
from .texts import parity_texts

OPSET = 17
HIDDEN = "mlm_hidden"
# The fp32 graphs leave attention and the residual add + LayerNorm unfused: onnxruntime's CPU
# kernels for the fused Attention and SkipLayerNormalization ops ran slower than the plain ops they
# replace, on small and base-size encoders (benchmarks.cpu_fusions). The fp16 graph, for CUDA and
# TensorRT, keeps every fusion.
CPU_UNFUSED = ("enable_attention", "enable_skip_layer_norm")
LARGE_INITIALIZER = 8 << 20  # bytes: an initializer optimize_body holds aside (a word embedding)
NATIVE_HEAD = "native_head.npz"  # the native variants' arrays (kernels.native_head.HEAD_ARRAYS)
# A graph whose weights pass this keeps them in a file beside it (GRAPH.onnx.data): one protobuf message
# holds at most 2 GiB, and bge-m3 (XLM-R large, 568M parameters) is 2.3 GB in fp32.
EXTERNAL_DATA_BYTES = 1_800_000_000


def fp16_keep_fp32() -> list[str]:
    """onnxruntime's own float16 block list, less TopK: TopK must stay fp16 on the GPU (a cast around
    it would copy the [batch, vocab] tensor twice). Derived, so it follows the installed onnxruntime."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

    return [op for op in DEFAULT_OP_BLOCK_LIST if op != "TopK"]


@dataclass
class ExportedGraphs:
    files: dict[str, Path]  # precision -> graph file
    data: dict[str, Path]  # precision -> its weights file, for a graph past EXTERNAL_DATA_BYTES
    fusions: dict[str, int]
    decoder_tied: bool
    native_head: Path | None = None  # the native variants' arrays (NATIVE_HEAD), when written


@dataclass
class GraphParts:
    """What the variants' graphs are built from: the encoder as exported (body_path), optimized for the
    CPU (CPU_UNFUSED left out; made when first read, then shared) or fused for the GPU (made for each
    reader), the head's writer (export.heads), and the screen's centre (None without screening)."""

    body_path: Path
    optimizer: str | None
    config: Any
    write_head: Writer
    center: np.ndarray | None
    work: Path
    fusions: dict[str, int] | None = None  # the fused encoder's, once made

    def with_head(self, screened: bool, encoder=None):
        """The encoder (a copy of the CPU one by default) with the export's head appended (kernels/)."""
        return self.write_head(copy.deepcopy(self.cpu_body) if encoder is None else encoder, screened)

    @functools.cached_property
    def cpu_body(self):
        return optimize_body(self.body_path, self.optimizer, self.config, unfused=CPU_UNFUSED)[0]

    @functools.cached_property
    def int8_body(self):
        """The CPU encoder's matrix products in int8 (quantize_encoder), shared by int8 and int8-native.
        Made from the CPU encoder, which it takes over: INT8_ENCODER's graphs are built after the others."""
        self.cpu_body  # noqa: B018  (made, where no graph read it yet)
        return quantize_encoder(self.__dict__.pop("cpu_body"), self.work)

    def release_cpu_encoders(self) -> None:
        self.__dict__.pop("cpu_body", None)  # the cached_properties' values
        self.__dict__.pop("int8_body", None)
        release_freed_memory()

    def fused_body(self):
        """A fused encoder of the caller's own, every fusion (counted in self.fusions): not kept, so the
        graph built on it is its one holder (to_fp16 converts it in place)."""
        body, self.fusions = optimize_body(self.body_path, self.optimizer, self.config)
        return body


# each variant's graph, by the variant table's name (splade_rt.variants.VARIANTS): the build code of a row
BUILDERS: dict[str, Callable[[GraphParts], Any]] = {
    "fp32": lambda parts: parts.with_head(screened=False),
    # exact: int8 screening of the vocab, the survivors recomputed in fp32 (kernels.screening)
    "fp32-screened": lambda parts: parts.with_head(screened=True),
    # the encoder stops at the states; the native head pools them with NATIVE_HEAD's arrays
    "fp32-native": lambda parts: parts.cpu_body,
    "fp16": lambda parts: to_fp16(parts.with_head(screened=False, encoder=parts.fused_body())),
    # the head stays exact over the int8 encoder's states (screened where the export screens)
    "int8": lambda parts: parts.with_head(screened=parts.center is not None, encoder=copy.deepcopy(parts.int8_body)),
    "int8-native": lambda parts: parts.int8_body,
}
# the BUILDERS that read the fused encoder (GraphParts.fused_body): built after every CPU graph, once the CPU
# encoders are let go, so that at most one optimized fp32 encoder is alive beside the torch model
FUSED_ENCODER = ("fp16",)
# the BUILDERS that read the int8 encoder (GraphParts.int8_body, which takes the CPU encoder over): built after
# the other CPU graphs
INT8_ENCODER = ("int8", "int8-native")


def build_graphs(mlm, source: SourceModel, work: Path, *, vocab_chunk: int, fp16: bool = True,
                 screened: bool = True, int8: bool = False) -> ExportedGraphs:
    """Every variant whose export options (Variant.requires) are on, each by its BUILDERS entry, saved
    under its file name; the native head's arrays beside them when a native variant is written.
    fusions: the optimizer's, in the fused (fp16) encoder; the CPU graphs leave CPU_UNFUSED out.
    The screen and the native head apply to a head that projects on the vocabulary only."""

    screened = screened and HEADS[source.head].vocab_projection
    options = {"fp16": fp16, "screened": screened, "int8": int8}
    wanted = [v for v in VARIANTS.values() if all(options[o] for o in v.requires)]
    head = export_head(source)
    (work / "body").mkdir()  # torch writes a large model's weights as one file per tensor beside it
    body_path = export_body(head.states(mlm, source), mlm.config.vocab_size, work / "body" / "body.onnx")
    center = hidden_mean(mlm, source, parity_texts()) if screened else None
    write_head, decoder, tied = head.writer(mlm, source, center, vocab_chunk)
    parts = GraphParts(body_path, source.architecture.optimizer, mlm.config, write_head, center, work)
    files, data = {}, {}
    for variant in sorted(wanted, key=lambda v: (v.name in FUSED_ENCODER, v.name in INT8_ENCODER)):
        if variant.name in FUSED_ENCODER:
            parts.release_cpu_encoders()
        model = BUILDERS[variant.name](parts)
        model.producer_name = "splade-rt"
        files[variant.name] = work / variant.file
        weights = save_graph(model, files[variant.name])
        del model  # saved: the next graph is built without this one alive
        release_freed_memory()
        if weights is not None:
            data[variant.name] = weights
    if parts.fusions is None:  # no fused graph written: the manifest still says what the optimizer fuses
        parts.release_cpu_encoders()
        parts.fused_body()
    fusions = parts.fusions
    del parts
    shutil.rmtree(work / "body")
    release_freed_memory()
    native_head = None
    if any(v.native for v in wanted):
        native_head = work / NATIVE_HEAD
        np.savez(native_head, **head_arrays(*decoder, center))
    return ExportedGraphs(files=files, data=data, fusions=fusions, decoder_tied=tied, native_head=native_head)


def weight_bytes(model) -> int:
    return sum(t.ByteSize() for t in model.graph.initializer)


def save_graph(model, path: Path) -> Path | None:
    """Save the graph; one whose weights pass EXTERNAL_DATA_BYTES keeps them in PATH.data beside it
    (returned; None otherwise). The model in memory keeps its weights: onnx's external-data save
    moves them out of the message, so they are read back."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_model

    if weight_bytes(model) <= EXTERNAL_DATA_BYTES:
        onnx.save(model, str(path))
        onnx.checker.check_model(str(path))  # by path: no second copy of the model in memory
        return None
    data = path.with_name(path.name + ".data")
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name,
                    size_threshold=1024)
    load_external_data_for_model(model, str(path.parent))
    onnx.checker.check_model(str(path))  # by path: the message alone is past protobuf's limit
    return data


def export_body(states, vocab_size: int, path: Path) -> Path:
    """The encoder up to the states the head reads (export.heads: the MLM's head-transformed states,
    or the last hidden states), as ONNX, unfused: what onnxruntime's optimizer and our head start from.
    states: a torch module (input_ids, attention_mask) -> [batch, seq, hidden]."""
    import torch

    ids = torch.tensor([[1, 5, 7, 2, 0], [1, 5, 7, 9, 2]], dtype=torch.long) % vocab_size
    mask = (ids != 0).long()
    mask[1] = 1
    with quiet(), torch.no_grad():
        torch.onnx.export(
            states, (ids, mask), str(path), dynamo=False, opset_version=OPSET,
            input_names=[INPUT_IDS, ATTENTION_MASK], output_names=[HIDDEN], do_constant_folding=True,
            dynamic_axes={INPUT_IDS: {0: "batch", 1: "seq"}, ATTENTION_MASK: {0: "batch", 1: "seq"},
                          HIDDEN: {0: "batch", 1: "seq"}},
        )
    return path


def quantize_encoder(body, work: Path):
    """The encoder's MatMuls with constant weights, attention's projections among them, in int8
    (onnxruntime's dynamic quantization: int8 weights per output channel, activations quantized per
    call). The word embedding stays fp32, so the tied decoder is still stored once, and the head
    appended after it stays exact. Takes `body` over: the quantizer copies the model it reads, so
    the large initializers it leaves alone (the word embedding) are held aside while it runs."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = ("MatMul", "Attention")
    read = {name for node in body.graph.node if node.op_type in quantized for name in node.input}
    held = _hold_aside(body, {init.name: 1 for init in body.graph.initializer if init.name not in read
                              and len(init.dims) == 2 and init.ByteSize() >= LARGE_INITIALIZER})
    src, dst = work / "encoder.fp32.onnx", work / "encoder.int8.onnx"
    large = save_graph(body, src) is not None
    del body  # the caller's was its last other reference
    release_freed_memory()
    # reduce_range: 7-bit weights. Without VNNI, onnxruntime's u8 x s8 kernels add product pairs in int16 with
    # saturation (onnxruntime's quantization docs); full-range weights saturate there. On the AVX2 EPYC of
    # 2026-12-07 (300 SciFact passages vs fp32): cosine min 0.9689 -> 0.9976, top-64 overlap 0.9415 -> 0.9796.
    with quiet(), _root_logger_quiet():
        quantize_dynamic(str(src), str(dst), op_types_to_quantize=list(quantized), per_channel=True,
                         reduce_range=True, use_external_data_format=large,
                         weight_type=QuantType.QInt8,
                         extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT})
    model = onnx.load(str(dst))  # with its external data, where it has some
    for path in work.glob("encoder.*"):  # the graphs and their weights files
        path.unlink()
    _put_back(model, held, "the quantizer")
    return model


def _hold_aside(model, rows: dict[str, int]) -> dict[str, tuple[int, bytes]]:
    """Each initializer named in `rows` cut to its first rows[name] rows, for a tool that reads only its
    width (its bytes and row count returned, for _put_back)."""
    held = {}
    for init in model.graph.initializer:
        keep = rows.get(init.name)
        if keep is not None and init.HasField("raw_data") and keep < init.dims[0]:
            data = init.raw_data
            held[init.name] = (init.dims[0], data)
            init.raw_data = data[:len(data) // init.dims[0] * keep]
            init.dims[0] = keep
            del data
    return held


def _put_back(model, held: dict[str, tuple[int, bytes]], tool: str) -> None:
    for init in model.graph.initializer:
        if init.name in held:
            init.dims[0], init.raw_data = held.pop(init.name)
    if held:
        raise RuntimeError(f"{tool} dropped the initializers {sorted(held)[:3]}")


@contextlib.contextmanager
def _root_logger_quiet():
    """onnxruntime's quantizer logs a pre-processing hint on the root logger: not actionable here."""
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def optimize_body(path: Path, model_type: str | None, config, unfused: tuple[str, ...] = (),
                  approximate_gelu: bool = False):
    """onnxruntime's transformer optimizer for the family (fusions counted), or the graph as exported.
    unfused: the optimizer's FusionOptions switched off. approximate_gelu: its tanh GELU (FastGelu),
    lossy, so only benchmarks.cpu_fusions asks for it."""
    import onnx

    if model_type is None:
        return onnx.load(str(path)), {}
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions(model_type)
    for name in unfused:
        setattr(options, name, False)
    options.enable_gelu_approximation = approximate_gelu
    # The optimizer's shape inference copies the whole model several times, and its fusion objects
    # keep those copies in reference cycles. So a large embedding table (a Gather's data: the word
    # embedding, 768 MiB for a 250k x 768 vocabulary) is held aside while it runs, its first rows
    # standing in (one more than the other tables', which the embedding fusion expects): the fusions
    # read only its width, and the table is put back whole after.
    loaded = onnx.load(str(path))
    gathered = {node.input[0] for node in loaded.graph.node if node.op_type == "Gather"}
    tables = {init.name: init.dims[0] for init in loaded.graph.initializer
              if init.name in gathered and len(init.dims) == 2}
    held = _hold_aside(loaded, {init.name: 1 + max((r for n, r in tables.items() if n != init.name), default=0)
                                for init in loaded.graph.initializer
                                if init.name in tables and init.ByteSize() >= LARGE_INITIALIZER})
    model = onnx.ModelProto()
    model.CopyFrom(loaded)  # a message without the replaced bytes (its arena would keep them)
    del loaded
    with quiet():
        optimized = optimize_model(model, model_type=model_type, num_heads=config.num_attention_heads,
                                   hidden_size=config.hidden_size, opt_level=0, optimization_options=options)
    fusions = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    model = optimized.model
    del optimized
    release_freed_memory()
    _put_back(model, held, "the optimizer")
    if not any(op.domain == "com.microsoft" for op in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return model, fusions


def to_fp16(model):
    """fp16 weights and compute, int64 inputs and float32 outputs, TopK kept in fp16.

    LayerNorm stays safe: the export emits LayerNormalization ops and the optimizer fuses them into
    (Skip/EmbedLayer)Normalization kernels, which accumulate in fp32 on CUDA; a decomposed
    Pow/ReduceMean LayerNorm, the known fp16 overflow, is refused rather than converted.
    Converts `model` itself, no copy (a 250k-vocabulary model's fp32 weights are 800 MiB): BUILDERS
    hands it the fused encoder with the head, which nothing else holds (GraphParts.fused_body).

    onnxruntime's converter runs shape inference on copies of the whole model (three at once, 3 GiB
    past the graph for a 250k x 768 word embedding, the export's peak). So the large weights are held
    aside as graph inputs of the same type and shape while it runs, which it converts as it would
    the initializers (an input it is not told to keep in fp32 turns fp16 in place), and they are put
    back after, converted block by block (float16_in_blocks) where their input turned fp16.
    """
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    decomposed = [n.name for n in model.graph.node if n.op_type == "Pow"]
    if decomposed:
        raise RuntimeError(f"unfused LayerNorm (Pow nodes {decomposed[:3]}) would overflow in fp16")
    graph, keep_fp32 = model.graph, fp16_keep_fp32()
    float_io = [v.name for v in [*graph.input, *graph.output] if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT]
    read_in_fp16 = {name for node in graph.node if node.op_type not in keep_fp32 for name in node.input}
    held = [init for init in graph.initializer if init.data_type == onnx.TensorProto.FLOAT
            and init.HasField("raw_data") and init.ByteSize() >= LARGE_INITIALIZER and init.name in read_in_fp16]
    for init in held:
        graph.initializer.remove(init)
        graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    half = OnnxModel(model)
    with quiet():
        half.convert_float_to_float16(keep_io_types=float_io, op_block_list=keep_fp32, use_symbolic_shape_infer=True)
    model = half.model
    del half
    release_freed_memory()  # the converter's shape inference keeps model copies in reference cycles
    graph = model.graph
    inputs = {v.name: v for v in graph.input}
    for init in held:
        if inputs[init.name].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16:
            init.raw_data = float16_in_blocks(np.frombuffer(init.raw_data, np.float32)).tobytes()
            init.data_type = onnx.TensorProto.FLOAT16
        graph.input.remove(inputs[init.name])
        graph.initializer.append(init)
    with quiet():
        OnnxModel(model).topological_sort()  # the converter appends its Casts at the end; ONNX wants nodes in order
    return model


FLOAT16_BLOCK = 1 << 22  # elements converted at a time by float16_in_blocks


def float16_in_blocks(array: np.ndarray, min_positive_val: float = 5.96e-08,
                      max_finite_val: float = 65504.0) -> np.ndarray:
    """onnxruntime's convert_np_to_float16, block by block: the same clamping (a magnitude below
    min_positive_val to it, a finite one above max_finite_val to it, sign kept; 0, inf and NaN as they
    are), then float16. Its whole-array version makes several temporaries the size of the input
    (a 250k x 768 word embedding is 768 MiB)."""
    out = np.empty(array.shape, np.float16)
    flat, dst = array.reshape(-1), out.reshape(-1)
    for start in range(0, flat.size, FLOAT16_BLOCK):
        block = flat[start:start + FLOAT16_BLOCK]
        magnitude = np.abs(block)
        block = np.where((magnitude > 0) & (magnitude < min_positive_val), np.copysign(min_positive_val, block), block)
        block = np.where((magnitude > max_finite_val) & np.isfinite(magnitude), np.copysign(max_finite_val, block),
                         block)
        dst[start:start + FLOAT16_BLOCK] = block
    return out
