"""Parse and validate a COCO-format instances json (COCO, LVIS, synthetic, custom sets).

File-level problems (unreadable json, missing top-level keys, malformed image/category records)
raise `ValueError` naming the file and field. Per-annotation / per-image problems are skipped and
counted in an `IssueCounter` (or raise with `strict=True`).

Crowd annotations (`iscrowd=1`) are never instances; their categories are remembered per image so
they are neither queried as positives nor sampled as negatives (the phrase *is* present there).
LVIS' federated fields `neg_category_ids` / `not_exhaustive_category_ids` are honoured.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from region_sam3.data.issues import IssueCounter

REQUIRED_TOP_KEYS = ("images", "annotations", "categories")
REQUIRED_IMAGE_KEYS = ("id", "file_name", "height", "width")
REQUIRED_CATEGORY_KEYS = ("id", "name")
REQUIRED_ANNOTATION_KEYS = ("id", "image_id", "category_id", "segmentation")


@dataclass
class ImageRecord:
    image_id: int
    file_name: str
    path: Path
    height: int
    width: int
    annotations: list[dict[str, Any]] = field(default_factory=list)  # valid, non-crowd
    crowd_category_ids: set[int] = field(default_factory=set)
    crowd_annotations: list[dict[str, Any]] = field(default_factory=list)  # iscrowd=1
    # What COCOeval reads of this image, in file order: instances (empty masks included: the
    # file counts them as GT), crowd regions. Same dicts as above, no copies.
    eval_annotations: list[dict[str, Any]] = field(default_factory=list)
    neg_category_ids: tuple[int, ...] | None = None  # LVIS: verified-absent categories
    not_exhaustive_category_ids: set[int] = field(default_factory=set)


@dataclass
class CocoIndex:
    ann_file: Path
    categories: dict[int, str]  # id -> prompt text
    images: list[ImageRecord]
    issues: IssueCounter


def category_prompt(name: str) -> str:
    """LVIS spells phrases with underscores ("baseball_bat"); prompts are plain text."""
    return name.replace("_", " ").strip()


def _read_json(ann_file: Path) -> dict[str, Any]:
    try:
        with open(ann_file) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{ann_file}: annotation file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{ann_file}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{ann_file}: top level must be an object with keys {REQUIRED_TOP_KEYS}")
    for key in REQUIRED_TOP_KEYS:
        if key not in data:
            raise ValueError(f"{ann_file}: missing key '{key}'")
        if not isinstance(data[key], list):
            raise ValueError(f"{ann_file}: key '{key}' must be a list")
    return data


def _require(record: Any, keys: tuple[str, ...], where: str) -> None:
    if not isinstance(record, dict):
        raise ValueError(f"{where}: must be an object")
    for key in keys:
        if key not in record:
            raise ValueError(f"{where}: missing key '{key}'")


def rle_string_counts(counts: str | bytes) -> list[int] | None:
    """Run lengths of a compressed COCO RLE string (pycocotools' `rleFrString`, in Python), or
    None if the string is not one (a character outside '0'..'o', a truncated last run).

    Each run is LEB128-like 5-bit groups offset by 48; from the third run on, the value is a
    difference to the run two back (pycocotools' delta coding).
    """
    data = counts.encode("ascii", "replace") if isinstance(counts, str) else bytes(counts)
    runs: list[int] = []
    p = 0
    while p < len(data):
        value, shift, more = 0, 0, True
        while more:
            if p >= len(data):
                return None  # the last run is cut off
            c = data[p] - 48
            if not 0 <= c < 64:
                return None
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            p += 1
            shift += 5
            if not more and c & 0x10:
                value |= -1 << shift  # sign extension
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def rle_counts_problem(segmentation: dict[str, Any], height: int, width: int) -> str | None:
    """Why an RLE's `counts` cannot be decoded: not runs, a negative run, or runs that do not
    cover `height * width` pixels (pycocotools then raises "Invalid RLE mask representation"
    in a data-loader worker, or decodes a short mask with uninitialised pixels)."""
    counts = segmentation["counts"]
    if isinstance(counts, list):
        runs = counts if all(isinstance(c, int) and not isinstance(c, bool) for c in counts) \
            else None
    elif isinstance(counts, (str, bytes)):
        runs = rle_string_counts(counts)
    else:
        runs = None
    if runs is None:
        return "invalid_rle_counts"
    if any(r < 0 for r in runs) or sum(runs) != height * width:
        return "rle_counts_mismatch"
    return None


def segmentation_problem(segmentation: Any, height: int, width: int) -> str | None:
    """Return the reason a COCO segmentation is unusable, or None if it looks valid."""
    if isinstance(segmentation, dict):
        if "counts" not in segmentation or "size" not in segmentation:
            return "invalid_rle"
        if list(segmentation["size"]) != [height, width]:
            return "rle_size_mismatch"
        return rle_counts_problem(segmentation, height, width)
    if not isinstance(segmentation, list) or not segmentation:
        return "invalid_polygon"
    polygons = segmentation if isinstance(segmentation[0], list) else [segmentation]
    for polygon in polygons:
        if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
            return "invalid_polygon"
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in polygon):
            return "invalid_polygon"
    return None


def segmentation_to_rle(segmentation: Any, height: int, width: int) -> dict[str, Any]:
    """Polygon(s), uncompressed or compressed RLE -> one compressed RLE (pycocotools)."""
    if isinstance(segmentation, dict):
        if isinstance(segmentation["counts"], list):
            return mask_utils.frPyObjects(segmentation, height, width)
        counts = segmentation["counts"]
        return {
            "size": segmentation["size"],
            "counts": counts.encode() if isinstance(counts, str) else counts,
        }
    polygons = segmentation if isinstance(segmentation[0], list) else [segmentation]
    return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """COCO segmentation -> [H,W] bool mask."""
    return mask_utils.decode(segmentation_to_rle(segmentation, height, width)).astype(bool)


def load_coco_index(
    ann_file: str | Path,
    image_dir: str | Path,
    strict: bool = False,
    validate_masks: bool = True,
    check_image_files: bool = True,
) -> CocoIndex:
    """Read `ann_file`, validate it and group usable instance annotations by image.

    validate_masks: rasterise every annotation's RLE once to drop empty masks (cheap for small
    sets; for full COCO/LVIS it can be switched off and empty masks are then dropped at load).
    """
    ann_file, image_dir = Path(ann_file), Path(image_dir)
    data = _read_json(ann_file)
    issues = IssueCounter(str(ann_file), strict=strict)

    categories: dict[int, str] = {}
    for i, category in enumerate(data["categories"]):
        _require(category, REQUIRED_CATEGORY_KEYS, f"{ann_file}: categories[{i}]")
        categories[int(category["id"])] = category_prompt(str(category["name"]))

    _refuse_duplicate_image_ids(ann_file, data["images"])
    images: dict[int, ImageRecord] = {}
    for i, image in enumerate(data["images"]):
        if isinstance(image, dict) and "file_name" not in image and "coco_url" in image:
            # LVIS records carry only a URL; its last two parts are "<split>2017/<file>".
            image = {**image, "file_name": "/".join(str(image["coco_url"]).split("/")[-2:])}
        _require(image, REQUIRED_IMAGE_KEYS, f"{ann_file}: images[{i}]")
        path = image_dir / image["file_name"]
        if check_image_files and not path.is_file():
            issues.report("missing_image_file", f"{path} (image id {image['id']})")
            continue
        neg = image.get("neg_category_ids")
        images[int(image["id"])] = ImageRecord(
            image_id=int(image["id"]),
            file_name=str(image["file_name"]),
            path=path,
            height=int(image["height"]),
            width=int(image["width"]),
            neg_category_ids=tuple(int(c) for c in neg) if neg is not None else None,
            not_exhaustive_category_ids={
                int(c) for c in image.get("not_exhaustive_category_ids", [])
            },
        )
    known_image_ids = {int(image["id"]) for image in data["images"]}

    for i, ann in enumerate(data["annotations"]):
        where = f"{ann_file}: annotations[{i}]"
        if not isinstance(ann, dict):
            issues.report("malformed_annotation", f"{where}: not an object")
            continue
        missing = [key for key in REQUIRED_ANNOTATION_KEYS if key not in ann]
        if missing:
            issues.report("missing_annotation_field", f"{where}: missing key '{missing[0]}'")
            continue
        where = f"{where} (id {ann['id']})"
        image_id, category_id = int(ann["image_id"]), int(ann["category_id"])
        if category_id not in categories:
            issues.report("unknown_category_id", f"{where}: category_id {category_id}")
            continue
        if image_id not in images:
            if image_id not in known_image_ids:
                issues.report("unknown_image_id", f"{where}: image_id {image_id}")
            continue  # else: its image was skipped already and counted there
        record = images[image_id]
        if ann.get("iscrowd", 0):
            record.crowd_category_ids.add(category_id)
            # Kept for evaluation: COCOeval treats them as ignore regions.
            problem = segmentation_problem(ann["segmentation"], record.height, record.width)
            if problem is not None:
                issues.report(problem, f"{where}: field 'segmentation' (crowd region)")
                continue
            checked = _checked_area(ann, record, issues, where)
            record.crowd_annotations.append(checked)
            record.eval_annotations.append(checked)
            continue
        problem = segmentation_problem(ann["segmentation"], record.height, record.width)
        if problem is None and validate_masks:
            rle = segmentation_to_rle(ann["segmentation"], record.height, record.width)
            if int(mask_utils.area(rle)) == 0:
                problem = "empty_mask"
        if problem is not None:
            issues.report(problem, f"{where}: field 'segmentation'")
            if problem == "empty_mask":
                # Not a training target, but a GT of the file: pycocotools counts it (a miss).
                record.eval_annotations.append(ann)
            continue
        checked = _checked_area(ann, record, issues, where)
        record.annotations.append(checked)
        record.eval_annotations.append(checked)

    return CocoIndex(
        ann_file=ann_file, categories=categories, images=list(images.values()), issues=issues
    )


def _refuse_duplicate_image_ids(ann_file: Path, images: list[Any]) -> None:
    """Two image records with one id would silently merge their annotations: a file error."""
    seen: Counter[int] = Counter(int(image["id"]) for image in images
                                 if isinstance(image, dict) and "id" in image)
    duplicates = sorted(i for i, n in seen.items() if n > 1)
    if duplicates:
        shown = ", ".join(f"{i} (x{seen[i]})" for i in duplicates[:10])
        more = f" and {len(duplicates) - 10} more" if len(duplicates) > 10 else ""
        raise ValueError(f"{ann_file}: duplicate image ids in 'images': {shown}{more}")


def _checked_area(ann: dict[str, Any], record: ImageRecord, issues: IssueCounter,
                  where: str) -> dict[str, Any]:
    """`ann` with a usable `area`: a negative or non-finite one (COCOeval would drop the object
    from every area range, so it silently vanishes) is recomputed from the mask and counted as
    `invalid_area` (raises under `strict`). A missing area stays missing (the mask area is
    used downstream, as pycocotools does)."""
    area = ann.get("area")
    if area is None:
        return ann
    if isinstance(area, (int, float)) and not isinstance(area, bool) and math.isfinite(area) \
            and area >= 0:
        return ann
    issues.report("invalid_area", f"{where}: field 'area' = {area!r} (recomputed from the mask)")
    rle = segmentation_to_rle(ann["segmentation"], record.height, record.width)
    return {**ann, "area": float(mask_utils.area(rle))}
