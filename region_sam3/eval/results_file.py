"""COCO results files (``coco_instances_results.json``) written while the evaluation streams.

One entry per detection, in the evaluated dataset's own ids and original image frame::

    {"image_id": int, "category_id": int, "segmentation": {"size": [H, W], "counts": str},
     "bbox": [x, y, w, h], "score": float}

``bbox`` is the box head's box (xywh, original pixels), as detectron2 writes it. Note for
re-scoring mask AP with pycocotools: ``COCO.loadRes`` takes a file whose first entry has a
``bbox`` as a *box* results file and sets every detection's ``area`` to its box area, which moves
unmatched detections between the S/M/L buckets; drop ``bbox`` first (detectron2 does the same in
its COCO evaluator). AP, AP50, AP75 and AR do not depend on it.

Streaming and bounded memory: every rank appends one JSON line per released image to its own
part file (``.parts/<file>.rank<r>.jsonl`` next to the result) as the ``DetectionPool`` releases
images, so nothing is held in memory. ``finish()`` -- called on every rank *after* the
evaluators' collective ``evaluate()``, which every rank enters only once its part is closed --
lets rank 0 concatenate the parts line by line into the final JSON array (images repeated by
``DistributedSampler`` padding are written once) and delete them. Rank 0 holds one line and the
set of image ids seen. The parts must be on a filesystem all ranks share (the run directory).

Per refinement iterate (``per_iteration=True``): ``iter{t}/coco_instances_results.json`` with the
same detections (labels, scores, boxes) and the masks of iterate ``t``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import torch.distributed as dist

from region_sam3.eval.types import ImageDetections

log = logging.getLogger(__name__)

RESULTS_FILE = "coco_instances_results.json"


def coco_results(dets: ImageDetections) -> list[dict[str, Any]]:
    """COCO results entries of one image (see module docstring)."""
    out = []
    for c, rle, s, box in zip(dets.labels.tolist(), dets.rles, dets.scores.tolist(),
                              dets.boxes.tolist()):
        x0, y0, x1, y1 = box
        counts = rle["counts"]
        out.append({
            "image_id": int(dets.image_id), "category_id": int(c),
            "segmentation": {"size": [int(v) for v in rle["size"]],
                             "counts": counts.decode("ascii") if isinstance(counts, bytes)
                             else counts},
            "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(s),
        })
    return out


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class CocoResultsWriter:
    """Streams ``ImageDetections`` into ``<out_dir>/coco_instances_results.json`` (+ ``iter{t}/``).

    Args:
        out_dir: directory of the results file(s); created.
        per_iteration: also write one file per refinement iterate carried by the detections.
        rank / world_size: default: from ``torch.distributed`` (0 / 1 when not initialised).
            With the defaults under DDP the constructor is collective: every rank writes its part
            under rank 0's ``out_dir`` (ranks may have been given different run folders), so
            rank 0 finds every part.
    """

    def __init__(self, out_dir: str | Path, per_iteration: bool = False,
                 rank: int | None = None, world_size: int | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.per_iteration = per_iteration
        default_rank, default_world = _rank_world()
        self.rank = default_rank if rank is None else rank
        self.world_size = default_world if world_size is None else world_size
        if rank is None and world_size is None and self.world_size > 1:
            shared = [str(self.out_dir)]
            dist.broadcast_object_list(shared, src=0)
            self.out_dir = Path(shared[0])
        self._parts: dict[str, IO[str]] = {}  # source ("" final, "iter{t}") -> open part
        self._sources: set[str] = set()

    def _part_path(self, source: str, rank: int) -> Path:
        name = f"{source.replace('/', '_') or 'final'}.rank{rank}.jsonl"
        return self.out_dir / ".parts" / name

    def _append(self, source: str, image_id: int, entries: list[dict[str, Any]]) -> None:
        f = self._parts.get(source)
        if f is None:
            path = self._part_path(source, self.rank)
            path.parent.mkdir(parents=True, exist_ok=True)
            f = self._parts[source] = open(path, "w")  # noqa: SIM115 - kept open across batches, closed in close()
            self._sources.add(source)
        # One line per image: rank 0 de-duplicates images without parsing detections twice.
        f.write(json.dumps({"image_id": int(image_id), "results": entries}) + "\n")

    def write(self, detections: Sequence[ImageDetections]) -> None:
        """Append the released images' detections (an image with none still gets its line)."""
        for det in detections:
            self._append("", det.image_id, coco_results(det))
            if self.per_iteration:
                for t in det.iteration_keys():
                    self._append(f"iter{t}", det.image_id, coco_results(det.view(t)))

    def close(self) -> None:
        """Close this rank's parts (before the collective ``evaluate``)."""
        for f in self._parts.values():
            f.close()
        self._parts.clear()

    def finish(self) -> list[Path]:
        """Rank 0: merge every rank's parts into the results file(s); returns their paths
        (``[]`` on other ranks). Call on every rank after the evaluators' ``evaluate``."""
        self.close()
        if self.rank != 0:
            return []
        written = []
        sources = self._sources | {""}
        for part in (self.out_dir / ".parts").glob("*.rank*.jsonl"):
            stem = part.name.split(".rank")[0]
            sources.add("" if stem == "final" else stem)
        for source in sorted(sources):
            written.append(self._merge(source))
        parts_dir = self.out_dir / ".parts"
        if parts_dir.is_dir() and not any(parts_dir.iterdir()):
            parts_dir.rmdir()
        return written

    def _merge(self, source: str) -> Path:
        out = self.out_dir / source / RESULTS_FILE if source else self.out_dir / RESULTS_FILE
        out.parent.mkdir(parents=True, exist_ok=True)
        parts = [self._part_path(source, r) for r in range(self.world_size)]
        missing = [str(p) for p in parts if not p.is_file()]
        if missing and source == "":
            # A rank with no images writes no part; an unshared filesystem loses all of them.
            log.warning("results parts missing (ranks without images, or %s is not on a "
                        "filesystem all ranks share): %s", self.out_dir, missing)
        seen: set[int] = set()
        count = 0
        with open(out, "w") as f:
            f.write("[")
            for part in parts:
                if not part.is_file():
                    continue
                with open(part) as lines:
                    for line in lines:
                        record = json.loads(line)
                        if record["image_id"] in seen:  # DistributedSampler padding
                            continue
                        seen.add(record["image_id"])
                        for entry in record["results"]:
                            f.write(("," if count else "") + "\n" + json.dumps(entry))
                            count += 1
                part.unlink()
            f.write("\n]\n")
        log.info("COCO results: %d detections on %d images -> %s", count, len(seen), out)
        return out
