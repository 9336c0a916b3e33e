"""The zarr grid store: xarray views, damage named file by file, damaged chunks recomputed,
the first store format still read."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray

import genni_ext
from genni_ext import run_sweep
from genni_ext.core.chunking import ChunkPlan
from genni_ext.core.grid import Grid
from genni_ext.core.models import mlp
from genni_ext.core.problem import Problem
from genni_ext.core.subspace import Subspace
from genni_ext.errors import StoreError
from genni_ext.run.grid_sweep import sweep_grid
from genni_ext.run.searches import search
from genni_ext.store import Experiment


@pytest.fixture(scope="module")
def case() -> tuple[Problem, Subspace]:
    torch.manual_seed(0)
    problem = Problem(mlp([5, 12, 1]), num_probes=200, seed=3)
    generator = torch.Generator().manual_seed(4)
    points = problem.theta + 0.3 * torch.randn(2, problem.num_params, generator=generator)
    return problem, Subspace.from_points(problem.theta, points)


def _swept(tmp_path: Path, case: tuple[Problem, Subspace], name: str = "g") -> Experiment:
    problem, subspace = case
    experiment = Experiment("z", tmp_path)
    grid = Grid.from_axes([torch.linspace(-1.0, 2.0, 6), torch.linspace(-0.5, 0.5, 5)])
    run_sweep(experiment, problem, subspace, grid, name, chunk_points=10, progress=False)
    return experiment


def test_chunk_plan_takes_whole_rows_of_the_first_axis() -> None:
    plan = ChunkPlan.for_grid((6, 5), 7)
    assert (plan.chunk_points, plan.num_chunks, plan.array_chunks) == (10, 3, (2, 5))
    assert [plan.bounds(i) for i in range(3)] == [(0, 10), (10, 20), (20, 30)]
    assert plan.slabs(2) == slice(4, 6)
    assert ChunkPlan.for_grid((7,), 3).bounds(2) == (6, 7)
    assert ChunkPlan.for_grid((4, 3), 1000).num_chunks == 1
    with pytest.raises(IndexError):
        plan.bounds(3)


def test_zarr_grid_reads_as_xarray(tmp_path: Path, case: tuple[Problem, Subspace]) -> None:
    experiment = _swept(tmp_path, case)
    result = experiment.load_grid("g")
    folder = experiment.grid_dir("g")
    opened = xarray.open_zarr(folder / "grid.zarr")["J"]
    assert opened.dims == ("c1", "c2")
    assert opened.chunks == ((2, 2, 2), (5,))  # the sweep's chunks of 10 points
    for index, axis in enumerate(result.grid.axes or ()):
        np.testing.assert_array_equal(opened.coords[f"c{index + 1}"].values, axis.numpy())
    np.testing.assert_array_equal(opened.values, result.values.numpy())
    view = genni_ext.open_grid("z", "g", home=tmp_path)
    assert view.attrs["genni_metadata"] == result.metadata
    np.testing.assert_array_equal(view.values, result.values.numpy())
    in_memory = result.to_xarray()
    assert in_memory.dims == ("c1", "c2") and in_memory.name == "J"
    assert float(in_memory.sel(c1=2.0, c2=0.5)) == float(result.values[-1, -1])
    manifest = opened.attrs["genni_manifest"]
    assert manifest["problem"]["theta_hash"] == case[0].theta_hash
    assert manifest["chunk_points"] == 10


def test_coefficient_list_grids_use_a_point_dimension(
    tmp_path: Path, case: tuple[Problem, Subspace]
) -> None:
    problem, subspace = case
    listed = Grid.from_coeffs(torch.tensor([[0.0, 0.0], [0.5, -0.25], [1.0, 1.0]]))
    result = sweep_grid(problem, subspace, listed)
    experiment = Experiment("z", tmp_path)
    experiment.save_grid(result, "points")
    view = experiment.open_grid("points")
    assert view.dims == ("point",)
    np.testing.assert_array_equal(view.coords["c2"].values, [0.0, -0.25, 1.0])
    assert experiment.load_grid("points").equals(result)


def _chunk_file(experiment: Experiment, index: int) -> Path:
    return experiment.grid_dir("g") / "grid.zarr" / "J" / "c" / str(index) / "0"


def _damage_cases() -> list[tuple[str, str]]:
    return [
        ("delete chunk", r"chunk 1 .*cannot be read|chunk 1 of J .* does not match"),
        ("truncate chunk", r"chunk 1 .*cannot be read"),
        ("garbage record", r"chunk 1's record .* not valid JSON"),
        ("delete coeffs", r"coeffs\.npy is missing"),
        ("garbage grid.json", r"grid\.json does not match the checksum"),
        ("garbage metadata", r"metadata\.json does not match the checksum"),
        ("garbage markers", r"markers\.json does not match the checksum"),
        ("garbage manifest", r"J/zarr\.json does not match the checksum"),
    ]


def _damage(experiment: Experiment, kind: str) -> None:
    folder = experiment.grid_dir("g")
    if kind == "delete chunk":
        _chunk_file(experiment, 1).unlink()
    elif kind == "truncate chunk":
        path = _chunk_file(experiment, 1)
        path.write_bytes(path.read_bytes()[:-7])
    elif kind == "garbage record":
        (folder / "done" / "1.json").write_text("{not json")
    elif kind == "delete coeffs":
        (folder / "coeffs.npy").unlink()
    elif kind == "garbage grid.json":
        (folder / "grid.json").write_text("]]")
    elif kind == "garbage metadata":
        (folder / "metadata.json").write_bytes(b"\x00\x01 not json")
    elif kind == "garbage markers":
        (folder / "markers.json").write_text("{")
    elif kind == "garbage manifest":
        (folder / "grid.zarr" / "J" / "zarr.json").write_text("garbage")


@pytest.mark.parametrize(("kind", "message"), _damage_cases(), ids=[k for k, _ in _damage_cases()])
def test_damage_is_named_and_checked(
    kind: str, message: str, tmp_path: Path, case: tuple[Problem, Subspace]
) -> None:
    experiment = _swept(tmp_path, case)
    assert experiment.check_grid("g") == []
    _damage(experiment, kind)
    with pytest.raises(StoreError, match=message):
        experiment.load_grid("g")
    problems = experiment.check_grid("g")
    assert problems and any(re.search(message, text) for text in problems), problems


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind",
    ["delete chunk", "truncate chunk", "garbage record", "delete coeffs", "garbage metadata"],
)
def test_a_sweep_recomputes_damaged_chunks(
    kind: str, tmp_path: Path, case: tuple[Problem, Subspace]
) -> None:
    experiment = _swept(tmp_path, case)
    before = experiment.load_grid("g")
    _damage(experiment, kind)
    problem, subspace = case
    again = run_sweep(
        experiment, problem, subspace, before.grid, "g", chunk_points=10, progress=False
    )
    assert experiment.chunks_computed == (1 if "chunk" in kind or "record" in kind else 0)
    assert torch.equal(again.values, before.values)
    assert torch.equal(experiment.load_grid("g").values, before.values)
    assert experiment.check_grid("g") == []


def test_damaged_searches_and_configs_are_named(
    tmp_path: Path, case: tuple[Problem, Subspace]
) -> None:
    problem, _subspace = case
    experiment = Experiment("s", tmp_path)
    result = search(problem, 2, steps=3, lr=0.01, batch_size=50, seed=1, progress=False)
    experiment.save_search(result, problem=problem)
    view = experiment.open_search()
    assert view["params"].dims == ("start", "parameter")
    assert view["history"].dims == ("start", "record")
    np.testing.assert_array_equal(view["losses"].values, result.losses.numpy())
    shutil.rmtree(experiment.search_dir() / "search.zarr" / "params")
    with pytest.raises(StoreError, match=r"params/zarr\.json is missing.*genni search"):
        experiment.load_search()
    (experiment.search_dir() / "metadata.json").write_text("[1, 2]")
    with pytest.raises(StoreError, match=r"metadata\.json does not match the checksum"):
        experiment.load_search()
    (experiment.search_dir() / "checksums.json").unlink()  # no record: the file is read
    with pytest.raises(StoreError, match=r"metadata\.json is not a search's metadata"):
        experiment.load_search()
    experiment.config_path.parent.mkdir(parents=True, exist_ok=True)
    experiment.config_path.write_text("model: [unclosed")
    with pytest.raises(StoreError, match=r"config\.yml cannot be read"):
        experiment.load_config()


def _first_format(experiment: Experiment, result: genni_ext.GridResult) -> Path:
    """``result`` written as the store's first format did (values.npy, no zarr)."""
    folder = experiment.grid_dir("old")
    folder.mkdir(parents=True)
    grid = result.grid
    np.save(folder / "coeffs.npy", grid.coeffs.numpy())
    for index, axis in enumerate(grid.axes or ()):
        np.save(folder / f"axis_{index}.npy", axis.numpy())
    (folder / "grid.json").write_text(json.dumps({"shape": list(grid.shape), "num_axes": 2}))
    np.save(folder / "values.npy", result.values.numpy())
    markers = [
        {"name": m.name, "coords": m.coords.tolist(), "loss": m.loss} for m in result.markers
    ]
    (folder / "markers.json").write_text(json.dumps(markers))
    (folder / "metadata.json").write_text(json.dumps(result.metadata))
    return folder


def test_first_format_grids_are_read_and_partial_ones_refused(
    tmp_path: Path, case: tuple[Problem, Subspace]
) -> None:
    experiment = _swept(tmp_path, case)
    result = experiment.load_grid("g")
    folder = _first_format(experiment, result)
    assert experiment.load_grid("old").equals(result)
    assert experiment.open_grid("old").dims == ("c1", "c2")
    assert experiment.check_grid("old") == []
    (folder / "metadata.json").unlink()
    (folder / "manifest.json").write_text("{}")
    with pytest.raises(StoreError, match=r"format of genni_ext before 0\.2.*delete"):
        experiment.sweep_status("old")
    problem, subspace = case
    with pytest.raises(StoreError, match=r"does not resume"):
        run_sweep(experiment, problem, subspace, result.grid, "old", progress=False)
    shutil.rmtree(folder)


def test_a_complete_first_format_sweep_is_returned_not_recomputed(
    tmp_path: Path, case: tuple[Problem, Subspace]
) -> None:
    problem, subspace = case
    experiment = _swept(tmp_path, case)
    result = experiment.load_grid("g")
    folder = _first_format(experiment, result)
    manifest = dict(xarray.open_zarr(experiment.grid_dir("g") / "grid.zarr")["J"].attrs)
    (folder / "manifest.json").write_text(json.dumps(manifest["genni_manifest"]))
    again = run_sweep(experiment, problem, subspace, result.grid, "old", progress=False)
    assert experiment.chunks_computed == 0 and again.equals(result)
    other = Subspace.from_points(subspace.center, subspace.points.flip(0))
    with pytest.raises(StoreError, match="subspace differs"):
        run_sweep(experiment, problem, other, result.grid, "old", progress=False)


def test_first_format_searches_are_read(tmp_path: Path, case: tuple[Problem, Subspace]) -> None:
    problem, _subspace = case
    experiment = Experiment("s1", tmp_path)
    result = search(problem, 2, steps=3, lr=0.01, batch_size=50, seed=1, progress=False)
    folder = experiment.save_search(result, problem=problem)
    # As the first format wrote it: one .npy file per tensor, no zarr, no checksums.
    metadata = json.loads((folder / "metadata.json").read_text())
    for key in metadata["tensors"]:
        np.save(folder / f"{key}.npy", getattr(result, key).numpy())
    shutil.rmtree(folder / "search.zarr")
    (folder / "checksums.json").unlink()
    del metadata["checksums"]
    (folder / "metadata.json").write_text(json.dumps(metadata))
    loaded = experiment.load_search()
    assert all(
        torch.equal(getattr(loaded, key), getattr(result, key)) for key in metadata["tensors"]
    )
    with pytest.raises(StoreError, match="first store format"):
        experiment.open_search()
    (folder / "losses.npy").write_bytes(b"not an array")
    with pytest.raises(StoreError, match=r"losses\.npy cannot be read"):
        experiment.load_search()
