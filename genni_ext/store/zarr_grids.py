"""A swept grid's J on disk as a zarr v3 array, written chunk by chunk, read back whole,
chunk by chunk (checked) or as an xarray DataArray.

``grids/<name>/grid.zarr`` is a zarr group: array ``J`` of the grid's shape (float64, NaN
where not computed yet), chunked along the first axis as the sweep's
:class:`~genni_ext.core.chunking.ChunkPlan` says, each chunk zstd-compressed with a CRC-32C
checksum; coordinate arrays ``c1``..``cm`` (the axes of an axis grid; for a coefficient
list, each coefficient along the dimension ``point``); in ``J``'s attributes the manifest
(what the sweep is of) and, once complete, the result's metadata. Why zarr: every chunk is
its own object, so workers on many machines write their chunks in parallel with no
coordination; the same layout lives on cloud object stores through fsspec; and xarray and
Dask read it natively (``xarray.open_zarr(".../grid.zarr")``).

``grids/<name>/done/<k>.json`` records chunk k after its values are written (atomically;
zarr writes each chunk atomically too): the SHA-256 of its float64 values and its compute
time. A chunk without a record is missing; one whose values no longer match it is damaged.
Every other file of the grid (zarr metadata, coordinates, the ``.npy`` and JSON files
beside) has its checksum in the grid's ``checksums.json`` (genni_ext.store.files).
"""

from __future__ import annotations

import hashlib
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from genni_ext.core.chunking import ChunkPlan
from genni_ext.core.grid import VALUES, dims
from genni_ext.store.files import read_json, room_for, write_json

if TYPE_CHECKING:
    import xarray
    import zarr

    from genni_ext.core.grid import Grid

ZARR_NAME = "grid.zarr"
DONE_DIR = "done"
_DONE_RE = re.compile(r"^(\d+)\.json$")


def create(folder: Path, grid: Grid, plan: ChunkPlan, manifest: dict[str, Any]) -> None:
    """A new, empty J for ``grid`` under ``folder`` (replacing one there), with its
    coordinates and ``manifest``."""
    import zarr
    from zarr.codecs import Crc32cCodec, ZstdCodec

    group = zarr.open_group(store=str(folder / ZARR_NAME), mode="w", zarr_format=3)
    values = group.create_array(
        VALUES,
        shape=grid.shape,
        chunks=plan.array_chunks,
        dtype="float64",
        fill_value=np.nan,
        dimension_names=dims(grid),
        compressors=[ZstdCodec(), Crc32cCodec()],
    )
    values.attrs["genni_manifest"] = manifest
    values.attrs["long_name"] = "J: mean squared output difference to θ on the probes"
    coefficients = grid.coeffs.numpy()
    for index in range(grid.dim):
        name = f"c{index + 1}"
        if grid.axes is None:
            data, dim = coefficients[:, index], "point"
        else:
            data, dim = grid.axes[index].numpy(), name
        array = group.create_array(name, shape=data.shape, dtype="float64", dimension_names=(dim,))
        array[:] = data


def open_values(folder: Path, mode: str = "r") -> zarr.Array:
    """The J array under ``folder`` (zarr raises if it is not there or unreadable)."""
    import zarr

    return zarr.open_array(store=str(folder / ZARR_NAME), path=VALUES, mode=mode, zarr_format=3)


def exists(folder: Path) -> bool:
    return (folder / ZARR_NAME / VALUES / "zarr.json").is_file()


METADATA_FILE = f"{ZARR_NAME}/{VALUES}/zarr.json"
"""J's zarr metadata (shape, chunks, codecs, the manifest), relative to the grid folder."""


def is_chunk_file(name: str) -> bool:
    """Whether ``name`` (relative to the grid folder) is a chunk of J or a chunk's record:
    files that the records in ``done/`` cover, not the grid's checksums.json."""
    return name.startswith((f"{ZARR_NAME}/{VALUES}/c/", f"{DONE_DIR}/"))


def chunk_file(folder: Path, plan: ChunkPlan, index: int) -> Path:
    """The file of J's chunk ``index`` (zarr's default chunk keys: c/<i>/0/...)."""
    path = folder / ZARR_NAME / VALUES / "c" / str(index)
    return path.joinpath(*["0"] * (len(plan.shape) - 1))


def manifest(folder: Path) -> dict[str, Any]:
    """The manifest stored with J."""
    return dict(open_values(folder).attrs["genni_manifest"])


def values_hash(values: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(values, dtype=np.float64).tobytes()).hexdigest()


def write_chunk(
    folder: Path, plan: ChunkPlan, index: int, values: torch.Tensor, seconds: float
) -> None:
    """Chunk ``index`` of J (its grid points in C order), then its record."""
    flat = values.detach().cpu().to(torch.float64).numpy()
    first, last = plan.bounds(index)
    if flat.shape != (last - first,):
        raise ValueError(f"chunk {index} holds {last - first} points, got {flat.shape}")
    with room_for(chunk_file(folder, plan, index)):
        open_values(folder, mode="r+")[plan.slabs(index)] = flat.reshape((-1, *plan.shape[1:]))
    record = {"points": [first, last], "sha256": values_hash(flat), "seconds": float(seconds)}
    write_json(folder / DONE_DIR / f"{index}.json", record)


def recorded_chunks(folder: Path, num_chunks: int) -> set[int]:
    """Indices of the chunks with a record (written, not yet checked)."""
    done = folder / DONE_DIR
    if not done.is_dir():
        return set()
    found = set()
    for entry in done.iterdir():
        match = _DONE_RE.match(entry.name)
        if match and int(match.group(1)) < num_chunks:
            found.add(int(match.group(1)))
    return found


@dataclass(frozen=True)
class ChunkDamage:
    """Chunk ``index`` of a grid cannot be trusted, and why (a sentence)."""

    index: int
    reason: str


def read_chunk(folder: Path, plan: ChunkPlan, index: int) -> tuple[np.ndarray, float]:
    """Chunk ``index``'s values (flat) and compute time, checked against its record; raises
    ValueError saying what is wrong (no record, unreadable, or values that differ)."""
    path = folder / DONE_DIR / f"{index}.json"
    try:
        record = read_json(path)
        expected, seconds = str(record["sha256"]), float(record["seconds"])
    except FileNotFoundError:
        raise ValueError(f"chunk {index} has no record ({path})") from None
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"chunk {index}'s record {path} is not valid JSON: {error}") from None
    try:
        values = np.asarray(open_values(folder)[plan.slabs(index)], dtype=np.float64).ravel()
    except Exception as error:  # zarr reports a bad checksum or codec error as it pleases
        raise ValueError(
            f"chunk {index} of J ({chunk_file(folder, plan, index)}) cannot be read ({error})"
        ) from None
    if values_hash(values) != expected:
        raise ValueError(
            f"chunk {index} of J ({chunk_file(folder, plan, index)}) does not match the "
            f"checksum in its record {path}"
        )
    return values, seconds


def check_chunks(folder: Path, plan: ChunkPlan) -> tuple[set[int], list[ChunkDamage]]:
    """The recorded chunks that read back as recorded, and the damage found in the others."""
    good: set[int] = set()
    damage: list[ChunkDamage] = []
    for index in sorted(recorded_chunks(folder, plan.num_chunks)):
        try:
            read_chunk(folder, plan, index)
        except ValueError as error:
            damage.append(ChunkDamage(index, str(error)))
        else:
            good.add(index)
    return good, damage


def forget_chunk(folder: Path, index: int) -> None:
    """Drop chunk ``index``'s record, so that the next sweep computes it again."""
    (folder / DONE_DIR / f"{index}.json").unlink(missing_ok=True)


def read_all(folder: Path, plan: ChunkPlan) -> tuple[torch.Tensor, float]:
    """J of the whole grid (checked chunk by chunk) and the chunks' total compute time."""
    parts, seconds = [], 0.0
    for index in range(plan.num_chunks):
        values, time_s = read_chunk(folder, plan, index)
        parts.append(values)
        seconds += time_s
    return torch.from_numpy(np.concatenate(parts).reshape(plan.shape)), seconds


def finish(folder: Path, metadata: dict[str, Any]) -> None:
    """Store the result's metadata with J and consolidate the group's metadata, so that
    ``xarray.open_zarr`` reads it in one request."""
    import zarr

    with room_for(folder / ZARR_NAME), warnings.catch_warnings():
        open_values(folder, mode="r+").attrs["genni_metadata"] = metadata
        # zarr notes that consolidated metadata is not yet in the v3 specification; xarray
        # reads it, and without it opening the group warns instead.
        warnings.simplefilter("ignore", category=UserWarning)
        zarr.consolidate_metadata(str(folder / ZARR_NAME))


def open_data_array(folder: Path) -> xarray.DataArray:
    """J under ``folder`` as xarray reads it from the zarr group (lazily, with Dask)."""
    import xarray

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # no consolidated metadata
        dataset = xarray.open_zarr(str(folder / ZARR_NAME), consolidated=None)
    # A coefficient list's c1..cm lie along "point": coordinates, but not dimension names.
    return dataset.set_coords([name for name in dataset.data_vars if name != VALUES])[VALUES]
