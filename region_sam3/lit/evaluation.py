"""Evaluation half of `RegionSam3Module`: forward -> post-process -> pool -> evaluators.

Kept apart from training so each file has one job. The mixin reads the module's `net`,
`postprocessor`, `evaluation`, `teacher`, `_text_embeds`, `_category_ids` and
`_teacher_embeddings`; it owns `evaluators` / `eval_pools` per stage (`val`, `test`,
`test/<split>`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from region_sam3.data.batch import FindQueryBatch
from region_sam3.data.sam3_adapter import to_sam3_batch
from region_sam3.eval import (
    BatchLayout,
    DetectionPool,
    EvaluatorList,
    RegionPairs,
    build_default_evaluators,
    ground_truth_from_batch,
)
from region_sam3.eval.results_file import CocoResultsWriter


def final_output(sam3_output) -> dict[str, Any]:
    """The last step of the last stage of `Sam3Image.forward`'s `SAM3Output`."""
    stage = sam3_output[-1]
    return stage[-1] if isinstance(stage, list) else stage


class EvaluationMixin:
    """Validation/test hooks of `RegionSam3Module` (mixed into a `LightningModule`)."""

    def _make_evaluators(self) -> EvaluatorList:
        distill = self.teacher is not None and self._text_embeds is not None
        return build_default_evaluators(
            self.evaluation,
            distill_text_embeds=self._text_embeds if distill else None,
            distill_category_ids=self._category_ids,
        )

    def _region_pairs(self, batch: FindQueryBatch, out: dict[str, Any]) -> dict[int, RegionPairs]:
        """Distillation pairs per image id: for every GT the student embedding of the query
        SAM3's matcher assigns to it (box + class costs, so independent of mask quality and of
        the per-image top-K) and the teacher embedding of the GT. Only ``[N, D]`` leaves."""
        batch_idx, query_idx, target_idx = out["indices"][:3]
        if target_idx is None:
            target_idx = torch.arange(batch_idx.numel(), device=batch_idx.device)
        teacher, valid = self._teacher_embeddings(batch, batch.masks)
        keep = valid[target_idx]
        student = F.normalize(out["region_embed"][batch_idx, query_idx][keep].float(), dim=-1)
        prompts = batch_idx[keep].to(batch.category_ids.device)
        images = batch.query_image_index[prompts].cpu().numpy()
        cats = batch.category_ids[prompts].cpu().numpy()
        student, teacher = student.cpu().numpy(), teacher[target_idx][keep].float().cpu().numpy()
        image_ids = batch.image_ids.tolist()
        return {image_ids[n]: RegionPairs(student[images == n], teacher[images == n],
                                          cats[images == n].astype("int64"))
                for n in range(len(image_ids))}

    def _eval_step(self, stage: str, batch: FindQueryBatch) -> None:
        """forward -> top-K selection (device) -> per-image candidate pool (low-res logits on
        the device) -> on release, resize/encode the final K masks (only boxes/scores/labels/RLEs
        leave the device) -> evaluators (images whose prompts are all seen)."""
        sam3_batch = to_sam3_batch(batch, self.device)
        out = final_output(self.net(sam3_batch))
        pool = self.eval_pools[stage]
        layout = BatchLayout.from_batch(batch)
        # Floors: candidates that cannot beat an image's K-th pooled score are not gathered.
        dets = self.postprocessor.select(out, layout, pool.score_floors(layout.image_ids))
        if self.teacher is not None:
            out["indices"] = self.net.matcher(out, self.net.back_convert(sam3_batch.find_targets[0]))
            pairs = self._region_pairs(batch, out)
            for d in dets:
                d.region_pairs = pairs.get(d.image_id)
        pool.add(dets, ground_truth_from_batch(batch))
        self._process_released(stage, *pool.pop_finished(batch.image_ids.tolist()))

    def _process_released(self, stage: str, dets: list, gts: list) -> None:
        """Released images -> the results file (test stages) and the evaluators."""
        writer = self.results_writers.get(stage)
        if writer is not None:
            writer.write(dets)
        self.evaluators[stage].process(dets, gts)

    def _results_writer(self, stage: str) -> CocoResultsWriter | None:
        """`<results_dir>/<split>/coco_instances_results.json` for a test stage, when the task
        set `results_dir` (train.py / eval.py do) and `model.evaluation.results_file` is on."""
        root = getattr(self, "results_dir", None)
        if root is None or not stage.startswith("test") or not self.evaluation.results_file:
            return None
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        splits = list(getattr(datamodule, "test_splits", None) or ["test"])
        split = stage.split("/", 1)[1] if "/" in stage else splits[0]
        return CocoResultsWriter(Path(root) / split,
                                 per_iteration=self.evaluation.results_per_iteration)

    @property
    def results_writers(self) -> dict[str, CocoResultsWriter | None]:
        if not hasattr(self, "_results_writers"):
            self._results_writers: dict[str, CocoResultsWriter | None] = {}
        return self._results_writers

    def _eval_epoch_start(self, stage: str) -> None:
        self.evaluators[stage] = self._make_evaluators()
        self.eval_pools[stage] = DetectionPool(self.postprocessor.max_dets, self.postprocessor)
        self.results_writers[stage] = self._results_writer(stage)

    def _eval_epoch_end(self, stage: str) -> dict[str, float]:
        self._process_released(stage, *self.eval_pools.pop(stage).flush())
        writer = self.results_writers.pop(stage, None)
        if writer is not None:
            writer.close()  # before the collective evaluate: rank 0 merges after it
        metrics = self.evaluators[stage].evaluate()
        if writer is not None:
            writer.finish()
        # NaN (an empty group, e.g. crowded10 on a split without crowded images) is logged as
        # NaN next to its count: checkpoint monitors treat it as "not better".
        clean = {f"{stage}/{k}": float(v) for k, v in metrics.items() if v is not None}
        self.log_dict(clean, sync_dist=False)  # already gathered across ranks by the evaluators
        return clean

    def on_validation_epoch_start(self) -> None:
        self._eval_epoch_start("val")

    def validation_step(self, batch: FindQueryBatch, batch_idx: int) -> None:
        self._eval_step("val", batch)

    def on_validation_epoch_end(self) -> None:
        self.last_val_metrics = self._eval_epoch_end("val")

    def _test_stages(self) -> list[str]:
        """Metric prefixes of the test loaders: `test`, or `test/<split>` for several splits."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        return list(getattr(datamodule, "test_roles", None) or ["test"])

    def on_test_epoch_start(self) -> None:
        for stage in self._test_stages():
            self._eval_epoch_start(stage)

    def test_step(self, batch: FindQueryBatch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(self._test_stages()[dataloader_idx], batch)

    def on_test_epoch_end(self) -> None:
        metrics: dict[str, float] = {}
        for stage in self._test_stages():
            metrics.update(self._eval_epoch_end(stage))
        self.last_test_metrics = metrics
