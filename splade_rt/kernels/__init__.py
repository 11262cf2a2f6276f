"""Graph kernels that are ours: the fused SPLADE pooling head appended to an exported encoder."""

from .splade_head import DEFAULT_VOCAB_CHUNK, append_splade_head

__all__ = ["DEFAULT_VOCAB_CHUNK", "append_splade_head"]
