"""Retrieval-quality evaluation of an export (`splade-eval`): BEIR data, exact search, IR metrics.

Kept apart from the runtime because it needs scipy (the eval extra); it never imports torch
unless the torch reference is asked for, so it runs wherever the runtime does.
"""

from .dataset import BeirDataset, document_text, load_beir, read_records
from .metrics import GAINS, mean_metrics, metric_names, query_metrics
from .search import search, top_k_rows

__all__ = ["GAINS", "BeirDataset", "document_text", "load_beir", "mean_metrics", "metric_names", "query_metrics",
           "read_records", "search", "top_k_rows"]
