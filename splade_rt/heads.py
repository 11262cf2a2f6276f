"""The head table: how an export turns text into term weights, one row of HEADS per kind.

A head kind is what sits after the encoder (or instead of it): the masked-LM projection with SPLADE
max pooling, bge-m3's per-token linear weight with a max per token id, or an inference-free model's
per-token lookup. The manifest records the head of each route (documents, queries) by its name
here; the exporter builds a graph head by the same name (export.heads.EXPORT_HEADS); the runtime
reads from the row whether a route runs a graph, and whether the graph also gives a dense vector.
Adding a head kind is one row here, its exporter entry and its graph writer (kernels/).

Standard library only: the manifest, the exporter and the runtime all import it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Head:
    name: str  # as the manifest's model.heads records it
    computes: str  # the term weights, in words (docs, splade-export's log)
    graph: bool  # the route runs an ONNX graph (False: a weight table, no encoder)
    # the head projects the states onto the vocabulary ([vocab, hidden] @ states): the int8 screen and
    # the native head (variants needing export option "screened") apply only then
    vocab_projection: bool
    dense: bool = False  # the graph also outputs a dense vector (manifest.OUT_DENSE)


HEADS: dict[str, Head] = {h.name: h for h in (
    Head("splade-max", "log1p(relu(masked-LM logits)), max over the text's tokens (SPLADE v2+, "
         "sentence-transformers' SpladePooling)", graph=True, vocab_projection=True),
    Head("token-max", "relu(Linear(hidden, 1)) of each token's last hidden state, max over a token id's "
         "occurrences, special tokens dropped (bge-m3's lexical weights, FlagEmbedding); the [CLS] state, "
         "L2-normalized, as the dense vector", graph=True, vocab_projection=False, dense=True),
    Head("static-lookup", "a per-token weight table, each token of the text once, no special tokens "
         "(inference-free queries, sentence-transformers' SparseStaticEmbedding)", graph=False,
         vocab_projection=False),
)}

DEFAULT_HEADS = {"document": "splade-max", "query": "splade-max"}  # manifests before format version 6
ROUTES = ("document", "query")
