"""Build TextRegion teachers from open_clip names and pretrained tags/paths."""

from __future__ import annotations

import os
from typing import Any

import torch.nn as nn

from region_sam3.teachers.base import RegionTeacher
from region_sam3.teachers.clip_vit import ClipViTTeacher
from region_sam3.teachers.timm_pool import PECoreTeacher, SigLIPTeacher
from region_sam3.teachers.tiny_models import register_tiny_models

FAMILIES: dict[str, type[RegionTeacher]] = {
    "clip_vit": ClipViTTeacher,
    "siglip": SigLIPTeacher,
    "siglip2": SigLIPTeacher,
    "pe_core": PECoreTeacher,
}

_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


class TeacherWeightsError(RuntimeError):
    """Pretrained teacher weights could not be found or loaded."""


def _how_to_provide(model_name: str) -> str:
    return (
        f"Provide the weights for '{model_name}' either as a local file "
        "(teacher.pretrained=/abs/path/to/open_clip_weights.bin or .safetensors) or by "
        "pre-populating the download cache on a machine with access and pointing "
        "teacher.cache_dir (or HF_HOME) at it, with HF_HUB_OFFLINE=1 on offline nodes. "
        "Use teacher.pretrained=null only for random-init smoke tests."
    )


def _looks_like_path(pretrained: str) -> bool:
    return os.sep in pretrained or pretrained.startswith((".", "~")) or pretrained.endswith(_WEIGHT_SUFFIXES)


def load_open_clip_model(
    model_name: str,
    pretrained: str | None,
    image_size: int | None = None,
    quick_gelu: bool = False,
    cache_dir: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """Create an open_clip model, failing loudly (never silently random) on missing weights.

    Args:
        model_name: open_clip model name (built-in, or a tiny config from
            :mod:`region_sam3.teachers.tiny_models`).
        pretrained: open_clip tag (e.g. ``"openai"``), a local weight file, or None for
            random init.
        image_size: ``force_image_size`` (positional embeddings are resized on load).
        quick_gelu: ``force_quick_gelu`` (OpenAI weights need QuickGELU; prefer the
            ``*-quickgelu`` model names).
        cache_dir: open_clip download cache directory.
        model_kwargs: highest-priority model-config overrides forwarded to
            ``open_clip.create_model`` (e.g. a smaller ``text_cfg`` for benchmarks).
    """
    import open_clip

    register_tiny_models()
    if model_name not in open_clip.list_models():
        raise ValueError(f"Unknown open_clip model '{model_name}'")
    kwargs: dict[str, Any] = dict(
        force_image_size=image_size, force_quick_gelu=quick_gelu, cache_dir=cache_dir,
        **(model_kwargs or {}),
    )
    if pretrained is None:
        return open_clip.create_model(model_name, pretrained=None, **kwargs)
    pretrained = str(pretrained)
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if pretrained not in tags:
        path = os.path.expanduser(pretrained)
        if not os.path.isfile(path):
            what = "file not found" if _looks_like_path(pretrained) else f"not a known tag (known: {tags}) nor a file"
            raise TeacherWeightsError(
                f"Teacher weights '{path}' for '{model_name}': {what}. " + _how_to_provide(model_name)
            )
        pretrained = path
    try:
        return open_clip.create_model(model_name, pretrained=pretrained, require_pretrained=True, **kwargs)
    except Exception as e:
        raise TeacherWeightsError(
            f"Could not load teacher weights '{pretrained}' for '{model_name}': {e}. "
            + _how_to_provide(model_name)
        ) from e


def create_teacher(
    family: str,
    model_name: str,
    pretrained: str | None = None,
    image_size: int | None = None,
    quick_gelu: bool = False,
    cache_dir: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    **options: Any,
) -> RegionTeacher:
    """Build a frozen TextRegion teacher.

    Args:
        family: ``"clip_vit"``, ``"siglip"`` / ``"siglip2"`` or ``"pe_core"``.
        model_name: open_clip model name, e.g. ``"ViT-B-16-quickgelu"``,
            ``"ViT-B-16-SigLIP2"``, ``"PE-Core-B-16"`` or a tiny test config.
        pretrained: open_clip tag, local file path, or None (random init; tests only).
        image_size: input size (``resize_mode="resize"``); positional embeddings are
            resized by open_clip. None = the model's native size.
        **options: :class:`~region_sam3.teachers.base.RegionTeacher` options
            (``resize_mode``, ``mask_mode``, ``normalize_weights``, ``pool_mlp``,
            ``global_patch_removal``, ``patch_removal_threshold``, ``templates``).
    """
    if family not in FAMILIES:
        raise ValueError(f"Unknown teacher family '{family}'; choose from {sorted(FAMILIES)}")
    model = load_open_clip_model(model_name, pretrained, image_size, quick_gelu, cache_dir, model_kwargs)
    extra = {"quick_gelu": quick_gelu, "model_kwargs": model_kwargs or {}}
    if "templates" in options and options["templates"] is not None:
        options["templates"] = list(options["templates"])  # Hydra ListConfig -> list
    return FAMILIES[family](model, model_name, pretrained=pretrained, extra_hash=extra, **options)
