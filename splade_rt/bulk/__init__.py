"""Bulk corpus encoding (`splade-encode-corpus`, `encode_corpus`): sharded, resumable, exactly-once.

In-process by default; on Ray Data with engine="ray" (the `distributed` extra). Importing this
package loads neither Ray nor pyarrow nor qdrant-client: each is imported by the engine, format or
sink that needs it, so `import splade_rt` stays as light as the runtime.

    readers.py     corpus files -> rows, one parser for every reader
    plan.py        the vetting pass and the shard plan (positions from input order)
    shards.py      the output directory: atomic publish; the run record beside it
    formats.py     the output-format table: Parquet, Anserini, Qdrant (a new format is a row + its writer)
    writers.py     ShardWriter, the Parquet writer, the Qdrant sink
    anserini.py    Anserini's impact format: document shards, and queries quantized the same way
    hints.py       error hints that name the flag on the command line, the argument from Python
    local.py       the in-process engine
    ray_engine.py  the Ray Data engine
    api.py         encode_corpus
    cli.py         splade-encode-corpus
"""

from ..errors import CorpusError
from .anserini import anserini_queries, write_anserini_topics
from .api import CorpusOptions, CorpusSummary, encode_corpus
from .formats import OUTPUT_FORMATS, OutputFormat
from .shards import record_path
from .writers import point_id

__all__ = ["OUTPUT_FORMATS", "CorpusError", "CorpusOptions", "CorpusSummary", "OutputFormat", "anserini_queries",
           "encode_corpus", "point_id", "record_path", "write_anserini_topics"]
