"""Loading weights: torchvision weights names or local checkpoint files, always ``weights_only=True``.

A local file may hold a plain ``state_dict``, or a dict with it under ``state_dict`` / ``model`` /
``model_state_dict`` (the usual training-script layouts); a ``module.`` prefix (DataParallel / DDP)
or ``_orig_mod.`` prefix (``torch.compile``) is stripped. Only the final classifier layer may differ
in shape: that is fine-tuning (an ImageNet checkpoint on a 20-class dataset), so the model keeps its
new head and a warning is logged. Anything else that does not fit is an error that lists the keys.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sitegen.errors import ModelError
from sitegen.models._registry import head_path, torchvision_name

logger = logging.getLogger(__name__)

_WEIGHTS_NAME = re.compile(
    r"^(?:[A-Za-z0-9]+_Weights\.)?[A-Z0-9_]+$"
)  # IMAGENET1K_V1, AlexNet_Weights.DEFAULT
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
_PREFIXES = ("module.", "_orig_mod.")
_SHOW = 5  # keys listed per kind of mismatch


def is_weights_name(weights: str) -> bool:
    """True for a torchvision weights name (``IMAGENET1K_V1``, ``ResNet18_Weights.DEFAULT``), not a file."""
    return (
        _WEIGHTS_NAME.match(weights) is not None
        and not Path(weights).is_file()
        and Path(weights).suffix.lower() not in _CHECKPOINT_SUFFIXES
    )


def torchvision_weights(arch: str | None, weights: str) -> Any:
    """Resolve a torchvision weights name to its ``WeightsEnum`` member (no download).

    Args:
        arch: the architecture (``alexnet``, ``torchvision:alexnet``); not needed for the full
            ``AlexNet_Weights.IMAGENET1K_V1`` spelling.
        weights: the weights name.

    Raises:
        ModelError: unknown name, or a short name for an architecture that is not torchvision's.
    """
    import torchvision

    if "." in weights:
        try:
            return torchvision.models.get_weight(weights)
        except (ValueError, KeyError, AttributeError) as e:
            raise ModelError(f"unknown torchvision weights {weights!r} ({e})") from e
    name = torchvision_name(arch) if arch else None
    if name is None:
        raise ModelError(
            f"weights {weights!r} looks like a torchvision weights name, but {arch!r} is not a torchvision "
            "architecture: give a checkpoint file, or the full name such as 'AlexNet_Weights.IMAGENET1K_V1'"
        )
    enum = torchvision.models.get_model_weights(name)
    try:
        return enum[weights]
    except KeyError:
        raise ModelError(
            f"unknown weights {weights!r} for {name}; known: {', '.join(enum.__members__)}"
        ) from None


def weights_meta(arch: str, weights: str | None) -> dict[str, Any] | None:
    """Normalization and class names that come with torchvision weights (read offline, no download).

    Args:
        arch: the network's architecture string.
        weights: the spec's ``weights`` value.

    Returns:
        ``{"name", "mean", "std", "categories", "crop_size", "resize_size"}`` for a torchvision weights
        name, ``None`` for no weights or a checkpoint file.

    Raises:
        ModelError: a weights name that torchvision does not know for this architecture.

    Example:
        >>> weights_meta("alexnet", "IMAGENET1K_V1")["mean"]
        (0.485, 0.456, 0.406)
    """
    if not weights or not is_weights_name(weights):
        return None
    w = torchvision_weights(arch, weights)
    transforms = w.transforms()
    categories = w.meta.get("categories")
    return {
        "name": f"{type(w).__name__}.{w.name}",
        "mean": tuple(float(v) for v in transforms.mean),
        "std": tuple(float(v) for v in transforms.std),
        "categories": tuple(categories) if categories else None,
        "crop_size": int(transforms.crop_size[0]),
        "resize_size": int(transforms.resize_size[0]),
    }


def file_hash(path: str | Path) -> str:
    """First 16 hex digits of the SHA-256 of a file's bytes, read in 1 MiB chunks (cache keys)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def load_weights(module: nn.Module, weights: str | Path, *, arch: str | None = None) -> None:
    """Load weights into ``module`` in place.

    Args:
        module: the built network.
        weights: a torchvision weights name (``IMAGENET1K_V1``; needs ``arch``, or the full
            ``AlexNet_Weights.IMAGENET1K_V1``) or a local checkpoint file.
        arch: the architecture string, to resolve short torchvision weights names.

    Raises:
        ModelError: a file that is missing, unreadable or holds more than tensors; torchvision weights
            that cannot be downloaded; keys or shapes that do not fit (listed).

    Example:
        >>> load_weights(net, "runs/epoch-4.pt")  # doctest: +SKIP
    """
    source = str(weights)
    if isinstance(weights, str) and is_weights_name(weights):
        w = torchvision_weights(arch, weights)
        try:
            state = w.get_state_dict(progress=False)
        except Exception as e:  # URLError, HTTPError, OSError, hash mismatch: all mean "no usable download"
            raise ModelError(
                f"cannot download torchvision weights {type(w).__name__}.{w.name} ({type(e).__name__}: {e}); "
                "this needs internet access once (then it is cached under ~/.cache/torch), or point "
                "weights: at a local checkpoint file"
            ) from e
        source = f"{type(w).__name__}.{w.name}"
    else:
        state = read_state_dict(weights)
    _load(module, state, source, arch or type(module).__name__)


def check_weights(module: nn.Module, path: str | Path, *, arch: str | None = None) -> None:
    """Check that a checkpoint file reads safely and fits ``module``, without reading its tensors.

    For checks before any work (:mod:`sitegen.plan`): the file is memory-mapped (``torch.load(mmap=
    True)``), so a 500 MB checkpoint costs its keys and shapes, not its bytes; ``module`` is unchanged.

    Raises:
        ModelError: as :func:`load_weights` for a file that is missing, damaged, refused or does not fit.
    """
    state = read_state_dict(path, mmap=True)
    _fit(module, state, str(path), arch or type(module).__name__, warn=False)


def read_state_dict(path: str | Path, *, mmap: bool = False) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a plain ``{key: tensor}`` dict (prefixes stripped).

    Args:
        path: the checkpoint file.
        mmap: memory-map the tensors instead of reading them (files of ``torch.save``'s zip format;
            older files are read whole).

    Raises:
        ModelError: missing file, unreadable file, objects other than tensors, or no state dict inside.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint file not found: {path}")
    try:
        # weights_only: a checkpoint is data; unpickling arbitrary objects would run arbitrary code
        obj = _torch_load(path, mmap)
    except pickle.UnpicklingError as e:
        raise ModelError(_unpickling_message(path, str(e))) from e
    except Exception as e:  # zip corruption, truncated files
        raise ModelError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from e
    state = _unwrap(obj)
    if state is None:
        kind = (
            f"a dict with keys {sorted(map(str, obj))[:_SHOW]}"
            if isinstance(obj, Mapping)
            else type(obj).__name__
        )
        raise ModelError(
            f"checkpoint {path} holds {kind}, not a state_dict (expected {{name: tensor}} or a dict with "
            f"one of {list(_WRAPPER_KEYS)})"
        )
    return state


def _unpickling_message(path: Path, error: str) -> str:
    """One line for a file ``torch.load(weights_only=True)`` refused: code inside, or damage.

    torch words the refusal differently across releases ("Unsupported global: GLOBAL x.y was not an
    allowed global", "unsupported GLOBAL x.y whose module x is blocked" in 2.14.1; "Unsupported operand
    N" for opcodes of plain pickles), so only the words ``GLOBAL <name>`` and ``operand`` are relied on.
    """
    resave = (
        "if you trust the file, re-save its weights as a state_dict in Python: "
        f"obj = torch.load({str(path)!r}, weights_only=False); "
        "torch.save(obj.state_dict() if hasattr(obj, 'state_dict') else obj['state_dict'], 'weights.pt')"
    )
    refused = re.search(r"GLOBAL ([\w.]+)", error)
    if refused is not None:
        return (
            f"checkpoint {path} was refused: it holds Python objects ({refused.group(1)}) that safe loading "
            f"(torch.load weights_only=True) does not run, as they could run code; {resave}"
        )
    if re.search(r"Unsupported operand", error) and _starts_like_a_pickle(path):
        return (
            f"checkpoint {path} was refused: it is a plain pickle (not written by torch.save), which safe "
            f"loading (torch.load weights_only=True) does not read since pickles can run code; {resave}"
        )
    detail = re.search(r"WeightsUnpickler error: *\s*(.+)", error)
    reason = detail.group(1).strip() if detail else "UnpicklingError"
    return f"cannot read checkpoint {path}: not a PyTorch file, or damaged ({reason})"


def _starts_like_a_pickle(path: Path) -> bool:
    """Pickle protocol 2+ starts with PROTO (0x80) and its version: a plain pickle, not random bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _unwrap(obj: Any) -> dict[str, torch.Tensor] | None:
    def is_state(d: Any) -> bool:
        return isinstance(d, Mapping) and bool(d) and all(isinstance(v, torch.Tensor) for v in d.values())

    if not is_state(obj) and isinstance(obj, Mapping):
        obj = next((obj[k] for k in _WRAPPER_KEYS if is_state(obj.get(k))), None)
    if not is_state(obj):
        return None
    state = {str(k): v for k, v in obj.items()}
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _listing(label: str, items: list[str]) -> str:
    shown = ", ".join(items[:_SHOW]) + (", ..." if len(items) > _SHOW else "")
    return f"{len(items)} {label} ({shown})"


def _torch_load(path: Path, mmap: bool) -> Any:
    if mmap:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):  # only the legacy (non-zip) format refuses mmap: read it whole
                raise
    return torch.load(path, map_location="cpu", weights_only=True)


def _load(module: nn.Module, state: dict[str, torch.Tensor], source: str, target: str) -> None:
    module.load_state_dict(_fit(module, state, source, target), strict=False)


def _fit(
    module: nn.Module, state: dict[str, torch.Tensor], source: str, target: str, *, warn: bool = True
) -> dict[str, torch.Tensor]:
    """The state to load into ``module`` (a fine-tuned head kept), or a ModelError listing the misfits."""
    own = module.state_dict()
    # BatchNorm's counter is absent from old checkpoints and is not a weight
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in state if k in own and state[k].shape != own[k].shape]

    head = head_path(module)
    head_keys = {f"{head}.weight", f"{head}.bias"} if head is not None else set()
    if mismatched and not missing and not unexpected and set(mismatched) <= head_keys:
        w = state[f"{head}.weight"]
        if warn:
            logger.warning(
                "%s: its classifier %r has %d outputs, the model %d: keeping the new, randomly "
                "initialized head (fine-tuning)",
                source,
                head,
                w.shape[0],
                own[f"{head}.weight"].shape[0],
            )
        state = {k: v for k, v in state.items() if k not in head_keys}
        state.update({k: own[k] for k in head_keys if k in own})
        mismatched = []

    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(_listing("missing keys", missing))
        if unexpected:
            parts.append(_listing("unexpected keys", unexpected))
        if mismatched:
            shapes = [f"{k}: {list(state[k].shape)} vs {list(own[k].shape)}" for k in mismatched]
            parts.append(_listing("shape mismatches (checkpoint vs model)", shapes))
        raise ModelError(
            f"checkpoint {source} does not fit {target} (checkpoint for another architecture?): "
            + "; ".join(parts)
        )
    return state
