"""The runtime: imports numpy, onnxruntime (lazily) and tokenizers; never torch, transformers or onnx."""

from .embeddings import SparseAndDense, SparseEmbeddings, SparseVector
from .encoder import SpladeEncoder

__all__ = ["SparseAndDense", "SparseEmbeddings", "SparseVector", "SpladeEncoder"]
