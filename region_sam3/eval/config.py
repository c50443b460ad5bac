"""`model.evaluation` keys (shared by the LightningModule and `eval.py`'s override checks)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

EVALUATION_KEYS = frozenset({"boundary", "crowded_thresholds", "score_threshold",
                             "max_dets_per_image", "max_dets", "per_iteration", "cgf1",
                             "results_file", "results_per_iteration"})


def check_evaluation_config(evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """`model.evaluation` as a dict; an unknown key is an error naming it (a typo would
    otherwise be silently ignored)."""
    unknown = sorted(set(evaluation) - EVALUATION_KEYS)
    if unknown:
        raise ValueError(f"model.evaluation: unknown key(s) {unknown}; known: "
                         f"{sorted(EVALUATION_KEYS)}")
    return dict(evaluation)
