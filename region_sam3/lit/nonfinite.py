"""Non-finite losses, decided the same way on every DDP rank.

A NaN/Inf loss usually appears on one rank only (its batch). Acting on it locally breaks DDP:
if that rank alone raises, the others wait in the next gradient all-reduce until the NCCL
timeout; if it alone skips backward (Lightning refuses `None` from `training_step` when the
world size is > 1 anyway), DDP's reducer desynchronises. So every rank contributes one flag
to a tiny all-gather (`[world]` floats, on the device: no host sync on its own) and then reads
the gathered flags with exactly one host sync per step (the sync the single-process check
needed anyway). It sits between forward and backward; at official size SAM3's Hungarian matcher
already syncs inside the loss (scipy on the CPU), so it only costs the latency of launching the
backward, and under NCCL the all-gather adds one tiny collective per step (~tens of µs).
Every rank sees the same flags and takes the same branch:

- `stop`: every rank raises `NonFiniteLossError` at the same step (no hang);
- `skip`: every rank returns `zero_loss_for_skipped_step` (so backward and DDP's gradient
  all-reduce still run in lockstep), and `drop_gradients` makes the optimizer step a no-op.
  `SkipCounter` caps consecutive skips (a loss that stays NaN must not skip silently forever):
  its counts are Python ints that change only on the shared outcome, so they are equal on every
  rank and every rank raises at the same step, without any further communication.

Non-finite gradients after a finite loss (`GradientGuard`, from `on_before_optimizer_step`:
after backward, before clipping) follow the same policy and counter. Their flag is all-reduced
on the device and skips the fused AdamW step there (`optimizer.found_inf`); it is read with the
next step's loss flags, in the same gather and the same single host sync.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN/Inf (raised when `model.on_nonfinite_loss=stop`)."""


@dataclass(frozen=True)
class NonFiniteCheck:
    """Outcome of `check_losses`, identical on every rank except `local_terms`.

    Attributes:
        bad_ranks: ranks whose loss had a non-finite term this step (empty: all finite).
        local_terms: this rank's non-finite loss terms (empty on healthy ranks).
        gradient_bad: whether the last optimizer step's gradients were non-finite on any rank
            (`GradientGuard`; its flag rides on this step's read-back). None: nothing pending.
    """

    bad_ranks: tuple[int, ...]
    local_terms: tuple[str, ...]
    #: the previous optimizer step's gradient flag read on the same sync (None: none pending)
    gradient_bad: bool | None = None

    @property
    def bad(self) -> bool:
        return bool(self.bad_ranks)

    def describe(self, step: int, batch_idx: int, rank: int) -> str:
        where = f"global step {step} (batch {batch_idx})"
        mine = f"rank {rank}: terms {list(self.local_terms)}" if self.local_terms else \
            f"rank {rank} is finite"
        return f"non-finite loss at {where} on rank(s) {list(self.bad_ranks)}; {mine}"


@dataclass
class SkipCounter:
    """Non-finite steps skipped under `model.on_nonfinite_loss=skip`, saved in checkpoints.

    Counted per training batch (under gradient accumulation a skipped batch drops the whole
    accumulated optimizer step); a non-finite gradient counts its optimizer step once, and the
    streak ends only when a step's gradients came back finite. Updated from shared outcomes
    only (`NonFiniteCheck`, the all-reduced gradient flag), which every rank sees alike, so the
    counts and the cap decision agree across DDP ranks.

    Attributes:
        cap: most consecutive skips allowed (`model.max_consecutive_nonfinite_skips`); one
            more raises `NonFiniteLossError`. None: no cap; 0: never skip (like `stop`).
        total: skips since the run started (logged as `train/nonfinite_skips`).
        consecutive: skips since the last finite batch.
    """

    cap: int | None = None
    total: int = 0
    consecutive: int = 0

    def __post_init__(self) -> None:
        cap = self.cap
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 0):
            raise ValueError(f"model.max_consecutive_nonfinite_skips={cap!r}: use an integer "
                             ">= 0 or null (no cap)")

    def finite(self) -> None:
        """A finite batch: the streak ends."""
        self.consecutive = 0

    def skip(self, message: str) -> None:
        """Count one skipped batch; raise `NonFiniteLossError` once the cap is exceeded."""
        self.total += 1
        self.consecutive += 1
        if self.cap is not None and self.consecutive > self.cap:
            raise NonFiniteLossError(
                f"{message}; {self.consecutive} consecutive non-finite steps exceed "
                f"model.max_consecutive_nonfinite_skips={self.cap} ({self.total} skipped in "
                "all): the loss does not recover, stopping")

    def state_dict(self) -> dict[str, int]:
        return {"total": self.total, "consecutive": self.consecutive}

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        """Restore the counts; None (a checkpoint from before they were saved) gives 0."""
        state = state or {}
        self.total = int(state.get("total", 0))
        self.consecutive = int(state.get("consecutive", 0))


def gather_rank_flags(flag: torch.Tensor) -> torch.Tensor:
    """`[n] -> [world, n]`: every rank's flags; `[1, n]` when not running distributed.

    Collective under DDP: every rank must call it at every step. Plain `all_gather` (gloo and
    NCCL), not Lightning's autograd-aware one: the flags need no gradient.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag[None]
    flags = [torch.empty_like(flag) for _ in range(dist.get_world_size())]
    dist.all_gather(flags, flag.contiguous())
    return torch.stack(flags)


def check_losses(
    losses: Mapping[str, torch.Tensor],
    gather_flags: Callable[[torch.Tensor], torch.Tensor] = gather_rank_flags,
    pending_gradient: torch.Tensor | None = None,
) -> NonFiniteCheck:
    """Which ranks have a non-finite scalar loss term this step (collective under DDP).

    Args:
        losses: scalar loss terms (non-scalars and non-tensors are ignored).
        gather_flags: `[n] -> [world, n]` all-gather of `n` flags per rank.
        pending_gradient: `[1]` device flag of the last optimizer step's gradients
            (`GradientGuard.take_pending`), or None. Concatenated to the loss flag so that both
            come back with the step's one host sync. Every rank has one pending or none alike
            (the guard runs at every optimizer step on every rank), so the shapes agree.
    """
    names = [k for k, v in losses.items() if torch.is_tensor(v) and v.numel() == 1]
    finite = torch.isfinite(torch.stack([losses[k].detach().float().reshape(()) for k in names]))
    local_flag = (~finite).any().float().reshape(1)  # [1], stays on the device
    if pending_gradient is not None:
        local_flag = torch.cat([local_flag, pending_gradient.to(local_flag).reshape(1)])
    per_rank = gather_flags(local_flag).reshape(-1, local_flag.numel()).tolist()  # the one sync
    gradient_bad = None if pending_gradient is None else any(row[1] > 0 for row in per_rank)
    bad_ranks = tuple(rank for rank, row in enumerate(per_rank) if row[0] > 0)
    if not bad_ranks:
        return NonFiniteCheck((), (), gradient_bad)
    # Failure path only: a second sync to name this rank's bad terms costs nothing that matters.
    terms = tuple(n for n, ok in zip(names, finite.tolist()) if not ok)
    return NonFiniteCheck(bad_ranks, terms, gradient_bad)


def zero_loss_for_skipped_step(module: nn.Module) -> torch.Tensor:
    """A loss of exactly 0 whose graph reaches every trainable parameter (`[]` tensor).

    Built from the parameters, not from the bad loss: `nan * 0` is still NaN, and NaN/Inf in
    the forward graph would turn the zero gradient into NaN. Every trainable parameter gets a
    (zero) gradient, so DDP's reducer all-reduces every bucket on every rank even with
    `find_unused_parameters=false`. Costs one read of the trainable weights (~ms at 848M on a
    GPU); the bad step's activations are freed without a backward through them.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    zero = torch.zeros((), device=params[0].device if params else None)
    # nan_to_num: exactly 0 even if a weight itself went NaN (its gradient is 0 either way).
    return sum((p.sum() * 0.0 for p in params), zero).nan_to_num(0.0, 0.0, 0.0)


def drop_gradients(optimizer: torch.optim.Optimizer) -> None:
    """Make the coming `optimizer.step()` a no-op (call from `on_before_optimizer_step`).

    Zero gradients are not enough: AdamW would still move the weights with its running
    moments and apply weight decay. With `grad=None` PyTorch optimisers skip a parameter
    entirely (no moment update, no decay, no step count), and gradient clipping sees nothing.
    """
    optimizer.zero_grad(set_to_none=True)
    if getattr(optimizer, "found_inf", None) is not None:  # a stale `GradientGuard` flag
        optimizer.found_inf = None


class NonFiniteGradientError(NonFiniteLossError):
    """Finite loss, non-finite gradient (raised when `model.on_nonfinite_loss=stop`)."""


def gradient_norms(optimizer: torch.optim.Optimizer) -> tuple[list[torch.Tensor], torch.Tensor]:
    """This rank's gradients and their per-tensor L2 norms `[P]` (one fused `_foreach_norm`,
    on the device). A NaN/Inf anywhere in a gradient makes its norm NaN/Inf (so does a finite
    gradient whose squared sum overflows float32, |g| ~ 1e19: garbage all the same)."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"]
             if p.grad is not None]
    if not grads:
        return grads, torch.zeros(0)
    return grads, torch.stack([n.float() for n in torch._foreach_norm(grads)])


def any_rank(flag: torch.Tensor) -> torch.Tensor:
    """`[1]` flag, max over ranks (an all-reduce on the device: no host sync). After DDP's
    gradient all-reduce every rank already holds the same gradients; the reduce keeps the
    decision collective under strategies that shard or skip gradients (FSDP, unused params)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return flag


@dataclass
class GradientGuard:
    """Non-finite gradients after a finite loss, checked after backward and before clipping.

    Norm clipping would turn one Inf into NaN in every gradient, and the optimizer would write
    NaN into every weight. `check` (from `on_before_optimizer_step`) computes one flag on the
    device and, with an optimizer that skips a step on a device flag (PyTorch's fused AdamW /
    Adam / SGD read `optimizer.found_inf` exactly as `GradScaler` sets it: no moment update, no
    decay, the step count rolled back), hands it over without reading it: the bad step is
    skipped on the device at once, and the flag comes back one step later on the loss check's
    read-back (`check_losses(pending_gradient=...)`), so counting and `stop` cost no extra host
    sync. The last step's flag is read by `settle_pending` (end of fit). Another optimizer
    gets the flag read at once (one more sync per step) and `drop_gradients`.

    Attributes:
        pending: `[1]` device flag of the last optimizer step, not read yet (None: nothing).
        pending_step: the global step it belongs to.
        pending_norms: its per-tensor gradient norms `[P]` (named on failure only).
        pending_names: the parameter names matching `pending_norms`.
    """

    pending: torch.Tensor | None = None
    pending_step: int = -1
    pending_norms: torch.Tensor | None = None
    pending_names: tuple[str, ...] = ()

    def check(self, optimizer: torch.optim.Optimizer, step: int,
              names: Mapping[int, str] | None = None, precision: Any = None) -> bool | None:
        """Flag this optimizer step's gradients; True/False if known now, None if pending.

        Args:
            names: `id(param) -> name`, to name the non-finite gradients on failure.
            precision: Lightning's precision plugin; with a `GradScaler` (16-mixed) Inf
                gradients are the scaler's business (loss-scale overflow): not checked.
        """
        if getattr(precision, "scaler", None) is not None:
            return False
        grads, norms = gradient_norms(optimizer)
        if not grads:
            return False
        bad = any_rank((~norms.isfinite()).any().float().reshape(1))  # [1] on the device
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        labels = tuple((names or {}).get(id(p), f"param{i}") for i, p in enumerate(params))
        if getattr(optimizer, "_step_supports_amp_scaling", False):  # fused: skips on the flag
            optimizer.found_inf = bad.reshape(())  # the fused kernels want a 0-d flag
            self.pending, self.pending_step = bad, step
            self.pending_norms, self.pending_names = norms, labels
            return None
        optimizer.found_inf = None
        if bad.item() > 0:  # not fused: one read-back here, the optimizer cannot skip itself
            self.pending_norms, self.pending_names, self.pending_step = norms, labels, step
            drop_gradients(optimizer)
            return True
        return False

    def take_pending(self) -> torch.Tensor | None:
        """The pending flag for `check_losses` (cleared: it is read with the loss)."""
        flag, self.pending = self.pending, None
        return flag

    def settle_pending(self) -> bool | None:
        """Read a still-pending flag (end of fit: one sync, once). None: nothing pending."""
        flag = self.take_pending()
        return None if flag is None else bool(flag.item() > 0)

    def describe(self) -> str:
        """Message for the last non-finite step (failure path: reads its norms back)."""
        norms = self.pending_norms.tolist() if self.pending_norms is not None else []
        bad = [f"{n}={v}" for n, v in zip(self.pending_names, norms) if not math.isfinite(v)]
        more = f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""
        return (f"non-finite gradient at global step {self.pending_step} after a finite loss: "
                f"{', '.join(bad[:5])}{more}; the optimizer step was skipped (weights unchanged)")


def gradient_verdict(bad: bool, guard: GradientGuard, counter: SkipCounter, policy: str,
                     rank: int) -> bool:
    """Apply the last optimizer step's gradient verdict (the same on every rank).

    Finite: the skip streak ends (a step is finite only once its gradients are). Non-finite:
    `stop` raises `NonFiniteGradientError`; `skip` counts it (raising past the cap). Returns
    True when a skip was counted (the caller logs the count).
    """
    if not bad:
        counter.finite()
        return False
    message = f"{guard.describe()}; rank {rank}"
    if policy == "stop":
        raise NonFiniteGradientError(message)
    counter.skip(message)
    if rank == 0:
        log.warning("%s (model.on_nonfinite_loss=skip)", message)
    return True
