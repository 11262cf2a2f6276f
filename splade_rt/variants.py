"""The variant table: every graph precision an export can hold is one row of VARIANTS.

A row says what the exporter writes (the file), what the parity check holds it to (its bar: fp32's
bar for an exact variant, a top-terms floor for a lossy one), what the runtime needs to run it (the
native kernel) and what it runs instead where it can't (its fallback, the same vectors through
onnxruntime). The manifest checks precisions against it, the exporter builds and checks the rows
whose export options are on, the runtime reads twins and fallbacks from it. Which devices prefer
which rows is the provider table's business (runtime.providers). Adding a variant is one row here
plus its build function in export.graph.BUILDERS.

Standard library only: the manifest, the exporter and the runtime all import it.
"""

from __future__ import annotations

from dataclasses import dataclass

# export_model's switches that turn a variant on: the splade-export flag that turns each on, or what
# to leave off where it is on by default
EXPORT_OPTIONS: dict[str, tuple[str, str]] = {
    "screened": ("", "export_model's default screened=True"),
    "fp16": ("", "without --no-fp16"),
    "int8": ("--int8", ""),
}


@dataclass(frozen=True)
class ParityBar:
    """What the export's parity check requires of a variant's vectors on the parity texts.

    Against the torch reference: max_rel_diff (of the largest reference value; exact variants) or
    min_top_overlap (mean top-64 overlap; lossy ones) and same_argmax. Against another graph of the
    same export (vs): within vs_max_abs_diff or vs_max_rel_diff, and vs_same_nonzero."""

    max_rel_diff: float | None = None
    min_top_overlap: float | None = None
    same_argmax: bool = False
    vs: str | None = None
    vs_max_abs_diff: float | None = None
    vs_max_rel_diff: float | None = None
    vs_same_nonzero: bool = False
    dense_min_cosine: float = 0.99  # a lossy variant's dense vectors (heads with one); exact ones: DENSE_BAR
    note: str | None = None  # how the CPU check falls short of the device the variant is for

    def describe(self, top: int) -> str:
        """The bar in words, as the manifest records it beside the numbers."""
        parts = []
        if self.max_rel_diff is not None:
            parts.append(f"max_rel_diff <= {self.max_rel_diff}")
        if self.min_top_overlap is not None:
            parts.append(f"top{top}_overlap_mean >= {self.min_top_overlap}")
        if self.same_argmax:
            parts.append("same argmax term")
        if self.vs is not None:
            within = (f"max abs diff <= {self.vs_max_abs_diff}" if self.vs_max_abs_diff is not None
                      else f"max rel diff <= {self.vs_max_rel_diff}")
            parts.append(f"vs {self.vs} graph: {within}" + (", same non-zero set" if self.vs_same_nonzero else ""))
        return " and ".join(parts)


FP32_BAR = 1e-4  # exact variants: of the largest reference value, against torch
SAME_GRAPH_BAR = 1e-5  # two graphs over the same encoder: the screened head, the native head
DENSE_BAR = 1e-5  # exact variants' dense vectors (a head with one, heads.Head.dense), max abs diff vs torch
FP16_CPU_NOTE = (
    "onnxruntime CPUExecutionProvider on the fp16 graph: checks the fp16 weights, graph and fp16 TopK/outputs "
    "wiring; the CPU EP casts ops without fp16 kernels to fp32, so fp16 arithmetic itself is exercised only "
    "on a CUDA device (splade-export --check on a GPU machine)"
)


@dataclass(frozen=True)
class Variant:
    """One graph precision of an export."""

    name: str  # the precision, as the manifest, variant= and the provider table name it
    file: str  # what the exporter writes
    bar: ParityBar
    requires: tuple[str, ...] = ()  # EXPORT_OPTIONS that must be on for the exporter to write it
    native: bool = False  # a states graph pooled by the native head (kernels/_head.c), not a fused graph
    twin: str | None = None  # a native variant's fused graph over the same encoder: the same vectors
    fallback: str | None = None  # what gives the same vectors through onnxruntime where it can't run
    # the vocab head screens in int8 (or is the native kernel): cheap enough that a query-sized input
    # runs faster on one thread than waking a second (runtime.encoder's one-thread twin)
    screened_head: bool = False

    @property
    def exact(self) -> bool:
        """The fp32 reference's vectors within fp32 rounding (held to its bar), not an approximation of them."""
        return self.bar.max_rel_diff is not None

    def how_to_export(self, command: str) -> str:
        """The export command (e.g. "splade-export MODEL -o DIR --force") that writes this variant."""
        flags = "".join(f" {EXPORT_OPTIONS[o][0]}" for o in self.requires if EXPORT_OPTIONS[o][0])
        notes = "; ".join(EXPORT_OPTIONS[o][1] for o in self.requires if EXPORT_OPTIONS[o][1])
        return command + flags + (f" ({notes})" if notes else "")


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("fp32", "model.fp32.onnx", bar=ParityBar(max_rel_diff=FP32_BAR)),
    # the head screens the vocab with int8 dot products, then recomputes the survivors in fp32: exact
    Variant("fp32-screened", "model.screened.onnx", requires=("screened",), screened_head=True,
            bar=ParityBar(max_rel_diff=FP32_BAR, vs="fp32", vs_max_abs_diff=SAME_GRAPH_BAR, vs_same_nonzero=True)),
    # the fp32 encoder's states, pooled by the native head (AVX-512 VNNI); its fp32 sums run in another
    # order than MLAS's, so it is held to its twin within their rounding
    Variant("fp32-native", "model.states.onnx", requires=("screened",), native=True, twin="fp32",
            fallback="fp32-screened", screened_head=True,
            bar=ParityBar(max_rel_diff=FP32_BAR, vs="fp32", vs_max_rel_diff=SAME_GRAPH_BAR)),
    Variant("fp16", "model.fp16.onnx", requires=("fp16",),
            bar=ParityBar(min_top_overlap=0.98, same_argmax=True, note=FP16_CPU_NOTE)),
    # the encoder's matrix products in int8: lossy by design (its retrieval loss is measured on the
    # shared collections, benchmarks.eval_all); the floor only catches a broken graph
    Variant("int8", "model.int8.onnx", requires=("int8",), screened_head=True,
            bar=ParityBar(min_top_overlap=0.8)),
    Variant("int8-native", "model.int8.states.onnx", requires=("int8", "screened"), native=True,
            twin="int8", fallback="int8", screened_head=True,
            bar=ParityBar(min_top_overlap=0.8, vs="int8", vs_max_rel_diff=SAME_GRAPH_BAR)),
)}
