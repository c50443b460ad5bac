"""EMA of the trainable weights only: Lightning's `EMAWeightAveraging` on a view of them.

Lightning's callback deep-copies the whole LightningModule into an `AveragedModel`. Here that
would copy the frozen SAM3 base (848M parameters: 3.4 GB in float32 per rank, on the GPU) and
the frozen teacher, and swap all of them in and out at every validation, to average tensors
that never change. `TrainableEMAWeightAveraging` hands the callback a `TrainableView` (the
module's trainable `Parameter`s themselves, no copies) instead, so the average holds only the
trainable tensors (the region head: 1.58M parameters, ~6 MB) and Lightning's own logic does the
rest: update after every optimizer step, swap the averaged weights in for validation, copy them
into the model at the end of fit.

Checkpoints: `state_dict` holds the *averaged* trainable weights (so `eval.py`, the predictor and
`load_from_checkpoint` use the averaged head), `current_model_state` the live trainable weights
and `averaging_state` the average's counter; resuming restores both.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from torch import nn
from torch.optim.swa_utils import AveragedModel

SEP = "__"  # `ParameterDict` keys cannot contain "."


class TrainableView(nn.Module):
    """The trainable parameters of `module` under their (escaped) names; the very same
    `Parameter` objects, so writing into the view writes into `module`."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.names = [n for n, p in module.named_parameters() if p.requires_grad]
        self.params = nn.ParameterDict({n.replace(".", SEP): p for n, p in
                                        module.named_parameters() if p.requires_grad})


class TrainableEMAWeightAveraging(EMAWeightAveraging):
    """`EMAWeightAveraging` over the trainable parameters only (see the module docstring).

    Args: those of `EMAWeightAveraging` (`decay`, `update_every_n_steps`,
    `update_starting_at_step`, ...); buffers are not averaged (the trainable head has none that
    change: LayerNorm/GroupNorm only).
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("use_buffers", False)
        super().__init__(**kwargs)
        self._view: TrainableView | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":  # what Lightning's `setup` does, on the view
            self._view = TrainableView(pl_module)
            device = self._device or pl_module.device
            self._average_model = AveragedModel(  # deep-copies the view: trainable tensors only
                model=self._view, device=device, use_buffers=self._use_buffers, **self._kwargs)

    # Lightning's hooks, pointed at the view instead of the whole module.
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, self._view, outputs, batch, batch_idx)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, self._view)

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, self._view)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        super().on_validation_epoch_start(trainer, self._view)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        super().on_validation_epoch_end(trainer, self._view)

    def averaged(self) -> dict[str, torch.Tensor]:
        """Averaged trainable weights by their module names (empty outside fit)."""
        if self._average_model is None or self._view is None:
            return {}
        params = self._average_model.module.params
        return {n: params[n.replace(".", SEP)].detach() for n in self._view.names}

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        if self._average_model is None:
            return super().on_save_checkpoint(trainer, pl_module, checkpoint)
        state = dict(checkpoint["state_dict"])
        averaged = self.averaged()
        # Only the trainable entries differ; the frozen ones are written once, as they are.
        checkpoint["current_model_state"] = {n: state[n] for n in averaged if n in state}
        state.update({n: v.to(state[n].dtype).clone() for n, v in averaged.items() if n in state})
        checkpoint["state_dict"] = state
        checkpoint["averaging_state"] = {
            k: v for k, v in self._average_model.state_dict().items() if not k.startswith("module.")}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        if self._average_model is None or self._view is None:
            return super().on_load_checkpoint(trainer, pl_module, checkpoint)
        state = checkpoint["state_dict"]
        params = self._average_model.module.params
        with torch.no_grad():
            for name in self._view.names:
                if name in state:
                    params[name.replace(".", SEP)].copy_(state[name])
        if "current_model_state" in checkpoint and "averaging_state" in checkpoint:
            self._average_model.load_state_dict(
                {**{f"module.params.{k}": v for k, v in params.items()},
                 **checkpoint["averaging_state"]})
            # `state_dict` (the average) was loaded into the module already: put the live
            # weights back.
            pl_module.load_state_dict(checkpoint["current_model_state"], strict=False)
