"""Guards of the CPU-compatibility shims in `region_sam3.models.compat` (DESIGN §6).

Each shim comes with two kinds of test: a *guard* that fails as soon as the upstream `sam3`
code it works around changes (so we revisit and drop the shim), and a *behaviour* test that
the shim gives upstream's numbers on CPU.
"""

from __future__ import annotations

import gzip
import inspect
import math
from pathlib import Path

import pytest
import torch
from helpers import build_tiny_sam3, last_stage_output, make_find_batch
from sam3.model.decoder import TransformerDecoder
from sam3.model.geometry_encoders import SequenceGeometryEncoder
from sam3.model.position_encoding import PositionEmbeddingSine
from sam3.model.text_encoder_ve import TextTransformer

from region_sam3.models.compat import (
    CpuSafeSequenceGeometryEncoder,
    _pin_memory_is_identity,
    resolve_bpe_path,
)

NO_CUDA = not torch.cuda.is_available()
GRID = 224 // 14  # tiny model: 16x16 tokens


def _source(obj) -> str:
    return "".join(inspect.getsource(obj).split())  # whitespace-free, robust to reformatting


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_sam3(seed=0).eval()


@pytest.fixture(scope="module")
def prompted():
    """A fresh tiny model, its state before the first forward, and an eval forward on CPU
    with one positive box prompt per query (spying on the box encoder)."""
    model = build_tiny_sam3(seed=0).eval()
    decoder = model.transformer.decoder
    before = {
        "cord_cache": decoder.compilable_cord_cache,
        "pos_caches": [dict(m.cache) for m in model.modules() if isinstance(m, PositionEmbeddingSine)],
    }
    batch = make_find_batch()
    find_input = batch.find_inputs[0]
    num_queries = find_input.img_ids.numel()
    find_input.input_boxes = torch.tensor([[[0.3, 0.3, 0.2, 0.2], [0.5, 0.5, 0.4, 0.4]]])
    find_input.input_boxes_mask = torch.zeros(num_queries, 1, dtype=torch.bool)
    find_input.input_boxes_label = torch.ones(1, num_queries, dtype=torch.long)

    encoded = []
    original = CpuSafeSequenceGeometryEncoder._encode_boxes

    def spy(self, boxes, boxes_mask, boxes_labels, img_feats):
        encoded.append(tuple(boxes.shape))
        return original(self, boxes, boxes_mask, boxes_labels, img_feats)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(CpuSafeSequenceGeometryEncoder, "_encode_boxes", spy)
        with torch.no_grad():
            out = last_stage_output(model(batch))
    return model, before, out, encoded


# ---------------------------------------------------------------------------------------------
# SequenceGeometryEncoder._encode_boxes: pin_memory()
# ---------------------------------------------------------------------------------------------


def test_guard_upstream_encode_boxes_pins_memory():
    assert "pin_memory()" in inspect.getsource(SequenceGeometryEncoder._encode_boxes)


@pytest.mark.skipif(not NO_CUDA, reason="pin_memory works where CUDA does")
def test_guard_upstream_encode_boxes_fails_on_cpu(tiny):
    boxes, mask, labels, feats = _box_inputs()
    with pytest.raises(RuntimeError):
        SequenceGeometryEncoder._encode_boxes(tiny.geometry_encoder, boxes, mask, labels, feats)


def _box_inputs():
    g = torch.Generator().manual_seed(0)
    boxes = torch.tensor([[[0.3, 0.3, 0.2, 0.2], [0.6, 0.5, 0.3, 0.4]],
                          [[0.5, 0.5, 0.4, 0.4], [0.2, 0.7, 0.1, 0.2]]])  # [N=2, B=2, 4]
    mask = torch.zeros(2, 2, dtype=torch.bool)  # [B, N]
    labels = torch.tensor([[1, 0], [1, 1]])  # [N, B]
    feats = torch.randn(2, 64, GRID, GRID, generator=g)  # [B, C, H, W]
    return boxes, mask, labels, feats


def test_cpu_safe_box_encoding_equals_upstream(tiny, monkeypatch):
    encoder = tiny.geometry_encoder
    assert isinstance(encoder, CpuSafeSequenceGeometryEncoder)
    assert encoder.boxes_pool_project is not None  # the branch that pins memory is live
    original = torch.Tensor.pin_memory
    inputs = _box_inputs()
    with torch.no_grad():
        ours, ours_mask = encoder._encode_boxes(*inputs)
    assert torch.Tensor.pin_memory is original
    assert ours.shape == (2, 2, 64) and torch.isfinite(ours).all()

    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a, **k: self)
    with torch.no_grad():
        ref, ref_mask = SequenceGeometryEncoder._encode_boxes(encoder, *inputs)
    assert torch.equal(ours, ref) and torch.equal(ours_mask, ref_mask)


def test_pin_memory_is_restored_after_an_exception(tiny):
    original = torch.Tensor.pin_memory
    boxes, mask, labels, _ = _box_inputs()
    wrong_channels = torch.zeros(2, 3, GRID, GRID)
    with pytest.raises(AssertionError):  # upstream's shape assert, raised inside the shim
        tiny.geometry_encoder._encode_boxes(boxes, mask, labels, wrong_channels)
    assert torch.Tensor.pin_memory is original

    with pytest.raises(KeyError), _pin_memory_is_identity():
        assert torch.Tensor.pin_memory is not original
        raise KeyError("boom")
    assert torch.Tensor.pin_memory is original


def test_box_prompted_forward_runs_on_cpu(prompted):
    _, _, out, encoded = prompted
    assert (1, 2, 4) in encoded  # the box prompt reached the encoder
    for key in ("pred_masks", "pred_logits", "pred_boxes"):
        assert torch.isfinite(out[key]).all(), key


# ---------------------------------------------------------------------------------------------
# PositionEmbeddingSine(precompute_resolution=...)
# ---------------------------------------------------------------------------------------------


def test_guard_upstream_position_encoding_precomputes_on_cuda():
    src = _source(PositionEmbeddingSine.__init__)
    assert "ifprecompute_resolutionisnotNone:" in src
    assert 'device="cuda"' in src


@pytest.mark.skipif(not NO_CUDA, reason="allocating on cuda works where CUDA does")
def test_guard_upstream_precompute_fails_on_cpu():
    with pytest.raises((RuntimeError, AssertionError)):
        PositionEmbeddingSine(64, normalize=True, precompute_resolution=64)


def _sine_reference(num_pos_feats: int, h: int, w: int, temperature: float = 10000.0):
    """DETR's normalised sine embedding, written out independently of `sam3`."""
    half = num_pos_feats // 2
    eps, scale = 1e-6, 2 * math.pi
    ys = torch.arange(1, h + 1, dtype=torch.float64) / (h + eps) * scale
    xs = torch.arange(1, w + 1, dtype=torch.float64) / (w + eps) * scale
    i = torch.arange(half, dtype=torch.float64)
    dim_t = temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / half)

    def encode(v):  # [L] -> [L, half]: sin on even channels, cos on odd ones
        a = v[:, None] / dim_t
        out = torch.empty_like(a)
        out[:, 0::2], out[:, 1::2] = a[:, 0::2].sin(), a[:, 1::2].cos()
        return out

    pos_y = encode(ys)[:, None, :].expand(h, w, half)
    pos_x = encode(xs)[None, :, :].expand(h, w, half)
    return torch.cat([pos_y, pos_x], dim=-1).permute(2, 0, 1)  # [C, H, W]


def test_lazy_position_encoding_matches_formula_and_is_stable(tiny):
    encodings = [m for m in tiny.modules() if isinstance(m, PositionEmbeddingSine)]
    assert len(encodings) == 2  # neck and geometry encoder
    fresh = build_tiny_sam3(seed=0)
    for m in (m for m in fresh.modules() if isinstance(m, PositionEmbeddingSine)):
        assert m.cache == {}  # nothing precomputed at build time

    pe = PositionEmbeddingSine(num_pos_feats=64, normalize=True, scale=None, temperature=10000,
                               precompute_resolution=None)
    x = torch.zeros(2, 64, GRID, GRID // 2)
    first = pe(x)
    assert first.shape == (2, 64, GRID, GRID // 2) and first.device.type == "cpu"
    ref = _sine_reference(64, GRID, GRID // 2)
    torch.testing.assert_close(first[0].double(), ref, atol=1e-5, rtol=0)
    assert torch.equal(first[0], first[1])
    second = pe(x)  # from the lazily filled cache
    assert (GRID, GRID // 2) in pe.cache
    assert torch.equal(first, second)


def test_position_caches_fill_on_the_input_device(prompted):
    model, before, _, _ = prompted
    assert all(cache == {} for cache in before["pos_caches"])
    neck_pe = model.backbone.vision_backbone.position_encoding
    assert neck_pe.cache and all(t.device.type == "cpu" for t in neck_pe.cache.values())


# ---------------------------------------------------------------------------------------------
# TransformerDecoder(resolution=..., stride=...)
# ---------------------------------------------------------------------------------------------


def test_guard_upstream_decoder_builds_coords_on_cuda():
    src = _source(TransformerDecoder.__init__)
    assert "ifresolutionisnotNoneandstrideisnotNone:" in src
    assert 'self._get_coords(feat_size,feat_size,device="cuda")' in src


def test_decoder_coordinate_cache_is_lazy_and_on_the_input_device(prompted):
    model, before, _, _ = prompted
    assert before["cord_cache"] is None
    decoder = model.transformer.decoder
    coords_h, coords_w = decoder.compilable_cord_cache
    assert decoder.compilable_stored_size == (GRID, GRID)
    expected = torch.arange(GRID, dtype=torch.float32) / GRID
    for coords in (coords_h, coords_w):
        assert coords.device.type == "cpu" and torch.equal(coords, expected)


# ---------------------------------------------------------------------------------------------
# Text encoder tensors left as torch.empty
# ---------------------------------------------------------------------------------------------


def test_guard_upstream_text_encoder_uses_torch_empty():
    src = _source(TextTransformer.__init__)
    assert "self.positional_embedding=nn.Parameter(torch.empty(" in src
    assert "self.text_projection=nn.Parameter(torch.empty(" in src


def test_text_encoder_tensors_are_initialised(tiny):
    text = tiny.backbone.language_backbone.encoder
    assert isinstance(text, TextTransformer)
    for tensor in (text.positional_embedding, text.text_projection):
        assert torch.isfinite(tensor).all()
        assert (tensor != 0).float().mean() > 0.99
    assert 0.005 < text.positional_embedding.std() < 0.02  # CLIP init, std 0.01


# ---------------------------------------------------------------------------------------------
# BPE vocabulary
# ---------------------------------------------------------------------------------------------


def test_guard_bpe_vocab_is_not_in_the_sam3_wheel():
    import sam3

    assert not (Path(sam3.__file__).parent.parent / "assets" / "bpe_simple_vocab_16e6.txt.gz").exists()


def test_resolve_bpe_path_is_open_clips_vocab():
    import open_clip

    path = Path(resolve_bpe_path())
    reference = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    assert path.read_bytes() == reference.read_bytes()
    with gzip.open(path, "rt", encoding="utf-8") as f:
        assert f.readline().startswith('"bpe_simple_vocab_16e6.txt#version: 0.2')
    assert resolve_bpe_path(reference) == str(reference)


def test_resolve_bpe_path_explicit_missing_names_it(tmp_path):
    missing = tmp_path / "nope" / "vocab.txt.gz"
    with pytest.raises(FileNotFoundError, match="model.sam3.bpe_path") as info:
        resolve_bpe_path(missing)
    assert str(missing) in str(info.value)


# ---------------------------------------------------------------------------------------------
# Focal loss: triton by default
# ---------------------------------------------------------------------------------------------


def test_guard_upstream_focal_loss_defaults_to_triton():
    from sam3.train.loss import loss_fns

    assert inspect.signature(loss_fns.sigmoid_focal_loss).parameters["triton"].default is True
    # the loss classes look the function up as a module global (what the backend swap relies on)
    assert "sigmoid_focal_loss(" in inspect.getsource(loss_fns.Masks)
    assert "sigmoid_focal_loss(" in inspect.getsource(loss_fns.IABCEMdetr)


def test_focal_loss_backend_routes_to_pytorch_and_restores():
    from sam3.train.loss import loss_fns

    from region_sam3.losses.sam3_criterion import _focal_loss_backend

    original = loss_fns.sigmoid_focal_loss
    g = torch.Generator().manual_seed(0)
    inputs = torch.randn(3, 50, generator=g)
    targets = (torch.rand(3, 50, generator=g) > 0.7).float()
    expected = original(inputs, targets, 2.0, triton=False)
    expected_none = original(inputs, targets, 2.0, reduce=False, triton=False)

    with _focal_loss_backend(False):
        assert loss_fns.sigmoid_focal_loss is not original
        got = loss_fns.sigmoid_focal_loss(inputs, targets, 2.0)
        got_none = loss_fns.sigmoid_focal_loss(inputs, targets, 2.0, reduce=False)
    assert torch.equal(got, expected) and torch.equal(got_none, expected_none)
    assert loss_fns.sigmoid_focal_loss is original

    with pytest.raises(ValueError, match="inside"), _focal_loss_backend(False):
        raise ValueError("inside")
    assert loss_fns.sigmoid_focal_loss is original

    with _focal_loss_backend(True):
        assert loss_fns.sigmoid_focal_loss is original
