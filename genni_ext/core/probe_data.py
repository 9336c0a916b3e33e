"""Probes from the user's data: an array file or scikit-learn's digits, fitted to the model's input.

Files: ``.npy`` and ``.npz`` (read without pickle), a ``.pt`` tensor (``torch.load`` with
``weights_only=True``), ``.safetensors``. A file holding several arrays needs ``key``.
``dataset: digits`` is scikit-learn's 1797 8×8 digit images (shipped with the package, no
download). The samples are then, in this order: cast to the model's dtype, standardised per
feature if asked (mean 0, standard deviation 1 over the samples; a constant feature becomes 0),
reshaped to the model's input shape when the sizes agree, or resized as images (bilinear) when
``resize`` is given, and subsampled to ``num_probes`` with ``seed``.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file

from genni_ext._validate import all_finite
from genni_ext.errors import InputError

PROBE_SUFFIXES = (".npy", ".npz", ".pt", ".safetensors")
DATASETS = ("digits",)


def _pick(arrays: dict[str, object], key: str | None, path: Path) -> object:
    if key is not None:
        if key not in arrays:
            raise InputError(
                f"probes.key {key!r} is not in {path}; it holds {', '.join(sorted(arrays))}"
            )
        return arrays[key]
    if len(arrays) != 1:
        raise InputError(
            f"{path} holds {len(arrays)} arrays ({', '.join(sorted(arrays))}); name one with "
            "probes.key"
        )
    return next(iter(arrays.values()))


def _read(path: Path, key: str | None) -> object:
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return _pick({name: archive[name] for name in archive.files}, key, path)
        if path.suffix == ".pt":
            content = torch.load(path, map_location="cpu", weights_only=True)
            return _pick(content, key, path) if isinstance(content, dict) else content
        return _pick(load_file(str(path)), key, path)
    except pickle.UnpicklingError as error:
        raise InputError(
            f"{path} holds objects that loading would have to run code for; refused "
            f"({str(error).splitlines()[0]}). Save the probes as a tensor or a .npy array"
        ) from None
    except (ValueError, OSError, RuntimeError, EOFError, SafetensorError) as error:
        raise InputError(f"cannot read probes from {path}: {error}") from None


def read_probe_file(path: str | Path, key: str | None = None) -> torch.Tensor:
    """The samples [N, ...] stored in ``path`` (see the module docstring for the formats)."""
    path = Path(path).expanduser()
    if path.suffix not in PROBE_SUFFIXES:
        raise InputError(
            f"probes.file: {path} has an unknown suffix; use one of {', '.join(PROBE_SUFFIXES)}"
        )
    if not path.is_file():
        raise InputError(f"probes.file: no file {path}")
    content = _read(path, key)
    if isinstance(content, np.ndarray):
        if content.dtype.kind not in "fiu":
            raise InputError(f"the probes in {path} are {content.dtype}; store numbers")
        content = torch.from_numpy(np.ascontiguousarray(content))
    if not isinstance(content, torch.Tensor):
        raise InputError(f"{path} holds {type(content).__name__}, not a tensor of probes")
    if content.is_complex() or content.dtype == torch.bool:
        raise InputError(f"the probes in {path} are {content.dtype}; store real numbers")
    return content


def digits() -> torch.Tensor:
    """scikit-learn's digit images, [1797, 64] float64 (pixel values 0 to 16)."""
    try:
        from sklearn.datasets import load_digits  # optional: the examples extra
    except ImportError as error:
        raise InputError(
            f"probes.dataset: digits needs scikit-learn ({error}); pip install "
            '"genni_ext[examples]"'
        ) from None
    return torch.from_numpy(load_digits().data)


def standardise(samples: torch.Tensor) -> torch.Tensor:
    """Per feature: subtract the mean over samples, divide by the standard deviation (a
    feature that is constant over the samples becomes 0)."""
    flat = samples.reshape(samples.shape[0], -1)
    spread = flat.std(dim=0, unbiased=False)
    scaled = (flat - flat.mean(dim=0)) / torch.where(spread > 0, spread, torch.ones_like(spread))
    return scaled.reshape(samples.shape)


def _as_images(samples: torch.Tensor, channels: int) -> torch.Tensor:
    """[N, C, h, w] from samples that are images already or flat square images."""
    if samples.ndim == 4:
        return samples
    if samples.ndim == 3:
        return samples[:, None] if channels == 1 else samples
    size = math.prod(samples.shape[1:]) // channels
    side = math.isqrt(size)
    if side * side * channels != math.prod(samples.shape[1:]):
        raise InputError(
            f"probes of shape {list(samples.shape[1:])} are not {channels}-channel square "
            "images, so they cannot be resized; reshape them before saving"
        )
    return samples.reshape(samples.shape[0], channels, side, side)


def fit_to_model(
    samples: torch.Tensor,
    input_shape: Sequence[int],
    *,
    resize: Sequence[int] | None = None,
) -> torch.Tensor:
    """``samples`` [N, ...] in the model's ``input_shape``: resized as images to ``resize``
    ([H, W]) if given, then reshaped when the number of values per sample agrees."""
    input_shape = tuple(int(size) for size in input_shape)
    if resize is not None:
        if len(input_shape) != 3:
            raise InputError(
                f"probes.transform.resize needs a model that takes images [C, H, W]; this one "
                f"takes {list(input_shape)}"
            )
        images = _as_images(samples, input_shape[0])
        samples = F.interpolate(
            images, size=tuple(int(v) for v in resize), mode="bilinear", align_corners=False
        )
    per_sample = math.prod(samples.shape[1:])
    if per_sample != math.prod(input_shape):
        hint = " (resize images with probes.transform.resize)" if len(input_shape) == 3 else ""
        raise InputError(
            f"the probes have shape {list(samples.shape[1:])} per sample ({per_sample} values) "
            f"but the model takes {list(input_shape)} ({math.prod(input_shape)} values){hint}"
        )
    return samples.reshape(samples.shape[0], *input_shape)


def subsample(samples: torch.Tensor, count: int | None, seed: int) -> torch.Tensor:
    """``count`` samples drawn without replacement with ``seed`` (all, in order, if None)."""
    if count is None:
        return samples
    if count > samples.shape[0]:
        raise InputError(
            f"probes.num_probes is {count} but the data has {samples.shape[0]} samples; ask "
            "for at most that many (or leave num_probes out to use them all)"
        )
    order = torch.randperm(samples.shape[0], generator=torch.Generator().manual_seed(seed))
    return samples[order[:count]]


def load_probes(
    samples: torch.Tensor,
    input_shape: Sequence[int],
    dtype: torch.dtype,
    *,
    standardised: bool = False,
    resize: Sequence[int] | None = None,
    num_probes: int | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Data ``samples`` [N, ...] made into probes for a model (see the module docstring)."""
    if samples.ndim < 1 or samples.shape[0] == 0:
        raise InputError(f"the probe data has shape {list(samples.shape)}; it needs samples")
    samples = samples[:, None] if samples.ndim == 1 else samples  # N scalar samples
    samples = samples.to(dtype)
    if not all_finite(samples):
        raise InputError("the probe data holds NaN or Inf; every value must be finite")
    if standardised:
        samples = standardise(samples)
    samples = fit_to_model(samples, input_shape, resize=resize)
    return subsample(samples, num_probes, seed).contiguous()


__all__ = [
    "DATASETS",
    "PROBE_SUFFIXES",
    "digits",
    "fit_to_model",
    "load_probes",
    "read_probe_file",
    "standardise",
    "subsample",
]
