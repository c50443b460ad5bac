"""SAM3 segmentation head with the region-token refinement loop.

:class:`RegionAwareSegmentationHead` subclasses SAM3's ``UniversalSegmentationHead``:

* every upstream attribute name is kept (``pixel_decoder``, ``instance_seg_head``,
  ``semantic_seg_head``, ``mask_predictor.mask_embed``, ``cross_attend_prompt``,
  ``cross_attn_norm``, ``presence_head``), so the official checkpoint loads unchanged; the only new
  parameters live under ``region_head.*`` (a :class:`~region_sam3.models.region_head.RegionHead`);
* ``forward`` keeps the upstream signature: under SAM3's activation checkpointing wrapper, tensor
  kwargs not in the signature are silently replaced by a string;
* the upstream part of ``forward`` is the upstream code line for line, so with ``num_iters=0``
  the upstream keys are bit-identical to SAM3's.

Output keys (B = find-queries, Q = queries incl. o2m in DAC training, H=W=288 at full size):

=====================  ==================  ==================================================
key                    shape               meaning
=====================  ==================  ==================================================
pred_masks             [B,Q,H,W]           final logits M^T (M^0 = SAM3's when T=0)
semantic_seg           [B,1,H,W]           upstream, unchanged
presence_logit         [B,1] or None       upstream, unchanged
pred_masks_iter{t}     [B,Q,H,W]           M^t for t=0..T (iter{T} *is* pred_masks, no copy)
region_tokens          [B,Q,C]             R^T (q^0 = decoder queries when T=0)
region_embed           [B,Q,D]             projection of R^T (not normalised)
region_gate            [B,Q]               text gate of the last iteration (gating only)
=====================  ==================  ==================================================

All per-query keys are in ``instance_keys`` so ``Sam3Image._run_segmentation_heads`` slices them
``v[:, :num_o2o]`` and emits ``<key>_o2m`` for the one-to-many half.
"""

from __future__ import annotations

import torch.nn as nn
from sam3.model.maskformer_segmentation import UniversalSegmentationHead
from torch import Tensor

from region_sam3.models.pooling import seq_to_spatial
from region_sam3.models.region_head import RegionHead, masked_mean_text
from region_sam3.outputs import collect_iter_masks, iter_mask_keys

__all__ = [
    "RegionAwareSegmentationHead",
    "build_region_seg_head",
    "iter_mask_keys",
    "collect_iter_masks",
    "REGION_KEYS",
]

#: per-query outputs added by the region head besides the per-iteration masks
REGION_KEYS = ("region_tokens", "region_embed", "region_gate")


class RegionAwareSegmentationHead(UniversalSegmentationHead):
    """``UniversalSegmentationHead`` + ``region_head`` refinement loop.

    Construct either like the upstream head plus ``region_head`` (Hydra), or from an already
    built upstream head with :func:`build_region_seg_head` (reuses its submodules).

    Args (beyond the upstream ones):
        region_head: the refinement head; None = a T=0 head (plain SAM3 + extra keys).
        num_o2o_queries: SAM3's ``transformer.decoder.num_queries``; lets the head recognise
            DAC one-to-many queries (Q == 2*num_o2o in training) and keep them out of region
            self-attention / write-back. None = treat all queries as one group.
    """

    def __init__(
        self,
        hidden_dim: int,
        upsampling_stages: int,
        pixel_decoder: nn.Module,
        aux_masks: bool = False,
        no_dec: bool = False,
        act_ckpt: bool = False,
        presence_head: bool = False,
        dot_product_scorer: nn.Module | None = None,
        cross_attend_prompt: nn.Module | None = None,
        region_head: RegionHead | None = None,
        num_o2o_queries: int | None = None,
    ) -> None:
        super().__init__(
            hidden_dim=hidden_dim,
            upsampling_stages=upsampling_stages,
            pixel_decoder=pixel_decoder,
            aux_masks=aux_masks,
            no_dec=no_dec,
            act_ckpt=act_ckpt,
            presence_head=presence_head,
            dot_product_scorer=dot_product_scorer,
            cross_attend_prompt=cross_attend_prompt,
        )
        self._attach(region_head if region_head is not None else RegionHead(hidden_dim, 0))
        self.num_o2o_queries = num_o2o_queries

    def _attach(self, region_head: RegionHead) -> None:
        if region_head.num_iters > 0 and (self.no_dec or self.aux_masks):
            raise ValueError(
                "region refinement needs no_dec=False and aux_masks=False (SAM3 default)"
            )
        if region_head.d_model != self.d_model:
            raise ValueError(
                f"region_head.d_model={region_head.d_model} != head d_model={self.d_model}"
            )
        self.region_head = region_head
        keys = list(self.instance_keys)
        for k in [*iter_mask_keys(region_head.num_iters), *REGION_KEYS]:
            if k not in keys:
                keys.append(k)
        self.instance_keys = keys

    @property
    def num_iters(self) -> int:
        """T, number of refinement iterations."""
        return self.region_head.num_iters

    def forward(
        self,
        backbone_feats: list[Tensor],
        obj_queries: Tensor,
        image_ids,
        encoder_hidden_states: Tensor | None = None,
        prompt: Tensor | None = None,
        prompt_mask: Tensor | None = None,
        **kwargs,
    ) -> dict[str, Tensor | None]:
        """Upstream head + refinement.

        Args:
            backbone_feats: FPN levels [B_img,C,H_l,W_l], finest first (288^2, 144^2, 72^2).
            obj_queries: [L,B,Q,C] decoder states (``hs``); the last layer is used.
            image_ids: [B] image index of each find-query.
            encoder_hidden_states: [N,B,C] seq-first fusion-encoder memory (N >= 72^2).
            prompt: [L_p,B,C] seq-first prompt tokens.
            prompt_mask: [B,L_p] True = padding.

        Returns:
            dict, see the module docstring.
        """
        # ---- upstream UniversalSegmentationHead.forward, verbatim (bit-identical M^0) -------
        assert encoder_hidden_states is not None
        bs = encoder_hidden_states.shape[1]

        if self.cross_attend_prompt is not None:
            tgt2 = self.cross_attn_norm(encoder_hidden_states)
            tgt2 = self.cross_attend_prompt(
                query=tgt2,
                key=prompt,
                value=prompt,
                key_padding_mask=prompt_mask,
            )[0]
            encoder_hidden_states = tgt2 + encoder_hidden_states

        presence_logit = None
        if self.presence_head is not None:
            pooled_enc = encoder_hidden_states.mean(0)
            presence_logit = (
                self.presence_head(
                    pooled_enc.view(1, bs, 1, self.d_model),
                    prompt=prompt,
                    prompt_mask=prompt_mask,
                )
                .squeeze(0)
                .squeeze(1)
            )

        pixel_embed = self._embed_pixels(
            backbone_feats=backbone_feats,
            image_ids=image_ids,
            encoder_hidden_states=encoder_hidden_states,
        )

        instance_embeds = self.instance_seg_head(pixel_embed)

        if self.no_dec:
            mask_pred = self.mask_predictor(instance_embeds)
        elif self.aux_masks:
            mask_pred = self.mask_predictor(obj_queries, instance_embeds)
        else:
            mask_pred = self.mask_predictor(obj_queries[-1], instance_embeds)

        out: dict[str, Tensor | None] = {
            "pred_masks": mask_pred,
            "semantic_seg": self.semantic_seg_head(pixel_embed),
            "presence_logit": presence_logit,
        }
        # ---- region refinement ----------------------------------------------------------
        if self.no_dec or self.aux_masks:  # T=0 only (checked in _attach): nothing to refine
            return out
        rh = self.region_head
        queries = obj_queries[-1]  # [B,Q,C]
        if rh.num_iters > 0:
            mem_hw = tuple(backbone_feats[-1].shape[-2:])
            memory = seq_to_spatial(encoder_hidden_states, mem_hw)  # [B,C,72,72]
            text = None
            if rh.use_text_gating and isinstance(prompt, Tensor):
                pm = prompt_mask if isinstance(prompt_mask, Tensor) else None
                text = masked_mean_text(prompt, pm)
            res = rh(
                mask_logits=mask_pred,
                queries=queries,
                instance_embeds=instance_embeds,
                memory=memory,
                text=text,
                num_o2o=self.num_o2o_queries if self.training else None,
            )
            masks = res["masks"]
            out["pred_masks"] = masks[-1]
            out["region_tokens"] = res["region_tokens"]
            out["region_embed"] = res["region_embed"]
            if "region_gate" in res:
                out["region_gate"] = res["region_gate"]
        else:
            masks = [mask_pred]
            out["region_tokens"] = queries
            out["region_embed"] = rh.embed_proj(queries)
        for k, m in zip(iter_mask_keys(rh.num_iters), masks):
            out[k] = m
        return out


def build_region_seg_head(
    upstream_head: UniversalSegmentationHead,
    region_head: RegionHead,
    num_o2o_queries: int | None = None,
) -> RegionAwareSegmentationHead:
    """Turn a built SAM3 segmentation head into a region-aware one, reusing its submodules.

    No upstream parameter is copied: the returned head holds the *same* module objects, so
    parameter names (``pixel_decoder.*``, ``mask_predictor.mask_embed.*``, ...) and values are
    identical and a SAM3 checkpoint loads before or after the swap. ``upstream_head`` should not
    be used afterwards (its modules are shared).

    In fresh mode (``region_head.residual=False``) the refinement ``mask_embed`` of every block
    is initialised as a copy of the upstream ``mask_predictor.mask_embed`` so R^t ~ q starts close
    to SAM3's masks.

    Args:
        upstream_head: e.g. ``model.segmentation_head`` of a built ``Sam3Image``.
        region_head: the new head (its ``d_model`` must equal the upstream ``d_model``).
        num_o2o_queries: SAM3's ``transformer.decoder.num_queries`` (for the DAC split).

    Returns:
        The region-aware head; use as ``model.segmentation_head = build_region_seg_head(...)``.
    """
    if not isinstance(upstream_head, UniversalSegmentationHead):
        raise TypeError(f"expected UniversalSegmentationHead, got {type(upstream_head).__name__}")
    head = RegionAwareSegmentationHead.__new__(RegionAwareSegmentationHead)
    nn.Module.__init__(head)
    for k, v in upstream_head.__dict__.items():
        # fresh containers (modules/params/buffers/hooks) holding the same objects
        head.__dict__[k] = v.copy() if isinstance(v, dict) else v
    head.instance_keys = list(upstream_head.instance_keys)
    head._attach(region_head)
    head.num_o2o_queries = num_o2o_queries
    if not region_head.residual and not upstream_head.no_dec:
        src = upstream_head.mask_predictor.mask_embed.state_dict()
        for blk in region_head.blocks:
            blk.mask_embed.load_state_dict(src)
    # keep the upstream train/eval mode
    head.train(upstream_head.training)
    return head
