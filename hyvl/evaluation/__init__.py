"""Evaluation: zero-shot classification, image <-> text retrieval, hierarchy metrics,
SugarCrepe."""

from hyvl.evaluation.embed import Shard
from hyvl.evaluation.hierarchy import evaluate_hierarchy, hierarchy_metrics
from hyvl.evaluation.retrieval import evaluate_retrieval, recall_at_k
from hyvl.evaluation.sugarcrepe import evaluate_sugarcrepe
from hyvl.evaluation.zeroshot import evaluate_zeroshot, zeroshot_classifier

__all__ = [
    "Shard",
    "evaluate_hierarchy",
    "evaluate_retrieval",
    "evaluate_sugarcrepe",
    "evaluate_zeroshot",
    "hierarchy_metrics",
    "recall_at_k",
    "zeroshot_classifier",
]
