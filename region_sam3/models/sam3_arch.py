"""SAM3 image-model architecture with every size exposed as an argument.

`sam3` 0.1.4 has no size knob: `sam3.model_builder.build_sam3_image_model` hard-codes the
official 848M-parameter model. `build_sam3_architecture` composes the very same `sam3.model.*`
classes in the same order with the same hyper-parameters by default, so a model built with the
defaults has exactly the official state-dict keys and shapes (guarded by
`tests/models/test_sam3_factory.py::test_full_matches_official_state_dict`). Smaller values give
the `tiny` model used on CPU. Hydra configs in `conf/model/sam3/` call this function.

The only deliberate deviations from the official builder are CPU-safety ones documented in
`region_sam3.models.compat`; none of them changes a parameter or buffer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from sam3.model.decoder import TransformerDecoder, TransformerDecoderLayer
from sam3.model.encoder import TransformerEncoderFusion, TransformerEncoderLayer
from sam3.model.maskformer_segmentation import PixelDecoder, UniversalSegmentationHead
from sam3.model.model_misc import MLP, DotProductScoring, TransformerWrapper
from sam3.model.model_misc import MultiheadAttentionWrapper as MultiheadAttention
from sam3.model.necks import Sam3DualViTDetNeck
from sam3.model.position_encoding import PositionEmbeddingSine
from sam3.model.sam3_image import Sam3Image
from sam3.model.text_encoder_ve import VETextEncoder
from sam3.model.tokenizer_ve import SimpleTokenizer
from sam3.model.vitdet import ViT
from sam3.model.vl_combiner import SAM3VLBackbone
from torch import nn

from region_sam3.models.compat import CpuSafeSequenceGeometryEncoder, resolve_bpe_path
from region_sam3.models.conv_stem import add_conv_stem_
from region_sam3.models.sam3_image import Sam3ImageModel


def _position_encoding(d_model: int) -> PositionEmbeddingSine:
    # The official builder passes precompute_resolution=1008, which allocates on "cuda" at
    # construction time. The cache is a plain dict (not state), so computing it lazily on the
    # input's device is numerically identical and works on CPU.
    return PositionEmbeddingSine(
        num_pos_feats=d_model, normalize=True, scale=None, temperature=10000,
        precompute_resolution=None,
    )


def _attention(d_model: int, num_heads: int, dropout: float, batch_first: bool | None = None):
    kwargs = {} if batch_first is None else {"batch_first": batch_first}
    return MultiheadAttention(num_heads=num_heads, dropout=dropout, embed_dim=d_model, **kwargs)


def _encoder_layer(d_model: int, ffn_dim: int, num_heads: int, dropout: float, *,
                   pos_enc_at_attn: bool, pos_enc_at_cross_attn_keys: bool,
                   batch_first: bool) -> TransformerEncoderLayer:
    return TransformerEncoderLayer(
        activation="relu",
        d_model=d_model,
        dim_feedforward=ffn_dim,
        dropout=dropout,
        pos_enc_at_attn=pos_enc_at_attn,
        pos_enc_at_cross_attn_keys=pos_enc_at_cross_attn_keys,
        pos_enc_at_cross_attn_queries=False,
        pre_norm=True,
        self_attention=_attention(d_model, num_heads, dropout, batch_first),
        cross_attention=_attention(d_model, num_heads, dropout, batch_first),
    )


def build_sam3_architecture(
    *,
    image_size: int = 1008,
    patch_size: int = 14,
    vit_pretrain_image_size: int = 336,
    vit_embed_dim: int = 1024,
    vit_depth: int = 32,
    vit_num_heads: int = 16,
    vit_mlp_ratio: float = 4.625,
    vit_window_size: int = 24,
    vit_global_att_blocks: Sequence[int] = (7, 15, 23, 31),
    vit_drop_path_rate: float = 0.1,
    d_model: int = 256,
    ffn_dim: int = 2048,
    num_heads: int = 8,
    dropout: float = 0.1,
    encoder_layers: int = 6,
    decoder_layers: int = 6,
    num_queries: int = 200,
    geometry_layers: int = 3,
    text_width: int = 1024,
    text_heads: int = 16,
    text_layers: int = 24,
    text_context_length: int = 32,
    pixel_decoder_stages: int = 3,
    vit_conv_stem: Sequence[int] = (),
    neck_scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
    neck_scalp: int = 1,
    bpe_path: str | None = None,
    use_act_checkpoint: bool = True,
    segmentation_head: nn.Module | None = None,
    compile_mode: str | None = None,
) -> Sam3Image:
    """Build a `Sam3Image` (detector only, no tracker) from `sam3`'s own modules.

    Defaults reproduce `sam3.model_builder.build_sam3_image_model(enable_segmentation=True,
    enable_inst_interactivity=False)`. The model consumes `[B,3,image_size,image_size]` images
    and predicts masks at `image_size * 4 / patch_size` pixels per side (288 for 1008).

    Args:
        vit_conv_stem: widths of stride-1 3x3 convolutions before the patch projection
            (`region_sam3.models.conv_stem`; official: none).
        neck_scale_factors: the ViTDet neck's levels relative to the token grid (official: 4, 2,
            1, 0.5 with the coarsest dropped by ``neck_scalp=1``, i.e. 288², 144², 72² at 1008
            px). A finer patch keeps the same three levels with fewer upsamplings, e.g. patch 7
            at 224 px (32² tokens): ``(2, 1, 0.5)`` and ``neck_scalp=0`` give 64², 32², 16².
        neck_scalp: how many of the coarsest neck levels SAM3 drops.
        segmentation_head: replaces the default `UniversalSegmentationHead` (e.g. the
            region-aware head); it must keep the upstream attribute names.
        compile_mode: `torch.compile` mode of the ViT trunk and the pixel decoder, as
            `build_sam3_image_model(compile=True)` passes it ("default"); None: eager.
    """
    if image_size % patch_size:
        raise ValueError(f"image_size={image_size} must be a multiple of patch_size={patch_size}")
    grid = image_size // patch_size
    if grid % vit_window_size:
        raise ValueError(
            f"vit_window_size={vit_window_size} must divide the token grid {grid} "
            f"(image_size {image_size} / patch_size {patch_size})"
        )
    if (vit_embed_dim // vit_num_heads) % 4:
        raise ValueError("vit_embed_dim / vit_num_heads must be a multiple of 4 (2-D RoPE)")

    vit = ViT(
        img_size=image_size,
        pretrain_img_size=vit_pretrain_image_size,
        patch_size=patch_size,
        embed_dim=vit_embed_dim,
        depth=vit_depth,
        num_heads=vit_num_heads,
        mlp_ratio=vit_mlp_ratio,
        norm_layer="LayerNorm",
        drop_path_rate=vit_drop_path_rate,
        qkv_bias=True,
        use_abs_pos=True,
        tile_abs_pos=True,
        global_att_blocks=tuple(vit_global_att_blocks),
        rel_pos_blocks=(),
        use_rope=True,
        use_interp_rope=True,
        window_size=vit_window_size,
        pretrain_use_cls_token=True,
        retain_cls_token=False,
        ln_pre=True,
        ln_post=False,
        return_interm_layers=False,
        bias_patch_embed=False,
        compile_mode=compile_mode,
        use_act_checkpoint=use_act_checkpoint,
    )
    add_conv_stem_(vit, list(vit_conv_stem), patch_size)
    neck = Sam3DualViTDetNeck(
        position_encoding=_position_encoding(d_model),
        d_model=d_model,
        scale_factors=[float(f) for f in neck_scale_factors],
        trunk=vit,
        add_sam2_neck=False,
    )
    text_encoder = VETextEncoder(
        tokenizer=SimpleTokenizer(bpe_path=resolve_bpe_path(bpe_path)),
        d_model=d_model,
        width=text_width,
        heads=text_heads,
        layers=text_layers,
        context_length=text_context_length,
        use_act_checkpoint=use_act_checkpoint,
    )
    backbone = SAM3VLBackbone(visual=neck, text=text_encoder, scalp=neck_scalp)

    encoder = TransformerEncoderFusion(
        layer=_encoder_layer(d_model, ffn_dim, num_heads, dropout, pos_enc_at_attn=True,
                             pos_enc_at_cross_attn_keys=False, batch_first=True),
        num_layers=encoder_layers,
        d_model=d_model,
        num_feature_levels=1,
        frozen=False,
        # The fusion encoder asserts activation checkpointing is enabled whenever it trains.
        use_act_checkpoint=True,
        add_pooled_text_to_img_feat=False,
        pool_text_with_mask=True,
    )
    decoder = TransformerDecoder(
        layer=TransformerDecoderLayer(
            activation="relu",
            d_model=d_model,
            dim_feedforward=ffn_dim,
            dropout=dropout,
            cross_attention=_attention(d_model, num_heads, dropout),
            n_heads=num_heads,
            use_text_cross_attention=True,
        ),
        num_layers=decoder_layers,
        num_queries=num_queries,
        return_intermediate=True,
        box_refine=True,
        num_o2m_queries=0,
        dac=True,
        boxRPB="log",
        d_model=d_model,
        frozen=False,
        interaction_layer=None,
        dac_use_selfatt_ln=True,
        # resolution/stride make the official build allocate a coordinate cache on "cuda";
        # without them the same cache is built lazily on the input's device.
        resolution=None,
        stride=None,
        # The decoder asserts activation checkpointing is enabled whenever it trains.
        use_act_checkpoint=True,
        presence_token=True,
    )
    transformer = TransformerWrapper(encoder=encoder, decoder=decoder, d_model=d_model)

    scoring = DotProductScoring(
        d_model=d_model,
        d_proj=d_model,
        prompt_mlp=MLP(
            input_dim=d_model, hidden_dim=ffn_dim, output_dim=d_model, num_layers=2,
            dropout=dropout, residual=True, out_norm=nn.LayerNorm(d_model),
        ),
    )
    if segmentation_head is None:
        segmentation_head = build_segmentation_head(
            d_model=d_model, num_heads=num_heads, stages=pixel_decoder_stages,
            act_ckpt=use_act_checkpoint, compile_mode=compile_mode,
        )

    geometry_encoder = CpuSafeSequenceGeometryEncoder(
        pos_enc=_position_encoding(d_model),
        encode_boxes_as_points=False,
        points_direct_project=True,
        points_pool=True,
        points_pos_enc=True,
        boxes_direct_project=True,
        boxes_pool=True,
        boxes_pos_enc=True,
        d_model=d_model,
        num_layers=geometry_layers,
        layer=_encoder_layer(d_model, ffn_dim, num_heads, dropout, pos_enc_at_attn=False,
                             pos_enc_at_cross_attn_keys=True, batch_first=False),
        use_act_ckpt=use_act_checkpoint,
        add_cls=True,
        add_post_encode_proj=True,
    )
    # `Sam3Image` + a training-only switch to skip negatives in the segmentation head (no new
    # parameter; see region_sam3/models/sam3_image.py).
    model = Sam3ImageModel(
        backbone=backbone,
        transformer=transformer,
        input_geometry_encoder=geometry_encoder,
        segmentation_head=segmentation_head,
        num_feature_levels=1,
        o2m_mask_predict=True,
        dot_prod_scoring=scoring,
        use_instance_query=False,
        multimask_output=True,
        inst_interactive_predictor=None,
        use_act_checkpoint_seg_head=use_act_checkpoint,
        matcher=build_matcher(),
    )
    init_text_encoder_(model)
    return model


def build_matcher():
    """SAM3's one-to-one Hungarian matcher with the official costs (class 2, L1 5, GIoU 2)."""
    from sam3.train.matcher import BinaryHungarianMatcherV2

    return BinaryHungarianMatcherV2(
        focal=True, cost_class=2.0, cost_bbox=5.0, cost_giou=2.0, alpha=0.25, gamma=2,
        stable=False,
    )


def build_segmentation_head(*, d_model: int, num_heads: int, stages: int = 3,
                            act_ckpt: bool = True,
                            head_cls: type[UniversalSegmentationHead] = UniversalSegmentationHead,
                            compile_mode: str | None = None,
                            **head_kwargs) -> UniversalSegmentationHead:
    """The official segmentation head (`PixelDecoder` + prompt cross-attention).

    `head_cls` lets a subclass (the region-aware head) be built with identical upstream parts.
    """
    return head_cls(
        hidden_dim=d_model,
        upsampling_stages=stages,
        aux_masks=False,
        presence_head=False,
        dot_product_scorer=None,
        act_ckpt=act_ckpt,
        cross_attend_prompt=MultiheadAttention(num_heads=num_heads, dropout=0, embed_dim=d_model),
        pixel_decoder=PixelDecoder(
            num_upsampling_stages=stages, interpolation_mode="nearest", hidden_dim=d_model,
            compile_mode=compile_mode,
        ),
        **head_kwargs,
    )


@torch.no_grad()
def init_text_encoder_(model: Sam3Image) -> None:
    """Initialise the text-encoder tensors that `sam3` leaves as `torch.empty`.

    `TextTransformer.positional_embedding` and `.text_projection` are allocated with
    `torch.empty` and only ever filled by a checkpoint; on a fresh model they hold whatever
    memory contained (often NaN/inf). We use open_clip's CLIP initialisation.
    """
    text = model.backbone.language_backbone.encoder
    nn.init.normal_(text.positional_embedding, std=0.01)
    if isinstance(text.text_projection, nn.Parameter):
        nn.init.normal_(text.text_projection, std=text.width**-0.5)
