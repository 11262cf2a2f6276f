"""The runtime: imports numpy, onnxruntime (lazily) and tokenizers; never torch, transformers or onnx."""

from .embeddings import SparseEmbeddings, SparseVector
from .encoder import SpladeEncoder

__all__ = ["SparseEmbeddings", "SparseVector", "SpladeEncoder"]
