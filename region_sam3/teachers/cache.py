"""On-disk cache of frozen-teacher region embeddings.

Layout: ``root/<teacher_hash>/<shard>/<image key>.pt`` with one small file per image,
holding ``{"ann_ids": list, "embeds": Tensor[R, D]}``. A new teacher config gives a
new hash and therefore a new directory, so stale embeddings are never read.

Concurrency: files are written to a unique temp file in the same directory and
published with ``os.replace`` (atomic on POSIX), so data-loader workers and DDP ranks
can share the cache. Two writers of the same image race only in the sense that the
last one wins; each file on disk is always complete. Unreadable files count as misses.

Only valid for augmentation-free views: the cache key is (image id, annotation ids),
so it must stay **off** (the default in the configs) whenever augmentations change
the image or the masks the teacher sees.
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

log = logging.getLogger(__name__)
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


class TeacherEmbeddingCache:
    """Per-image teacher-embedding store keyed by ids and the teacher config hash.

    Args:
        root: cache root directory (shared by all teachers).
        teacher_hash: ``teacher.config_hash()``.
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
    ) -> None:
        if not teacher_hash or _SAFE.search(teacher_hash):
            raise ValueError(f"teacher_hash must be a non-empty filename-safe string, got {teacher_hash!r}")
        self.dir = Path(root) / teacher_hash
        self.dir.mkdir(parents=True, exist_ok=True)
        self.store_dtype = store_dtype
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        if meta is not None and not (self.dir / "meta.json").exists():
            self._atomic_write_bytes(self.dir / "meta.json", json.dumps(meta, sort_keys=True, default=str).encode())

    # ------------------------------------------------------------------ paths
    def path(self, image_id: int | str) -> Path:
        """File for one image: sharded by a hash of the id to keep directories small."""
        key = str(image_id)
        shard = hashlib.sha1(key.encode()).hexdigest()[:2]
        return self.dir / shard / f"{_SAFE.sub('_', key)[:80]}-{hashlib.sha1(key.encode()).hexdigest()[:8]}.pt"

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
    def _load(self, image_id: int | str) -> dict[str, Any] | None:
        p = self.path(image_id)
        if not p.is_file():
            return None
        try:
            return torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated by a crash outside os.replace, disk error...
            log.warning("teacher cache: unreadable %s (%s); treating as miss", p, e)
            return None

    def get(self, image_id: int | str, ann_ids: Sequence[int | str]) -> Tensor | None:
        """Embeddings ``[len(ann_ids), D]`` in ``ann_ids`` order, or None if any is missing."""
        entry = self._load(image_id)
        out = None
        if entry is not None:
            index = {str(a): i for i, a in enumerate(entry["ann_ids"])}
            rows = [index.get(str(a)) for a in ann_ids]
            if all(r is not None for r in rows):
                out = entry["embeds"][rows].float() if rows else entry["embeds"][:0].float()
        with self._lock:
            if out is None:
                self.misses += 1
            else:
                self.hits += 1
        return out

    def put(self, image_id: int | str, ann_ids: Sequence[int | str], embeds: Tensor) -> None:
        """Store ``embeds [len(ann_ids), D]`` for an image, merged with what is on disk."""
        if embeds.shape[0] != len(ann_ids):
            raise ValueError(f"{len(ann_ids)} ann_ids but {embeds.shape[0]} embeddings")
        ids = [a if isinstance(a, int) else str(a) for a in ann_ids]
        new = embeds.detach().to("cpu", self.store_dtype).contiguous()
        old = self._load(image_id)
        if old is not None and old["embeds"].shape[1:] == new.shape[1:]:
            keep = [i for i, a in enumerate(old["ann_ids"]) if str(a) not in {str(x) for x in ids}]
            ids = [old["ann_ids"][i] for i in keep] + ids
            new = torch.cat([old["embeds"][keep].to(self.store_dtype), new])
        buf = io.BytesIO()
        torch.save({"ann_ids": ids, "embeds": new}, buf)
        self._atomic_write_bytes(self.path(image_id), buf.getvalue())

    def stats(self) -> dict[str, int]:
        """``{"hits": ..., "misses": ...}`` since construction (this process only)."""
        return {"hits": self.hits, "misses": self.misses}
