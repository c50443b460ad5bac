"""Distillation of frozen teacher region embeddings into the region tokens (TextRegion-style).

A mixin of `RegionSam3Module`: it reads the module's `teacher`, `teacher_cache`, `distill`
(loss), `_text_embeds` and `hparams.teacher_masks`, all set up in the module's `__init__`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from region_sam3.data.batch import FindQueryBatch


class DistillationMixin:
    """Teacher targets and distillation losses of a training step."""

    def _teacher_embeddings(self, batch: FindQueryBatch, masks: torch.Tensor,
                            use_cache: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher region embeddings `[T,D]` and valid flags `[T]` for `masks [T,H,W]`.

        Without the cache no host-device sync: targets are grouped per image with the
        collator's host copy of their image rows (`FindQueryBatch.host_target_images`).
        """
        images = batch.images * 0.5 + 0.5  # undo SAM3's mean/std 0.5 normalisation -> [0,1]
        image_index = batch.host_target_images()
        if not (use_cache and self.teacher_cache is not None):
            return self.teacher(images, masks.float(), image_index, return_valid=True)
        # Cache path: host work on purpose. The cache lives on disk and is keyed by Python ids,
        # so the image / annotation ids are read back and the embeddings of a miss go through
        # the CPU anyway; this costs a couple of syncs per step, far below the file I/O.
        embeds = torch.zeros(masks.shape[0], self.teacher.embed_dim, device=self.device)
        image_ids = batch.image_ids.tolist()
        annotation_ids = batch.annotation_ids.tolist()
        for i, image_id in enumerate(image_ids):
            rows = [t for t, n in enumerate(image_index) if n == i]
            if not rows:
                continue
            ann_ids = [annotation_ids[t] for t in rows]
            cached = self.teacher_cache.get(image_id, ann_ids)
            rows_t = torch.as_tensor(rows, dtype=torch.long).to(masks.device, non_blocking=True)
            if cached is None:
                emb, valid = self.teacher(images[i:i + 1], masks[rows_t].float(),
                                          [0] * len(rows), return_valid=True)
                cached = emb * valid[:, None]  # invalid rows stored as zeros
                self.teacher_cache.put(image_id, ann_ids, cached.cpu())
            embeds[rows_t.to(self.device)] = cached.to(self.device, embeds.dtype)
        return embeds, embeds.abs().sum(dim=1) > 0

    def _distillation_losses(self, batch: FindQueryBatch, out: dict[str, Any]) -> dict:
        """Distillation terms of the matched (query, target) pairs: `region_embed [B,Q,D]`
        gathered at the matcher's indices `[M]` against the teacher's `[T,D]` rows. Rows whose
        teacher mask was empty get weight 0 (not dropped: no data-dependent shape, no sync)."""
        batch_idx, query_idx, target_idx = out["indices"][:3]
        if target_idx is None:
            target_idx = torch.arange(batch_idx.numel(), device=batch_idx.device)
        if self.hparams.teacher_masks == "student":
            up = F.interpolate(out["pred_masks"][batch_idx, query_idx][:, None].detach().float(),
                               size=batch.masks.shape[-2:], mode="bilinear", align_corners=False)
            masks = torch.zeros_like(batch.masks, dtype=torch.float)
            masks[target_idx] = up[:, 0].sigmoid()
        else:
            masks = batch.masks
        teacher_embeds, valid = self._teacher_embeddings(
            batch, masks, use_cache=self.hparams.teacher_masks == "gt")
        student = F.normalize(out["region_embed"][batch_idx, query_idx].float(), dim=-1)
        return self.distill(student, teacher_embeds[target_idx], text_embeds=self._text_embeds,
                            step=self.global_step, weight=valid[target_idx].float())
