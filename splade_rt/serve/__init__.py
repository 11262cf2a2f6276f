"""Serving one encoder to many callers: the micro-batcher, and `splade-serve` (TEI's /embed_sparse).

    from splade_rt.serve import MicroBatcher
    with MicroBatcher(SpladeEncoder("out/")) as mb:
        vectors = mb.encode_query("what is splade")   # from many threads; or await mb.aencode_query(...)

Importing this package needs only the runtime; the HTTP server (serve.app, serve.cli) needs the
serve extra: pip install 'splade-rt[serve]'.
"""

from .batcher import BatchReport, MicroBatcher

__all__ = ["BatchReport", "MicroBatcher"]
