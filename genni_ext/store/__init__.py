"""The store layer: experiments on disk, checked when read.

What is here: the home and its names (``home``, ``names``), atomic files, checksums and
locks (``files``), what a sweep is of (``manifest``), the zarr arrays of grids and
searches (``zarr_grids``, ``zarr_searches``), the problem an experiment keeps (θ, probes
and targets: ``zarr_problem``), the reader of the store's first format (``format1``), the
run configuration (``config``) and the ``Experiment`` that holds them (``experiment``).

May import: ``genni_ext.core`` and below. Never the engine or the runners
(``genni_ext.run.resumable.run_sweep`` sweeps into an experiment).
"""

from __future__ import annotations

from genni_ext.errors import StoreError
from genni_ext.store.experiment import (
    Experiment,
    Finding,
    SweepStatus,
    list_experiments,
    open_grid,
    search_id,
)
from genni_ext.store.files import atomic_write, atomic_write_bytes, atomic_write_text, folder_size
from genni_ext.store.home import genni_home
from genni_ext.store.names import check_name

__all__ = [
    "Experiment",
    "Finding",
    "StoreError",
    "SweepStatus",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_name",
    "folder_size",
    "genni_home",
    "list_experiments",
    "open_grid",
    "search_id",
]
