"""`Sam3Image` with two training-time cost switches: skip negatives in the segmentation head,
and (optionally) no activation recomputation in the fusion encoder / decoder.

SAM3 runs its segmentation head (prompt cross-attention, `PixelDecoder`, instance/semantic
1x1 convs, mask einsum, and the region head when attached) once per *find-query* (image x
prompt). In training, a prompt without targets (a negative) gets no mask loss: SAM3's matcher
assigns it no query, and the mask loss reads only matched queries. Its masks are computed and
thrown away, unless the semantic-segmentation loss is on (its target for a negative is the
all-empty map, a real signal). With the recipe of issue 12 (2 negatives per positive) two
thirds of the head's work in a training step is waste.

`seg_head_positives_only = True` (set by `RegionSam3Module` from `model.seg_head_positives_only`,
forced off when the semantic loss is on) runs the head on the positive find-queries only and
writes zeros (no gradient) for the others. It acts only in training mode: evaluation always
runs every prompt. Every loss term, and every gradient, is the same as without the skip (the
losses read negatives' masks nowhere; the head treats find-queries independently: per-row
attention, per-sample GroupNorm, per-row einsums).

Cost at official size: none when the caller passes `seg_head_rows_hint` (host-side rows, as
`RegionSam3Module` does); otherwise one `nonzero` on the per-query target counts (a host sync). The scattered outputs
are zero tensors of the shapes SAM3 would have produced ([B,Q,288,288] per mask key), so peak memory is lower than without the skip (the
negatives' activations are never built). The state dict is unchanged: this class adds no
parameter or buffer.

`recompute_activations = False` (`model.recompute_activations`) stops the fusion encoder and
the DETR decoder from recomputing their activations in backward. `sam3` hard-wires activation
checkpointing there (both assert `use_act_checkpoint` whenever they train): right at official
size, where activations of 80 prompts x 5,184 tokens do not fit, but pure overhead (a second
forward of both) for the tiny model on CPU. The switch swaps `activation_ckpt_wrapper` in
`sam3.model.encoder` / `sam3.model.decoder` for the duration of this model's forward only
(backward needs nothing: without checkpointing nothing is recomputed), the same pattern as the
criterion's focal-loss backend switch; nothing in site-packages is edited.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import sam3.model.decoder as sam3_decoder
import sam3.model.encoder as sam3_encoder
import torch
from sam3.model.act_ckpt_utils import activation_ckpt_wrapper
from sam3.model.sam3_image import Sam3Image
from torch import Tensor

_CHECKPOINTED_MODULES = (sam3_encoder, sam3_decoder)


def _without_checkpointing(module):
    """`activation_ckpt_wrapper` that always runs `module` directly (no recomputation)."""
    wrapped = activation_ckpt_wrapper(module)

    def call(*args, act_ckpt_enable: bool = True, **kwargs):
        return wrapped(*args, act_ckpt_enable=False, **kwargs)

    return call


@contextlib.contextmanager
def encoder_decoder_checkpointing(enabled: bool) -> Iterator[None]:
    """Within the block, the fusion encoder and decoder recompute activations iff `enabled`."""
    if enabled:
        yield
        return
    for module in _CHECKPOINTED_MODULES:
        module.activation_ckpt_wrapper = _without_checkpointing
    try:
        yield
    finally:
        for module in _CHECKPOINTED_MODULES:
            module.activation_ckpt_wrapper = activation_ckpt_wrapper


@contextlib.contextmanager
def seg_head_rows_hint(net: Any, rows: Tensor | None) -> Iterator[None]:
    """Within the block, `net.seg_head_rows_hint = rows` (host-computed positive rows [R]).

    Restores the previous value on exit, also when the forward raises, so a stale hint can never
    reach the next batch. A net without the attribute (not a `Sam3ImageModel`) or `rows=None`
    leaves the net untouched.
    """
    if rows is None or not hasattr(net, "seg_head_rows_hint"):
        yield
        return
    previous = net.seg_head_rows_hint
    net.seg_head_rows_hint = rows
    try:
        yield
    finally:
        net.seg_head_rows_hint = previous


def _scatter_rows(value: Any, rows: Tensor, num_rows: int) -> Any:
    """Place per-row outputs `[R,...]` of the `rows` subset into zeros `[num_rows,...]`."""
    if not torch.is_tensor(value):
        return value
    full = value.new_zeros((num_rows, *value.shape[1:]))
    return full.index_copy(0, rows, value)  # out of place: differentiable w.r.t. `value`


class Sam3ImageModel(Sam3Image):
    """`Sam3Image` + training-only `seg_head_positives_only` and `recompute_activations`
    switches (module docstring)."""

    seg_head_positives_only: bool = False
    recompute_activations: bool = True
    _seg_head_rows: Tensor | None = None
    # Positive find-query rows computed by the caller on the host (`RegionSam3Module` reads the
    # collator's host target counts); when None the rows are found on the device (one sync).
    seg_head_rows_hint: Tensor | None = None

    def forward(self, input):  # noqa: A002 - upstream signature
        with encoder_decoder_checkpointing(self.recompute_activations or not self.training):
            return super().forward(input)

    def forward_grounding(self, backbone_out, find_input, find_target, geometric_prompt):
        rows = None
        if self.training and self.seg_head_positives_only and find_target is not None:
            rows = self.seg_head_rows_hint
            if rows is None:
                rows = (find_target.num_boxes > 0).nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                # No positive at all: run one prompt so the outputs keep their shapes (and
                # every rank of a DDP job runs the same modules).
                rows = rows.new_zeros(1)
        self._seg_head_rows = rows
        try:
            return super().forward_grounding(backbone_out, find_input, find_target,
                                             geometric_prompt)
        finally:
            self._seg_head_rows = None

    def _run_segmentation_heads(self, out, backbone_out, img_ids, vis_feat_sizes,
                                encoder_hidden_states, prompt, prompt_mask, hs):
        """Upstream head on find-query rows `self._seg_head_rows` only (all rows when None).

        Shapes (B find-queries, R kept rows): img_ids [B], encoder_hidden_states [N,B,C],
        prompt [L,B,C], prompt_mask [B,L], hs [layers,B,Q,C]; outputs [B,...] (zeros off R).
        """
        rows = self._seg_head_rows
        num_rows = hs.shape[1]
        if rows is None or self.segmentation_head is None or rows.numel() == num_rows:
            return super()._run_segmentation_heads(
                out, backbone_out, img_ids, vis_feat_sizes, encoder_hidden_states, prompt,
                prompt_mask, hs)
        head_out: dict[str, Any] = {}
        super()._run_segmentation_heads(
            head_out, backbone_out, img_ids[rows], vis_feat_sizes,
            encoder_hidden_states[:, rows],
            prompt[:, rows] if torch.is_tensor(prompt) else prompt,
            prompt_mask[rows] if torch.is_tensor(prompt_mask) else prompt_mask,
            hs[:, rows])
        for key, value in head_out.items():
            out[key] = _scatter_rows(value, rows, num_rows)
        return None
