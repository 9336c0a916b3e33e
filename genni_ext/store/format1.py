"""The store's first format (format 1, genni_ext before 0.2): read, never written.

Format 1 kept a grid's J as ``values.npy`` beside the grid's other ``.npy`` and JSON files
(``metadata.json`` written last, as now); a resumable sweep also wrote ``manifest.json``
(what it was of) and, while partial, its chunks as ``chunks/<k>.npz``. A search kept each
tensor as ``<key>.npy`` next to its ``metadata.json``. Nothing had a checksum.

Format 2 (zarr: ``grid.zarr``, ``done/``, ``search.zarr``; see
:mod:`genni_ext.store.experiment`) replaced it, but experiments written in format 1 are
still on users' disks, so they are still read: a complete grid is loaded, listed, checked
and, when the same sweep is asked for again, returned rather than recomputed; a partial
sweep is refused with what to do (this version does not resume it); a search is loaded.
Every piece of format-1 reading is here, so that it can be dropped in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from genni_ext.errors import StoreError
from genni_ext.store.files import load_file, read_array, read_json
from genni_ext.store.manifest import check_manifest

VALUES = "values.npy"
"""A format-1 grid's J."""
MANIFEST = "manifest.json"
"""What a format-1 resumable sweep was of."""


def is_grid(folder: Path) -> bool:
    """Whether ``folder`` holds a format-1 grid (complete or partial)."""
    return (folder / VALUES).is_file() or (folder / MANIFEST).is_file()


def redo(folder: Path) -> str:
    """What repairs a format-1 grid (it cannot be resumed)."""
    return f"delete {folder} and run the sweep again (or restore the file from a backup)"


def shape(folder: Path, label: str) -> tuple[int, ...]:
    """The shape of the complete format-1 grid in ``folder``; StoreError for a partial one
    (``label``: "grid 'g' of experiment 'e'")."""
    if not (folder / "metadata.json").is_file():
        raise StoreError(
            f"{label} is a partial sweep in the store format of genni_ext before 0.2 "
            f"(chunks/*.npz), which this version does not resume; delete {folder} and run the "
            "sweep again"
        )
    info = load_file(folder / "grid.json", read_json, redo(folder))
    return tuple(int(n) for n in info["shape"])


def read_values(folder: Path) -> torch.Tensor:
    """J of the format-1 grid in ``folder`` (StoreError naming the file if unreadable)."""
    return load_file(folder / VALUES, read_array, redo(folder))


def check_sweep(folder: Path, label: str, wanted: dict[str, Any], experiment: str) -> None:
    """StoreError unless the format-1 grid in ``folder`` is a complete resumable sweep of
    what the manifest ``wanted`` pins (the same problem, subspace, grid and backend)."""
    shape(folder, label)  # raises for a partial sweep
    path = folder / MANIFEST
    if not path.is_file():
        raise StoreError(
            f"{label} was saved whole (save_grid), not by a resumable sweep; delete {folder} "
            "or use another grid name"
        )
    stored = load_file(path, read_json, redo(folder))
    keys = ("problem", "subspace", "grid", "backend")
    # The first format's chunking and fields differ; what the grid is of must not.
    check_manifest(
        {**wanted, **{key: stored.get(key) for key in keys}},
        wanted,
        experiment,
        folder.name,
        folder,
    )


def read_search_tensor(
    folder: Path, key: str, redo_search: str | Callable[[], str]
) -> torch.Tensor:
    """Tensor ``key`` of the format-1 search in ``folder`` (``<key>.npy``); StoreError naming
    the file and ``redo_search`` (a sentence, or a function that makes it) if unreadable."""
    return load_file(folder / f"{key}.npy", read_array, redo_search)


__all__ = ["check_sweep", "is_grid", "read_search_tensor", "read_values", "redo", "shape"]
