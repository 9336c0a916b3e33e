"""What a resumable sweep is of, pinned in its manifest: every key must match to resume.

The manifest records the problem (model, sizes, dtype, hashes of θ, the probes and the
targets), the subspace and the grid (hashes), the engine, precision and device, and the
chunking; :func:`check_manifest` names every difference between the grid on disk and the
sweep asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from genni_ext._validate import device_label
from genni_ext.errors import StoreError
from genni_ext.store.files import CHECKSUMS, tensor_hash

if TYPE_CHECKING:
    from genni_ext.core.chunking import ChunkPlan
    from genni_ext.core.grid import Grid
    from genni_ext.core.problem import Problem
    from genni_ext.core.subspace import Subspace

FORMAT = 2  # 2: grids as zarr (grid.zarr, done/); 1: values.npy and chunks/*.npz


def sweep_manifest(
    problem: Problem,
    subspace: Subspace,
    grid: Grid,
    backend: str,
    plan: ChunkPlan,
    precision: str,
) -> dict[str, Any]:
    """What a resumable sweep is of: the keys check_manifest names must match to resume
    ("created", "checksums" and the "search" the sweep records beside them need not)."""
    description = problem.describe()
    return {
        "format": FORMAT,
        "kind": "resumable sweep",
        "problem": {
            "model": description["model"],
            "repr": description["repr"],
            "num_params": problem.num_params,
            "num_probes": problem.num_probes,
            "dtype": description["dtype"],
            "theta_hash": problem.theta_hash,
            "probes_hash": problem.probes_hash,
            "targets_hash": tensor_hash(problem.targets),
        },
        "subspace": {
            "m": subspace.dim,
            "hash": tensor_hash(subspace.center, subspace.basis, subspace.points),
        },
        "grid": {
            "shape": list(grid.shape),
            "size": grid.size,
            "hash": tensor_hash(grid.coeffs, *(grid.axes or ())),
        },
        "backend": backend,
        "precision": precision,
        "device": device_label(problem.inputs.device),
        "chunk_points": plan.chunk_points,
        "num_chunks": plan.num_chunks,
        # Every other file of the grid has its checksum there (so its absence is damage).
        "checksums": CHECKSUMS,
    }


def check_manifest(
    stored: dict[str, Any], wanted: dict[str, Any], experiment: str, name: str, folder: Path
) -> None:
    """StoreError naming what differs between a grid on disk and the sweep asked for."""
    labels = {
        "problem": "problem (model, θ, probes or dtype)",
        "subspace": "subspace",
        "grid": "grid",
        "backend": "backend",
        "precision": "precision",
        "device": "device (J on another kind of device differs in its last bits, so the "
        "chunks would not join into the grid an uninterrupted run gives)",
        "chunk_points": "chunk_points",
        "format": "store format",
    }
    differences = []
    for key, label in labels.items():
        # Grids started before the store recorded devices and precisions were all computed
        # on the CPU in full precision.
        on_disk = stored.get(key, {"device": "cpu", "precision": "full"}.get(key))
        if on_disk != wanted.get(key):
            if key in ("backend", "precision", "device", "chunk_points", "format"):
                differences.append(f"{label}: on disk {on_disk!r}, now {wanted.get(key)!r}")
            elif key == "problem":
                parts = [
                    f"{field} {stored[key].get(field)!r} != {value!r}"
                    for field, value in wanted[key].items()
                    if stored[key].get(field) != value and field != "repr"
                ] or ["model architecture differs"]
                differences.append(f"{label}: {'; '.join(parts)}")
            else:
                differences.append(f"{label} differs")
    if differences:
        raise StoreError(
            f"grid '{name}' of experiment '{experiment}' was started with other inputs, so it "
            f"cannot be resumed: {'; '.join(differences)}. Run it with the inputs it was "
            f"started with, use another grid name, or delete {folder} to start over"
        )
