"""Retrieval metrics, defined as sentence-transformers' InformationRetrievalEvaluator defines them.

The numbers must be comparable with what model cards and the sentence-transformers evaluators
report, so each formula follows its compute_metrics() line by line (MAP@k divides by
min(k, n_relevant), MRR@k is 0 when nothing relevant is in the top k, accuracy@k is a hit rate).
Every metric counts a document as relevant when its grade > 0.

nDCG has two conventions, and graded qrels (Cranfield's 1-4, TREC's 0-2) tell them apart:
  * "graded" (the default): the qrel grade is the gain (linear gain), as BEIR, pytrec_eval,
    trec_eval and MTEB compute it, and as the shared collections' published figures are;
  * "binary": every relevant document gains 1, as sentence-transformers' evaluators compute it,
    hence the figures on sentence-transformers model cards.
With binary qrels the two agree exactly.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

ACCURACY_AT = (1, 3, 5, 10)
PRECISION_RECALL_AT = (1, 3, 5, 10)
NDCG_AT = (10,)
MRR_AT = (10,)
MAP_AT = (100,)
GAINS = ("graded", "binary")  # nDCG's gain: the qrel grade, or 1 for every relevant document
MAX_K = max(ACCURACY_AT + PRECISION_RECALL_AT + NDCG_AT + MRR_AT + MAP_AT)

Ranking = Sequence[Hashable]  # document ids, best first
Grades = Mapping[Hashable, float]  # document id -> relevance grade; grade <= 0 counts as not relevant


def metric_names() -> list[str]:
    """Report order: the order sentence-transformers logs them in."""
    return ([f"accuracy@{k}" for k in ACCURACY_AT] + [f"precision@{k}" for k in PRECISION_RECALL_AT]
            + [f"recall@{k}" for k in PRECISION_RECALL_AT] + [f"ndcg@{k}" for k in NDCG_AT]
            + [f"mrr@{k}" for k in MRR_AT] + [f"map@{k}" for k in MAP_AT])


def _relevant(ranking: Ranking, grades: Grades, k: int) -> list[bool]:
    return [grades.get(doc, 0) > 0 for doc in list(ranking)[:k]]


def _n_relevant(grades: Grades) -> int:
    return sum(1 for g in grades.values() if g > 0)


def accuracy_at_k(ranking: Ranking, grades: Grades, k: int) -> float:
    """1 if any relevant document is in the top k (sentence-transformers' accuracy@k: a hit rate)."""
    return float(any(_relevant(ranking, grades, k)))


def precision_at_k(ranking: Ranking, grades: Grades, k: int) -> float:
    """Relevant in the top k over k, not over the number retrieved: a short ranking is penalised."""
    return sum(_relevant(ranking, grades, k)) / k


def recall_at_k(ranking: Ranking, grades: Grades, k: int) -> float:
    n = _n_relevant(grades)
    return sum(_relevant(ranking, grades, k)) / n if n else 0.0


def reciprocal_rank_at_k(ranking: Ranking, grades: Grades, k: int) -> float:
    """1/rank of the first relevant document, 0 when none is in the top k (hence MRR@10, not MRR)."""
    for rank, hit in enumerate(_relevant(ranking, grades, k), 1):
        if hit:
            return 1.0 / rank
    return 0.0


def dcg(gains: Sequence[float], k: int) -> float:
    """Linear gain over log2(rank + 1), ranks from 1."""
    return sum(g / np.log2(rank + 1) for rank, g in enumerate(list(gains)[:k], 1))


def ndcg_at_k(ranking: Ranking, grades: Grades, k: int, gains: str = "graded") -> float:
    """gains="graded": the gain is the qrel grade and the ideal ranking sorts the grades, so a grade-2
    document ranked below a grade-1 one costs something. gains="binary": every relevant document
    (grade > 0) gains 1, as in sentence-transformers, which cannot tell those two rankings apart."""
    if gains not in GAINS:
        raise ValueError(f"gains must be one of {GAINS}, not {gains!r}")
    if gains == "binary":
        grades = {doc: 1.0 for doc, g in grades.items() if g > 0}
    ranked = [max(float(grades.get(doc, 0)), 0.0) for doc in list(ranking)[:k]]
    ideal = dcg(sorted((g for g in grades.values() if g > 0), reverse=True), k)
    return dcg(ranked, k) / ideal if ideal > 0 else 0.0


def average_precision_at_k(ranking: Ranking, grades: Grades, k: int) -> float:
    """sentence-transformers' AP@k: the precisions at each relevant hit in the top k, summed and
    divided by min(k, n_relevant), so a query with more relevant documents than k can still reach 1."""
    n = _n_relevant(grades)
    if not n:
        return 0.0
    found, total = 0, 0.0
    for rank, hit in enumerate(_relevant(ranking, grades, k), 1):
        if hit:
            found += 1
            total += found / rank
    return total / min(k, n)


def query_metrics(ranking: Ranking, grades: Grades, gains: str = "graded") -> dict[str, float]:
    """Every reported metric for one query; gains: nDCG's convention (see the module docstring)."""
    out: dict[str, float] = {}
    out.update({f"accuracy@{k}": accuracy_at_k(ranking, grades, k) for k in ACCURACY_AT})
    out.update({f"precision@{k}": precision_at_k(ranking, grades, k) for k in PRECISION_RECALL_AT})
    out.update({f"recall@{k}": recall_at_k(ranking, grades, k) for k in PRECISION_RECALL_AT})
    out.update({f"ndcg@{k}": ndcg_at_k(ranking, grades, k, gains) for k in NDCG_AT})
    out.update({f"mrr@{k}": reciprocal_rank_at_k(ranking, grades, k) for k in MRR_AT})
    out.update({f"map@{k}": average_precision_at_k(ranking, grades, k) for k in MAP_AT})
    return out


def mean_metrics(rankings: Sequence[Ranking], qrels: Sequence[Grades], gains: str = "graded") -> dict[str, float]:
    """Means over queries (each query weighs the same, as in sentence-transformers)."""
    if len(rankings) != len(qrels):
        raise ValueError(f"{len(rankings)} rankings for {len(qrels)} queries")
    if not rankings:
        raise ValueError("no queries to evaluate")
    per_query = [query_metrics(r, g, gains) for r, g in zip(rankings, qrels)]
    return {name: float(np.mean([m[name] for m in per_query])) for name in metric_names()}
