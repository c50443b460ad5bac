"""`region-sam3-predict`: text-prompted segmentation of an image, a folder, a glob or a file list.

    region-sam3-predict photos/ "a dog" "a cat" --out-dir preds/ --batch-size 8
    region-sam3-predict "photos/**/*.jpg" --prompts-file prompts.txt --threshold 0.3
    region-sam3-predict list.txt "an animal" --lightning-checkpoint run/last.ckpt --labels cat,dog

Writes `<out-dir>/<image stem>_pred.png` (overlay of every prompt's detections) per image and
one `<out-dir>/predictions.json`: COCO results (`image_id` = position in the input list, from 1;
`category_id` = position of the prompt, from 1) with `file_name`, `prompt` and, with `--labels`,
`label` / `label_score`. Heavy imports (torch, sam3) wait until the arguments are checked.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

MODEL_NAMES = ("tiny_base", "tiny", "full")


def silence_upstream_warnings() -> None:
    """Filter the warnings torch and sam3 print on every start, each at its source line only."""
    # sam3's video predictor decorates methods with CUDA autocast at import time; on a CPU-only
    # machine torch warns once per decorator. Image inference never uses the video predictor.
    warnings.filterwarnings("ignore", message=r"CUDA is not available or torch_xla is imported",
                            category=UserWarning, module=r"sam3\.model\.sam3_video_inference")
    # sam3 scripts a few helpers with torch.jit.script, deprecated in torch >= 2.9.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated",
                            category=FutureWarning, module=r"torch\.jit\._script")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="region-sam3-predict",
        description="Segment every instance of text prompts in images; write overlays and one "
                    "COCO-results JSON.",
    )
    parser.add_argument("source", help="image file, folder, quoted glob ('imgs/*.jpg') or a "
                                       ".txt file list (one path a line)")
    parser.add_argument("prompts", nargs="*", help='text prompts, e.g. "a dog" "a cat"')
    parser.add_argument("--prompts-file", default=None, help="more prompts, one a line")
    parser.add_argument("--out-dir", type=Path, default=Path("predictions"),
                        help="where overlays and predictions.json go (default: ./predictions)")
    parser.add_argument("--no-overlays", action="store_true", help="write only the JSON")
    parser.add_argument("--batch-size", type=int, default=4,
                        help="images per image-encoder batch (default: 4)")
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
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no table")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """CLI entry point.

    Raises:
        SystemExit: bad input (missing image / prompt / weights), with a one-line message.
    """
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise SystemExit(f"error: --batch-size must be >= 1, got {args.batch_size}")
    from region_sam3.predict_io import list_images, read_prompts

    # Check the cheap things before spending time building the model.
    try:
        paths = list_images(args.source)
        prompts = read_prompts(args.prompts, args.prompts_file)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from err
    if args.labels is not None and args.lightning_checkpoint is None:
        raise SystemExit("error: --labels needs --lightning-checkpoint (a distilled region head)")
    silence_upstream_warnings()
    from region_sam3.region_query import parse_names

    try:
        names = parse_names(args.labels) if args.labels is not None else None
    except ValueError as err:
        raise SystemExit(f"error: {err}") from err
    predictor = _build_predictor(args, with_teacher=bool(names))
    _run(predictor, paths, prompts, names, args)


def _build_predictor(args: argparse.Namespace, with_teacher: bool):
    from region_sam3.models.checkpoint import CheckpointError
    from region_sam3.predict import Sam3Predictor

    try:
        if args.lightning_checkpoint is not None:
            return Sam3Predictor.from_lightning_checkpoint(
                args.lightning_checkpoint, device=args.device, with_teacher=with_teacher,
                teacher_weights=args.teacher_weights)
        return Sam3Predictor.from_config(args.model, args.override, checkpoint=args.checkpoint,
                                         device=args.device)
    except (CheckpointError, FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from err


def _run(predictor, paths: list[Path], prompts: list[str], names: list[str] | None,
         args: argparse.Namespace) -> None:
    from rich.progress import Progress

    from region_sam3.data.image_io import UnreadableImageError
    from region_sam3.predict_io import ResultsWriter, coco_results
    from region_sam3.viz import overlay_predictions

    out_dir: Path = args.out_dir
    writer = ResultsWriter(out_dir / "predictions.json")
    per_prompt = dict.fromkeys(prompts, 0)
    stream = predictor.iter_predict_batch(paths, prompts, batch_size=args.batch_size,
                                          score_threshold=args.threshold)
    try:
        with Progress(disable=args.quiet, transient=True) as bar:
            task = bar.add_task("predicting", total=len(paths))
            for image_id, (path, preds) in enumerate(zip(paths, stream), 1):
                file_name = str(path)
                region_labels = [predictor.classify_regions(p, names) if names else None
                                 for p in preds]
                for category_id, (pred, labels) in enumerate(zip(preds, region_labels), 1):
                    per_prompt[pred.prompt] += len(pred)
                    writer.write(coco_results(pred, image_id=image_id, category_id=category_id,
                                              file_name=file_name, labels=labels))
                if not args.no_overlays:
                    from region_sam3.predict import to_uint8_chw

                    merged, texts = _merge(preds, region_labels)
                    rgb = to_uint8_chw(path).permute(1, 2, 0).numpy()
                    out = out_dir / f"{path.stem}_pred.png"
                    overlay_predictions(rgb, merged, labels=texts).save(out, format="PNG")
                bar.advance(task)
    except UnreadableImageError as err:
        raise SystemExit(f"error: {err}") from err
    finally:
        writer.close()
    if not args.quiet:
        for prompt, count in per_prompt.items():
            print(f"{prompt}\t{count} detection(s)")
    print(f"{writer.count} detection(s) above {args.threshold} in {len(paths)} image(s); "
          f"wrote {writer.path}" + ("" if args.no_overlays else f" and overlays in {out_dir}"),
          file=sys.stderr)


def _merge(preds, region_labels):
    """All prompts' detections of one image as one drawable set, with a text each (the
    prompt, or the zero-shot label)."""
    import torch

    from region_sam3.predict import Prediction

    texts: list[str] = []
    for pred, labels in zip(preds, region_labels):
        texts += labels.labels if labels is not None else [pred.prompt] * len(pred)
    merged = Prediction(*(torch.cat([getattr(p, f) for p in preds])
                          for f in ("masks", "mask_probs", "boxes", "scores")))
    return merged, texts


if __name__ == "__main__":
    main()
