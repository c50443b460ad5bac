"""Inputs and outputs of batch prediction: which images (folder, glob, file list) and the one
COCO-results JSON (plus prompt text and zero-shot labels) written for them."""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

# What PIL / torchvision read; anything else in a folder (overlays, json, txt) is skipped.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
FILE_LIST_SUFFIXES = (".txt", ".lst")


def list_images(source: str | os.PathLike) -> list[Path]:
    """Images named by `source`: an image file, a folder (its images, sorted, not recursive),
    a glob pattern (quote it in the shell), or a `.txt`/`.lst` file with one path a line
    (relative paths are relative to the list's folder; `#` comments and blank lines skipped).

    Raises:
        FileNotFoundError: nothing matches, or a listed file is missing (named).
    """
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {path}")
        return found
    if path.is_file() and path.suffix.lower() in FILE_LIST_SUFFIXES:
        found = []
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            item = Path(line).expanduser()
            item = item if item.is_absolute() else path.parent / item
            if not item.is_file():
                raise FileNotFoundError(f"{path}:{lineno}: image file not found: {item}")
            found.append(item)
        if not found:
            raise FileNotFoundError(f"file list {path} names no images")
        return found
    if path.is_file():
        return [path]
    if glob.has_magic(text):
        found = sorted(Path(p) for p in glob.glob(os.path.expanduser(text), recursive=True)
                       if Path(p).is_file())
        if not found:
            raise FileNotFoundError(f"no files match the pattern {text!r}")
        return found
    raise FileNotFoundError(f"image file, folder or file list not found: {path}")


def read_prompts(prompts: Sequence[str], prompts_file: str | os.PathLike | None) -> list[str]:
    """Positional prompts, then one prompt a line of `prompts_file`; duplicates dropped."""
    found = [p.strip() for p in prompts]
    if prompts_file is not None:
        path = Path(prompts_file).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"prompts file not found: {path}")
        found += [ln.strip() for ln in path.read_text().splitlines()
                  if ln.strip() and not ln.strip().startswith("#")]
    if any(not p for p in found):
        raise ValueError("empty prompt: give non-empty text prompts, e.g. 'a dog'")
    if not found:
        raise ValueError("no prompt: give one or more prompts or --prompts-file")
    return list(dict.fromkeys(found))


def coco_results(prediction: Any, *, image_id: int, category_id: int, file_name: str,
                 labels: Any = None) -> list[dict[str, Any]]:
    """COCO results records (`image_id`, `category_id`, RLE `segmentation`, xywh `bbox`,
    `score`) of one `Prediction`, plus `file_name` and `prompt` (and, given
    `region_query.RegionLabels`, the zero-shot `label` and its cosine `label_score`)."""
    from region_sam3.eval.masks import encode_masks

    rles = encode_masks(prediction.masks)
    boxes = prediction.boxes.clone()
    boxes[:, 2:] -= boxes[:, :2]  # xyxy -> xywh
    records = []
    for i, (rle, box, score) in enumerate(zip(rles, boxes.tolist(), prediction.scores.tolist())):
        record = {"image_id": image_id, "category_id": category_id, "file_name": file_name,
                  "prompt": prediction.prompt, "segmentation": rle,
                  "bbox": [round(v, 2) for v in box], "score": round(score, 6)}
        if labels is not None:
            record["label"] = labels.labels[i]
            record["label_score"] = round(float(labels.confidences[i]), 6)
        records.append(record)
    return records


class ResultsWriter:
    """Streams records into one JSON list (valid COCO results: `COCO.loadRes(path)` reads it),
    so memory stays bounded on a folder of thousands of images."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._tmp = path.with_name(f".{path.name}.tmp")
        self._file: TextIO = self._tmp.open("w")
        self._file.write("[")
        self.count = 0

    def write(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            self._file.write(("\n" if not self.count else ",\n") + json.dumps(record))
            self.count += 1

    def close(self) -> None:
        """Finish the list and move it into place (a crash leaves no half-written file)."""
        self._file.write("\n]\n")
        self._file.close()
        os.replace(self._tmp, self.path)

