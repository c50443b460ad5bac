"""The output-key contract of the model, in one place (issue 21).

Bottom-layer module (imports only torch): every producer and consumer of these keys imports it.

Model output dict keys owned here::

    pred_masks_iter{t}       [B,Q,H,W]   mask iterate M^t, t = 0..T (iter{T} *is* pred_masks)
    pred_masks_iter{t}_o2m   [B,Q',H,W]  the one-to-many half (training only)

Metric keys: ``<stage>/[<split>/]iter{t}/<group>/<name>`` for the metrics of iterate t.

Detection score of query q: ``sigmoid(pred_logits[b, q, 0]) * sigmoid(presence_logit_dec[b])``
(SAM3's ``use_presence=True`` post-processing).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from torch import Tensor

__all__ = [
    "ITER_MASK_PREFIX",
    "iter_mask_key",
    "iter_mask_keys",
    "parse_iter_mask_key",
    "iter_mask_items",
    "collect_iter_masks",
    "same_tensor",
    "ITER_METRIC_RE",
    "STAGE_ITER_METRIC_RE",
    "split_iter_metric_key",
    "presence_scores",
]

ITER_MASK_PREFIX = "pred_masks_iter"
_ITER_MASK_RE = re.compile(rf"^{ITER_MASK_PREFIX}(\d+)$")

#: ``iter{t}/<rest>`` (a metric key relative to its stage/split prefix)
ITER_METRIC_RE = re.compile(r"^iter(\d+)/(.+)$")
#: ``<stage>/iter{t}/...`` (a full metric key; the stage is the shortest prefix before ``/iter``)
STAGE_ITER_METRIC_RE = re.compile(r"^(?P<stage>.+?)/iter(?P<t>\d+)/")


def iter_mask_key(t: int) -> str:
    """Output key of the mask iterate M^t: ``pred_masks_iter{t}``."""
    return f"{ITER_MASK_PREFIX}{t}"


def iter_mask_keys(num_iters: int) -> list[str]:
    """Output keys of the per-iteration masks M^0..M^T: ``pred_masks_iter{t}``."""
    return [iter_mask_key(t) for t in range(num_iters + 1)]


def parse_iter_mask_key(key: str) -> int | None:
    """``t`` of ``pred_masks_iter{t}``; None for any other key (``_o2m`` keys included)."""
    m = _ITER_MASK_RE.match(key)
    return int(m.group(1)) if m else None


def iter_mask_items(keys: Iterable[str]) -> list[tuple[int, str]]:
    """``[(t, key)]`` of the one-to-one mask-iterate keys among ``keys``, sorted by ``t``."""
    return sorted((t, k) for k in keys if (t := parse_iter_mask_key(k)) is not None)


def collect_iter_masks(out: Mapping[str, Any], num_iters: int, suffix: str = "") -> list[Tensor]:
    """Gather [M^0, ..., M^T] from a model output dict.

    Args:
        out: SAM3 output dict (after ``_run_segmentation_heads``) or the head's own output.
        num_iters: T.
        suffix: ``""`` for one-to-one queries, ``"_o2m"`` for the one-to-many half.

    Returns:
        list of T+1 tensors [B,Q,H,W].
    """
    return [out[k + suffix] for k in iter_mask_keys(num_iters)]


def same_tensor(a: Tensor, b: Tensor) -> bool:
    """True when ``a`` and ``b`` are the same tensor or the same view of the same storage.

    The region head returns the final iterate itself as ``pred_masks``; a wrapper (e.g. a
    ``dict`` rebuilt through a hook) may hand back an equal view rather than the same object.
    """
    return a is b or (
        a.shape == b.shape and a.stride() == b.stride() and a.data_ptr() == b.data_ptr()
    )


def split_iter_metric_key(key: str) -> tuple[int, str] | None:
    """``"iter2/mask/AP"`` -> ``(2, "mask/AP")``; None for a key without the ``iter{t}/`` head."""
    m = ITER_METRIC_RE.match(key)
    return (int(m.group(1)), m.group(2)) if m else None


def presence_scores(pred_logits: Tensor, presence_logit: Tensor) -> Tensor:
    """``sigmoid(pred_logits) * sigmoid(presence)`` per query.

    Args:
        pred_logits: ``[B,Q,1]`` class logits.
        presence_logit: ``[B,1]`` presence logits.

    Returns:
        ``[B,Q]`` scores in the dtype of the inputs (cast before calling for float32).
    """
    return (pred_logits.sigmoid() * presence_logit.sigmoid().unsqueeze(1)).squeeze(-1)
