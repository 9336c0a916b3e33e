"""The problem itself, kept in the experiment: ``<experiment>/problem.zarr``.

An experiment made since this file exists (``genni search`` on a new experiment,
``Experiment.create`` from Python) keeps θ, the probes and the targets as the arrays
``theta`` [parameter], ``probes`` [probe, ...] and ``targets`` [probe, output] of one zarr v3
group, written once and atomically (staged, then renamed into place), with their hashes and
the model's description in the group's attributes: the model spec (the config's ``model``
mapping; for a factory also the sha256 of the source file it came from), or none for a
problem made in Python without a factory. Every command and Dask worker then takes θ, the
probes and the targets from here and only the model's code from the spec, so a weights or
probes file edited or moved after the experiment was made cannot change a resumed sweep.

Loading (:func:`load`) builds the model from its spec, checks the arrays' hashes, loads θ
into the model and checks that its output on the probes at θ equals the stored targets
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


def _hashes(arrays: Mapping[str, torch.Tensor]) -> dict[str, str]:
    return {key: tensor_hash(arrays[key]) for key in ARRAYS}


def write(folder: Path, problem: Problem, model: Mapping[str, Any] | None) -> Path:
    """Write ``problem``'s θ, probes and targets to ``folder/problem.zarr`` with ``model``
    (:func:`model_record`); staged beside it and renamed into place, so a crash leaves it
    whole or absent."""
    import zarr

    arrays = {"theta": problem.theta, "probes": problem.inputs, "targets": problem.targets}
    attributes = {
        "format": FORMAT,
        "hashes": _hashes(arrays),
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
        for key, tensor in arrays.items():
            data = tensor.detach().cpu().contiguous().numpy()
            dims = ("probe", *(f"{key}_{axis}" for axis in range(1, data.ndim)))
            array = group.create_array(
                key,
                shape=data.shape,
                dtype=data.dtype,
                dimension_names=("parameter",) if key == "theta" else dims,
            )
            array[...] = data
    return target


def redo(folder: Path) -> str:
    """What repairs a damaged problem.zarr (it cannot be rebuilt from changed sources)."""
    return (
        f"restore {folder / ZARR_NAME} from a backup, or make the experiment anew under another "
        "name from the original weights and probes (its searches and grids were computed for "
        "the stored problem)"
    )


def read(folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The attributes and arrays of ``folder/problem.zarr``, every array checked against the
    hash recorded when it was written (StoreError naming what is wrong otherwise)."""
    import zarr

    path = folder / ZARR_NAME
    try:
        group = zarr.open_group(store=str(path), mode="r", zarr_format=3)
        attributes = dict(group.attrs)
        arrays = {key: torch.from_numpy(np.ascontiguousarray(group[key][...])) for key in ARRAYS}
    except Exception as error:  # zarr raises FileNotFoundError, KeyError or codec errors
        raise StoreError(
            f"{path} cannot be read ({type(error).__name__}: {error}); {redo(folder)}"
        ) from None
    recorded = attributes.get("hashes")
    if not isinstance(recorded, dict):
        raise StoreError(f"{path} holds no hashes of its arrays; {redo(folder)}")
    wrong = [key for key, value in _hashes(arrays).items() if recorded.get(key) != value]
    if wrong:
        raise StoreError(
            f"{path}: {', '.join(wrong)} do(es) not match the hash recorded when it was "
            f"written; {redo(folder)}"
        )
    return attributes, arrays


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


def check_model(
    model: nn.Module, theta: torch.Tensor, probes: torch.Tensor, targets: torch.Tensor, what: str
) -> Problem:
    """The Problem of ``model`` at ``theta`` on ``probes``, checked to give ``targets``
    (within float round-off); StoreError naming ``what`` otherwise."""
    count = num_params(model)
    if count != theta.shape[0]:
        raise StoreError(
            f"{what}: the model has {count} parameters but the stored θ has {theta.shape[0]}: "
            "the model's code changed since the experiment was made"
        )
    model = model.to(dtype=theta.dtype, device=theta.device)
    load_flat_params(model, theta)
    problem = Problem(model, inputs=probes, theta=theta)
    computed = problem.targets
    tolerance = _TOLERANCE[theta.dtype] * max(1.0, float(targets.abs().max()))
    if computed.shape != targets.shape or not bool(
        ((computed - targets.to(computed.device)).abs() <= tolerance).all()
    ):
        gap = (
            float((computed - targets.to(computed.device)).abs().max())
            if computed.shape == targets.shape
            else f"shape {list(computed.shape)} for {list(targets.shape)}"
        )
        raise StoreError(
            f"{what}: the model's output on the probes at θ is not the stored targets "
            f"(largest difference {gap}, allowed {tolerance:.3g}): the model's code changed "
            "since the experiment was made; restore it, or make a new experiment"
        )
    return problem


def load(folder: Path, name: str, device: str = "cpu") -> Problem:
    """The Problem kept in ``folder/problem.zarr`` on ``device``: see the module docstring."""
    attributes, arrays = read(folder)
    record = attributes.get("model")
    if record is None:
        raise StoreError(no_model(name))
    model = build(record, name)
    problem = check_model(
        model,
        arrays["theta"].to(device),
        arrays["probes"].to(device),
        arrays["targets"],
        f"experiment '{name}'",
    )
    problem.targets = arrays["targets"].to(device)  # the problem as stored, to the last bit
    seed = (attributes.get("problem") or {}).get("seed")
    if isinstance(seed, int):
        problem.seed = seed
    return problem


__all__ = [
    "ZARR_NAME",
    "build",
    "check",
    "check_model",
    "exists",
    "has_model",
    "load",
    "model_record",
    "no_model",
    "read",
    "redo",
    "write",
]
