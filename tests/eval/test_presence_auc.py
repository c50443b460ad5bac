"""Mann-Whitney AUC equals the pairwise definition (ties count 1/2); NaN without a class."""

from __future__ import annotations

import math

import numpy as np

from region_sam3.eval.presence import mann_whitney_auc


def _pairwise(scores, labels):
    pos, neg = scores[labels], scores[~labels]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_auc_matches_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(60), 1)  # many ties
    labels = rng.random(60) < 0.3
    auc, n_pos, n_neg = mann_whitney_auc(scores, labels)
    assert (n_pos, n_neg) == (labels.sum(), (~labels).sum())
    assert auc == _pairwise(scores, labels)
    assert mann_whitney_auc(np.array([0.9, 0.1]), np.array([True, False]))[0] == 1.0
    assert mann_whitney_auc(np.array([0.1, 0.9]), np.array([True, False]))[0] == 0.0


def test_auc_without_negatives_is_nan_with_counts():
    auc, n_pos, n_neg = mann_whitney_auc(np.array([0.2, 0.4]), np.array([True, True]))
    assert math.isnan(auc) and (n_pos, n_neg) == (2, 0)
