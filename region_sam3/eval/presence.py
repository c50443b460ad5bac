"""Ranking AUC of per-prompt scores (presence, best detection score) against presence labels."""

from __future__ import annotations

import numpy as np


def mann_whitney_auc(scores: np.ndarray, labels: np.ndarray) -> tuple[float, int, int]:
    """(AUC, #positives, #negatives): P(score of a positive > score of a negative), ties 1/2."""
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan"), len(pos), len(neg)
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    values = np.concatenate([pos, neg])[order]
    ranks[order] = np.arange(1, len(order) + 1)
    for v in np.unique(values):  # average ranks over ties
        tied = order[values == v]
        ranks[tied] = ranks[tied].mean()
    auc = (ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))
    return float(auc), len(pos), len(neg)
