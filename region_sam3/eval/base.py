"""Evaluator base class (detectron2 ``DatasetEvaluator`` style) over per-image records.

Life cycle: ``reset()`` at the start of an epoch, ``process(detections, ground_truth)`` with
aligned lists of ``ImageDetections`` / ``ImageGroundTruth`` (original frame, RLEs; see
``region_sam3.eval.types``), ``evaluate()`` at the end. ``process`` reduces every image to a
small picklable summary (RLEs, a few floats) at once, so nothing dense is ever kept.

Per-iteration metrics: for every refinement iterate ``t`` carried by the detections the same
summary is made from ``detections.view(t)`` and reported under ``iter{t}/``; the iterate that
*is* the final mask (``final_iteration``) is not recomputed: its keys copy the final values.

Crowded split: ``crowded_thresholds=(N, ...)`` additionally reports every metric on the images
with ``>= N`` non-crowd GT instances under ``crowded{N}/`` with ``crowded{N}/num_images``. A
group without images reports NaN values and its count 0 (never 0 or -1 as a metric value).

DDP: ``evaluate()`` is collective. Summaries are gathered to rank 0 only (``gather_object``:
ranks > 0 never hold other ranks' RLEs), rank 0 computes, and the metric dict is broadcast, so
every rank returns the identical dict (log it without ``sync_dist``). Call it on all ranks.
Images repeated by ``DistributedSampler`` padding are de-duplicated by image id.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch.distributed as dist

from region_sam3.eval.types import ImageDetections, ImageGroundTruth

GatherFn = Callable[[Any], list[Any] | None]
BroadcastFn = Callable[[Any], Any]
IterKey = int | None


@dataclass
class ImageRecord:
    """Compact per-image summary produced by ``process`` (picklable, CPU only)."""

    image_id: int
    num_instances: int
    data: Any


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_to_main(obj: Any) -> list[Any] | None:
    """``[obj_rank0, obj_rank1, ...]`` on rank 0, ``None`` elsewhere; ``[obj]`` when not
    distributed."""
    if not _distributed():
        return [obj]
    main = dist.get_rank() == 0
    out: list[Any] | None = [None] * dist.get_world_size() if main else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_from_main(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (identity when not distributed)."""
    if not _distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_objects(obj: Any) -> list[Any]:
    """``[obj_rank0, obj_rank1, ...]`` on every rank (kept for callers that need it)."""
    if not _distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def split_by_instance_count(records: Sequence[ImageRecord], min_instances: int) -> list[ImageRecord]:
    """Records of the images with ``>= min_instances`` non-crowd GT instances."""
    return [r for r in records if r.num_instances >= min_instances]


def _dedupe(records: Iterable[ImageRecord]) -> list[ImageRecord]:
    seen: set[int] = set()
    out = []
    for r in records:
        if r.image_id not in seen:
            seen.add(r.image_id)
            out.append(r)
    return out


def _iter_prefix(t: IterKey) -> str:
    return "" if t is None else f"iter{t}/"


def nan_if_empty(values: dict[str, float], empty: bool) -> dict[str, float]:
    """All values NaN when the group is empty, except counts (``num_*``) which stay 0."""
    if not empty:
        return values
    return {k: (v if k.startswith("num_") else math.nan) for k, v in values.items()}


class DatasetEvaluator(ABC):
    """Base class: subclasses implement ``summarize`` (one image -> picklable data) and
    ``compute`` (records -> ``{name: value}``, NaN where there is no data); keys come out as
    ``{prefix}/{name}``.

    Args:
        prefix: metric namespace, e.g. ``"mask"`` gives ``mask/AP``.
        crowded_thresholds: also report metrics on images with ``>= N`` instances.
        gather_fn / broadcast_fn: replace the DDP collectives (tests, custom backends).
    """

    uses_iterations = True

    def __init__(
        self,
        prefix: str,
        crowded_thresholds: Sequence[int] = (),
        gather_fn: GatherFn | None = None,
        broadcast_fn: BroadcastFn | None = None,
    ) -> None:
        self.prefix = prefix
        self.crowded_thresholds = tuple(crowded_thresholds)
        self.gather_fn: GatherFn = gather_fn or gather_to_main
        self.broadcast_fn: BroadcastFn = broadcast_fn or broadcast_from_main
        self.reset()

    # -- subclass API -------------------------------------------------------------------------
    @abstractmethod
    def summarize(self, dets: ImageDetections, gt: ImageGroundTruth) -> Any:
        """Reduce one image to small picklable data (no dense tensors)."""

    @abstractmethod
    def compute(self, records: Sequence[ImageRecord]) -> dict[str, float]:
        """Metrics ``{name: value}`` over de-duplicated records of one iteration."""

    # -- public API ---------------------------------------------------------------------------
    def reset(self) -> None:
        self._records: dict[IterKey, list[ImageRecord]] = defaultdict(list)
        self._final_alias: int | None = None

    def process(
        self, detections: Sequence[ImageDetections], ground_truth: Sequence[ImageGroundTruth]
    ) -> None:
        """Summarise aligned per-image detections and ground truth."""
        if len(detections) != len(ground_truth):
            raise ValueError(f"{len(detections)} detections for {len(ground_truth)} images")
        for det, gt in zip(detections, ground_truth):
            if det.image_id != gt.image_id or (det.height, det.width) != (gt.height, gt.width):
                raise ValueError(
                    f"detections of image {det.image_id} ({det.height}x{det.width}) do not "
                    f"match ground truth of image {gt.image_id} ({gt.height}x{gt.width})"
                )
            views: list[IterKey] = [None]
            if self.uses_iterations:
                views += sorted(det.iterations)
                if det.final_iteration is not None:
                    self._final_alias = det.final_iteration
            for t in views:
                self._records[t].append(
                    ImageRecord(gt.image_id, gt.num_instances, self.summarize(det.view(t), gt))
                )

    def gathered_records(self) -> dict[IterKey, list[ImageRecord]] | None:
        """Records of all ranks merged and de-duplicated on rank 0 (None on other ranks)."""
        per_rank = self.gather_fn((dict(self._records), self._final_alias))
        if per_rank is None:
            return None
        merged: dict[IterKey, list[ImageRecord]] = defaultdict(list)
        for rank_records, alias in per_rank:
            if alias is not None:
                self._final_alias = alias
            for t, recs in rank_records.items():
                merged[t].extend(recs)
        # Sorted by image id: metrics do not depend on how images were sharded over ranks.
        return {t: sorted(_dedupe(recs), key=lambda r: r.image_id) for t, recs in merged.items()}

    def _group(self, recs: Sequence[ImageRecord], pre: str) -> dict[str, float]:
        out = {f"{pre}{self.prefix}/{k}": v for k, v in self.compute(recs).items()}
        return out

    def _metrics(self, records: dict[IterKey, list[ImageRecord]]) -> dict[str, float]:
        out: dict[str, float] = {}
        records = records or {None: []}  # nothing processed: still return every key (NaN)
        for t in sorted(records, key=lambda k: -1 if k is None else k):
            recs = records[t]
            out.update(self._group(recs, _iter_prefix(t)))
            for n in self.crowded_thresholds:
                sub = split_by_instance_count(recs, n)
                pre = f"{_iter_prefix(t)}crowded{n}/"
                out[f"{pre}num_images"] = float(len(sub))
                out.update(self._group(sub, pre))
        alias = self._final_alias
        if alias is not None and alias not in records and None in records:
            # The final iterate: copy the final metrics instead of recomputing them.
            for k in [k for k in out if not k.startswith("iter")]:
                out[f"iter{alias}/{k}"] = out[k]
        return out

    def evaluate(self) -> dict[str, float]:
        """Metrics of everything processed since ``reset`` (identical on every rank)."""
        records = self.gathered_records()
        metrics = None if records is None else self._metrics(records)
        return self.broadcast_fn(metrics)


class EvaluatorList:
    """Runs several evaluators on the same stream; ``evaluate`` merges their dicts.

    Key clashes raise (two evaluators silently overwriting each other's numbers would be a
    reporting bug); equal values are allowed (shared counts such as ``crowded10/num_images``).
    """

    def __init__(self, evaluators: Sequence[DatasetEvaluator]) -> None:
        self.evaluators = list(evaluators)

    def reset(self) -> None:
        for ev in self.evaluators:
            ev.reset()

    def process(
        self, detections: Sequence[ImageDetections], ground_truth: Sequence[ImageGroundTruth]
    ) -> None:
        for ev in self.evaluators:
            ev.process(detections, ground_truth)

    def evaluate(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for ev in self.evaluators:
            for k, v in ev.evaluate().items():
                same = k in out and (out[k] == v or (math.isnan(out[k]) and math.isnan(v)))
                if k in out and not same:
                    raise KeyError(f"metric {k!r} produced twice with different values")
                out[k] = v
        return out
