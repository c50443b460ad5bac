"""`model.evaluation` (issue 21 item 4): one typed config holds the defaults; the YAML spells
out the same values; `build_default_evaluators` builds the whole suite, distillation included."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import CONF_DIR
from omegaconf import OmegaConf

from region_sam3.eval import (
    BoundaryAPEvaluator,
    CGF1Evaluator,
    DistillationEvaluator,
    EvaluationConfig,
    build_default_evaluators,
)
from region_sam3.eval.config import EVALUATION_KEYS
from region_sam3.lit.evaluation import EvaluationMixin


def _types(evaluators) -> list[type]:
    return [type(e) for e in evaluators.evaluators]


def test_yaml_defaults_equal_the_dataclass_defaults():
    yaml = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / "default.yaml").evaluation)
    assert set(yaml) == set(EvaluationConfig.field_names()), "YAML and dataclass keys differ"
    assert EvaluationConfig.from_mapping(yaml) == EvaluationConfig()


def test_every_key_is_known_to_the_override_checks_and_aliases_apply():
    assert set(EvaluationConfig.field_names()) | {"max_dets"} == EVALUATION_KEYS
    cfg = EvaluationConfig.from_mapping({"max_dets": 7, "crowded_thresholds": [3, 5]})
    assert cfg.max_dets_per_image == 7 and cfg.crowded_thresholds == (3, 5)
    both = EvaluationConfig.from_mapping({"max_dets": 7, "max_dets_per_image": 9})
    assert both.max_dets_per_image == 9  # the current name wins
    with pytest.raises(ValueError, match=r"model.evaluation: unknown key\(s\) \['bogsu'\]"):
        EvaluationConfig.from_mapping({"bogsu": 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.boundary = False


def test_builder_follows_the_config_and_adds_distillation_when_on():
    default = _types(build_default_evaluators())
    assert BoundaryAPEvaluator in default and CGF1Evaluator in default
    assert DistillationEvaluator not in default
    lean = build_default_evaluators(EvaluationConfig(boundary=False), cgf1=False)
    assert BoundaryAPEvaluator not in _types(lean) and CGF1Evaluator not in _types(lean)
    embeds = torch.randn(2, 8)
    distill = build_default_evaluators(distill_text_embeds=embeds, distill_category_ids=[3, 9])
    (ev,) = [e for e in distill.evaluators if isinstance(e, DistillationEvaluator)]
    assert torch.equal(ev.text_embeds, embeds) and ev.cat_to_row == {3: 0, 9: 1}


class _Evaluating(EvaluationMixin):
    """The attributes `EvaluationMixin._make_evaluators` reads from `RegionSam3Module`."""

    def __init__(self, teacher, text_embeds):
        self.evaluation = EvaluationConfig(boundary=False)
        self.teacher, self._text_embeds, self._category_ids = teacher, text_embeds, [1, 2]


def test_module_evaluators_include_distillation_only_with_a_teacher():
    embeds = torch.randn(2, 4)
    with_teacher = _types(_Evaluating(object(), embeds)._make_evaluators())
    assert DistillationEvaluator in with_teacher and BoundaryAPEvaluator not in with_teacher
    assert DistillationEvaluator not in _types(_Evaluating(None, None)._make_evaluators())
