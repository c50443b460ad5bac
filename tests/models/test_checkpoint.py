"""Loading official-format SAM3 checkpoints (`region_sam3.models.checkpoint` + the factory).

Every checkpoint here is written from a *tiny* model: the official `sam3.pt` layout
(`{"model": {"detector.<name>": tensor, "tracker.<name>": tensor}}`) does not depend on size.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from helpers import build_tiny_sam3, compose_sam3
from hydra.utils import instantiate

import region_sam3.models.sam3_arch as sam3_arch
import region_sam3.models.sam3_factory as sam3_factory
from region_sam3.models.checkpoint import (
    SAM3_HUB_FILE,
    SAM3_HUB_REPO,
    CheckpointError,
    load_sam3_checkpoint,
    read_checkpoint,
    save_official_format,
)

LOGGER = "region_sam3.models.checkpoint"
# Tensors of the video tracker that ship in the official sam3.pt next to the detector's.
TRACKER = {
    "tracker.sam_mask_decoder.iou_token.weight": torch.randn(1, 256),
    "tracker.maskmem_tpos_enc": torch.randn(7, 1, 1, 64),
    "tracker.no_mem_embed": torch.randn(1, 1, 256),
}


def _raised(exc_type: type[BaseException], fn, *args, **kwargs) -> BaseException:
    """Call `fn`, expecting `exc_type` in the raised exception's `__cause__` chain.

    Hydra wraps what a `_target_` raises in an `InstantiationException`; the factory's own
    exception is its cause.
    """
    with pytest.raises(Exception) as info:  # noqa: PT011
        fn(*args, **kwargs)
    exc: BaseException | None = info.value
    while exc is not None and not isinstance(exc, exc_type):
        exc = exc.__cause__
    assert exc is not None, f"expected {exc_type.__name__}, got {info.value!r}"
    return exc


def _official_dict(model: torch.nn.Module, tracker: bool = True) -> dict:
    """The official layout built by hand (not with our own writer)."""
    state = {"detector." + k: v.detach().clone() for k, v in model.state_dict().items()}
    if tracker:
        state.update({k: v.clone() for k, v in TRACKER.items()})
    return {"model": state}


def _ckpt_override(path: Path) -> str:
    return f"checkpoint='{path}'"


def _assert_same_state(model: torch.nn.Module, reference: dict, skip=()) -> None:
    state = model.state_dict()
    assert sorted(state) == sorted(reference)
    for key, value in state.items():
        if key in skip:
            continue
        assert torch.equal(value, reference[key]), key


@pytest.fixture(scope="module")
def model_a():
    return build_tiny_sam3(seed=1)


@pytest.fixture(scope="module")
def state_a(model_a):
    return {k: v.detach().clone() for k, v in model_a.state_dict().items()}


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("ckpt")


@pytest.fixture(scope="module")
def ours_ckpt(model_a, ckpt_dir) -> Path:
    path = ckpt_dir / "ours" / "sam3.pt"
    save_official_format(model_a, path)
    return path


@pytest.fixture(scope="module")
def hand_ckpt(model_a, ckpt_dir) -> Path:
    path = ckpt_dir / "hand_sam3.pt"
    torch.save(_official_dict(model_a), path)
    return path


@pytest.fixture
def no_build(monkeypatch):
    """Make building the architecture fail loudly: errors must come before the model."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the SAM3 architecture was built")

    monkeypatch.setattr(sam3_arch, "build_sam3_architecture", forbidden)


# ---------------------------------------------------------------------------------------------
# The official format round trip
# ---------------------------------------------------------------------------------------------


def test_save_official_format_writes_the_official_layout(ours_ckpt, model_a):
    raw = torch.load(ours_ckpt, map_location="cpu", weights_only=True)
    assert list(raw) == ["model"]
    expected = _official_dict(model_a, tracker=False)["model"]
    assert sorted(raw["model"]) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(raw["model"][key], value), key


@pytest.mark.parametrize("which", ["ours", "hand"])
def test_official_checkpoint_loads_every_tensor(which, request, state_a, caplog):
    path = request.getfixturevalue(f"{which}_ckpt")
    fresh = build_tiny_sam3(seed=2)
    differs = [k for k, v in fresh.state_dict().items() if not torch.equal(v, state_a[k])]
    assert len(differs) > 100  # different seeds -> the load below has something to prove

    with caplog.at_level(logging.INFO, logger=LOGGER):
        model = build_tiny_sam3([_ckpt_override(path), "strict=true"], seed=2)
    _assert_same_state(model, state_a)
    if which == "hand":
        assert any("3 'tracker.' tensors ignored" in r.getMessage() for r in caplog.records)

    report = load_sam3_checkpoint(fresh, path, strict=True)
    _assert_same_state(fresh, state_a)
    assert report.loaded == len(state_a)
    assert report.missing == report.unexpected == report.resized_rope == []
    assert report.ignored_prefixes == ({"tracker.": len(TRACKER)} if which == "hand" else {})


def test_inner_dict_without_model_wrapper_loads(model_a, state_a, tmp_path):
    path = tmp_path / "inner.pt"
    torch.save(_official_dict(model_a)["model"], path)
    model = build_tiny_sam3(seed=2)
    load_sam3_checkpoint(model, path, strict=True)
    _assert_same_state(model, state_a)


# ---------------------------------------------------------------------------------------------
# Missing tensors, missing / corrupt / wrong files
# ---------------------------------------------------------------------------------------------

DROPPED = "transformer.decoder.query_embed.weight"


@pytest.fixture(scope="module")
def missing_key_ckpt(model_a, ckpt_dir) -> Path:
    ckpt = _official_dict(model_a)
    del ckpt["model"]["detector." + DROPPED]
    path = ckpt_dir / "missing_key.pt"
    torch.save(ckpt, path)
    return path


def test_missing_key_fails_when_strict(missing_key_ckpt):
    err = _raised(CheckpointError, build_tiny_sam3, [_ckpt_override(missing_key_ckpt), "strict=true"])
    assert DROPPED in str(err) and "missing" in str(err)


def test_missing_key_warns_when_not_strict(missing_key_ckpt, state_a, caplog):
    with caplog.at_level(logging.INFO, logger=LOGGER):
        model = build_tiny_sam3([_ckpt_override(missing_key_ckpt), "strict=false"], seed=2)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("1 missing" in m and DROPPED in m for m in warnings), warnings
    _assert_same_state(model, state_a, skip={DROPPED})
    assert not torch.equal(model.state_dict()[DROPPED], state_a[DROPPED])

    report = load_sam3_checkpoint(build_tiny_sam3(seed=2), missing_key_ckpt, strict=False)
    assert report.missing == [DROPPED]


def test_missing_file_fails_before_building_and_says_how_to_get_weights(tmp_path, no_build):
    # The guard works: without a checkpoint the (forbidden) architecture build is reached.
    _raised(AssertionError, build_tiny_sam3)
    path = tmp_path / "nowhere" / "sam3.pt"
    err = _raised(CheckpointError, build_tiny_sam3, [_ckpt_override(path)])
    assert str(path) in str(err)
    assert "model.sam3.checkpoint" in str(err) and SAM3_HUB_REPO in str(err)


def _corrupt_bytes(kind: str, real: Path, scratch: Path) -> bytes:
    if kind == "random":
        g = torch.Generator().manual_seed(0)
        return bytes(torch.randint(0, 256, (4096,), generator=g, dtype=torch.uint8).tolist())
    if kind == "truncated_small":
        # a small truncated zip makes torch.load raise OSError (EINVAL), not RuntimeError
        small = scratch / "small.pt"
        torch.save({"model": {"detector.a": torch.zeros(1000), "detector.b": torch.zeros(50, 50)}},
                   small)
        return small.read_bytes()[:-30]
    data = real.read_bytes()
    return {
        "truncated_half": data[: len(data) // 2],  # the zip reader's RuntimeError
        "truncated_tail": data[:-1],
        "truncated_head": data[:100],
        "empty": b"",  # EOFError
        "pickle_keyerror": b"h\x05.",  # KeyError from the unpickler
        "pickle_bad_utf8": b"X\x02\x00\x00\x00\xff\xfe.",  # UnicodeDecodeError
    }[kind]


@pytest.mark.parametrize(
    "kind",
    ["random", "truncated_half", "truncated_tail", "truncated_head", "truncated_small", "empty",
     "pickle_keyerror", "pickle_bad_utf8"],
)
def test_corrupt_file_is_a_checkpoint_error(kind, hand_ckpt, tmp_path):
    path = tmp_path / f"{kind}.pt"
    path.write_bytes(_corrupt_bytes(kind, hand_ckpt, tmp_path))
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint") as info:
        read_checkpoint(path)
    assert str(path) in str(info.value)


def test_truncated_checkpoint_through_the_factory(hand_ckpt, tmp_path):
    path = tmp_path / "sam3.pt"
    path.write_bytes(_corrupt_bytes("truncated_half", hand_ckpt, tmp_path))
    err = _raised(CheckpointError, build_tiny_sam3, [_ckpt_override(path)])
    assert "not a readable PyTorch checkpoint" in str(err) and str(path) in str(err)


@pytest.mark.parametrize(
    "obj",
    [[1, 2, 3], torch.zeros(3), {"model": {"a": 1}}, {"model": {}}, {}, {"model": "weights"},
     {"epoch": 3, "optimizer": {"lr": 1e-4}}],
    ids=["list", "tensor", "model_of_ints", "empty_model", "empty", "model_str", "no_tensors"],
)
def test_non_state_dict_is_a_checkpoint_error(obj, tmp_path):
    path = tmp_path / "odd.pt"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="does not contain a state dict") as info:
        read_checkpoint(path)
    assert str(path) in str(info.value)


def test_checkpoint_matching_no_model_tensor_never_gives_random_weights(state_a, tmp_path):
    # e.g. a Lightning checkpoint of this project: `state_dict` with `net.` prefixes
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {"net." + k: v for k, v in state_a.items()}}, path)
    err = _raised(CheckpointError, build_tiny_sam3, [_ckpt_override(path), "strict=false"])
    assert "matches" in str(err) and str(path) in str(err)


def test_shape_mismatch_lists_a_mismatched_key(state_a, tmp_path):
    other = build_tiny_sam3(["arch.d_model=32", "arch.ffn_dim=128"], seed=1)
    path = tmp_path / "d32.pt"
    save_official_format(other, path)
    first = next(k for k, v in other.state_dict().items() if v.shape != state_a[k].shape)
    err = _raised(CheckpointError, build_tiny_sam3, [_ckpt_override(path)])
    assert "do not match" in str(err) and first in str(err)


# ---------------------------------------------------------------------------------------------
# Another resolution: RoPE tables
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("window", [8, 4])
def test_rope_tables_are_recomputed_at_another_resolution(window, hand_ckpt, state_a):
    overrides = ["arch.image_size=112", f"arch.vit_window_size={window}"]
    fresh = build_tiny_sam3(overrides, seed=2)
    own = {k: v.clone() for k, v in fresh.state_dict().items() if k.endswith("freqs_cis")}
    assert len(own) == 3
    resized = sorted(k for k, v in own.items() if v.shape != state_a[k].shape)
    # 112 px -> 8x8 tokens: the global block always differs; windowed blocks only if window != 8
    assert len(resized) == (1 if window == 8 else 3)

    report = load_sam3_checkpoint(fresh, hand_ckpt, strict=True)
    assert sorted(report.resized_rope) == resized
    assert report.missing == [] and "RoPE tables recomputed" in report.summary()
    for key, value in fresh.state_dict().items():
        if key in resized:
            assert torch.equal(value, own[key]), key  # the model keeps its own tables
        else:
            assert torch.equal(value, state_a[key]), key

    # the same through the factory (strict)
    model = build_tiny_sam3([_ckpt_override(hand_ckpt), "strict=true", *overrides], seed=3)
    for key, value in model.state_dict().items():
        assert torch.equal(value, own[key] if key in resized else state_a[key]), key


# ---------------------------------------------------------------------------------------------
# from_hub, builtin:
# ---------------------------------------------------------------------------------------------


def _local_entry_not_found():
    from huggingface_hub.errors import LocalEntryNotFoundError

    return LocalEntryNotFoundError("Cannot find the requested files in the disk cache")


def _gated_repo():
    import httpx
    from huggingface_hub.errors import GatedRepoError

    request = httpx.Request("GET", "http://localhost/sam3.pt")
    return GatedRepoError("403 Client Error: gated repo",
                          response=httpx.Response(403, request=request))


@pytest.mark.parametrize(
    ("make_error", "says"),
    [(_local_entry_not_found, "offline"), (_gated_repo, "gated"),
     (lambda: ConnectionError("network is down"), "ConnectionError")],
    ids=["offline", "gated", "network"],
)
def test_from_hub_failures_are_actionable(make_error, says, monkeypatch, no_build):
    import huggingface_hub

    calls = []

    def fake_download(**kwargs):
        calls.append(kwargs)
        raise make_error()

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    err = _raised(CheckpointError, build_tiny_sam3, ["from_hub=true"])
    assert calls == [{"repo_id": SAM3_HUB_REPO, "filename": SAM3_HUB_FILE}]
    assert says in str(err)
    assert "model.sam3.checkpoint" in str(err)  # what to do instead


def test_from_hub_loads_the_downloaded_file(hand_ckpt, state_a, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda **kw: str(hand_ckpt))
    model = build_tiny_sam3(["from_hub=true", "strict=true"], seed=2)
    _assert_same_state(model, state_a)


def test_checkpoint_and_from_hub_are_exclusive(hand_ckpt, no_build):
    err = _raised(ValueError, build_tiny_sam3, [_ckpt_override(hand_ckpt), "from_hub=true"])
    assert "from_hub" in str(err)


def test_unknown_builtin_lists_shipped_files(no_build, monkeypatch, tmp_path):
    shipped = sorted(p.name for p in sam3_factory.ASSETS_DIR.glob("*.pt"))
    err = _raised(CheckpointError, build_tiny_sam3, ["checkpoint=builtin:does_not_exist.pt"])
    assert "does_not_exist.pt" in str(err) and f"(shipped: {shipped})" in str(err)

    (tmp_path / "b.pt").write_bytes(b"")
    (tmp_path / "a.pt").write_bytes(b"")
    monkeypatch.setattr(sam3_factory, "ASSETS_DIR", tmp_path)
    err = _raised(CheckpointError, build_tiny_sam3, ["checkpoint=builtin:does_not_exist.pt"])
    assert "(shipped: ['a.pt', 'b.pt'])" in str(err)


def test_builtin_checkpoint_loads_from_assets(hand_ckpt, state_a, monkeypatch, tmp_path):
    (tmp_path / "tiny.pt").write_bytes(hand_ckpt.read_bytes())
    monkeypatch.setattr(sam3_factory, "ASSETS_DIR", tmp_path)
    model = build_tiny_sam3(["checkpoint=builtin:tiny.pt", "strict=true"], seed=2)
    _assert_same_state(model, state_a)


# ---------------------------------------------------------------------------------------------
# A plain SAM3 checkpoint into a model with a region head
# ---------------------------------------------------------------------------------------------

REGION_HEAD_CONF = Path(__file__).resolve().parents[2] / "conf/model/region_head/default.yaml"


@pytest.mark.skipif(
    not (Path(sam3_factory.__file__).with_name("region_seg_head.py").is_file()
         and REGION_HEAD_CONF.is_file()),
    reason="no region head in this checkout",
)
def test_plain_checkpoint_loads_into_model_with_region_head(hand_ckpt, state_a):
    from omegaconf import OmegaConf

    torch.manual_seed(5)
    head_cfg = OmegaConf.load(REGION_HEAD_CONF)
    region_head = instantiate(head_cfg, d_model=64)
    head_state = {k: v.clone() for k, v in region_head.state_dict().items()}

    cfg = compose_sam3("tiny", [_ckpt_override(hand_ckpt), "strict=true"])
    model = instantiate(cfg, region_head=region_head)  # strict passes: only new tensors missing
    state = model.state_dict()
    new = {k for k in state if k.startswith("segmentation_head.region_head.")}
    assert sorted(set(state) - new) == sorted(state_a)
    assert {k[len("segmentation_head.region_head."):] for k in new} == set(head_state)
    for key in state_a:
        assert torch.equal(state[key], state_a[key]), key
    for key, value in head_state.items():  # the region head keeps its own initialisation
        assert torch.equal(state["segmentation_head.region_head." + key], value), key

    # without telling the loader about the region head, exactly its tensors are missing
    report = load_sam3_checkpoint(model, hand_ckpt, strict=False, new_module_prefixes=())
    assert sorted(report.missing) == sorted(new)
    with pytest.raises(CheckpointError, match="segmentation_head.region_head"):
        load_sam3_checkpoint(model, hand_ckpt, strict=True, new_module_prefixes=())
