"""OmegaConf resolvers used by the configs (registered when `region_sam3` is imported)."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf


class MissingConfigValueError(ValueError):
    """A config value that has no usable default was not given on the command line."""


def _required(hint: str, *, _node_: Any) -> Any:
    # `???` cannot express "required in this experiment" because merging MISSING onto a group
    # default (e.g. `checkpoint: null`) keeps the default; this resolver fails on first use.
    raise MissingConfigValueError(f"{_node_._get_full_key(None)} is required: {hint}")


def register_resolvers() -> None:
    """Register `${required:"how to provide it"}` (idempotent)."""
    if not OmegaConf.has_resolver("required"):
        OmegaConf.register_new_resolver("required", _required)
