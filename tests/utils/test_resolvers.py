"""`${required:...}` and `${required_unless:...}` (region_sam3/utils/resolvers.py)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from region_sam3.utils.resolvers import MissingConfigValueError
from region_sam3.utils.run_config import check_missing_values


def _cfg(from_hub):
    return OmegaConf.create({"sam3": {"from_hub": from_hub,
                                      "checkpoint": '${required_unless:${.from_hub},"pass it"}'}})


def test_required_unless_resolves_to_none_when_the_alternative_is_set():
    cfg = _cfg(True)
    check_missing_values(cfg)
    assert cfg.sam3.checkpoint is None


@pytest.mark.parametrize("from_hub", [False, None])
def test_required_unless_names_the_key_and_the_hint(from_hub):
    # the resolver's own error, not OmegaConf's wrapper (check_missing_values unwraps it)
    with pytest.raises(MissingConfigValueError, match=r"^sam3\.checkpoint is required: pass it$"):
        check_missing_values(_cfg(from_hub))


def test_required_fails_with_its_hint():
    cfg = OmegaConf.create({"a": {"b": '${required:"give a.b"}'}})
    with pytest.raises(MissingConfigValueError, match=r"^a\.b is required: give a\.b$"):
        check_missing_values(cfg)
