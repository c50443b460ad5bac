"""Loading SAM3 weights in the official checkpoint format.

The official `sam3.pt` is `{"model": {"detector.<name>": tensor, "tracker.<name>": ...}}`
(or the inner dict directly). We load the `detector.` part into a `Sam3Image`, drop RoPE tables
(`freqs_cis`) whose shape differs because the model runs at another resolution (the model keeps
the ones it computed at build time), and report missing/unexpected keys.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

SAM3_HUB_REPO = "facebook/sam3"
SAM3_HUB_FILE = "sam3.pt"
DETECTOR_PREFIX = "detector."
_HOW_TO_GET = (
    f"SAM3 weights are gated: accept the licence of the '{SAM3_HUB_REPO}' model on the Hugging Face hub, "
    f"download '{SAM3_HUB_FILE}', and pass model.sam3.checkpoint=/path/to/{SAM3_HUB_FILE} "
    "(or set model.sam3.from_hub=true after `hf auth login` on a machine with access)."
)


class CheckpointError(RuntimeError):
    """A checkpoint could not be found, read or matched to the model."""


@dataclass
class LoadReport:
    """What happened when a checkpoint was loaded."""

    path: str
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    resized_rope: list[str] = field(default_factory=list)
    ignored_prefixes: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        parts = [f"loaded {self.loaded} tensors from {self.path}"]
        if self.missing:
            parts.append(f"{len(self.missing)} missing (e.g. {self.missing[:3]})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected (e.g. {self.unexpected[:3]})")
        if self.resized_rope:
            parts.append(f"{len(self.resized_rope)} RoPE tables recomputed for this resolution")
        for prefix, count in self.ignored_prefixes.items():
            parts.append(f"{count} '{prefix}' tensors ignored")
        return "; ".join(parts)


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat `{name: tensor}` dict (the `"model"` entry if any).

    Raises:
        CheckpointError: the file is missing, unreadable, or holds no state dict.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"SAM3 checkpoint not found: {path}. {_HOW_TO_GET}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        # Corrupt bytes surface as many types: UnpicklingError, RuntimeError (zip reader),
        # EOFError, and also OSError (a truncated zip), KeyError, IndexError, UnicodeDecodeError.
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: {exc}). "
            f"The file may be truncated or corrupt; download it again. {_HOW_TO_GET}"
        ) from exc
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    elif isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if (not isinstance(obj, Mapping) or not obj
            or not all(isinstance(v, torch.Tensor) for v in obj.values())):
        raise CheckpointError(
            f"{path} does not contain a state dict (expected {{'model': {{name: tensor}}}} "
            "as in the official sam3.pt)"
        )
    return dict(obj)


def _strip_detector_prefix(state: Mapping[str, torch.Tensor], report: LoadReport):
    has_detector = any(k.startswith(DETECTOR_PREFIX) for k in state)
    if not has_detector:
        return dict(state)
    out = {}
    for key, value in state.items():
        if key.startswith(DETECTOR_PREFIX):
            out[key[len(DETECTOR_PREFIX):]] = value
        else:
            prefix = key.split(".", 1)[0] + "."
            report.ignored_prefixes[prefix] = report.ignored_prefixes.get(prefix, 0) + 1
    return out


def load_sam3_checkpoint(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    strict: bool = False,
    new_module_prefixes: Iterable[str] = (),
) -> LoadReport:
    """Load an official-format SAM3 checkpoint into `model` (a `Sam3Image`).

    Args:
        strict: fail if any model tensor is missing from the checkpoint, except those under
            `new_module_prefixes` (parameters this project adds, e.g. the region head).
        new_module_prefixes: name prefixes of modules that are not part of SAM3.

    Raises:
        CheckpointError: unreadable file, or (strict) missing SAM3 tensors, or shape mismatch.
    """
    report = LoadReport(path=str(path))
    state = _strip_detector_prefix(read_checkpoint(path), report)
    own = model.state_dict()
    for key in [k for k in state if k.endswith("freqs_cis")]:
        if key in own and own[key].shape != state[key].shape:
            # RoPE tables are a function of the token grid, which the model built for its own
            # resolution; the checkpoint's were computed for 1008 px.
            del state[key]
            report.resized_rope.append(key)
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and own[k].shape != v.shape
    ]
    if mismatched:
        raise CheckpointError(
            f"{path}: {len(mismatched)} tensors do not match the model's shapes, e.g. "
            f"{mismatched[:3]}. Is model.sam3 the architecture this checkpoint was trained with?"
        )
    result = model.load_state_dict(state, strict=False)
    new_prefixes = tuple(new_module_prefixes)
    report.missing = [
        k for k in result.missing_keys
        if k not in report.resized_rope and not _under(k, new_prefixes)
    ]
    report.unexpected = list(result.unexpected_keys)
    report.loaded = len(state) - len(report.unexpected)
    if report.loaded == 0:
        # Nothing matched (e.g. another model's or a Lightning checkpoint): never hand back a
        # randomly initialised model in place of requested weights, even with strict=false.
        raise CheckpointError(
            f"{path}: none of its {len(state)} tensors matches a model tensor (e.g. "
            f"{sorted(state)[:3]}); expected the official sam3.pt key layout 'detector.<name>'"
        )
    if strict and report.missing:
        raise CheckpointError(
            f"{path}: {len(report.missing)} SAM3 tensors are missing from the checkpoint "
            f"(model.sam3.strict=true), e.g. {report.missing[:5]}"
        )
    level = logging.WARNING if report.missing or report.unexpected else logging.INFO
    log.log(level, "SAM3 checkpoint: %s", report.summary())
    return report


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") or f".{p}." in f".{key}" for p in prefixes)


def download_from_hub(repo_id: str = SAM3_HUB_REPO, filename: str = SAM3_HUB_FILE) -> str:
    """Fetch the official checkpoint through `huggingface_hub` (opt-in: model.sam3.from_hub).

    Raises:
        CheckpointError: offline, not logged in, or the gated licence was not accepted.
    """
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import GatedRepoError, LocalEntryNotFoundError
    except ImportError as exc:  # pragma: no cover - dependency of sam3
        raise CheckpointError("model.sam3.from_hub=true needs huggingface_hub installed") from exc
    try:
        return hf_hub_download(repo_id=repo_id, filename=filename)
    except GatedRepoError as exc:
        raise CheckpointError(
            f"Access to '{repo_id}' is gated and this account has not been granted it. "
            + _HOW_TO_GET
        ) from exc
    except LocalEntryNotFoundError as exc:
        raise CheckpointError(
            f"Could not download '{filename}' from '{repo_id}' (offline, or not cached). "
            + _HOW_TO_GET
        ) from exc
    except Exception as exc:  # network errors, auth errors: all need the same advice
        raise CheckpointError(
            f"Downloading '{filename}' from '{repo_id}' failed ({type(exc).__name__}: {exc}). "
            + _HOW_TO_GET
        ) from exc


def save_official_format(model: nn.Module, path: str | os.PathLike, *,
                         dtype: torch.dtype | None = None,
                         exclude_prefixes: Iterable[str] = ()) -> None:
    """Write `model`'s SAM3 weights as `{"model": {"detector.<name>": tensor}}`.

    Args:
        dtype: cast floating tensors (e.g. float16 to halve a shipped checkpoint).
        exclude_prefixes: module prefixes not part of SAM3 (region head, teacher).
    """
    excluded = tuple(exclude_prefixes)
    state = {}
    for key, value in model.state_dict().items():
        if _under(key, excluded):
            continue
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        state[DETECTOR_PREFIX + key] = value.detach().cpu().clone()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state}, path)
