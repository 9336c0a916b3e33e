"""The problem itself, kept in the experiment: ``<experiment>/problem.zarr``.

An experiment made since this file exists (``genni search`` on a new experiment,
``Experiment.create`` from Python) keeps θ, the probes and the targets as the arrays
``theta`` [parameter], ``probes`` [probe, ...] and ``targets`` [probe, output] of one zarr v3
group, with the model's buffers (state that is not in θ, such as BatchNorm's running
statistics from the trained weights) as the arrays of its subgroup ``buffers``; written
once and atomically (staged, then renamed into place), with their hashes and the model's
description in the group's attributes: the model spec (the config's ``model``
mapping; for a factory also the sha256 of the source file it came from), or none for a
problem made in Python without a factory. Every command and Dask worker then takes θ, the
probes and the targets from here and only the model's code from the spec, so a weights or
probes file edited or moved after the experiment was made cannot change a resumed sweep.

Loading (:func:`load`) builds the model from its spec, checks the arrays' hashes, loads the
buffers and θ into the model and checks that its output on the probes at θ equals the stored targets
(within float round-off): a model whose code changed since is refused with a StoreError
that says so. A factory source file that changed is logged as a warning (the stored arrays
are still used). An experiment without ``problem.zarr`` (made before it) rebuilds its
problem from ``config.yml`` as before.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from genni_ext.core.factories import describe_factory
from genni_ext.core.models import load_flat_params, num_params
from genni_ext.core.problem import Problem
from genni_ext.errors import InputError, StoreError
from genni_ext.store.config import build_model
from genni_ext.store.files import now, package_version, room_for, staged_folder, tensor_hash

log = logging.getLogger("genni_ext.store")

ZARR_NAME = "problem.zarr"
FORMAT = 1
"""The layout of problem.zarr (arrays and attributes as the module docstring says)."""
ARRAYS = ("theta", "probes", "targets")
BUFFERS = "buffers"
"""The subgroup of the model's buffers, one array each, named as ``named_buffers`` names them."""
_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-10}
"""Relative difference (to the largest target) allowed between the stored targets and the
model's output at θ: float round-off of another thread count or library, not a changed model."""


def exists(folder: Path) -> bool:
    """Whether the experiment folder ``folder`` keeps its problem (problem.zarr)."""
    return (folder / ZARR_NAME).exists()


def model_record(spec: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The model's description kept in problem.zarr: the config's ``model`` mapping and, for
    a factory, the path and sha256 of the source file it came from (None: no model spec)."""
    if spec is None:
        return None
    record: dict[str, Any] = {"spec": copy.deepcopy(dict(spec))}
    if "factory" in spec:
        described = describe_factory(spec["factory"], spec.get("kwargs"))
        record["source"] = described["source"]
        record["source_sha256"] = described["source_sha256"]
    return record


@dataclass(frozen=True)
class Stored:
    """What problem.zarr holds: its attributes, ``arrays`` (theta, probes, targets) and the
    model's ``buffers``."""

    attributes: dict[str, Any]
    arrays: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]

    def hashes(self) -> dict[str, Any]:
        """The hash of every array and buffer, as the attributes record them."""
        hashes: dict[str, Any] = {key: tensor_hash(self.arrays[key]) for key in ARRAYS}
        hashes[BUFFERS] = {name: tensor_hash(value) for name, value in self.buffers.items()}
        return hashes


def of_problem(problem: Problem) -> Stored:
    """What problem.zarr keeps of ``problem`` (its attributes still to be filled in)."""
    arrays = {"theta": problem.theta, "probes": problem.inputs, "targets": problem.targets}
    return Stored({}, arrays, dict(problem.model.named_buffers()))


def _store_array(group: Any, key: str, tensor: torch.Tensor, dims: tuple[str, ...]) -> None:
    data = tensor.detach().cpu().contiguous().numpy()
    array = group.create_array(key, shape=data.shape, dtype=data.dtype, dimension_names=dims)
    array[...] = data


def _tensor(array: Any) -> torch.Tensor:
    # np.array, not np.ascontiguousarray: that makes a 0-d buffer (num_batches_tracked) 1-d.
    return torch.from_numpy(np.array(array[...], order="C"))


def write(folder: Path, problem: Problem, model: Mapping[str, Any] | None) -> Path:
    """Write ``problem``'s θ, probes and targets to ``folder/problem.zarr`` with ``model``
    (:func:`model_record`); staged beside it and renamed into place, so a crash leaves it
    whole or absent."""
    import zarr

    stored = of_problem(problem)
    attributes = {
        "format": FORMAT,
        "hashes": stored.hashes(),
        "theta_hash": problem.theta_hash,
        "probes_hash": problem.probes_hash,
        "model": None if model is None else dict(model),
        "problem": problem.describe(),
        "version": package_version(),
        "created": now(),
    }
    try:
        json.dumps(attributes)
    except (TypeError, ValueError) as error:
        raise InputError(f"the model's kwargs must be JSON-able to be stored: {error}") from None
    target = folder / ZARR_NAME
    with room_for(target), staged_folder(target) as staging:
        group = zarr.open_group(store=str(staging), mode="w", zarr_format=3, attributes=attributes)
        for key, tensor in stored.arrays.items():
            dims = ("probe", *(f"{key}_{axis}" for axis in range(1, tensor.ndim)))
            _store_array(group, key, tensor, ("parameter",) if key == "theta" else dims)
        inner = group.create_group(BUFFERS)
        for name, buffer in stored.buffers.items():
            _store_array(inner, name, buffer, tuple(f"{name}_{i}" for i in range(buffer.ndim)))
    return target


def redo(folder: Path) -> str:
    """What repairs a damaged problem.zarr (it cannot be rebuilt from changed sources)."""
    return (
        f"restore {folder / ZARR_NAME} from a backup, or make the experiment anew under another "
        "name from the original weights and probes (its searches and grids were computed for "
        "the stored problem)"
    )


def read(folder: Path) -> Stored:
    """What ``folder/problem.zarr`` holds, every array and buffer checked against the hash
    recorded when it was written (StoreError naming what is wrong otherwise)."""
    import zarr

    path = folder / ZARR_NAME
    try:
        group = zarr.open_group(store=str(path), mode="r", zarr_format=3)
        attributes = dict(group.attrs)
        recorded = attributes.get("hashes")
        names = recorded.get(BUFFERS, {}) if isinstance(recorded, dict) else {}
        stored = Stored(
            attributes,
            {key: _tensor(group[key]) for key in ARRAYS},
            {name: _tensor(group[f"{BUFFERS}/{name}"]) for name in names},
        )
    except Exception as error:  # zarr raises FileNotFoundError, KeyError or codec errors
        raise StoreError(
            f"{path} cannot be read ({type(error).__name__}: {error}); {redo(folder)}"
        ) from None
    if not isinstance(recorded, dict):
        raise StoreError(f"{path} holds no hashes of its arrays; {redo(folder)}")
    wrong = [key for key, value in stored.hashes().items() if recorded.get(key) != value]
    if wrong:
        raise StoreError(
            f"{path}: {', '.join(wrong)} do(es) not match the hash recorded when it was "
            f"written; {redo(folder)}"
        )
    return stored


def check(folder: Path) -> list[str]:
    """Every problem with ``folder/problem.zarr`` (one sentence; empty: as written)."""
    try:
        read(folder)
    except StoreError as error:
        return [str(error)]
    return []


def has_model(folder: Path) -> bool:
    """False only when ``folder/problem.zarr`` says it was kept without a model spec."""
    import zarr

    try:
        group = zarr.open_group(store=str(folder / ZARR_NAME), mode="r", zarr_format=3)
        return dict(group.attrs).get("model") is not None
    except Exception:  # unreadable: loading it says what is wrong
        return True


def no_model(name: str) -> str:
    """What a command that needs the model says of an experiment kept without one."""
    return (
        f"experiment '{name}' has no model factory: it was made from Python "
        "(Experiment.create) without model_spec, so only its stored arrays can be read "
        "(listed, plotted, and analysed where that needs no model). Make it again with "
        'model_spec="package.module:function" or "path/to/file.py:function" to search, sweep '
        "or analyse it"
    )


def build(record: Mapping[str, Any], name: str) -> nn.Module:
    """The model the record's spec describes (a factory's module imported here), with a
    warning if the factory's source file changed since the record was made."""
    spec = record["spec"]
    if "factory" in spec:
        source, stored = record.get("source"), record.get("source_sha256")
        if source is not None and stored is not None and Path(source).is_file():
            current = hashlib.sha256(Path(source).read_bytes()).hexdigest()
            if current != stored:
                log.warning(
                    "the source of experiment '%s''s model factory %s (%s) changed since the "
                    "experiment was made (sha256 %s then, %s now); its stored θ, probes and "
                    "targets are used, and the model's output at θ is checked against them",
                    name,
                    spec["factory"],
                    source,
                    stored[:12],
                    current[:12],
                )
    try:
        return build_model({"model": spec, "seed": 0})
    except InputError as error:
        if "factory" not in spec:
            raise
        raise StoreError(
            f"the model factory {spec['factory']!r} of experiment '{name}' cannot be built "
            f"here ({error}); this process (a Dask worker too) needs the model's code on its "
            "path: install the package that defines it, or put its file where the experiment "
            "was made with it. θ, the probes and the targets come from the store"
        ) from None


def _changed(what: str, detail: str) -> StoreError:
    return StoreError(
        f"{what}: {detail}: the model's code changed since the experiment was made; restore "
        "it, or make a new experiment"
    )


def check_model(model: nn.Module, stored: Stored, what: str, device: str = "cpu") -> Problem:
    """The Problem of ``model`` with the ``stored`` buffers and θ, on the stored probes on
    ``device``, checked to give the stored targets (within float round-off); StoreError
    naming ``what`` otherwise."""
    theta, probes, targets = (stored.arrays[key].to(device) for key in ARRAYS)
    buffers = dict(model.named_buffers())
    if sorted(buffers) != sorted(stored.buffers):
        raise _changed(what, f"its buffers {sorted(buffers)} are not {sorted(stored.buffers)}")
    count = num_params(model)
    if count != theta.shape[0]:
        raise _changed(what, f"it has {count} parameters but θ has {theta.shape[0]}")
    with torch.no_grad():
        for name, buffer in buffers.items():
            if buffer.shape != stored.buffers[name].shape:
                raise _changed(what, f"its buffer {name} is not of shape {list(buffer.shape)}")
            buffer.copy_(stored.buffers[name])
    model = model.to(dtype=theta.dtype, device=theta.device)
    load_flat_params(model, theta)
    problem = Problem(model, inputs=probes, theta=theta)
    computed = problem.targets
    if computed.shape != targets.shape:
        raise _changed(
            what, f"its output has shape {list(computed.shape)}, not {list(targets.shape)}"
        )
    tolerance = _TOLERANCE[theta.dtype] * max(1.0, float(targets.abs().max()))
    gap = float((computed - targets).abs().max())
    if not gap <= tolerance:
        raise _changed(
            what,
            f"its output on the probes at θ is not the stored targets (largest difference "
            f"{gap:.3g}, allowed {tolerance:.3g})",
        )
    return problem


def load(folder: Path, name: str, device: str = "cpu") -> Problem:
    """The Problem kept in ``folder/problem.zarr`` on ``device``: see the module docstring."""
    stored = read(folder)
    record = stored.attributes.get("model")
    if record is None:
        raise StoreError(no_model(name))
    problem = check_model(build(record, name), stored, f"experiment '{name}'", device)
    problem.targets = stored.arrays["targets"].to(device)  # as stored, to the last bit
    seed = (stored.attributes.get("problem") or {}).get("seed")
    if isinstance(seed, int):
        problem.seed = seed
    return problem


__all__ = [
    "ZARR_NAME",
    "Stored",
    "build",
    "check",
    "check_model",
    "exists",
    "has_model",
    "load",
    "model_record",
    "no_model",
    "of_problem",
    "read",
    "redo",
    "write",
]
