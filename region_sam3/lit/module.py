"""LightningModule: SAM3 (+ region head) trained with SAM3's criterion, optional CLIP distillation.

Configs arrive un-instantiated (`_recursive_: false`) so that the checkpoint's hyper-parameters
are plain configs: `RegionSam3Module.load_from_checkpoint(path)` rebuilds the exact model, and
the frozen teacher is rebuilt from its own config instead of being stored.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from omegaconf import DictConfig, OmegaConf

from region_sam3.data.batch import FindQueryBatch
from region_sam3.data.sam3_adapter import to_sam3_batch
from region_sam3.eval import DetectionPool, EvaluatorList, PostProcessor
from region_sam3.eval.bands import DILATION_RATIO
from region_sam3.eval.config import EvaluationConfig
from region_sam3.lit.distillation import DistillationMixin
from region_sam3.lit.evaluation import EvaluationMixin, final_output
from region_sam3.lit.head_only import restore_frozen_base, strip_frozen_base
from region_sam3.lit.nonfinite import (
    GradientGuard,
    NonFiniteCheck,
    NonFiniteLossError,
    SkipCounter,
    check_losses,
    drop_gradients,
    gradient_verdict,
    zero_loss_for_skipped_step,
)
from region_sam3.lit.optim import build_optimizer, lr_lambda
from region_sam3.models.freeze import eval_frozen_modules, has_trainable
from region_sam3.models.sam3_image import seg_head_rows_hint

log = logging.getLogger(__name__)
# Evaluation metrics are logged with sync_dist=False on purpose: the evaluators already gathered
# every rank's records (identical values on all ranks). Lightning would warn once per key.
warnings.filterwarnings("ignore", message=r".*when logging on epoch level in distributed")
TEACHER_PREFIX = "teacher."
NONFINITE_KEY = "nonfinite_skips"  # checkpoint entry of the skip counts ({total, consecutive})


def _plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


class RegionSam3Module(DistillationMixin, EvaluationMixin, L.LightningModule):
    """Trains SAM3's heads (and the region head) on find queries.

    Args:
        sam3: `conf/model/sam3/*.yaml` (`build_sam3` config).
        region_head: `conf/model/region_head/*.yaml` or None for plain SAM3.
        baseline: `conf/model/baseline/*.yaml` (ablation baselines: LoRA, HQ token, mask-head
            fine-tune); None or a config without `_target_` (`none`) adds nothing.
        criterion: `Sam3Criterion` config (loss weights, point sampling).
        optimizer: `{lr, weight_decay, betas, groups: [{name, patterns, lr, weight_decay}]}`.
        scheduler: `{name: cosine|inverse_sqrt|constant, warmup_steps, min_lr_ratio}`.
        evaluation: `model.evaluation` keys, defaults and meaning in
            `region_sam3.eval.config.EvaluationConfig` (`max_dets` is the old name of
            `max_dets_per_image`).
        teacher / distill: TextRegion teacher and `DistillationLoss` configs (both or neither).
        teacher_masks: `gt` (default) or `student` (detached matched predictions).
        teacher_cache_dir: cache teacher embeddings of GT masks on disk (only valid when the
            training views are augmentation-free: the key is the teacher, the training data's
            `dataset_identity`, image and annotation ids; `fit` refuses an augmenting datamodule).
        on_nonfinite_loss: `stop` raises with the step and the term; `skip` drops the step
            (no optimizer update). Decided collectively under DDP (`lit/nonfinite.py`). The
            same policy covers a finite loss with non-finite gradients (`GradientGuard`).
        max_consecutive_nonfinite_skips: with `skip`, raise (on every rank, at the same step)
            once more than this many batches in a row were non-finite; None = no cap. The skip
            counts are saved in checkpoints (`NONFINITE_KEY`), so a resumed run continues them.
        seg_head_positives_only: in training, run the segmentation head (pixel decoder, mask
            head, region head) only on prompts with targets; negatives get no mask loss, so
            losses and gradients are unchanged. Forced off when the criterion's semantic-seg
            loss is on (it supervises negatives). Never applies in evaluation.
        recompute_activations: false stops SAM3's fusion encoder / decoder from recomputing
            activations in backward (they hard-wire activation checkpointing): faster, more
            memory. Keep true at official size.
        frozen_eval_mode: keep every fully frozen submodule of SAM3 in eval mode while training
            (no dropout / drop-path in the frozen base: the head sees the features it gets at
            test time). Rule per module (`region_sam3.models.freeze.fully_frozen_modules`): a
            module whose parameters *and* all descendants' parameters are frozen goes to eval;
            a mixed module (e.g. `segmentation_head` with a trainable `region_head`) stays in
            train mode, its fully frozen children go to eval, and its parameter-free children
            (dropout directly under it) follow it. Applied after every `train()` and at the
            start of fit (Lightning >= 2.2 does not call `train()` itself).
        frozen_decoder_o2m_masks: with a frozen decoder, also pass SAM3's DAC one-to-many
            queries through the segmentation/region head (and give them mask losses). Default
            false: the head refines only the one-to-one queries that inference uses; the o2m
            half keeps its box/class terms (constant: nothing under them trains) but gets no
            masks, which halves the head's cost and drops 2x-weighted losses on outputs that
            are discarded at inference. With a trainable decoder SAM3's own DAC recipe is kept
            (o2m masks train the decoder) whatever this says.
        compile: `torch.compile` the base and the region head (`build_sam3(compile=True)`).
    """

    def __init__(
        self,
        sam3: Mapping[str, Any],
        criterion: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any],
        region_head: Mapping[str, Any] | None = None,
        evaluation: Mapping[str, Any] | None = None,
        teacher: Mapping[str, Any] | None = None,
        distill: Mapping[str, Any] | None = None,
        teacher_masks: str = "gt",
        teacher_cache_dir: str | None = None,
        on_nonfinite_loss: str = "stop",
        max_consecutive_nonfinite_skips: int | None = 10,
        baseline: Mapping[str, Any] | None = None,
        seg_head_positives_only: bool = False,
        recompute_activations: bool = True,
        frozen_eval_mode: bool = True,
        frozen_decoder_o2m_masks: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        if on_nonfinite_loss not in {"stop", "skip"}:
            raise ValueError(f"model.on_nonfinite_loss={on_nonfinite_loss!r}: use stop or skip")
        if teacher_masks not in {"gt", "student"}:
            raise ValueError(f"model.teacher_masks={teacher_masks!r}: use gt or student")
        if (teacher is None) != (distill is None):
            raise ValueError("model.teacher and model.distill must be set together")

        # The teacher is built first: a missing CLIP weight fails before SAM3 (minutes at full
        # size) is built.
        self.teacher = instantiate(teacher) if teacher else None
        self.distill = instantiate(distill) if distill else None
        head = self._build_region_head(region_head)
        adapter = None
        if baseline and baseline.get("_target_"):  # `name` labels the sweep axis only
            adapter = instantiate({k: v for k, v in _plain(baseline).items() if k != "name"})
        self.net = instantiate(sam3, region_head=head, baseline=adapter,
                               **({"compile": True} if compile else {}))
        self.frozen_eval_mode = bool(frozen_eval_mode)
        if not frozen_decoder_o2m_masks and not has_trainable(self.net.transformer.decoder):
            # Sam3Image then feeds only hs[:, :, :num_o2o] to the segmentation head and emits no
            # `pred_masks*_o2m`; upstream's loss wrapper skips the o2m mask loss in that case.
            self.net.o2m_mask_predict = False
        iter_weights = list(head.iter_loss_weights) if head is not None else None
        self.criterion = instantiate(criterion, iter_loss_weights=iter_weights)
        self._set_seg_head_positives_only(seg_head_positives_only, criterion)
        if not recompute_activations:
            if not hasattr(self.net, "recompute_activations"):
                raise ValueError("model.recompute_activations=false needs a model built by "
                                 "region_sam3.models.sam3_arch (Sam3ImageModel)")
            self.net.recompute_activations = False
        self.teacher_cache = None  # built in `setup("fit")`: its key needs the training data
        self.evaluation = EvaluationConfig.from_mapping(_plain(evaluation))
        self.postprocessor = PostProcessor(
            max_dets_per_image=self.evaluation.max_dets_per_image,
            per_iteration=self.evaluation.per_iteration,
            # Boundary AP's bands are made on the logits' device next to the masks.
            boundary_ratio=DILATION_RATIO if self.evaluation.boundary else None,
        )
        self.evaluators: dict[str, EvaluatorList] = {}
        self.eval_pools: dict[str, DetectionPool] = {}
        # Category-name text embeddings of the teacher [K,D] float32 (KL term, zero-shot metric),
        # filled in `setup`. A non-persistent buffer so `.to(device)` moves it with the module
        # (and it stays out of checkpoints: it is rebuilt from the teacher). Official size:
        # COCO K=80, D=512 (CLIP B/16) -> 160 KB; LVIS K=1203, D=768 -> 3.7 MB. It is the only
        # tensor the module keeps across steps (the teacher's pixel mean/std are buffers too).
        self.register_buffer("_text_embeds", None, persistent=False)
        self._category_ids: list[int] = []
        self._skip_optimizer_step = False
        self._nonfinite = SkipCounter(cap=max_consecutive_nonfinite_skips)
        self._grad_guard = GradientGuard()  # non-finite gradients after a finite loss
        self._param_names: dict[int, str] | None = None
        # `checkpoint.full_weights` (train.yaml): false stores no frozen base (`lit/head_only.py`)
        self.checkpoint_full_weights = False

    # ------------------------------------------------------------------ setup helpers
    def _build_region_head(self, region_head: Mapping[str, Any] | None):
        if region_head is None:
            if self.teacher is not None:
                raise ValueError("distillation needs a region head: set model/region_head=default")
            return None
        if self.teacher is None:
            return instantiate(region_head)
        embed_dim = int(region_head.get("embed_dim") or 0)
        if embed_dim not in (0, self.teacher.embed_dim):
            raise ValueError(
                f"model.region_head.embed_dim={embed_dim} but the teacher's embedding size is "
                f"{self.teacher.embed_dim}: set model.region_head.embed_dim=0 (follow the teacher)"
            )
        return instantiate(region_head, embed_dim=self.teacher.embed_dim)

    def _set_seg_head_positives_only(self, wanted: bool, criterion: Mapping[str, Any]) -> None:
        semantic = bool(criterion.get("semantic_seg", 0.0) or criterion.get("semantic_dice", 0.0))
        if wanted and semantic:
            log.info("model.seg_head_positives_only ignored: the semantic-seg loss supervises "
                     "negative prompts too")
        if wanted and not hasattr(self.net, "seg_head_positives_only"):
            raise ValueError("model.seg_head_positives_only=true needs a model built by "
                             "region_sam3.models.sam3_arch (Sam3ImageModel)")
        if hasattr(self.net, "seg_head_positives_only"):
            self.net.seg_head_positives_only = wanted and not semantic

    def _category_names(self) -> dict[int, str]:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        return dict(getattr(datamodule, "category_names", {}) or {})

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.teacher is not None and self.hparams.teacher_cache_dir:
            from region_sam3.teachers.cache import (
                TeacherEmbeddingCache,
                refuse_augmented_views,
                training_dataset_key,
            )

            cache_dir = self.hparams.teacher_cache_dir
            datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
            if self.hparams.teacher_masks == "gt":
                refuse_augmented_views(datamodule, cache_dir)
            self.teacher_cache = TeacherEmbeddingCache(  # keyed by teacher *and* training data
                cache_dir, self.teacher.config_hash(), dataset_key=training_dataset_key(datamodule))
        if self.teacher is not None:
            names = self._category_names()
            if names:
                self._category_ids = sorted(names)
                self._text_embeds = self.teacher.encode_text(
                    [names[c] for c in self._category_ids]
                ).to(self.device)

    # ------------------------------------------------------------------ teacher discipline
    def train(self, mode: bool = True) -> RegionSam3Module:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        if mode and getattr(self, "frozen_eval_mode", True):
            eval_frozen_modules(self.net)
        return self

    def trainable_params(self) -> int:
        """Trainable parameter elements (the ablation table's budget column)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def on_fit_start(self) -> None:
        # Logged once through the loggers (self.log is not allowed in this hook); train_task
        # also writes it to metrics.json.
        count = self.trainable_params()
        log.info("model/trainable_params = %d", count)
        for logger in self.loggers:
            logger.log_metrics({"model/trainable_params": float(count)}, step=0)

    def on_train_start(self) -> None:
        # Lightning keeps the modes the module was built with (all train) and restores them
        # per submodule after validation; apply the frozen-eval rule once training begins.
        self.train()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning restores optimizer, scheduler and loop counters but not the RNGs that drive
        # data sampling, negatives and point sampling: store them for exact resumption.
        checkpoint["rng_states"] = _collect_rng_states(include_cuda=torch.cuda.is_available())
        checkpoint[NONFINITE_KEY] = self._nonfinite.state_dict()
        # The teacher is frozen and rebuilt from its config: never store its weights.
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith(TEACHER_PREFIX)]:
            del state[key]
        if not self.checkpoint_full_weights:
            strip_frozen_base(checkpoint, self.net, _plain(self.hparams.sam3))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "rng_states" in checkpoint:
            _set_rng_states(checkpoint["rng_states"])
        self._nonfinite.load_state_dict(checkpoint.get(NONFINITE_KEY))  # absent (old): 0
        self.complete_checkpoint_state(checkpoint)

    def complete_checkpoint_state(self, checkpoint: dict[str, Any],
                                  where: str = "checkpoint") -> None:
        """Make `checkpoint["state_dict"]` load strictly into this module, in place: a
        head-only checkpoint's frozen base from its source (hash-checked, `lit/head_only.py`),
        the teacher's weights from the live teacher (never stored; dropped without one)."""
        restore_frozen_base(checkpoint, self.state_dict(), where=where)
        state = checkpoint["state_dict"]
        if self.teacher is not None:
            state.update({TEACHER_PREFIX + k: v for k, v in self.teacher.state_dict().items()})
        else:
            for key in [k for k in state if k.startswith(TEACHER_PREFIX)]:
                del state[key]

    # ------------------------------------------------------------------ forward / losses
    def forward(self, batch: FindQueryBatch) -> dict[str, Any]:
        """Final SAM3 output dict for a `FindQueryBatch` (per-query tensors `[B,Q,...]`)."""
        return final_output(self.net(to_sam3_batch(batch, self.device)))

    def _losses(self, batch: FindQueryBatch) -> dict[str, torch.Tensor]:
        # The per-query mask union is only built when SAM3's semantic-head loss is on (a
        # criterion that does not say gets it).
        semantic = getattr(self.criterion, "needs_semantic_masks", True)
        sam3_batch = to_sam3_batch(batch, self.device, semantic=semantic)
        hint = None
        if getattr(self.net, "seg_head_positives_only", False) and batch.num_targets_host:
            # Positive prompts from the collator's host counts: no device read-back (sync).
            rows = [i for i, n in enumerate(batch.num_targets_host) if n > 0] or [0]
            hint = torch.tensor(rows).to(self.device, non_blocking=True)
        with seg_head_rows_hint(self.net, hint):
            outputs = self.net(sam3_batch)
        targets = [self.net.back_convert(t) for t in sam3_batch.find_targets]
        losses = self.criterion(outputs, targets)
        if self.teacher is not None:
            distill = self._distillation_losses(batch, final_output(outputs))
            losses["total"] = losses["total"] + distill.pop("loss_distill")
            losses.update({k: v for k, v in distill.items()})
        return losses

    def _nonfinite_step(self, check: NonFiniteCheck, batch_idx: int) -> torch.Tensor:
        """Every rank runs this at the same step (see `lit/nonfinite.py`)."""
        message = check.describe(self.global_step, batch_idx, self.global_rank)
        if self.hparams.on_nonfinite_loss == "stop":
            raise NonFiniteLossError(message)
        self._nonfinite.skip(message)  # raises past max_consecutive_nonfinite_skips
        if check.local_terms or self.global_rank == 0:
            log.warning("%s; skipping this step (model.on_nonfinite_loss=skip)", message)
        self.log("train/nonfinite_skips", float(self._nonfinite.total), on_step=True,
                 on_epoch=False, reduce_fx="max")
        # Backward still runs (DDP all-reduces in lockstep); `on_before_optimizer_step` then
        # drops the gradients so AdamW neither moves nor decays the weights. The LR schedule
        # still advances (it follows global_step). Under gradient accumulation the whole
        # accumulated step is dropped.
        self._skip_optimizer_step = True
        return zero_loss_for_skipped_step(self)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Lightning calls this after backward and before gradient clipping.
        if self._skip_optimizer_step:
            drop_gradients(optimizer)
            self._skip_optimizer_step = False
            return
        if self._param_names is None:
            self._param_names = {id(p): n for n, p in self.named_parameters()}
        outcome = self._grad_guard.check(optimizer, self.global_step, self._param_names,
                                         getattr(self._trainer, "precision_plugin", None))
        if outcome is not None:  # None: skipped on the device, read with the next loss check
            self._gradient_outcome(outcome)

    def _gradient_outcome(self, bad: bool, log_count: bool = True) -> None:
        """The last optimizer step's gradient verdict, the same on every rank (all-reduced)."""
        if gradient_verdict(bad, self._grad_guard, self._nonfinite,
                            self.hparams.on_nonfinite_loss, self.global_rank) and log_count:
            self.log("train/nonfinite_skips", float(self._nonfinite.total), on_step=True,
                     on_epoch=False, reduce_fx="max")

    def on_train_end(self) -> None:
        outcome = self._grad_guard.settle_pending()  # the last step's flag (one read, once)
        if outcome is not None:
            self._gradient_outcome(outcome, log_count=False)

    def training_step(self, batch: FindQueryBatch, batch_idx: int) -> torch.Tensor:
        losses = self._losses(batch)
        # The last optimizer step's gradient flag comes back on the same (one) read-back.
        check = check_losses(losses, pending_gradient=self._grad_guard.take_pending())
        if check.gradient_bad is not None:
            self._gradient_outcome(check.gradient_bad)
        if check.bad:
            return self._nonfinite_step(check, batch_idx)
        bs = batch.num_queries
        self.log("train/loss", losses["total"], on_step=True, on_epoch=True, prog_bar=True,
                 batch_size=bs)
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()
                       if k != "total" and torch.is_tensor(v)}, on_step=True, batch_size=bs)
        return losses["total"]

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        optimizer = build_optimizer(self.net, _plain(self.hparams.optimizer))
        sched = dict(_plain(self.hparams.scheduler))
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lr_lambda(sched.get("name", "cosine"), int(sched.get("warmup_steps", 0)), total,
                      float(sched.get("min_lr_ratio", 0.0))),
        )
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}
