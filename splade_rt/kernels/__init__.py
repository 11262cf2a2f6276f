"""Kernels that are ours: the fused SPLADE pooling head appended to an exported encoder (ONNX), and
the native head (_head.c, native_head) that pools an encoder's states on the CPU."""

from .splade_head import DEFAULT_VOCAB_CHUNK, append_splade_head

__all__ = ["DEFAULT_VOCAB_CHUNK", "append_splade_head"]
