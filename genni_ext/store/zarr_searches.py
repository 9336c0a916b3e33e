"""A search's arrays on disk as one zarr v3 group, read back as tensors or as xarray.

``searches/<search>/search.zarr`` holds one array per tensor field of the SearchResult
(found points ``params`` and ``starts`` [start, parameter], ``losses`` [start], the J
``history`` [start, record] at ``history_steps`` [record], and ``restarts`` [start]: how
often each start was restarted), with those dimension names, so
``xarray.open_zarr`` reads the search as one Dataset. The search's other fields stay in
``metadata.json`` beside it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    import xarray

ZARR_NAME = "search.zarr"
DIMS = {
    "params": ("start", "parameter"),
    "starts": ("start", "parameter"),
    "losses": ("start",),
    "history": ("start", "record"),
    "history_steps": ("record",),
    "restarts": ("start",),
}


def _dims(key: str, ndim: int) -> tuple[str, ...]:
    dims = DIMS.get(key)
    if dims is not None and len(dims) == ndim:
        return dims
    return tuple(f"{key}_{axis}" for axis in range(ndim))


def write(folder: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Every tensor as an array of the group ``folder/search.zarr`` (created here)."""
    import zarr

    group = zarr.open_group(store=str(folder / ZARR_NAME), mode="w", zarr_format=3)
    for key, tensor in tensors.items():
        data = tensor.detach().cpu().contiguous().numpy()
        array = group.create_array(
            key, shape=data.shape, dtype=data.dtype, dimension_names=_dims(key, data.ndim)
        )
        if data.size:
            array[...] = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)  # consolidated: not yet in v3 spec
        zarr.consolidate_metadata(str(folder / ZARR_NAME))


def exists(folder: Path) -> bool:
    return (folder / ZARR_NAME / "zarr.json").is_file()


def read(folder: Path, key: str) -> torch.Tensor:
    """Tensor field ``key`` (raises if missing or unreadable)."""
    import zarr

    array = zarr.open_array(store=str(folder / ZARR_NAME), path=key, mode="r", zarr_format=3)
    return torch.from_numpy(np.ascontiguousarray(array[...]))


def open_dataset(folder: Path) -> xarray.Dataset:
    """The search's arrays as an xarray Dataset (lazily, with Dask)."""
    import xarray

    return xarray.open_zarr(str(folder / ZARR_NAME))
