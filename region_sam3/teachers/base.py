"""Frozen TextRegion teacher: common machinery for all backbone families.

A family subclass only says (a) how to get per-patch features from the trunk and
(b) how to turn a pooled value vector into the final embedding. This base class owns
preprocessing, tiling, mask resizing, global patch removal, pooling, text encoding,
the frozen-module discipline and the config hash used by the embedding cache.

Input convention: ``forward`` takes **raw RGB in [0, 1]** (``[N, 3, H, W]``); the
teacher applies its own resize/interpolation and mean/std from the open_clip
preprocess config. Masks describe the same pixels as the input image.
"""

from __future__ import annotations

import hashlib
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from region_sam3.teachers.masks import global_patch_removal_keep, masks_to_grid, pool_weights

DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)


class RegionTeacher(nn.Module, ABC):
    """Frozen image-text model producing one L2-normalised embedding per region mask.

    Args:
        model: an open_clip model (``CLIP`` / ``CustomTextCLIP``) with ``.visual``.
        model_name: open_clip model name (for the tokenizer and the config hash).
        pretrained: tag / file path the weights came from, or None (random init).
        resize_mode: ``"resize"`` (resize every image to ``image_size``; positional
            embeddings were resized at creation via ``force_image_size``) or ``"tiles"``
            (TextRegion multi-resolution: keep the input resolution, zero-pad to a
            multiple of the model's native size, run the trunk per tile and stitch the
            patch features into one grid).
        mask_mode: ``"soft"`` or ``"binary"`` pooling weights.
        normalize_weights: masked mean (True) or masked sum (False) of the values.
        pool_mlp: apply the block's / attention pool's MLP residual to the pooled value.
        global_patch_removal: enable TextRegion's global patch removal.
        patch_removal_threshold: in-minus-out similarity threshold (TextRegion: 0.07).
        templates: prompt templates for :meth:`encode_text` (``{}`` = class name).
    """

    family: str = "base"

    def __init__(
        self,
        model: nn.Module,
        model_name: str,
        pretrained: str | None = None,
        resize_mode: str = "resize",
        mask_mode: str = "soft",
        normalize_weights: bool = True,
        pool_mlp: bool = True,
        global_patch_removal: bool = False,
        patch_removal_threshold: float = 0.07,
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        extra_hash: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if resize_mode not in ("resize", "tiles"):
            raise ValueError(f"resize_mode must be 'resize' or 'tiles', got {resize_mode!r}")
        if mask_mode not in ("soft", "binary"):
            raise ValueError(f"mask_mode must be 'soft' or 'binary', got {mask_mode!r}")
        self.model = model
        self.model_name = model_name
        self.pretrained = pretrained
        self.resize_mode = resize_mode
        self.mask_mode = mask_mode
        self.normalize_weights = normalize_weights
        self.pool_mlp = pool_mlp
        self.global_patch_removal = global_patch_removal
        self.patch_removal_threshold = float(patch_removal_threshold)
        self.templates = tuple(templates)
        self._extra_hash = dict(extra_hash or {})
        self._tokenizer = None
        self._hash: str | None = None

        import open_clip

        pp = open_clip.get_model_preprocess_cfg(model)
        size = pp.get("size", 224)
        self.image_size: tuple[int, int] = (size, size) if isinstance(size, int) else tuple(size)
        self.interpolation: str = pp.get("interpolation", "bicubic")
        mean = torch.tensor(pp.get("mean", (0.48145466, 0.4578275, 0.40821073)), dtype=torch.float32)
        std = torch.tensor(pp.get("std", (0.26862954, 0.26130258, 0.27577711)), dtype=torch.float32)
        # Buffers follow .to(device); non-persistent so they never reach checkpoints.
        self.register_buffer("pixel_mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", std.view(1, 3, 1, 1), persistent=False)

        # Frozen-teacher discipline: no grads, eval forever (see train()).
        self.requires_grad_(False)
        super().train(False)

    # ------------------------------------------------------------------ frozen module
    def train(self, mode: bool = True) -> RegionTeacher:
        """Ignore ``mode``: the teacher stays in eval mode (no dropout / drop-path)."""
        return super().train(False)

    # ------------------------------------------------------------------ family hooks
    @property
    @abstractmethod
    def patch_size(self) -> tuple[int, int]:
        """Patch size ``(h, w)`` of the trunk."""

    @abstractmethod
    def patch_features(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """Trunk forward on normalised pixels ``[B, 3, h, w]``.

        Returns ``(removal_feats [B, P, C'], values [B, P, C])`` with patches in
        row-major order (prefix/CLS tokens already dropped).
        """

    @abstractmethod
    def head(self, pooled: Tensor) -> Tensor:
        """Pooled values ``[R, C]`` -> unnormalised embeddings ``[R, D]``."""

    # ------------------------------------------------------------------ preprocessing
    def _normalize_pixels(self, images: Tensor) -> Tensor:
        return (images.float() - self.pixel_mean) / self.pixel_std

    def _resize(self, images: Tensor, size: tuple[int, int]) -> Tensor:
        if tuple(images.shape[-2:]) == tuple(size):
            return images.float()  # exact no-op, not an interpolation round trip
        mode = self.interpolation if self.interpolation in ("bilinear", "bicubic") else "bilinear"
        out = F.interpolate(images.float(), size=size, mode=mode, align_corners=False, antialias=True)
        return out.clamp(0, 1)  # bicubic overshoots outside the valid pixel range

    def _encode_images(self, images: Tensor) -> tuple[Tensor, Tensor, tuple[int, int], tuple[int, int], tuple[int, int]]:
        """Images ``[N, 3, H, W]`` in [0, 1] -> per-image patch features on one grid.

        Returns ``(removal_feats [N, P, C'], values [N, P, C], image_hw, padded_hw, grid)``.
        """
        ph, pw = self.patch_size
        if self.resize_mode == "resize":
            x = self._normalize_pixels(self._resize(images, self.image_size))
            rf, v = self.patch_features(x)
            grid = (self.image_size[0] // ph, self.image_size[1] // pw)
            return rf, v, self.image_size, self.image_size, grid
        # Tiles: native-size crops of the unresized image, stitched row-major.
        n, _, h, w = images.shape
        th, tw = self.image_size
        nth, ntw = math.ceil(h / th), math.ceil(w / tw)
        x = self._normalize_pixels(images)
        # Zero in normalised space = the dataset mean colour, like TextRegion's padding.
        x = F.pad(x, (0, ntw * tw - w, 0, nth * th - h))
        tiles = x.unfold(2, th, th).unfold(3, tw, tw)  # [N, 3, nth, ntw, th, tw]
        tiles = tiles.permute(0, 2, 3, 1, 4, 5).reshape(n * nth * ntw, 3, th, tw)
        rf, v = self.patch_features(tiles)
        gth, gtw = th // ph, tw // pw

        def stitch(t: Tensor) -> Tensor:
            c = t.shape[-1]
            t = t.reshape(n, nth, ntw, gth, gtw, c).permute(0, 1, 3, 2, 4, 5)
            return t.reshape(n, nth * gth * ntw * gtw, c)

        return stitch(rf), stitch(v), (h, w), (nth * th, ntw * tw), (nth * gth, ntw * gtw)

    # ------------------------------------------------------------------ forward
    @torch.no_grad()
    def forward(
        self,
        images: Tensor,
        masks: Tensor,
        mask_image_index: Tensor | Sequence[int] | None = None,
        return_valid: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Region embeddings.

        Args:
            images: ``[N, 3, H, W]`` raw RGB in ``[0, 1]``.
            masks: ``[R, h, w]`` soft masks in ``[0, 1]`` (bool accepted), each covering
                the full image it belongs to (any ``h, w``; resized as needed).
            mask_image_index: ``[R]`` image index of each mask (default: all 0). The masks
                are grouped per image on the host: pass Python ints (e.g. the collator's
                ``FindQueryBatch.target_image_host``) or a CPU tensor for no host-device
                sync; a device tensor costs one read-back.
            return_valid: also return ``[R]`` bool, False where the mask was empty on
                the patch grid (after patch removal); those rows are finite but
                meaningless and should be ignored by the loss.

        Returns:
            ``[R, D]`` L2-normalised embeddings in mask order (and ``valid``).
        """
        r = masks.shape[0]
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [N, 3, H, W], got {tuple(images.shape)}")
        if masks.dim() != 3:
            raise ValueError("masks must be [R, h, w] and mask_image_index [R]")
        groups = _rows_per_image(mask_image_index, r, images.shape[0])
        device = images.device
        rf, vals, image_hw, padded_hw, grid = self._encode_images(images)
        pooled = vals.new_zeros((r, vals.shape[-1]))
        valid = torch.zeros(r, dtype=torch.bool, device=device)
        for i, rows in enumerate(groups):
            if not rows:
                continue
            sel = _row_index(rows, device)
            mask_sel = sel if masks.device == device else _row_index(rows, masks.device)
            m = masks_to_grid(masks[mask_sel].to(device), image_hw, padded_hw, grid)
            if self.global_patch_removal:
                keep = global_patch_removal_keep(rf[i], m, self.patch_removal_threshold)
                m = m * keep[None].to(m.dtype)
            w = pool_weights(m, self.mask_mode, self.normalize_weights)
            pooled[sel] = w.to(vals.dtype) @ vals[i]
            valid[sel] = (m > 0).any(dim=1)
        emb = F.normalize(self.head(pooled).float(), dim=-1)
        return (emb, valid) if return_valid else emb

    # ------------------------------------------------------------------ text
    @property
    def tokenizer(self):  # noqa: ANN201 - open_clip tokenizer object
        if self._tokenizer is None:
            import open_clip

            try:
                self._tokenizer = open_clip.get_tokenizer(self.model_name)
            except Exception as e:  # offline hf tokenizer etc.
                raise RuntimeError(
                    f"Could not build the tokenizer for open_clip model '{self.model_name}' ({e}). "
                    "Tokenizers that live in a model hub must be present in the local cache "
                    "(set HF_HOME / HF_HUB_OFFLINE=1 with a pre-populated cache)."
                ) from e
        return self._tokenizer

    @torch.no_grad()
    def encode_text(self, names: Sequence[str], templates: Sequence[str] | None = None) -> Tensor:
        """Class names -> ``[K, D]`` L2-normalised text embeddings.

        Each name is inserted into every template; the normalised template embeddings
        are averaged and re-normalised (CLIP prompt ensembling).
        """
        templates = tuple(templates) if templates is not None else self.templates
        if len(names) == 0:
            return torch.zeros(0, self.embed_dim, device=self.pixel_mean.device)
        prompts = [t.format(n) for n in names for t in templates]
        tokens = self.tokenizer(prompts).to(self.pixel_mean.device)
        feats = F.normalize(self.model.encode_text(tokens).float(), dim=-1)
        feats = feats.view(len(names), len(templates), -1).mean(dim=1)
        return F.normalize(feats, dim=-1)

    @property
    def embed_dim(self) -> int:
        with torch.no_grad():
            return int(self.head(self.pixel_mean.new_zeros(1, self.value_dim)).shape[-1])

    @property
    @abstractmethod
    def value_dim(self) -> int:
        """Width ``C`` of the pooled values."""

    # ------------------------------------------------------------------ hashing
    def hash_config(self) -> dict[str, Any]:
        """Everything that changes region embeddings (weights via a fingerprint)."""
        return {
            "family": self.family,
            "model_name": self.model_name,
            "pretrained": self.pretrained,
            "image_size": list(self.image_size),
            "interpolation": self.interpolation,
            "mean": [round(x, 8) for x in self.pixel_mean.flatten().tolist()],
            "std": [round(x, 8) for x in self.pixel_std.flatten().tolist()],
            "resize_mode": self.resize_mode,
            "mask_mode": self.mask_mode,
            "normalize_weights": self.normalize_weights,
            "pool_mlp": self.pool_mlp,
            "global_patch_removal": self.global_patch_removal,
            "patch_removal_threshold": self.patch_removal_threshold,
            **self._extra_hash,
        }

    def weights_fingerprint(self) -> str:
        """sha1 over the visual tower's tensors (random-init teachers differ by seed)."""
        h = hashlib.sha1()
        for name, t in sorted(self.model.visual.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def config_hash(self) -> str:
        """Short stable hash of :meth:`hash_config` + weights; key of the embedding cache."""
        if self._hash is None:
            payload = dict(self.hash_config(), weights=self.weights_fingerprint())
            blob = json.dumps(payload, sort_keys=True, default=str).encode()
            self._hash = hashlib.sha256(blob).hexdigest()[:16]
        return self._hash


def _rows_per_image(index: Tensor | Sequence[int] | None, r: int, n: int) -> list[list[int]]:
    """Host-side grouping: ``rows[i]`` = mask rows of image ``i`` (``index`` ``[R]``)."""
    if index is None:
        return [list(range(r))] + [[] for _ in range(n - 1)]
    if torch.is_tensor(index):
        index = index.reshape(-1).tolist()  # no sync for a CPU tensor
    if len(index) != r:
        raise ValueError("masks must be [R, h, w] and mask_image_index [R]")
    rows: list[list[int]] = [[] for _ in range(n)]
    for row, image in enumerate(index):
        if not 0 <= image < n:
            raise ValueError(f"mask_image_index {image} out of range for {n} images")
        rows[image].append(row)
    return rows


def _row_index(rows: list[int], device: torch.device) -> Tensor | slice:
    """Rows as an index for ``device`` without a blocking copy: a slice when contiguous (the
    collator packs targets image by image), else a long tensor copied with ``non_blocking``
    (a host->device copy from pageable memory does not wait for the GPU queue)."""
    if rows == list(range(rows[0], rows[0] + len(rows))):
        return slice(rows[0], rows[0] + len(rows))
    return torch.as_tensor(rows, dtype=torch.long).to(device, non_blocking=True)


def strip_teacher_state(state_dict: dict[str, Any], prefix: str = "teacher.") -> dict[str, Any]:
    """Drop the frozen teacher's entries from a (Lightning) state dict before saving."""
    return {k: v for k, v in state_dict.items() if not k.startswith(prefix)}
