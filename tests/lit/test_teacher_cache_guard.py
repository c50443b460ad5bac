"""The teacher cache is refused when the training views are augmented."""

from __future__ import annotations

from types import SimpleNamespace

import hydra
import pytest
from helpers import compose_task
from omegaconf import OmegaConf

from region_sam3.teachers.cache import augmentation_changes_views

SMOKE = ["experiment=distill_clip", "debug=smoke", "model.sam3.checkpoint=null",
         "model/sam3=tiny", "model.sam3.strict=false"]


def test_augmentation_changes_views_names_the_active_knobs():
    assert augmentation_changes_views(None) == []
    identity = {"hflip_prob": 0.0, "crop": "none", "brightness": 0.0, "contrast": 0.0,
                "saturation": 0.0, "hue": 0.0}
    assert augmentation_changes_views(identity) == []
    assert augmentation_changes_views({**identity, "hflip_prob": 0.5}) == ["hflip_prob=0.5"]
    assert augmentation_changes_views({**identity, "crop": "lsj"}) == ["crop=lsj"]


@pytest.mark.parametrize("augmented", [True, False])
def test_fit_refuses_teacher_cache_with_augmented_views(augmented, tmp_path, synthetic_data_dir):
    extra = [] if augmented else ["data.augmentation=null"]
    cfg = compose_task("train", tmp_path, synthetic_data_dir,
                       [*SMOKE, f"model.teacher_cache_dir={tmp_path / 'cache'}", *extra])
    OmegaConf.resolve(cfg)
    module = hydra.utils.instantiate(cfg.model)
    datamodule = hydra.utils.instantiate(cfg.data)
    module._trainer = SimpleNamespace(datamodule=datamodule)
    assert bool(datamodule.augmentation) is augmented
    if augmented:
        with pytest.raises(ValueError, match=r"teacher_cache_dir.*data\.augmentation.*hflip_prob"):
            module.setup("fit")
    else:
        datamodule.prepare_data()
        datamodule.setup("fit")
        module.setup("fit")
        assert module._text_embeds is not None and "_text_embeds" in dict(module.named_buffers())
        assert "_text_embeds" not in module.state_dict()  # non-persistent: rebuilt, not stored
