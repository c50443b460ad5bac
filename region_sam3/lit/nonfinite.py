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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN/Inf (raised when `model.on_nonfinite_loss=stop`)."""


@dataclass(frozen=True)
class NonFiniteCheck:
    """Outcome of `check_losses`, identical on every rank except `local_terms`.

    Attributes:
        bad_ranks: ranks whose loss had a non-finite term this step (empty: all finite).
        local_terms: this rank's non-finite loss terms (empty on healthy ranks).
    """

    bad_ranks: tuple[int, ...]
    local_terms: tuple[str, ...]

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
    accumulated optimizer step). Updated from `NonFiniteCheck.bad` only, which every rank sees
    alike, so the counts and the cap decision agree across DDP ranks.

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
    """`[1] -> [world, 1]`: every rank's flag; `[1, 1]` when not running distributed.

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
) -> NonFiniteCheck:
    """Which ranks have a non-finite scalar loss term this step (collective under DDP).

    Args:
        losses: scalar loss terms (non-scalars and non-tensors are ignored).
        gather_flags: `[1] -> [world, 1]` all-gather of one flag per rank.
    """
    names = [k for k, v in losses.items() if torch.is_tensor(v) and v.numel() == 1]
    finite = torch.isfinite(torch.stack([losses[k].detach().float().reshape(()) for k in names]))
    local_flag = (~finite).any().float().reshape(1)  # [1], stays on the device
    per_rank = gather_flags(local_flag).reshape(-1).tolist()  # the one host sync of the step
    bad_ranks = tuple(rank for rank, flag in enumerate(per_rank) if flag > 0)
    if not bad_ranks:
        return NonFiniteCheck((), ())
    # Failure path only: a second sync to name this rank's bad terms costs nothing that matters.
    terms = tuple(n for n, ok in zip(names, finite.tolist()) if not ok)
    return NonFiniteCheck(bad_ranks, terms)


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
