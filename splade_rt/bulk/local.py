"""The in-process engine: one SpladeEncoder, shards in input order, a progress bar in documents/s.

The encoder already keeps the cores busy (two CPU batches in flight by default, `workers`), so a
process pool would only add copies of the model. Each shard is encoded in chunks of CHUNK
documents: large enough for the encoder's length sorting to pad little, small enough that the
progress bar moves and memory holds one chunk of vectors, however large the shard.
"""

from __future__ import annotations

from itertools import groupby, islice
from pathlib import Path
from typing import Any

from ..progress import progress_bar
from .plan import Plan, rows_of
from .writers import Batch, ShardWriter

CHUNK = 1024  # documents per encode call


def run_local(export_dir: str | Path, plan: Plan, shards: list[int], options: Any, writer: ShardWriter) -> int:
    """Encode the given shards of the plan and publish each; returns the documents encoded."""
    from ..runtime import SpladeEncoder

    encoder = SpladeEncoder(export_dir, device=options.device, workers=options.workers,
                            max_length=options.max_length)
    size = options.shard_size
    total = sum(plan.shard_rows(s, size) for s in shards)
    bar = progress_bar(total, options.progress, f"encoding on {encoder.device}", "doc", smoothing=0.1)
    done = 0
    try:
        for shard, rows in groupby(rows_of(plan, shards, size), key=lambda row: row[0] // size):
            with writer.shard(shard, plan.shard_rows(shard, size)) as out:
                while chunk := list(islice(rows, CHUNK)):
                    _, ids, texts = zip(*chunk)
                    vectors = encoder.encode_document(list(texts), batch_size=options.batch_size,
                                                      top_k=options.top_k, threshold=options.threshold)
                    out.write(Batch(list(ids), list(texts) if writer.keeps_text else None,
                                    vectors.indptr, vectors.indices, vectors.values))
                    done += len(ids)
                    if bar is not None:
                        bar.update(len(ids))
    finally:
        if bar is not None:
            bar.close()
    return done
