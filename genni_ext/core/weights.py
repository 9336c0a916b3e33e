"""θ from trained weights: a state dict in ``.pt``/``.pth`` or ``.safetensors``, loaded strictly.

A ``.pt`` file is read with ``torch.load(weights_only=True)``, which unpickles tensors and
plain containers only: a file that needs other code to load is refused, never run. Keys and
shapes must match the model's exactly; the error lists what is missing, unexpected and
mis-shaped, so a wrong file or architecture is found before any search or sweep.
"""

from __future__ import annotations

import hashlib
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from genni_ext._validate import all_finite
from genni_ext.errors import InputError

WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors")
_SHOWN = 6  # keys named per kind in a mismatch message


def _safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise InputError(f"{path} is not a readable .safetensors file: {error}") from None


def _torch_file(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
        what = f"it names {found.group(1)}" if found else "torch refused it"
        raise InputError(
            f"{path} holds objects other than tensors and plain containers, which loading "
            f"would have to run code for; refused ({what}). Save the weights with "
            "torch.save(model.state_dict(), path) or as .safetensors"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as error:
        raise InputError(f"{path} is not a readable torch file: {error}") from None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of the weights file ``path`` (``.pt``, ``.pth`` or ``.safetensors``)."""
    path = Path(path).expanduser()
    if path.suffix not in WEIGHT_SUFFIXES:
        raise InputError(
            f"theta.weights: {path} is not a weights file; use one of "
            f"{', '.join(WEIGHT_SUFFIXES)} (a state dict)"
        )
    if not path.is_file():
        raise InputError(f"theta.weights: no file {path}")
    content = _safetensors(path) if path.suffix == ".safetensors" else _torch_file(path)
    if not isinstance(content, Mapping) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in content.items()
    ):
        raise InputError(
            f"{path} is not a state dict (a mapping of parameter names to tensors), it holds "
            f"{type(content).__name__}; save model.state_dict()"
        )
    return dict(content)


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else "")


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load the weights file ``path`` into ``model`` (in place, strict) and return it."""
    state = read_state_dict(path)
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    misshaped = [
        f"{key} {list(state[key].shape)} (model {list(value.shape)})"
        for key, value in expected.items()
        if key in state and state[key].shape != value.shape
    ]
    problems = [
        f"{label}: {_names(keys)}"
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("wrong shape", misshaped),
        )
        if keys
    ]
    if problems:
        raise InputError(
            f"the weights in {path} do not fit {type(model).__name__}: {'; '.join(problems)}. "
            "Check that the file was saved from this architecture with the same arguments"
        )
    bad = [key for key, value in state.items() if not all_finite(value)]
    if bad:
        raise InputError(f"the weights in {path} hold NaN or Inf in {_names(bad)}")
    with torch.no_grad():
        model.load_state_dict(state, strict=True)
    return model


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes (what an experiment records of its inputs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


__all__ = ["WEIGHT_SUFFIXES", "file_sha256", "load_weights", "read_state_dict"]
