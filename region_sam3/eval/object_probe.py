"""Object-level colour / shape accuracy of a dense category read-out (the shape probe).

For each ground-truth object the per-pixel category logits are averaged inside its visible mask
(area-resampled to the logit grid) and the arg-max over the object categories (background
excluded) is compared with the object's category, its colour and its shape separately. With a
linear (1x1-conv) read-out, averaging logits equals a linear probe on mask-pooled features, the
metric of the backbone diagnosis: a backbone that encodes colour but not shape scores high colour
and near-chance (1 / #shapes) shape accuracy.

Accuracies are NaN with a count of 0 when a group has no objects (e.g. no object >= 400 px).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

#: objects at least this many pixels (full resolution) form the "large" group of the diagnosis.
LARGE_OBJECT_PIXELS = 400


def pooled_object_logits(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mask-averaged logits of one image's objects.

    Args:
        logits: [C+1,L,L] per-pixel logits (index 0 = background).
        masks: [K,S,S] bool visible masks at image resolution.
    Returns:
        [K,C+1] logits averaged inside each mask (area-weighted at the L² grid).
    """
    if masks.shape[0] == 0:
        return logits.new_zeros((0, logits.shape[0]))
    weights = F.interpolate(masks[:, None].float(), size=logits.shape[-2:], mode="area")[:, 0]
    weights = weights.flatten(1)  # [K, L*L]
    weights = weights / weights.sum(1, keepdim=True).clamp_min(1e-6)
    return weights @ logits.flatten(1).T.float()


@dataclass
class ObjectProbeAccumulator:
    """Counts correct category / colour / shape predictions over objects (all and large).

    ``colour_of[k]`` / ``shape_of[k]`` give the colour and shape index of category id ``k``
    (index 0, background, is unused).
    """

    colour_of: torch.Tensor
    shape_of: torch.Tensor
    large_pixels: int = LARGE_OBJECT_PIXELS
    counts: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_category_names(cls, names: Sequence[str], **kwargs) -> ObjectProbeAccumulator:
        """Categories named "<colour> <shape>" in id order 1..C."""
        colours = sorted({n.split(" ", 1)[0] for n in names})
        shapes = sorted({n.split(" ", 1)[1] for n in names})
        colour_of = torch.tensor([-1] + [colours.index(n.split(" ", 1)[0]) for n in names])
        shape_of = torch.tensor([-1] + [shapes.index(n.split(" ", 1)[1]) for n in names])
        return cls(colour_of=colour_of, shape_of=shape_of, **kwargs)

    def reset(self) -> None:
        self.counts = {}

    def update(self, logits: torch.Tensor, masks: torch.Tensor, category_ids: torch.Tensor) -> None:
        """Add one image: logits [C+1,L,L], masks [K,S,S] bool, category_ids [K] long."""
        if category_ids.numel() == 0:
            return
        pooled = pooled_object_logits(logits, masks)
        predicted = pooled[:, 1:].argmax(1).cpu() + 1  # background excluded
        truth = category_ids.cpu()
        large = masks.flatten(1).sum(1).cpu() >= self.large_pixels
        hits = {"category": predicted == truth,
                "colour": self.colour_of[predicted] == self.colour_of[truth],
                "shape": self.shape_of[predicted] == self.shape_of[truth]}
        for group, keep in (("all", torch.ones_like(large)), ("large", large)):
            self.counts[f"{group}/n"] = self.counts.get(f"{group}/n", 0.0) + float(keep.sum())
            for name, hit in hits.items():
                key = f"{group}/{name}"
                self.counts[key] = self.counts.get(key, 0.0) + float((hit & keep).sum())

    def compute(self) -> dict[str, float]:
        """``{"shape_acc", "colour_acc", "category_acc", "large/shape_acc", ..., "*/n"}``."""
        out: dict[str, float] = {}
        for group, prefix in (("all", ""), ("large", "large/")):
            n = self.counts.get(f"{group}/n", 0.0)
            out[f"{prefix}num_objects"] = n
            for name in ("category", "colour", "shape"):
                hits = self.counts.get(f"{group}/{name}", 0.0)
                out[f"{prefix}{name}_acc"] = hits / n if n else float("nan")
        return out
