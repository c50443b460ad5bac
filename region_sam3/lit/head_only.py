"""Head-only checkpoints (issue 19 item 3): do not store the frozen SAM3 base.

At official size every checkpoint carried the whole frozen 848M-parameter base (3.39 GB a
file) for a 1.58M-parameter head. When the base is frozen and comes from a reproducible
source (`model.sam3.checkpoint`: a path or a `builtin:` name, or the hub), the checkpoint keeps
only the trainable parameters, the buffers of modules that train, optimizer/scheduler/loop state
and the base's identity: its source, size and a sha256 over the dropped tensors. Loading
rebuilds the module from its hyper-parameters (which reads the base from its source), fills the
missing keys from the live model and checks the hash: a different base file is a clear error.
`checkpoint.full_weights=true` (or a randomly initialised base, which no source can rebuild)
keeps every tensor.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)
IDENTITY_KEY = "base_identity"
NET_PREFIX = "net."


class BaseIdentityError(RuntimeError):
    """The base rebuilt from its source is not the one a head-only checkpoint was trained on."""


def base_source(sam3_cfg: Mapping[str, Any] | None) -> str | None:
    """Where the base weights come from: a path, `builtin:<name>`, `hub`, or None (random)."""
    cfg = dict(sam3_cfg or {})
    if cfg.get("checkpoint"):
        return str(cfg["checkpoint"])
    return "hub" if cfg.get("from_hub") else None


def frozen_base_keys(net: nn.Module, prefix: str = NET_PREFIX) -> list[str]:
    """State-dict keys (with `prefix`) of frozen parameters and of buffers of modules that
    have no trainable parameter (their values come from the base, never from training)."""
    keys = [prefix + n for n, p in net.named_parameters() if not p.requires_grad]
    for mod_name, module in net.named_modules():
        if any(p.requires_grad for p in module.parameters()):
            continue  # a training module's buffers (e.g. running stats) change: keep them
        for buf_name in module._buffers:
            if buf_name in module._non_persistent_buffers_set or module._buffers[buf_name] is None:
                continue
            keys.append(prefix + (f"{mod_name}.{buf_name}" if mod_name else buf_name))
    return sorted(set(keys))


def tensors_sha256(state: Mapping[str, torch.Tensor], keys: list[str]) -> str:
    """sha256 over (key, dtype, shape, raw bytes) of `state[k]` for `keys` in sorted order."""
    digest = hashlib.sha256()
    for key in sorted(keys):
        tensor = state[key].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}|{tensor.dtype}|{tuple(state[key].shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


#: {fingerprint of the frozen tensors: sha256}: a frozen base does not change between saves, and
#: hashing it is a 3.2 GB device->host copy + sha256 at official size (seconds per save).
_DIGEST_CACHE: dict[tuple, str] = {}
_DIGEST_CACHE_SIZE = 4


def _fingerprint(state: Mapping[str, torch.Tensor], keys: list[str]) -> tuple:
    """Identity of the tensors' storage and contents version: changes when any of them is
    replaced (new storage) or modified in place (`_version` increments)."""
    return tuple((k, state[k].data_ptr(), state[k]._version, state[k].dtype,
                  tuple(state[k].shape), str(state[k].device)) for k in sorted(keys))


def frozen_base_sha256(state: Mapping[str, torch.Tensor], keys: list[str]) -> str:
    """`tensors_sha256`, computed once per unchanged set of frozen tensors."""
    fingerprint = _fingerprint(state, keys)
    digest = _DIGEST_CACHE.get(fingerprint)
    if digest is None:
        digest = tensors_sha256(state, keys)
        if len(_DIGEST_CACHE) >= _DIGEST_CACHE_SIZE:
            _DIGEST_CACHE.pop(next(iter(_DIGEST_CACHE)))
        _DIGEST_CACHE[fingerprint] = digest
    return digest


def strip_frozen_base(checkpoint: dict[str, Any], net: nn.Module,
                      sam3_cfg: Mapping[str, Any] | None) -> None:
    """Drop the frozen base from `checkpoint["state_dict"]` in place; store its identity."""
    source = base_source(sam3_cfg)
    state = checkpoint["state_dict"]
    keys = [k for k in frozen_base_keys(net) if k in state]
    if not keys:
        return
    if source is None:
        log.info("checkpoint keeps the full base: model.sam3 has no checkpoint source (random "
                 "init cannot be rebuilt on load)")
        return
    checkpoint[IDENTITY_KEY] = {
        "source": source,
        "config": {k: v for k, v in dict(sam3_cfg or {}).items()
                   if k in ("_target_", "name", "checkpoint", "from_hub")},
        "keys": keys,
        "tensors": len(keys),
        "elements": int(sum(state[k].numel() for k in keys)),
        "bytes": int(sum(state[k].numel() * state[k].element_size() for k in keys)),
        "sha256": frozen_base_sha256(state, keys),
    }
    for key in keys:
        del state[key]


def restore_frozen_base(checkpoint: dict[str, Any], live_state: Mapping[str, torch.Tensor],
                        where: str = "checkpoint") -> None:
    """Fill a head-only checkpoint's base keys from `live_state` (the rebuilt module's
    `state_dict()`, keys with `net.`) and check the hash. No-op for a full checkpoint.

    Raises:
        BaseIdentityError: a base key is missing or the rebuilt base's hash differs.
    """
    identity = checkpoint.get(IDENTITY_KEY)
    if not identity:
        return
    source = identity.get("source")
    keys = list(identity["keys"])
    missing = [k for k in keys if k not in live_state]
    if missing:
        raise BaseIdentityError(
            f"{where} is head-only (base from {source!r}) but the rebuilt model has no "
            f"{len(missing)} of its base tensors (e.g. {missing[0]}): different architecture?")
    state = checkpoint["state_dict"]
    for key in keys:
        state.setdefault(key, live_state[key])
    digest = tensors_sha256(state, keys)
    if digest != identity["sha256"]:
        raise BaseIdentityError(
            f"{where} is head-only: its frozen base came from model.sam3.checkpoint={source!r} "
            f"(sha256 {identity['sha256'][:16]}…, {identity.get('tensors')} tensors) but the "
            f"base rebuilt from that source hashes to {digest[:16]}…: the file at that source "
            "changed or is another model. Point model.sam3.checkpoint at the original weights.")
