"""OmegaConf resolvers used by the configs (registered when `region_sam3` is imported)."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf


class MissingConfigValueError(ValueError):
    """A config value that has no usable default was not given on the command line."""


def _missing(hint: str, node: Any) -> MissingConfigValueError:
    return MissingConfigValueError(f"{node._get_full_key(None)} is required: {hint}")


def _required(hint: str, *, _node_: Any) -> Any:
    # `???` cannot express "required in this experiment" because merging MISSING onto a group
    # default (e.g. `checkpoint: null`) keeps the default; this resolver fails on first use.
    raise _missing(hint, _node_)


def _required_unless(alternative: Any, hint: str, *, _node_: Any) -> Any:
    # `${required_unless:${.from_hub},"..."}`: the value is required unless another key provides
    # the same thing (e.g. the checkpoint comes from the hub). Resolves to None when it does, so
    # consumers see "not given" rather than a placeholder.
    if alternative is True or (isinstance(alternative, str) and alternative.lower() == "true"):
        return None
    raise _missing(hint, _node_)


def register_resolvers() -> None:
    """Register `${required:"how to provide it"}` and `${required_unless:${.other},"how"}`
    (idempotent)."""
    if not OmegaConf.has_resolver("required"):
        OmegaConf.register_new_resolver("required", _required)
    if not OmegaConf.has_resolver("required_unless"):
        OmegaConf.register_new_resolver("required_unless", _required_unless)
