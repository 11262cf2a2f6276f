"""splade-rt: fast SPLADE sparse encoding over a fused ONNX graph.

    from splade_rt import SpladeEncoder
    enc = SpladeEncoder("out/", device="auto")
    q = enc.encode_query(["what is splade"], top_k=64)

Exporting (`splade-export`, `splade_rt.export`) needs the export extra; this top-level import
pulls in only numpy; tokenizers and onnxruntime load when an encoder is created.
"""

from .errors import DatasetError, DeviceError, ExportDirError, ModelSourceError, OverloadedError, SpladeError
from .runtime import SparseAndDense, SparseEmbeddings, SparseVector, SpladeEncoder

__version__ = "0.1.0"


def __getattr__(name: str):
    """`splade_rt.encode_corpus` and `splade_rt.MicroBatcher`, imported on first use: neither is needed
    to encode texts."""
    if name == "encode_corpus":
        from .bulk import encode_corpus

        return encode_corpus
    if name == "MicroBatcher":  # many callers on one encoder (docs/serve.md)
        from .serve import MicroBatcher

        return MicroBatcher
    raise AttributeError(f"module 'splade_rt' has no attribute {name!r}")


__all__ = [
    "DatasetError",
    "DeviceError",
    "ExportDirError",
    "MicroBatcher",
    "ModelSourceError",
    "OverloadedError",
    "SparseAndDense",
    "SparseEmbeddings",
    "SparseVector",
    "SpladeEncoder",
    "SpladeError",
    "__version__",
    "encode_corpus",
]
