"""Text-prompted instance segmentation on one image: Python API and CLI.

    from region_sam3.predict import Sam3Predictor
    predictor = Sam3Predictor.from_config("tiny_base")                  # shipped tiny weights
    predictor = Sam3Predictor.from_config("full", checkpoint="/path/to/sam3.pt")
    predictor = Sam3Predictor.from_lightning_checkpoint("runs/x/checkpoints/last.ckpt")
    pred = predictor.predict(image, "red circle", score_threshold=0.5)
    pred.masks  # [N,H,W] bool at the original image size

    python -m region_sam3.predict image.jpg "a dog" --out overlay.png --model full \
        --checkpoint /path/to/sam3.pt

Pre/post-processing is SAM3's own `Sam3Processor` (resize to the model resolution, normalise,
score = sigmoid(logit) x sigmoid(presence), bilinear mask upsampling to the original size), so
results match the official image pipeline for the same weights.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)

ImageLike = Image.Image | np.ndarray | torch.Tensor
MODEL_NAMES = ("tiny_base", "tiny", "full")


@dataclass
class Prediction:
    """Detections for one (image, prompt) pair, sorted by descending score, on the CPU.

    Attributes:
        masks: `[N,H,W]` bool, `mask_probs > 0.5`.
        mask_probs: `[N,H,W]` float32 in [0, 1].
        boxes: `[N,4]` float32 xyxy in pixels, clamped to the image.
        scores: `[N]` float32, sigmoid(class logit) x sigmoid(presence logit).
        prompt: the text prompt.
    """

    masks: torch.Tensor
    mask_probs: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor
    prompt: str = ""

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the image the prediction is for."""
        return int(self.masks.shape[-2]), int(self.masks.shape[-1])


def find_conf_dir() -> Path:
    """The repository's Hydra `conf/` directory (next to the `region_sam3` package)."""
    import region_sam3

    package_dir = Path(region_sam3.__file__).resolve().parent
    for candidate in (package_dir.parent / "conf", package_dir / "conf"):
        if (candidate / "model" / "sam3").is_dir():
            return candidate
    raise FileNotFoundError(
        f"Hydra config directory not found (looked for conf/model/sam3 next to {package_dir}). "
        "Sam3Predictor.from_config needs a source checkout (`pip install -e .`); with a plain "
        "install build the model yourself and use Sam3Predictor(model)."
    )


def model_resolution(model: torch.nn.Module) -> int:
    """Input side length the model was built for, read from its ViT.

    Uses `trunk.img_size` when the builder recorded it. `sam3`'s own ViT keeps no `img_size`; its global-attention blocks are built with
    `input_size = (img_size // patch, img_size // patch)` (which also fixes the RoPE tables), so
    resolution = token grid x patch size.
    """
    trunk = model.backbone.vision_backbone.trunk
    if isinstance(getattr(trunk, "img_size", None), int):
        return trunk.img_size
    patch = int(trunk.patch_embed.proj.kernel_size[0])
    for block in trunk.blocks:
        if getattr(block, "window_size", 0) == 0 and block.attn.input_size is not None:
            return int(block.attn.input_size[0]) * patch
    raise ValueError("cannot infer the input resolution: pass Sam3Predictor(model, resolution=)")


def to_uint8_chw(image: ImageLike) -> torch.Tensor:
    """Any supported image -> `[3,H,W]` uint8 tensor on the CPU.

    Accepts a PIL image (any mode), an `[H,W,3]` uint8 array, or a `[3,H,W]` tensor (uint8, or
    float in [0, 1]). Converting every input to one form first makes PIL, numpy and tensor
    inputs give bit-identical predictions (and sidesteps `Sam3Processor.set_image` reading an
    `[H,W,3]` array's size as `(W, 3)`).
    """
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"numpy images must be [H,W,3], got shape {image.shape}")
        if image.dtype != np.uint8:
            raise ValueError(f"numpy images must be uint8, got {image.dtype}")
        # Copy: PIL-backed arrays are read-only, which torch.from_numpy warns about.
        return torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).contiguous()
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"tensor images must be [3,H,W], got shape {tuple(image.shape)}")
        image = image.detach().cpu()
        if image.dtype == torch.uint8:
            return image.contiguous()
        if image.is_floating_point():
            return (image.clamp(0, 1) * 255).round().to(torch.uint8)
        raise ValueError(f"tensor images must be uint8 or float in [0, 1], got {image.dtype}")
    raise TypeError(f"unsupported image type {type(image).__name__}: use PIL, numpy or torch")


def _default_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Sam3Predictor:
    """Text-prompted instance segmentation with a (region-aware) `Sam3Image`.

    Args:
        model: a built `sam3.model.sam3_image.Sam3Image` (moved to `device`, put in eval mode).
        resolution: model input side; read from the model's ViT when None.
        device: "cpu", "cuda", ...; None = CUDA when available.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        resolution: int | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        from sam3.model.sam3_image_processor import Sam3Processor

        self.device = _default_device(device)
        # eval(): dropout off, and SAM3's decoder/encoder assert activation checkpointing
        # whenever they are in training mode.
        self.model = model.to(self.device).eval()
        self.resolution = int(resolution) if resolution is not None else model_resolution(model)
        self.processor = Sam3Processor(self.model, resolution=self.resolution, device=self.device)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_config(
        cls,
        name: str = "tiny_base",
        overrides: Sequence[str] = (),
        *,
        checkpoint: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
    ) -> Sam3Predictor:
        """Build the model of `conf/model/sam3/<name>.yaml` (Hydra overrides relative to it).

        Args:
            name: `tiny_base` (shipped tiny weights), `tiny` (random init), `full` (official).
            overrides: e.g. `["checkpoint=/path/to/sam3.pt"]`.
            checkpoint: convenience for the `checkpoint` override that also accepts paths the
                override grammar would reject (spaces, `=`).

        Raises:
            CheckpointError: the requested weights are missing or incompatible.
        """
        from hydra import compose, initialize_config_dir
        from hydra.errors import InstantiationException
        from hydra.utils import instantiate

        from region_sam3.models.checkpoint import CheckpointError

        config_dir = find_conf_dir() / "model" / "sam3"
        if not (config_dir / f"{name}.yaml").is_file():
            known = sorted(p.stem for p in config_dir.glob("*.yaml"))
            raise ValueError(f"unknown model config {name!r}; choose one of {known}")
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = compose(name, overrides=list(overrides))
        if checkpoint is not None:
            cfg.checkpoint = str(Path(checkpoint).expanduser())
        try:
            model = instantiate(cfg)
        except InstantiationException as err:
            # Surface "weights missing" as itself, not wrapped in Hydra's exception chain.
            if isinstance(err.__cause__, CheckpointError):
                raise err.__cause__ from None
            raise
        return cls(model, device=device)

    @classmethod
    def from_lightning_checkpoint(
        cls, path: str | os.PathLike, *, device: str | torch.device | None = None
    ) -> Sam3Predictor:
        """Load the SAM3 (+ region head) network from a checkpoint written by `train.py`."""
        from omegaconf import OmegaConf

        from region_sam3.lit.module import RegionSam3Module

        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"Lightning checkpoint not found: {path}")
        # mmap: a full-size checkpoint is paged in once, straight into the model's tensors.
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        hparams: dict[str, Any] = dict(ckpt.get("hyper_parameters") or {})
        if "sam3" not in hparams or "state_dict" not in ckpt:
            raise ValueError(f"{path} has no model hyper-parameters: was it written by train.py?")
        sam3_cfg = OmegaConf.create(hparams["sam3"])
        # Every SAM3 tensor is in the Lightning checkpoint: do not re-read the original weights
        # (which may not exist on this machine), as `region_sam3.tasks.eval_task` does.
        sam3_cfg.checkpoint = None
        sam3_cfg.from_hub = False
        sam3_cfg.strict = False
        hparams["sam3"] = sam3_cfg
        # The distillation teacher (a CLIP model) is training-only and its weights are not saved
        # in the checkpoint; building it would need its weights.
        hparams.update(teacher=None, distill=None, teacher_cache_dir=None)
        module = RegionSam3Module(**hparams)
        prefix = "net."
        net_state = {
            k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)
        }
        module.net.load_state_dict(net_state, strict=True)
        return cls(module.net, device=device)

    # ------------------------------------------------------------------ inference
    @torch.inference_mode()
    def predict(self, image: ImageLike, prompt: str, score_threshold: float = 0.5) -> Prediction:
        """Segment every instance of `prompt` in `image`.

        Args:
            image: PIL image, `[H,W,3]` uint8 array or `[3,H,W]` tensor (uint8 or float [0,1]),
                any size and aspect ratio.
            prompt: a short noun phrase, e.g. "red circle".
            score_threshold: keep detections with score > threshold.

        Returns:
            `Prediction` at the original `H x W`.
        """
        return self.predict_prompts(image, [prompt], score_threshold)[0]

    @torch.inference_mode()
    def predict_prompts(
        self, image: ImageLike, prompts: Sequence[str], score_threshold: float = 0.5
    ) -> list[Prediction]:
        """Several prompts on one image; the image encoder runs once."""
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of strings; use predict() for one prompt")
        pixels = to_uint8_chw(image)
        self.processor.confidence_threshold = float(score_threshold)
        state = self.processor.set_image(pixels)
        results = []
        for prompt in prompts:
            # set_text_prompt replaces the previous prompt's text features in `state`.
            state = self.processor.set_text_prompt(prompt, state)
            results.append(self._to_prediction(state, prompt))
        return results

    @staticmethod
    def _to_prediction(state: dict[str, Any], prompt: str) -> Prediction:
        height, width = state["original_height"], state["original_width"]
        scores = state["scores"].float()
        order = torch.argsort(scores, descending=True, stable=True)
        mask_probs = state["masks_logits"][:, 0].float()  # [N,H,W]: already sigmoid-ed
        boxes = state["boxes"].float()
        # Predicted boxes are sigmoid cx,cy,w,h and can extend past the image; clamp them so
        # they are drawable and comparable with ground truth.
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        return Prediction(
            masks=state["masks"][:, 0][order].cpu(),
            mask_probs=mask_probs[order].cpu(),
            boxes=boxes[order].cpu(),
            scores=scores[order].cpu(),
            prompt=prompt,
        )


# ---------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="region-sam3-predict",
        description="Segment every instance of a text prompt in an image; write an overlay PNG.",
    )
    parser.add_argument("image", type=Path, help="input image (any format PIL reads)")
    parser.add_argument("prompt", help='text prompt, e.g. "a dog"')
    parser.add_argument("--out", type=Path, default=None,
                        help="overlay PNG to write (default: <image>_pred.png)")
    parser.add_argument("--model", choices=MODEL_NAMES, default="tiny_base",
                        help="model config conf/model/sam3/<model>.yaml (default: tiny_base)")
    parser.add_argument("--checkpoint", default=None,
                        help="official-format SAM3 weights (e.g. sam3.pt) for --model")
    parser.add_argument("--lightning-checkpoint", type=Path, default=None,
                        help="checkpoint written by train.py (overrides --model/--checkpoint)")
    parser.add_argument("--threshold", type=float, default=0.5, help="score threshold")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: auto)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="extra Hydra override for the model config (repeatable)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """CLI entry point (`region-sam3-predict`).

    Raises:
        SystemExit: unreadable or missing image (the message names the path).
    """
    from region_sam3.viz import overlay_predictions

    args = build_parser().parse_args(argv)
    # Check the cheap things before spending time building the model.
    if not args.image.is_file():
        # SystemExit with a message: the CLI prints one line instead of a traceback.
        raise SystemExit(f"error: image file not found: {args.image}")
    try:
        image = Image.open(args.image).convert("RGB")
    except OSError as err:
        raise SystemExit(f"error: cannot read image {args.image}: {err}") from err
    from region_sam3.models.checkpoint import CheckpointError

    try:
        if args.lightning_checkpoint is not None:
            predictor = Sam3Predictor.from_lightning_checkpoint(
                args.lightning_checkpoint, device=args.device
            )
        else:
            predictor = Sam3Predictor.from_config(
                args.model, args.override, checkpoint=args.checkpoint, device=args.device
            )
    except (CheckpointError, FileNotFoundError) as err:
        raise SystemExit(f"error: {err}") from err
    pred = predictor.predict(image, args.prompt, score_threshold=args.threshold)

    out = args.out or args.image.with_name(f"{args.image.stem}_pred.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    overlay_predictions(image, pred, labels=args.prompt).save(out, format="PNG")
    for i in range(len(pred)):
        x0, y0, x1, y1 = pred.boxes[i].tolist()
        area = int(pred.masks[i].sum())
        print(f"{i}\t{args.prompt}\tscore={pred.scores[i]:.3f}\t"
              f"box=[{x0:.1f}, {y0:.1f}, {x1:.1f}, {y1:.1f}]\tmask_area={area}")
    print(f"{len(pred)} detection(s) above {args.threshold}; overlay written to {out}",
          file=sys.stderr)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
