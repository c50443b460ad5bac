"""Region embeddings at inference and zero-shot region labels (CLIP-queryable regions).

A distilled region head projects every region token R^T into the teacher's CLIP space
(`region_embed`). At inference only SAM3 + the head run; the teacher contributes its **text
tower** alone: `classify` compares each kept detection's region embedding with the teacher's
text embeddings of arbitrary names, so no image tower ever runs.

Memory at official size (1008 px, 200 queries): the extra outputs kept per prompt are the kept
rows of `region_embed` (N x D floats) and, only with `return_iterations=True`, the kept rows of
each M^t at the mask-head resolution (T+1 x N x 288 x 288 float32, ~3 MB per detection and
iteration); they are upsampled to the image size one iteration at a time, on request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from sam3.model.sam3_image_processor import Sam3Processor

from region_sam3.outputs import parse_iter_mask_key, presence_scores


class RegionAwareProcessor(Sam3Processor):
    """`Sam3Processor` that also keeps the region head's outputs of the kept detections.

    After `set_text_prompt`, besides SAM3's `masks`, `boxes`, `scores`, the state holds
    `region_embeds` `[N,D]` (L2-normalised, or None without a region head) and
    `iter_mask_logits` `{t: [N,h,w]}` (mask-head resolution, or {} when not asked for), with the
    same N rows in the same order as `scores`.
    """

    return_iterations: bool = False

    def _forward_grounding(self, state: dict[str, Any]) -> dict[str, Any]:
        captured: dict[str, Any] = {}
        original = self.model.forward_grounding

        def capture(*args: Any, **kwargs: Any) -> dict[str, Any]:
            out = original(*args, **kwargs)
            captured.update(out)
            return out

        # Shadow the bound method for this one call: SAM3's own post-processing runs unchanged
        # and we read the outputs it discards.
        self.model.__dict__["forward_grounding"] = capture
        try:
            state = super()._forward_grounding(state)
        finally:
            del self.model.__dict__["forward_grounding"]
        # The very same `keep` as Sam3Processor._forward_grounding (same ops, same order).
        probs = presence_scores(captured["pred_logits"], captured["presence_logit_dec"])
        keep = probs > self.confidence_threshold
        embed = captured.get("region_embed")
        state["region_embeds"] = (
            F.normalize(embed[keep].float(), dim=-1) if embed is not None else None
        )
        iters: dict[int, torch.Tensor] = {}
        if self.return_iterations:
            for key, value in captured.items():
                if (t := parse_iter_mask_key(key)) is not None:
                    iters[t] = value[keep].float()
        state["iter_mask_logits"] = iters
        return state


def upsample_mask_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`[N,h,w]` mask logits -> `[N,H,W]` probabilities, exactly as `Sam3Processor` does."""
    if logits.shape[0] == 0:
        return logits.new_zeros(0, *size)
    return F.interpolate(logits[:, None], size, mode="bilinear", align_corners=False)[:, 0].sigmoid()


@dataclass
class RegionLabels:
    """Zero-shot labels of a prediction's regions.

    Attributes:
        names: the C candidate names, in the order given.
        indices: `[N]` long, index into `names` of each region's best match.
        similarities: `[N,C]` cosine similarity region embedding x text embedding.
    """

    names: list[str]
    indices: torch.Tensor
    similarities: torch.Tensor

    @property
    def labels(self) -> list[str]:
        """The best-matching name of every region."""
        return [self.names[i] for i in self.indices.tolist()]

    @property
    def confidences(self) -> torch.Tensor:
        """`[N]` cosine similarity of each region to its label."""
        if self.similarities.shape[0] == 0:
            return self.similarities.new_zeros(0)
        return self.similarities.max(dim=1).values


def classify(region_embeds: torch.Tensor, text_embeds: torch.Tensor,
             names: Sequence[str]) -> RegionLabels:
    """Label `[N,D]` region embeddings with the closest of `[C,D]` text embeddings (cosine)."""
    if text_embeds.shape[0] != len(names):
        raise ValueError(f"{len(names)} names but {text_embeds.shape[0]} text embeddings")
    if region_embeds.shape[-1] != text_embeds.shape[-1]:
        raise ValueError(
            f"region embeddings are {region_embeds.shape[-1]}-d but the teacher's text "
            f"embeddings are {text_embeds.shape[-1]}-d: was the head distilled from this teacher?")
    sim = F.normalize(region_embeds.float(), dim=-1) @ F.normalize(text_embeds.float(), dim=-1).T
    indices = sim.argmax(dim=1) if sim.shape[0] else torch.zeros(0, dtype=torch.long)
    return RegionLabels(list(names), indices.cpu(), sim.cpu())


def parse_names(text: str) -> list[str]:
    """`"cat, dog ,red circle"` -> `["cat", "dog", "red circle"]` (empty items are an error)."""
    names = [n.strip() for n in text.split(",")]
    if not names or any(not n for n in names):
        raise ValueError(f"--labels {text!r}: give comma-separated names, e.g. 'cat,dog'")
    return names


def teacher_from_hparams(hparams: Mapping[str, Any], pretrained: str | None = None):
    """Rebuild the distillation teacher of a Lightning checkpoint, for its text tower.

    Args:
        hparams: the checkpoint's `hyper_parameters` (`teacher` is its config).
        pretrained: teacher weights to use instead of the config's `pretrained`.

    Raises:
        ValueError: the checkpoint was trained without a teacher, or with a random-init one
            (`teacher.pretrained=null`): teacher weights are never saved in checkpoints, so a
            rebuilt random teacher would not be the one the head was distilled from.
    """
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = hparams.get("teacher")
    if not cfg:
        raise ValueError("this checkpoint was trained without a distillation teacher "
                         "(model.teacher is null): its regions have no CLIP embedding to query")
    cfg = OmegaConf.create(dict(cfg))
    if pretrained is not None:
        cfg.pretrained = str(pretrained)
    if cfg.get("pretrained") is None:
        raise ValueError(
            f"the checkpoint's teacher {cfg.get('model_name')!r} has random weights "
            "(teacher.pretrained=null), which are not saved in checkpoints: pass the teacher "
            "object it was distilled from (Sam3Predictor(model, teacher=...)) or its weights "
            "(--teacher-weights / teacher_weights=)")
    return instantiate(cfg)


@torch.no_grad()
def teacher_region_labels(teacher: torch.nn.Module, image: torch.Tensor, masks: torch.Tensor,
                          names: Sequence[str]) -> RegionLabels:
    """The teacher's own zero-shot labels of `masks` (image tower + text tower): the reference
    a distilled head is compared with. Not used at inference.

    Args:
        image: `[3,H,W]` uint8 (or float in [0,1]).  masks: `[N,H,W]` bool/soft, same size.
    """
    pixels = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
    device = next(teacher.parameters()).device
    embeds = teacher(pixels[None].to(device), masks.float().to(device))
    return classify(embeds, teacher.encode_text(list(names)), names)


def agreement_with_chance(student: Sequence[int], teacher: Sequence[int],
                          num_classes: int) -> dict[str, float]:
    """Label agreement of two labelings of the same regions, with two chance levels.

    Returns `agreement` (fraction of equal labels), `chance_uniform` (1/C) and
    `chance_marginal` = sum_c p_student(c) p_teacher(c): the agreement of two independent
    labelings with the same label frequencies (what a head that ignores the region but
    predicts the right label distribution gets). NaN with `num_regions` 0 when empty.
    """
    s = torch.as_tensor(list(student), dtype=torch.long)
    t = torch.as_tensor(list(teacher), dtype=torch.long)
    if s.shape != t.shape:
        raise ValueError(f"{s.numel()} student labels but {t.numel()} teacher labels")
    n = s.numel()
    if n == 0:
        nan = float("nan")
        return {"agreement": nan, "chance_uniform": 1.0 / num_classes, "chance_marginal": nan,
                "num_regions": 0.0}
    ps = torch.bincount(s, minlength=num_classes).float() / n
    pt = torch.bincount(t, minlength=num_classes).float() / n
    return {"agreement": float((s == t).float().mean()), "chance_uniform": 1.0 / num_classes,
            "chance_marginal": float((ps * pt).sum()), "num_regions": float(n)}
