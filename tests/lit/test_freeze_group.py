"""The freeze list of the head-only experiments has one home: conf/model/freeze/."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.helpers import CONF_DIR

GROUP_FILE = CONF_DIR / "model" / "freeze" / "all_but_region_head.yaml"
HEAD_ONLY = ["main", "region_head", "region_head_full", "distill_clip"]
#: What those experiments froze when the list was pasted into each of them.
EXPECTED = ["backbone.*", "transformer.*", "geometry_encoder.*", "dot_prod_scoring.*",
            "segmentation_head.pixel_decoder.*", "segmentation_head.instance_seg_head.*",
            "segmentation_head.semantic_seg_head.*", "segmentation_head.cross_attend_prompt.*",
            "segmentation_head.cross_attn_norm.*", "segmentation_head.mask_predictor.*"]


@pytest.mark.parametrize("experiment", HEAD_ONLY)
def test_head_only_experiments_freeze_every_sam3_module(experiment):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}"])
    assert list(cfg.model.sam3.freeze) == EXPECTED
    assert list(OmegaConf.load(GROUP_FILE).freeze) == EXPECTED


def test_freeze_list_is_not_pasted_into_experiments():
    pasted = [p.name for p in (CONF_DIR / "experiment").glob("*.yaml")
              if "segmentation_head.mask_predictor" in p.read_text()]
    assert pasted == []


def test_freeze_group_can_be_swapped_from_the_command_line():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=region_head",
                                          "model.sam3.freeze=[backbone.*]"])
    assert list(cfg.model.sam3.freeze) == ["backbone.*"]
