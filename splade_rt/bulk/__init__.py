"""Bulk corpus encoding (`splade-encode-corpus`, `encode_corpus`): sharded, resumable, exactly-once.

In-process by default; on Ray Data with engine="ray" (the `distributed` extra). Importing this
package loads neither Ray nor pyarrow nor qdrant-client: each is imported by the engine, format or
sink that needs it, so `import splade_rt` stays as light as the runtime.

    readers.py     corpus files -> rows, one parser for every reader
    plan.py        the vetting pass and the shard plan (positions from input order)
    shards.py      the output directory: atomic publish, the rerun record
    writers.py     Parquet, Anserini JsonVectorCollection, Qdrant
    local.py       the in-process engine
    ray_engine.py  the Ray Data engine
    api.py         encode_corpus
    cli.py         splade-encode-corpus
"""

from ..errors import CorpusError
from .api import CorpusOptions, CorpusSummary, encode_corpus
from .writers import point_id

__all__ = ["CorpusError", "CorpusOptions", "CorpusSummary", "encode_corpus", "point_id"]
