"""On-disk cache of frozen-teacher region embeddings.

Layout: ``root/<teacher_hash>/<dataset key>/<shard>/<image key>/<annotation key>.pt``, one
small file per (image, annotation) entry holding its ``Tensor[D]``. A new teacher config gives a
new hash, and another training set (another annotation file's content, another resolution or
resize mode: `dataset_identity`) a new dataset key, so a cache folder reused across datasets or
synthetic configs never returns another image's embeddings (ids repeat across datasets).

Concurrency: every entry is its own file, written to a unique temp file in the same directory
and published with ``os.replace`` (atomic on POSIX). Writers never read-modify-write a shared
file, so data-loader workers and DDP ranks writing entries of the same image at once cannot lose
each other's entries; two writers of the *same* entry both write a complete file and the last
one wins (same teacher, same view: same value). Unreadable files count as misses.

Only valid for augmentation-free views: within one dataset the key is (image id, annotation
id), so a flipped or cropped view would be distilled toward the first view's embedding. `RegionSam3Module.setup`
refuses a cache when the training data is augmented.

Size at official scale: COCO train has 860k instance annotations; with D=512 float32 that is
2 KB per entry plus the file overhead (~1.5 KB for torch's zip container), about 3 GB in total.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

log = logging.getLogger(__name__)
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def augmentation_changes_views(augmentation: Mapping[str, Any] | None) -> list[str]:
    """Names of the `data.augmentation` knobs that change the image or masks (empty: none).

    Unset knobs take `AugmentationConfig`'s defaults, as the datamodule does.
    """
    if not augmentation:
        return []
    from region_sam3.data.transforms import AugmentationConfig

    cfg = AugmentationConfig(**dict(augmentation))
    active = [f"hflip_prob={cfg.hflip_prob}"] if cfg.hflip_prob > 0 else []
    if cfg.crop != "none":
        active.append(f"crop={cfg.crop}")
    active += [f"{k}={getattr(cfg, k)}" for k in ("brightness", "contrast", "saturation", "hue")
               if getattr(cfg, k) > 0]
    return active


def refuse_augmented_views(datamodule: Any, cache_dir: str | os.PathLike) -> None:
    """Raise when `datamodule` augments its training views: the cache key (image id, annotation
    id) cannot tell a flipped/cropped/colour-jittered view from the first one."""
    if datamodule is None or not hasattr(datamodule, "augmentation"):
        log.warning("model.teacher_cache_dir is set but the training views' augmentation cannot "
                    "be checked (no datamodule with an `augmentation` attribute): the cache is "
                    "only valid for augmentation-free views")
        return
    active = augmentation_changes_views(datamodule.augmentation)
    if active:
        raise ValueError(
            f"model.teacher_cache_dir={str(cache_dir)!r} caches teacher embeddings by image and "
            f"annotation id, but data.augmentation changes the training views "
            f"({', '.join(active)}): later views would be distilled toward the first view's "
            f"embedding. Set data.augmentation=null or model.teacher_cache_dir=null."
        )


def dataset_identity(ann_file: str | os.PathLike, resolution: int,
                     keep_aspect_ratio: bool = False) -> str:
    """Filename-safe key of the data the embeddings belong to: a sha256 of the annotation
    file's bytes (its image ids, annotation ids and masks), the model input resolution and the
    resize mode (the teacher sees the resized view). Streamed: COCO train's 450 MB json hashes
    in about a second, once per fit. The image files themselves are not hashed."""
    digest = hashlib.sha256()
    with open(ann_file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    mode = "-keepar" if keep_aspect_ratio else ""
    return f"ann-{digest.hexdigest()[:16]}-res{int(resolution)}{mode}"


def training_dataset_key(datamodule: Any) -> str:
    """`dataset_identity` of a `FindQueryDataModule`'s training split."""
    hp = getattr(datamodule, "hparams", None)
    if not hasattr(datamodule, "split_paths") or hp is None or "train_split" not in hp:
        raise ValueError("model.teacher_cache_dir needs the training FindQueryDataModule: the "
                         "cache is keyed by the training annotation file and resolution, and "
                         f"{type(datamodule).__name__} does not say them")
    _, ann_file = datamodule.split_paths(hp.train_split)
    return dataset_identity(ann_file, hp.resolution, bool(hp.get("keep_aspect_ratio", False)))


class TeacherEmbeddingCache:
    """Teacher-embedding store keyed by (image id, annotation id), the teacher config hash and
    the dataset.

    Args:
        root: cache root directory (shared by all teachers and datasets).
        teacher_hash: ``teacher.config_hash()``.
        dataset_key: `dataset_identity` of the data (`RegionSam3Module` always passes it);
            None keys by the teacher alone (only safe for a folder used by one dataset).
        store_dtype: dtype on disk (float16 halves the size; float32 is bit-exact).
        meta: optional JSON-able description of the teacher written once to
            ``root/<hash>/meta.json`` for humans.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        teacher_hash: str,
        store_dtype: torch.dtype = torch.float32,
        meta: dict[str, Any] | None = None,
        dataset_key: str | None = None,
    ) -> None:
        for name, key in (("teacher_hash", teacher_hash), ("dataset_key", dataset_key)):
            if key is not None and (not key or _SAFE.search(key)):
                raise ValueError(f"{name} must be a non-empty filename-safe string, got {key!r}")
        if teacher_hash is None:
            raise ValueError("teacher_hash must be a non-empty filename-safe string, got None")
        self.dir = Path(root) / teacher_hash
        if dataset_key is not None:
            self.dir = self.dir / dataset_key
        self.dir.mkdir(parents=True, exist_ok=True)
        self.store_dtype = store_dtype
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        if meta is not None and not (self.dir / "meta.json").exists():
            self._atomic_write_bytes(self.dir / "meta.json", json.dumps(meta, sort_keys=True, default=str).encode())

    # ------------------------------------------------------------------ paths
    def image_dir(self, image_id: int | str) -> Path:
        """Directory of one image's entries: sharded by a hash of the id (small directories)."""
        key = str(image_id)
        digest = hashlib.sha1(key.encode()).hexdigest()
        return self.dir / digest[:2] / f"{_SAFE.sub('_', key)[:80]}-{digest[:8]}"

    def path(self, image_id: int | str, ann_id: int | str) -> Path:
        """File of one (image, annotation) entry."""
        key = str(ann_id)
        digest = hashlib.sha1(key.encode()).hexdigest()[:8]
        return self.image_dir(image_id) / f"{_SAFE.sub('_', key)[:80]}-{digest}.pt"

    def _atomic_write_bytes(self, target: Path, data: bytes) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()

    # ------------------------------------------------------------------ io
    def _load(self, image_id: int | str, ann_id: int | str) -> Tensor | None:
        p = self.path(image_id, ann_id)
        if not p.is_file():
            return None
        try:
            return torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated by a crash outside os.replace, disk error...
            log.warning("teacher cache: unreadable %s (%s); treating as miss", p, e)
            return None

    def get(self, image_id: int | str, ann_ids: Sequence[int | str]) -> Tensor | None:
        """Embeddings ``[len(ann_ids), D]`` float32 in ``ann_ids`` order, or None if any is
        missing (counted as one miss)."""
        rows = []
        for ann_id in ann_ids:
            row = self._load(image_id, ann_id)
            if row is None or (rows and row.shape != rows[0].shape):
                rows = None
                break
            rows.append(row)
        out = None
        if rows is not None:
            out = torch.stack(rows).float() if rows else torch.zeros(0, 0)
        with self._lock:
            if out is None:
                self.misses += 1
            else:
                self.hits += 1
        return out

    def put(self, image_id: int | str, ann_ids: Sequence[int | str], embeds: Tensor) -> None:
        """Store ``embeds [len(ann_ids), D]``: one atomically published file per annotation."""
        if embeds.shape[0] != len(ann_ids):
            raise ValueError(f"{len(ann_ids)} ann_ids but {embeds.shape[0]} embeddings")
        rows = embeds.detach().to("cpu", self.store_dtype)
        for ann_id, row in zip(ann_ids, rows):
            buf = io.BytesIO()
            torch.save(row.clone(), buf)  # clone: do not serialise the whole batch's storage
            self._atomic_write_bytes(self.path(image_id, ann_id), buf.getvalue())

    def stats(self) -> dict[str, int]:
        """``{"hits": ..., "misses": ...}`` since construction (this process only)."""
        return {"hits": self.hits, "misses": self.misses}
