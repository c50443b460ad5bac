"""Frozen TextRegion teachers (stock open_clip) and their embedding cache."""

from region_sam3.teachers.base import DEFAULT_TEMPLATES, RegionTeacher, strip_teacher_state
from region_sam3.teachers.cache import TeacherEmbeddingCache
from region_sam3.teachers.clip_vit import ClipViTTeacher
from region_sam3.teachers.factory import TeacherWeightsError, create_teacher, load_open_clip_model
from region_sam3.teachers.masks import global_patch_removal_keep, masks_to_grid, pool_weights
from region_sam3.teachers.timm_pool import PECoreTeacher, SigLIPTeacher, TimmAttnPoolTeacher

__all__ = [
    "DEFAULT_TEMPLATES",
    "ClipViTTeacher",
    "PECoreTeacher",
    "RegionTeacher",
    "SigLIPTeacher",
    "TeacherEmbeddingCache",
    "TeacherWeightsError",
    "TimmAttnPoolTeacher",
    "create_teacher",
    "global_patch_removal_keep",
    "load_open_clip_model",
    "masks_to_grid",
    "pool_weights",
    "strip_teacher_state",
]
