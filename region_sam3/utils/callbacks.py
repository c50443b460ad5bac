"""Lightning callbacks: metric curves as PNG where people look, mask overlays for W&B."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch

log = logging.getLogger(__name__)


class MetricsPlotCallback(L.Callback):
    """After every validation epoch, append the metrics to `metrics_history.json` and redraw
    `metrics.png` (training loss and the main validation metrics vs epoch).

    Args:
        output_dir: run directory.
        keys: validation metrics to plot (others are kept in the JSON).
    """

    def __init__(self, output_dir: str, keys: tuple[str, ...] = (
            "val/mask/AP", "val/mask/AP50", "val/mask/AP_S", "val/miou/mIoU")) -> None:
        self.output_dir = Path(output_dir)
        self.keys = tuple(keys)
        self.history: list[dict[str, float]] = []

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))

    # `on_validation_end`, not `on_validation_epoch_end`: callbacks' epoch-end hooks run before
    # the LightningModule's, i.e. before this epoch's validation metrics are logged.
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        row = {"epoch": float(trainer.current_epoch), "step": float(trainer.global_step)}
        for key, value in trainer.callback_metrics.items():
            if torch.is_tensor(value) and value.numel() == 1:
                row[key] = float(value)
        self.history.append(row)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "metrics_history.json").write_text(json.dumps(self.history, indent=1))
        self._plot()

    def reference_changes(self) -> dict[str, list[float]]:
        """`{key: [value - reference per validation]}` for every plotted key whose T = 0
        reference was logged too (`val/x` vs `val/iter0/x`: the region head against SAM3's own
        masks on the same prompts); NaN where either is missing."""
        out = {}
        for key in self.keys:
            if "/iter" in key or "/" not in key:
                continue
            stage, rest = key.split("/", 1)
            ref = f"{stage}/iter0/{rest}"
            if any(key in r and ref in r for r in self.history):
                out[key] = [r.get(key, float("nan")) - r.get(ref, float("nan"))
                            for r in self.history]
        return out

    def _plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        keys = [k for k in self.keys if any(k in r for r in self.history)]
        changes = self.reference_changes()
        fig, axes = plt.subplots(1, 3 if changes else 2, figsize=(15 if changes else 10, 3.5))
        steps = [r["step"] for r in self.history]
        loss = [r.get("train/loss_epoch", float("nan")) for r in self.history]
        axes[0].plot(steps, loss, marker="o")
        axes[0].set(title="train loss (epoch mean)", xlabel="step")
        for key in keys:
            # Per-iteration references (e.g. val/iter0/...: SAM3's own masks) are dashed.
            axes[1].plot(steps, [r.get(key, float("nan")) for r in self.history], marker="o",
                         label=key, linestyle="--" if "/iter" in key else "-")
        # Autoscaled: tiny-base metrics sit near 0.05, a fixed 0-1 axis flattens them.
        axes[1].set(title="validation", xlabel="step")
        if keys:
            axes[1].legend(fontsize=8)
        if changes:
            # The closed loop's effect is small next to the metrics' level: plot it on its own.
            for key, diff in changes.items():
                axes[2].plot(steps, diff, marker="o", label=key)
            axes[2].axhline(0.0, color="grey", linewidth=0.8)
            axes[2].set(title="change vs T = 0 (M^T - M^0, same prompts)", xlabel="step")
            axes[2].legend(fontsize=8)
        for ax in axes:
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(self.output_dir / "metrics.png", dpi=100)
        plt.close(fig)
