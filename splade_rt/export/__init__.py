"""The exporter (needs the export extra: torch, transformers, onnx). Imported only by splade-export.

    from splade_rt.export import export_model
    export_model("path/or/hub-id", "out/")     # None: the bundled splade-tiny-msmarco
"""

from .pipeline import export_model, recheck

__all__ = ["export_model", "recheck"]
