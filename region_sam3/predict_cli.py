"""Command line of `region_sam3.predict`: segment a prompt in an image, write an overlay PNG,
optionally label every detection zero-shot (`--labels "cat,dog"`, distilled region head)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from region_sam3.predict import MODEL_NAMES, Sam3Predictor


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
    parser.add_argument("--labels", default=None, metavar="NAME,NAME",
                        help="label each detection zero-shot with one of these names "
                             "(distilled region head + the checkpoint's teacher text tower)")
    parser.add_argument("--teacher-weights", default=None,
                        help="teacher weights for --labels (default: the checkpoint's teacher)")
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
    from region_sam3.region_query import parse_names

    try:
        names = parse_names(args.labels) if args.labels is not None else None
    except ValueError as err:
        raise SystemExit(f"error: {err}") from err
    if names and args.lightning_checkpoint is None:
        raise SystemExit("error: --labels needs --lightning-checkpoint (a distilled region head)")
    try:
        if args.lightning_checkpoint is not None:
            predictor = Sam3Predictor.from_lightning_checkpoint(
                args.lightning_checkpoint, device=args.device, with_teacher=bool(names),
                teacher_weights=args.teacher_weights,
            )
        else:
            predictor = Sam3Predictor.from_config(
                args.model, args.override, checkpoint=args.checkpoint, device=args.device
            )
    except (CheckpointError, FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from err
    pred = predictor.predict(image, args.prompt, score_threshold=args.threshold)
    labels: list[str] | str = args.prompt
    if names:
        labels = predictor.classify_regions(pred, names).labels

    out = args.out or args.image.with_name(f"{args.image.stem}_pred.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    overlay_predictions(image, pred, labels=labels).save(out, format="PNG")
    for i in range(len(pred)):
        x0, y0, x1, y1 = pred.boxes[i].tolist()
        area = int(pred.masks[i].sum())
        label = labels[i] if names else args.prompt
        print(f"{i}\t{label}\tscore={pred.scores[i]:.3f}\t"
              f"box=[{x0:.1f}, {y0:.1f}, {x1:.1f}, {y1:.1f}]\tmask_area={area}")
    print(f"{len(pred)} detection(s) above {args.threshold}; overlay written to {out}",
          file=sys.stderr)
