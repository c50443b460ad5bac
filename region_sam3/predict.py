"""Text-prompted instance segmentation: the Python API (the CLI is `region_sam3.predict_cli`).

    from region_sam3.predict import Sam3Predictor
    predictor = Sam3Predictor.from_config("tiny_base")                  # shipped tiny weights
    predictor = Sam3Predictor.from_config("full", checkpoint="/path/to/sam3.pt")
    predictor = Sam3Predictor.from_lightning_checkpoint("runs/x/checkpoints/last.ckpt")
    pred = predictor.predict(image, "red circle", score_threshold=0.5)
    pred.masks  # [N,H,W] bool at the original image size
    pred.region_embeds  # [N,D] region embeddings when the model has a region head
    predictor.classify_regions(pred, ["cat", "dog"]).labels  # zero-shot (distilled head)

    region-sam3-predict images/ "a dog" --model full --checkpoint /path/to/sam3.pt

Pre/post-processing is SAM3's own `Sam3Processor` (resize to the model resolution, normalise,
score = sigmoid(logit) x sigmoid(presence), bilinear mask upsampling to the original size), so
results match the official image pipeline for the same weights.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from region_sam3.data.image_io import ImageLike, to_uint8_chw

log = logging.getLogger(__name__)

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
        region_embeds: `[N,D]` L2-normalised region embeddings (the region head's projection
            of R^T, in the distillation teacher's space), or None without a region head.
        iter_mask_logits: `{t: [N,h,w]}` mask logits M^t of the refinement loop at the mask
            head's resolution (only with `predict(..., return_iterations=True)`).
    """

    masks: torch.Tensor
    mask_probs: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor
    prompt: str = ""
    region_embeds: torch.Tensor | None = None
    iter_mask_logits: dict[int, torch.Tensor] = field(default_factory=dict)

    def iteration_probs(self, t: int) -> torch.Tensor:
        """`[N,H,W]` mask probabilities of refinement iteration t at the image size."""
        from region_sam3.region_query import upsample_mask_logits

        if t not in self.iter_mask_logits:
            raise KeyError(f"no masks for iteration {t}: have {sorted(self.iter_mask_logits)} "
                           "(predict(..., return_iterations=True) on a model with a region head)")
        return upsample_mask_logits(self.iter_mask_logits[t], self.image_size)

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
        teacher: the distillation teacher (`region_sam3.teachers.RegionTeacher`) whose text
            tower labels regions in `classify_regions`; only `encode_text` is ever called.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        resolution: int | None = None,
        device: str | torch.device | None = None,
        teacher: torch.nn.Module | None = None,
    ) -> None:
        from region_sam3.region_query import RegionAwareProcessor

        self.device = _default_device(device)
        # eval(): dropout off, and SAM3's decoder/encoder assert activation checkpointing
        # whenever they are in training mode.
        self.model = model.to(self.device).eval()
        self.resolution = int(resolution) if resolution is not None else model_resolution(model)
        self.processor = RegionAwareProcessor(self.model, resolution=self.resolution,
                                              device=self.device)
        self.teacher = teacher.to(self.device).eval() if teacher is not None else None
        self._text_cache: dict[str, torch.Tensor] = {}

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
        cls,
        path: str | os.PathLike,
        *,
        device: str | torch.device | None = None,
        with_teacher: bool = False,
        teacher_weights: str | os.PathLike | None = None,
    ) -> Sam3Predictor:
        """Load the SAM3 (+ region head) network from a checkpoint written by `train.py`.

        Args:
            with_teacher: also rebuild the distillation teacher from the checkpoint's config
                (its weights: `teacher.pretrained`, or `teacher_weights`) for
                `classify_regions`; only its text tower is used.
        """
        from omegaconf import OmegaConf

        from region_sam3.lit.loading import load_module_from_checkpoint

        # The distillation teacher is not built here: only its text tower is used, below.
        module, composed = load_module_from_checkpoint(path, with_teacher=False)
        teacher = None
        if with_teacher or teacher_weights is not None:
            from region_sam3.region_query import teacher_from_hparams

            hparams = OmegaConf.to_container(composed.model, resolve=True)
            teacher = teacher_from_hparams(hparams, teacher_weights)
        return cls(module.net, device=device, teacher=teacher)

    # ------------------------------------------------------------------ inference
    @torch.inference_mode()
    def predict(self, image: ImageLike, prompt: str, score_threshold: float = 0.5,
                return_iterations: bool = False) -> Prediction:
        """Segment every instance of `prompt` in `image`.

        Args:
            image: PIL image, `[H,W,3]` uint8 array or `[3,H,W]` tensor (uint8 or float [0,1]),
                any size and aspect ratio.
            prompt: a short noun phrase, e.g. "red circle".
            score_threshold: keep detections with score > threshold.
            return_iterations: also keep M^0..M^T of the region head's loop.

        Returns:
            `Prediction` at the original `H x W`.
        """
        return self.predict_prompts(image, [prompt], score_threshold, return_iterations)[0]

    @torch.inference_mode()
    def predict_prompts(
        self, image: ImageLike, prompts: Sequence[str], score_threshold: float = 0.5,
        return_iterations: bool = False,
    ) -> list[Prediction]:
        """Several prompts on one image; the image encoder runs once."""
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of strings; use predict() for one prompt")
        pixels = to_uint8_chw(image)
        self.processor.confidence_threshold = float(score_threshold)
        self.processor.return_iterations = bool(return_iterations)
        state = self.processor.set_image(pixels)
        results = []
        for prompt in prompts:
            # set_text_prompt replaces the previous prompt's text features in `state`.
            state = self.processor.set_text_prompt(prompt, state)
            results.append(self._to_prediction(state, prompt))
        return results

    @torch.inference_mode()
    def predict_batch(
        self, images: Sequence[ImageLike | str | os.PathLike], prompts: Sequence[str],
        batch_size: int = 8, score_threshold: float = 0.5, return_iterations: bool = False,
    ) -> list[list[Prediction]]:
        """Every prompt on every image; `[image][prompt]` predictions (see `iter_predict_batch`)."""
        return list(self.iter_predict_batch(images, prompts, batch_size, score_threshold,
                                            return_iterations))

    @torch.inference_mode()
    def iter_predict_batch(
        self, images: Iterable[ImageLike | str | os.PathLike], prompts: Sequence[str],
        batch_size: int = 8, score_threshold: float = 0.5, return_iterations: bool = False,
    ) -> Iterator[list[Prediction]]:
        """Stream `predict_prompts` over many images: yields one list (one per prompt) per image.

        The image encoder (the ViT, most of the cost at 1008 px) runs on `batch_size` images at
        a time; the text encoder runs once per prompt for the whole stream; grounding and
        post-processing run per (image, prompt) through the same `RegionAwareProcessor` code as
        `predict`, so results equal `predict_prompts` up to the batched encoder's float
        rounding. Images (paths are decoded lazily) and masks are held for one batch only.
        Memory: `batch_size` x the encoder's activations (official size, bf16: ~0.5 GB/image).
        """
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of strings, e.g. ['a dog']")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if getattr(self.model, "inst_interactive_predictor", None) is not None:
            # set_image also adapts SAM2-style features for point prompts; not done here.
            raise NotImplementedError("predict_batch: models with an interactive (SAM2-style) "
                                      "predictor are not supported; use predict_prompts")
        proc = self.processor
        proc.confidence_threshold = float(score_threshold)
        proc.return_iterations = bool(return_iterations)
        text = {p: self.model.backbone.forward_text([p], device=self.device)
                for p in dict.fromkeys(prompts)}
        source = iter(images)
        while batch := [to_uint8_chw(im) for _, im in zip(range(batch_size), source)]:
            pixels = torch.stack([proc.transform(im.to(self.device)) for im in batch])
            features = self.model.backbone.forward_image(pixels)  # every leaf [B, ...]
            for i, image in enumerate(batch):
                state = {"original_height": image.shape[-2], "original_width": image.shape[-1],
                         "backbone_out": _select_image(features, i),
                         "geometric_prompt": self.model._get_dummy_prompt()}
                results = []
                for prompt in prompts:
                    state["backbone_out"].update(text[prompt])  # as Sam3Processor.set_text_prompt
                    results.append(self._to_prediction(proc._forward_grounding(state), prompt))
                yield results

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
        region = state.get("region_embeds")
        return Prediction(
            masks=state["masks"][:, 0][order].cpu(),
            mask_probs=mask_probs[order].cpu(),
            boxes=boxes[order].cpu(),
            scores=scores[order].cpu(),
            prompt=prompt,
            region_embeds=region[order].cpu() if region is not None else None,
            iter_mask_logits={t: m[order].cpu() for t, m in state.get("iter_mask_logits", {}).items()},
        )

    # ------------------------------------------------------------------ region queries
    @torch.inference_mode()
    def text_embeddings(self, names: Sequence[str]) -> torch.Tensor:
        """`[C,D]` teacher text embeddings of `names` (text tower only; cached per name)."""
        if self.teacher is None:
            raise ValueError("no teacher: build the predictor with teacher=... or "
                             "from_lightning_checkpoint(..., with_teacher=True)")
        missing = [n for n in dict.fromkeys(names) if n not in self._text_cache]
        if missing:
            embeds = self.teacher.encode_text(missing).float().cpu()
            self._text_cache.update(zip(missing, embeds))
        return torch.stack([self._text_cache[n] for n in names]) if names else torch.zeros(0, 0)

    def classify_regions(self, prediction: Prediction, names: Sequence[str]):
        """Label every detection of `prediction` zero-shot with one of `names`.

        Compares each region embedding with the teacher's text embeddings of the names (cosine);
        the teacher's image tower never runs. Returns `region_query.RegionLabels`.
        """
        from region_sam3.region_query import classify

        if prediction.region_embeds is None:
            raise ValueError("the prediction has no region embeddings: the model has no region "
                             "head (distil one with experiment=distill_clip)")
        if isinstance(names, str):
            raise TypeError("names must be a sequence of strings, e.g. ['cat', 'dog']")
        return classify(prediction.region_embeds, self.text_embeddings(list(names)), names)


def _select_image(tree: Any, index: int) -> Any:
    """Image `index` of the image encoder's output (dicts/lists of `[B, ...]` tensors), as the
    `[1, ...]` views `Sam3Processor.set_image` would have produced for that image alone."""
    if isinstance(tree, torch.Tensor):
        return tree[index:index + 1]
    if isinstance(tree, dict):
        return {k: _select_image(v, index) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(_select_image(v, index) for v in tree)
    return tree
