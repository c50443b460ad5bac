"""Small, documented compatibility shims that make `sam3` 0.1.4 run on CPU as well as CUDA.

Nothing here edits site-packages. Each shim is guarded by a test in
`tests/models/test_compat.py` that fails when the upstream code it works around changes, so a
newer `sam3` release prompts us to drop the shim instead of silently carrying it.

CUDA-only spots in `sam3` 0.1.4 and how they are handled:

* `PositionEmbeddingSine(precompute_resolution=...)` allocates on "cuda" when built. The
  precomputed cache is a plain dict, not a buffer, so `sam3_arch` passes `None` and the same
  values are computed lazily on the input's device.
* `TransformerDecoder(resolution=..., stride=...)` builds its coordinate cache on "cuda". With
  `None` the decoder builds the identical cache lazily (`_get_rpb_matrix`).
* `SequenceGeometryEncoder._encode_boxes` calls `Tensor.pin_memory()`, which needs a CUDA
  driver even when there are zero boxes: `CpuSafeSequenceGeometryEncoder` below.
* `sam3.train.loss.loss_fns.sigmoid_focal_loss(triton=True)` needs a GPU: our losses pass
  `triton=torch.cuda.is_available()` (see `region_sam3.losses`).
* The BPE vocabulary is not shipped in the `sam3` wheel: `resolve_bpe_path` takes the
  byte-identical file from `open_clip`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from sam3.model.geometry_encoders import SequenceGeometryEncoder

_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"


def resolve_bpe_path(bpe_path: str | os.PathLike | None = None) -> str:
    """Path of the CLIP BPE vocabulary used by SAM3's tokenizer.

    Order: the explicit path; the file `sam3.model_builder` expects next to the `sam3`
    package; the identical file shipped inside `open_clip`.
    """
    if bpe_path is not None:
        path = Path(bpe_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"model.sam3.bpe_path={bpe_path!r} does not exist")
        return str(path)
    import sam3

    candidates = [Path(sam3.__file__).parent.parent / "assets" / _BPE_FILE]
    # find_spec locates open_clip without importing it (its import costs ~0.5 s at start-up).
    spec = importlib.util.find_spec("open_clip")
    if spec is not None and spec.origin is not None:
        candidates.append(Path(spec.origin).parent / _BPE_FILE)
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"Cannot find the CLIP BPE vocabulary {_BPE_FILE}: install open_clip_torch or pass "
        "model.sam3.bpe_path=/path/to/bpe_simple_vocab_16e6.txt.gz"
    )


@contextlib.contextmanager
def _pin_memory_is_identity() -> Iterator[None]:
    original = torch.Tensor.pin_memory
    torch.Tensor.pin_memory = lambda self, *args, **kwargs: self  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.pin_memory = original  # type: ignore[method-assign]


class CpuSafeSequenceGeometryEncoder(SequenceGeometryEncoder):
    """`SequenceGeometryEncoder` whose box encoding also runs without a CUDA driver.

    Upstream pins a 4-element scale tensor before copying it to the boxes' device. Pinning
    is only a transfer optimisation, so when the boxes are not on a GPU we make it a no-op for
    the duration of the call. Parameters, buffers and numerics are unchanged.
    """

    def _encode_boxes(self, boxes, boxes_mask, boxes_labels, img_feats):  # noqa: D102
        if boxes.is_cuda:
            return super()._encode_boxes(boxes, boxes_mask, boxes_labels, img_feats)
        with _pin_memory_is_identity():
            return super()._encode_boxes(boxes, boxes_mask, boxes_labels, img_feats)
