"""HQ-SAM-style baseline: a learned high-quality output token with global-local feature fusion.

HQ-SAM (Ke et al., NeurIPS 2023, ``SysCV/sam-hq`` ``MaskDecoderHQ``) adds to a frozen SAM:

* ``hf_token``: one learned output token that goes through SAM's mask decoder with the other
  output tokens; its output goes through ``hf_mlp`` (3-layer MLP -> C/8) into a dynamic kernel;
* HQ features = ``embedding_encoder(image_embeddings)`` (global, ConvT x2 -> C/8 at 4x)
  + ``compress_vit_feat(early ViT feature)`` (local, output of the first global-attention
  block, ConvT x2 -> C/8) + ``embedding_maskfeature(upscaled mask-decoder feature)``
  (3x3 conv x2 -> C/8);
* ``masks_hq = kernel @ hq_features``; with ``hq_token_only=False`` the output is
  ``masks_sam + masks_hq`` (the HQ mask is a residual on SAM's chosen mask).

Adaptation to SAM3 (multi-query, one mask per query, no single output token):

* SAM3's decoder output tokens are its Q object queries ``hs[-1]``; the frozen DETR decoder is not
  re-run with an extra token. Instead the learned ``hf_token`` is added to *every* query's
  decoder output and ``hf_mlp`` turns each into its HQ kernel, so every query (object) gets its
  residual HQ mask: ``M_k = M^0_k + hf_mlp(q_k + hf_token) . F_hq``. (One token shared by all
  queries, as HQ-SAM has one token shared by all prompts.)
* image_embeddings -> SAM3's neck level ``backbone_fpn[-1]`` (72^2, C); early ViT feature ->
  output of the trunk's first global-attention block (block 7 of 32 in the official ViT-L;
  captured by a forward hook); upscaled mask-decoder feature -> the pixel decoder's
  ``instance_embeds`` (288^2, C channels rather than HQ-SAM's C/8, so the first 3x3 conv of
  ``embedding_maskfeature`` maps C -> C/4).
* The last layer of ``hf_mlp`` is zero-initialised so that at init the masks are exactly
  SAM3's (as the region head's residual; HQ-SAM starts from a random token instead).

The image-level part of the fused features (global + local) is computed once per *image* and
gathered by ``image_ids``; only ``embedding_maskfeature`` runs per find-query. Official size:
80 prompts x 288^2 x (3x3 conv C->C/4->C/8) ~ 2 TFLOP per image forward and ~0.9 GB of bf16
activations for the C/4 intermediate; parameters ~1.46M (C=256, ViT 1024), close to the region
head's 1.45M. Tiny (C=64, ViT 96): ~51k.

The token is attached as ``segmentation_head.hq_token`` (new keys only) and wired with forward
hooks, so no upstream parameter is renamed; the head's output ``pred_masks`` (and the last
``pred_masks_iter{T}`` when a region head is present) become ``M + masks_hq``.
"""

from __future__ import annotations

import inspect
import logging

import torch
import torch.nn.functional as F
from sam3.model.model_misc import MLP, LayerNorm2d
from torch import Tensor, nn

from region_sam3.models.baselines import count_params, keep_requires_grad, region_head_budget
from region_sam3.outputs import iter_mask_items

log = logging.getLogger(__name__)

__all__ = ["HQOutputToken", "HQTokenBaseline"]


def _upsample4(c_in: int, c_mid: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(c_in, c_mid, kernel_size=2, stride=2),
        LayerNorm2d(c_mid),
        nn.GELU(),
        nn.ConvTranspose2d(c_mid, c_out, kernel_size=2, stride=2),
    )


class HQOutputToken(nn.Module):
    """The HQ token, its kernel MLP and the global-local fusion layers.

    Args:
        d_model: SAM3 hidden size C.
        vit_dim: ViT width (1024 official, 96 tiny).
        hq_dim: HQ feature width (HQ-SAM: C/8); None = ``d_model // 8``.
    """

    def __init__(self, d_model: int, vit_dim: int, hq_dim: int | None = None) -> None:
        super().__init__()
        c, h = int(d_model), int(hq_dim or d_model // 8)
        self.hq_dim = h
        self.hf_token = nn.Embedding(1, c)
        self.hf_mlp = MLP(c, c, h, 3)
        nn.init.zeros_(self.hf_mlp.layers[-1].weight)
        nn.init.zeros_(self.hf_mlp.layers[-1].bias)
        self.compress_vit_feat = _upsample4(vit_dim, c, h)
        self.embedding_encoder = _upsample4(c, c // 4, h)
        self.embedding_maskfeature = nn.Sequential(
            nn.Conv2d(c, c // 4, 3, 1, 1), LayerNorm2d(c // 4), nn.GELU(), nn.Conv2d(c // 4, h, 3, 1, 1)
        )

    def forward(
        self,
        early_vit: Tensor,
        image_embed: Tensor,
        instance_embeds: Tensor,
        queries: Tensor,
        image_ids: Tensor,
    ) -> Tensor:
        """HQ residual mask logits.

        Args:
            early_vit: [B_img,Cv,h,w] early ViT feature (channels-first).
            image_embed: [B_img,C,h',w'] neck feature (``backbone_fpn[-1]``; the ViT grid at
                official size, coarser with a patch-7 stem).
            instance_embeds: [B,C,H,W] pixel-decoder instance embeddings (H = 4h).
            queries: [B,Q,C] decoder last-layer queries.
            image_ids: [B] image index of each find-query.

        Returns:
            [B,Q,H,W] logits to add to the base masks.
        """
        dtype = instance_embeds.dtype
        size = instance_embeds.shape[-2:]
        # Each part is resized on its own: the neck level and the ViT grid need not match (the
        # official model has both at 72^2; a patch-7 stem's ViT grid is twice its last neck
        # level, so the 4x-upsampled parts are 128^2 vs 64^2).
        parts = [self.embedding_encoder(image_embed.to(dtype)),
                 self.compress_vit_feat(early_vit.to(dtype))]  # [B_img,h,4h,4w] each, per image
        glob = sum(p if p.shape[-2:] == size else
                   F.interpolate(p, size=size, mode="bilinear", align_corners=False)
                   for p in parts)
        if glob.shape[0] > 1:
            glob = glob[image_ids.to(glob.device)]  # per find-query (SAM3 broadcasts B_img=1)
        fused = self.embedding_maskfeature(instance_embeds) + glob  # [B,h,H,W]
        kernel = self.hf_mlp(queries + self.hf_token.weight[0])  # [B,Q,h]
        return torch.einsum("bqc,bchw->bqhw", kernel.to(fused.dtype), fused)


class HQTokenBaseline:
    """Attach :class:`HQOutputToken` to a built ``Sam3Image`` (callable; returns the model).

    Args:
        hq_dim: HQ feature width; None = C/8 (HQ-SAM).
        early_block: ViT block whose output is the local feature; None = the first
            global-attention block (HQ-SAM's choice).
    """

    def __init__(self, hq_dim: int | None = None, early_block: int | None = None) -> None:
        self.hq_dim = hq_dim
        self.early_block = early_block

    def __call__(self, model: nn.Module) -> nn.Module:
        head = model.segmentation_head
        trunk = model.backbone.vision_backbone.trunk
        block = self.early_block if self.early_block is not None else trunk.full_attn_ids[0]
        if not 0 <= block < len(trunk.blocks):
            raise ValueError(f"model.baseline.early_block={block}: the ViT has {len(trunk.blocks)}")
        vit_dim = trunk.patch_embed.proj.out_channels
        with keep_requires_grad(model):
            head.hq_token = HQOutputToken(head.d_model, vit_dim, self.hq_dim)
        stash: dict[str, Tensor] = {}
        signature = inspect.signature(head.forward)

        def keep_early(_m, _i, out: Tensor) -> None:
            stash["early"] = out.permute(0, 3, 1, 2)  # ViT blocks are channels-last [B,h,w,C]

        def keep_instance(_m, _i, out: Tensor) -> None:
            stash["instance"] = out

        def refine(_m, args, kwargs, out: dict) -> dict:
            bound = signature.bind(*args, **kwargs).arguments
            # "early" is kept (not popped): under the head's activation checkpointing the head
            # is recomputed in backward without re-running the ViT. One [B_img,Cv,72,72] tensor.
            early, inst = stash.get("early"), stash.pop("instance", None)
            if early is None or inst is None or out.get("pred_masks") is None:
                raise RuntimeError("hq_token: the ViT/instance features were not captured")
            masks_hq = head.hq_token(
                early, bound["backbone_feats"][-1], inst, bound["obj_queries"][-1],
                bound["image_ids"],
            )
            final = out["pred_masks"] + masks_hq.to(out["pred_masks"].dtype)
            # the last refinement iterate is the final output: keep them the same tensor
            last = [k for _, k in iter_mask_items(out)]
            for k in last:
                if out[k] is out["pred_masks"]:
                    out[k] = final
            out["pred_masks"] = final
            return out

        trunk.blocks[block].register_forward_hook(keep_early)
        head.instance_seg_head.register_forward_hook(keep_instance)
        head.register_forward_hook(refine, with_kwargs=True)
        added = count_params(head.hq_token)
        log.info(
            "HQ token (early ViT block %d, hq_dim %d): %d parameters (region head: %d)",
            block, head.hq_token.hq_dim, added, region_head_budget(head.d_model),
        )
        return model
