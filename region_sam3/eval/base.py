"""Evaluator base class (detectron2 ``DatasetEvaluator`` style) with DDP gathering.

Life cycle: ``reset()`` at the start of an epoch, ``process(predictions, targets)`` per batch,
``evaluate()`` at the end. ``process`` immediately reduces every query to a small picklable
summary (RLE masks, a few floats) so that nothing dense is kept and the cross-rank gather is
cheap.

DDP: ``evaluate()`` is collective. When ``torch.distributed`` is initialised with more than one
rank, every rank sends its summaries to every other rank with ``all_gather_object`` and then
*every rank computes the same metrics* from the merged list. This costs a redundant computation
on ranks > 0 but means every rank returns the identical dict, so Lightning's ``self.log`` needs
no ``sync_dist`` and no rank can deadlock waiting for a broadcast. Call ``evaluate()`` on all
ranks (e.g. in ``on_validation_epoch_end``), never inside ``if rank == 0``.

Duplicates: ``DistributedSampler`` pads the last batch by repeating samples; summaries with the
same (iteration, image_id, category_id, query_id) key are therefore de-duplicated (the first
one, in rank order, is kept).

Per-iteration metrics: ``predictions`` may be a mapping ``{t: [QueryPrediction, ...]}`` over
refinement iterations; keys are then prefixed ``iter{t}/``. A plain sequence gives un-prefixed
keys. Both can be mixed across calls.

Crowded split: ``crowded_thresholds=(N, ...)`` additionally reports every metric on the subset
of images with at least ``N`` GT instances, under ``crowded{N}/`` (see
``split_by_instance_count``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch.distributed as dist

from region_sam3.eval.types import QueryPrediction, QueryTarget

GatherFn = Callable[[Any], list[Any]]
IterKey = int | None
Predictions = Sequence[QueryPrediction] | Mapping[int, Sequence[QueryPrediction]]


@dataclass
class QueryRecord:
    """Compact per-query summary produced by ``process`` (picklable, CPU only)."""

    image_id: int
    category_id: int
    query_id: int | None
    num_gt: int
    image_num_instances: int | None
    data: Any

    @property
    def key(self) -> tuple[int, int, int | None]:
        return (self.image_id, self.category_id, self.query_id)


def all_gather_objects(obj: Any) -> list[Any]:
    """``[obj_rank0, obj_rank1, ...]``; ``[obj]`` when not running distributed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def image_instance_counts(records: Iterable[QueryRecord]) -> dict[int, int]:
    """Number of GT instances per image: the explicit ``image_num_instances`` when given,
    else the sum of ``num_gt`` over the (distinct) queries of the image."""
    summed: dict[int, int] = defaultdict(int)
    explicit: dict[int, int] = {}
    for r in records:
        summed[r.image_id] += r.num_gt
        if r.image_num_instances is not None:
            explicit[r.image_id] = max(explicit.get(r.image_id, 0), r.image_num_instances)
    return {img: explicit.get(img, n) for img, n in summed.items()}


def split_by_instance_count(
    records: Sequence[QueryRecord], min_instances: int
) -> list[QueryRecord]:
    """Records of the images with ``>= min_instances`` GT instances (the crowded split)."""
    counts = image_instance_counts(records)
    return [r for r in records if counts[r.image_id] >= min_instances]


def _dedupe(records: Iterable[QueryRecord]) -> list[QueryRecord]:
    seen: set[tuple[int, int, int | None]] = set()
    out = []
    for r in records:
        if r.key not in seen:
            seen.add(r.key)
            out.append(r)
    return out


def _iter_prefix(t: IterKey) -> str:
    return "" if t is None else f"iter{t}/"


class DatasetEvaluator(ABC):
    """Base class: subclasses implement ``summarize`` (one query -> picklable data) and
    ``compute`` (list of records -> ``{name: value}``); keys come out as ``{prefix}/{name}``.

    Args:
        prefix: metric namespace, e.g. ``"mask"`` gives ``mask/AP``.
        crowded_thresholds: also report metrics on images with ``>= N`` instances.
        gather_fn: replaces ``all_gather_objects`` (tests, custom backends).
    """

    def __init__(
        self,
        prefix: str,
        crowded_thresholds: Sequence[int] = (),
        gather_fn: GatherFn | None = None,
    ) -> None:
        self.prefix = prefix
        self.crowded_thresholds = tuple(crowded_thresholds)
        self.gather_fn: GatherFn = gather_fn or all_gather_objects
        self._records: dict[IterKey, list[QueryRecord]] = defaultdict(list)

    # -- subclass API -------------------------------------------------------------------------
    @abstractmethod
    def summarize(self, pred: QueryPrediction, target: QueryTarget) -> Any:
        """Reduce one query to small picklable data (no dense tensors)."""

    @abstractmethod
    def compute(self, records: Sequence[QueryRecord]) -> dict[str, float]:
        """Metrics ``{name: value}`` over de-duplicated records of one iteration."""

    # -- public API ---------------------------------------------------------------------------
    def reset(self) -> None:
        self._records = defaultdict(list)

    def process(self, predictions: Predictions, targets: Sequence[QueryTarget]) -> None:
        """Summarise a batch. ``predictions``: aligned list, or ``{t: aligned list}``."""
        items: Iterable[tuple[IterKey, Sequence[QueryPrediction]]]
        if isinstance(predictions, Mapping):
            items = predictions.items()
        else:
            items = [(None, predictions)]
        for t, preds in items:
            if len(preds) != len(targets):
                raise ValueError(f"{len(preds)} predictions for {len(targets)} targets (t={t})")
            for pred, tgt in zip(preds, targets):
                if pred.masks.shape[-2:] != tgt.masks.shape[-2:]:
                    raise ValueError(
                        f"prediction {tuple(pred.masks.shape)} and target "
                        f"{tuple(tgt.masks.shape)} resolutions differ"
                    )
                self._records[t].append(
                    QueryRecord(
                        image_id=int(tgt.image_id),
                        category_id=int(tgt.category_id),
                        query_id=tgt.query_id,
                        num_gt=int(tgt.masks.shape[0]),
                        image_num_instances=tgt.image_num_instances,
                        data=self.summarize(pred, tgt),
                    )
                )

    def gathered_records(self) -> dict[IterKey, list[QueryRecord]]:
        """Records of all ranks merged and de-duplicated (collective under DDP)."""
        per_rank = self.gather_fn(dict(self._records))
        merged: dict[IterKey, list[QueryRecord]] = defaultdict(list)
        for rank_records in per_rank:
            for t, recs in rank_records.items():
                merged[t].extend(recs)
        return {t: _dedupe(recs) for t, recs in merged.items()}

    def evaluate(self) -> dict[str, float]:
        """Metrics of everything processed since ``reset`` (identical on every rank)."""
        out: dict[str, float] = {}
        # Nothing processed (e.g. an empty sanity-check epoch): still return every key.
        records = self.gathered_records() or {None: []}
        for t in sorted(records, key=lambda k: -1 if k is None else k):
            recs = records[t]
            for name, value in self.compute(recs).items():
                out[f"{_iter_prefix(t)}{self.prefix}/{name}"] = value
            for n in self.crowded_thresholds:
                sub = split_by_instance_count(recs, n)
                pre = f"{_iter_prefix(t)}crowded{n}/"
                out[f"{pre}num_images"] = float(len({r.image_id for r in sub}))
                for name, value in self.compute(sub).items():
                    out[f"{pre}{self.prefix}/{name}"] = value
        return out


class EvaluatorList:
    """Runs several evaluators on the same stream; ``evaluate`` merges their dicts.

    Key clashes raise, because two evaluators silently overwriting each other's numbers would
    be a reporting bug.
    """

    def __init__(self, evaluators: Sequence[DatasetEvaluator]) -> None:
        self.evaluators = list(evaluators)

    def reset(self) -> None:
        for ev in self.evaluators:
            ev.reset()

    def process(self, predictions: Predictions, targets: Sequence[QueryTarget]) -> None:
        for ev in self.evaluators:
            ev.process(predictions, targets)

    def evaluate(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for ev in self.evaluators:
            for k, v in ev.evaluate().items():
                if k in out and out[k] != v:
                    raise KeyError(f"metric {k!r} produced twice with different values")
                out[k] = v
        return out
