"""`model.evaluation`: the one typed config of the evaluation knobs and their defaults.

Read by the LightningModule (`lit/module.py`, `lit/evaluation.py`), `build_default_evaluators`
and `eval.py`'s override checks (`workflow/eval_config.py`). `conf/model/default.yaml` spells
the same values out for readers; a test checks they equal these defaults.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: old names still accepted in configs and checkpoints -> the field they set
ALIASES = {"max_dets": "max_dets_per_image"}


@dataclass(frozen=True)
class EvaluationConfig:
    """Evaluation knobs (`model.evaluation.*`).

    Attributes:
        boundary: Boundary AP (the costliest evaluator).
        crowded_thresholds: AP / mIoU also on images with >= N instances, per N.
        score_threshold: detections above it count for matched mIoU and stability.
        max_dets_per_image: K, top-K over all prompts of an image (SAM3/COCO: 100).
        per_iteration: also evaluate every refinement iterate M^t (`iter{t}/` metrics).
        cgf1: SAM3's cgF1 / IL_MCC / positive micro-F1.
        results_file: test stages write `<run>/results/<split>/coco_instances_results.json`.
        results_per_iteration: plus `iter{t}/coco_instances_results.json` per iterate.
    """

    boundary: bool = True
    crowded_thresholds: tuple[int, ...] = (10,)
    score_threshold: float = 0.5
    max_dets_per_image: int = 100
    per_iteration: bool = True
    cgf1: bool = True
    results_file: bool = True
    results_per_iteration: bool = False

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def updated(self, values: Mapping[str, Any] | None) -> EvaluationConfig:
        """A copy with `values` (`model.evaluation`-style, aliases allowed) applied.

        Raises:
            ValueError: an unknown key, named (a typo would otherwise be silently ignored).
        """
        values = dict(values or {})
        unknown = sorted(set(values) - EVALUATION_KEYS)
        if unknown:
            raise ValueError(f"model.evaluation: unknown key(s) {unknown}; known: "
                             f"{sorted(EVALUATION_KEYS)}")
        for old, new in ALIASES.items():  # the current name wins when both are given
            if old in values:
                values.setdefault(new, values.pop(old))
        changes: dict[str, Any] = {}
        for key, value in values.items():
            if key == "crowded_thresholds":
                changes[key] = tuple(int(n) for n in value)
            elif key == "max_dets_per_image":
                changes[key] = int(value)
            elif key == "score_threshold":
                changes[key] = float(value)
            else:
                changes[key] = bool(value)
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> EvaluationConfig:
        """`model.evaluation` (a dict or None) -> the config; missing keys take the defaults."""
        return cls().updated(values)


#: every key `model.evaluation` accepts (fields and old aliases)
EVALUATION_KEYS = frozenset(EvaluationConfig.field_names()) | frozenset(ALIASES)

