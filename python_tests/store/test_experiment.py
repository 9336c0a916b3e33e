"""The experiment store: home resolution, atomic writes, round trips, resumable sweeps."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from genni_ext import run_sweep
from genni_ext.core.grid import Grid
from genni_ext.core.models import TwoNeuronNet, mlp
from genni_ext.core.problem import Problem
from genni_ext.core.subspace import Subspace
from genni_ext.errors import InputError
from genni_ext.run import chunk_runs
from genni_ext.run.grid_sweep import sweep_grid
from genni_ext.run.searches import search
from genni_ext.store import (
    Experiment,
    StoreError,
    atomic_write,
    atomic_write_text,
    genni_home,
    list_experiments,
    zarr_grids,
)
from genni_ext.store.files import Checksums, write_checksums

_RUN_DECIDED = chunk_runs.run_decided


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _temporaries(root: Path) -> list[str]:
    return [name for name in _files(root) if Path(name).name.endswith((".tmp", ".old"))]


@pytest.fixture(scope="module")
def two_neuron() -> tuple[Problem, object]:
    """A small TwoNeuronNet problem and a search on it."""
    torch.manual_seed(10)
    problem = Problem(TwoNeuronNet(), num_probes=512, seed=10)
    result = search(problem, 6, steps=150, lr=0.05, batch_size=128, seed=11, progress=False)
    return problem, result


@pytest.fixture(scope="module")
def mlp_case() -> tuple[Problem, Subspace]:
    """An MLP problem (fused engine) and a random plane through θ."""
    torch.manual_seed(0)
    problem = Problem(mlp([6, 16, 1]), num_probes=300, seed=1)
    generator = torch.Generator().manual_seed(2)
    points = problem.theta + 0.3 * torch.randn(2, problem.num_params, generator=generator)
    return problem, Subspace.from_points(problem.theta, points)


# --- home -----------------------------------------------------------------------------------


def test_home_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "genni.yml").write_text("genni_home: from_file\n")
    monkeypatch.setenv("GENNI_HOME", str(tmp_path / "env_home"))
    assert genni_home(tmp_path) == tmp_path / "env_home"
    monkeypatch.setenv("GENNI_HOME", "relative")
    assert genni_home(tmp_path) == tmp_path / "relative"


def test_home_from_genni_yml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GENNI_HOME", raising=False)
    (tmp_path / "genni.yml").write_text("genni_home: ../homes/mine\n")
    assert genni_home(tmp_path) == (tmp_path / "../homes/mine").absolute()
    (tmp_path / "genni.yml").write_text(f"genni_home: {tmp_path / 'abs'}\n")
    assert genni_home(tmp_path) == tmp_path / "abs"
    monkeypatch.setenv("GENNI_HOME", "")  # empty: unset
    assert genni_home(tmp_path) == tmp_path / "abs"
    monkeypatch.chdir(tmp_path)
    assert genni_home() == tmp_path / "abs"


def test_home_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GENNI_HOME", raising=False)
    assert genni_home(tmp_path) == tmp_path / "genni_home"
    (tmp_path / "genni.yml").write_text("# no genni_home: the default\n")
    assert genni_home(tmp_path) == tmp_path / "genni_home"
    (tmp_path / "genni.yml").write_text("genni_hom: elsewhere\n")  # a typo is refused
    with pytest.raises(InputError, match="unknown key"):
        genni_home(tmp_path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("genni_home: [1, 2\n", "not valid YAML"),
        ("- a\n", "mapping"),
        ("genni_home: 3\n", "genni_home"),
    ],
)
def test_home_bad_genni_yml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, expected: str
) -> None:
    monkeypatch.delenv("GENNI_HOME", raising=False)
    (tmp_path / "genni.yml").write_text(text)
    with pytest.raises(InputError, match=expected):
        genni_home(tmp_path)


# --- names and atomic writes ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "  ", "a/b", "a\\b", ".", "..", ".hidden", "x\ny", "x" * 256])
def test_bad_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(InputError, match="experiment name"):
        Experiment(name, tmp_path)
    experiment = Experiment("ok", tmp_path)
    with pytest.raises(InputError, match="grid name"):
        experiment.grid_dir(name)
    with pytest.raises(InputError, match="search name"):
        experiment.search_dir(name)
    assert _files(tmp_path) == []


def test_atomic_write(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.txt"
    atomic_write_text(target, "first")
    assert target.read_text() == "first"
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert _files(tmp_path) == ["sub/file.txt"]


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    def fail(handle: object) -> None:
        handle.write(b"partial")  # type: ignore[attr-defined]
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(tmp_path / "new.bin", fail)
    assert _files(tmp_path) == []
    atomic_write_text(tmp_path / "old.txt", "kept")
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(tmp_path / "old.txt", fail)
    assert (tmp_path / "old.txt").read_text() == "kept"
    assert _files(tmp_path) == ["old.txt"]


def test_failed_search_save_leaves_old_search(
    tmp_path: Path, two_neuron: tuple[Problem, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    problem, result = two_neuron
    experiment = Experiment("e", tmp_path)
    experiment.save_search(result, problem=problem)
    before = {name: (tmp_path / name).read_bytes() for name in _files(tmp_path)}

    import genni_ext.store.zarr_searches as search_store

    def failing(folder: Path, tensors: dict[str, torch.Tensor]) -> None:
        original(folder, dict(list(tensors.items())[:2]))  # some arrays written, then:
        raise OSError("no space left")

    original = search_store.write
    monkeypatch.setattr(search_store, "write", failing)
    with pytest.raises(OSError, match="no space"):
        experiment.save_search(result, problem=problem)
    assert {name: (tmp_path / name).read_bytes() for name in _files(tmp_path)} == before


# --- round trips ----------------------------------------------------------------------------


def test_search_round_trip(tmp_path: Path, two_neuron: tuple[Problem, object]) -> None:
    problem, result = two_neuron
    experiment = Experiment("roundtrip", tmp_path)
    assert not experiment.exists
    path = experiment.save_search(result, "first", problem=problem)
    assert path == tmp_path / "experiments" / "roundtrip" / "searches" / "first"
    loaded = experiment.load_search("first")
    for field in ("params", "losses", "history", "history_steps", "starts"):
        original, back = getattr(result, field), getattr(loaded, field)
        assert back.dtype == original.dtype, field
        assert torch.equal(back, original), field
    assert loaded.seeds == result.seeds
    assert loaded.config == result.config
    assert torch.equal(loaded.converged(0.0025), result.converged(0.0025))
    assert experiment.search_metadata("first")["problem"] == problem.describe()
    assert experiment.searches() == ["first"]
    # Saving again replaces it whole.
    experiment.save_search(result, "first", problem=problem)
    assert experiment.searches() == ["first"]
    assert _temporaries(tmp_path) == []
    with pytest.raises(StoreError, match="no search 'other'"):
        experiment.load_search("other")


def test_config_round_trip(tmp_path: Path) -> None:
    experiment = Experiment("cfg", tmp_path)
    config = {"experiment": "cfg", "model": {"name": "mlp", "sizes": [2, 3]}, "tol": None}
    experiment.save_config(config)
    assert experiment.load_config() == config
    with pytest.raises(StoreError, match=r"no config\.yml"):
        Experiment("none", tmp_path).load_config()


def test_grid_round_trip(tmp_path: Path, mlp_case: tuple[Problem, Subspace]) -> None:
    problem, subspace = mlp_case
    experiment = Experiment("grids", tmp_path)
    grid = Grid.uniform((-1.0, 1.0), 7, 2)
    expected = sweep_grid(problem, subspace, grid)
    experiment.save_grid(expected, "whole", subspace=subspace)
    loaded = experiment.load_grid("whole")
    assert loaded.equals(expected)
    assert experiment.load_subspace("whole").equals(subspace)
    origin = dataclasses.replace(subspace, theta_hash="t" * 16, probes_hash="p" * 16)
    experiment.save_grid(expected, "known", subspace=origin)
    loaded = experiment.load_subspace("known")
    assert (loaded.theta_hash, loaded.probes_hash) == ("t" * 16, "p" * 16)

    listed = Grid.from_coeffs(torch.tensor([[0.0, 0.0], [0.5, -0.25], [1.0, 1.0]]))
    points = sweep_grid(problem, subspace, listed)
    experiment.save_grid(points, "points")
    assert experiment.load_grid("points").equals(points)
    assert experiment.load_grid("points").axes is None
    with pytest.raises(StoreError, match="without its subspace"):
        experiment.load_subspace("points")

    swept = run_sweep(
        experiment, problem, subspace, grid, "chunked", chunk_points=10, progress=False
    )
    assert torch.equal(swept.values, expected.values)  # bitwise: the fused CPU engine
    assert swept.markers == expected.markers
    assert swept.equals(experiment.load_grid("chunked"))
    assert experiment.load_subspace("chunked").equals(subspace)
    assert experiment.grids() == ["chunked", "known", "points", "whole"]
    status = experiment.sweep_status("chunked")
    # 10 points a chunk rounded up to whole rows of the 7x7 grid: 14, so 4 chunks.
    assert (status.complete, status.chunks_done, status.num_chunks) == (True, 4, 4)
    assert swept.metadata["store"]["chunk_points"] == 14
    assert _temporaries(tmp_path) == []
    assert [e.name for e in list_experiments(tmp_path)] == ["grids"]


# --- the resumable sweep --------------------------------------------------------------------


class _Interrupt(Exception):
    pass


def _counting_sweep(monkeypatch: pytest.MonkeyPatch, stop_after: int | None) -> list[int]:
    """Patch run_decided where the chunk runner calls it (once per chunk) to count calls
    (grid points each) and raise after ``stop_after`` calls."""
    calls: list[int] = []

    def counted(*args: object, **kwargs: object) -> torch.Tensor:
        if stop_after is not None and len(calls) == stop_after:
            raise _Interrupt
        calls.append(args[4].shape[0])  # type: ignore[attr-defined]
        return _RUN_DECIDED(*args, **kwargs)

    monkeypatch.setattr(chunk_runs, "run_decided", counted)
    return calls


def test_sweep_resumes_missing_chunks_only(
    tmp_path: Path, mlp_case: tuple[Problem, Subspace], monkeypatch: pytest.MonkeyPatch
) -> None:
    problem, subspace = mlp_case
    grid = Grid.uniform((-2.0, 2.0), 9, 2)  # 81 points, chunks of 18 (2 rows): 5 chunks
    experiment = Experiment("resume", tmp_path)

    calls = _counting_sweep(monkeypatch, stop_after=2)
    with pytest.raises(_Interrupt):
        run_sweep(experiment, problem, subspace, grid, "g", chunk_points=18, progress=False)
    status = experiment.sweep_status("g")
    assert (status.complete, status.chunks_done, status.num_chunks) == (False, 2, 5)
    with pytest.raises(StoreError, match="partial"):
        experiment.load_grid("g")

    calls = _counting_sweep(monkeypatch, stop_after=None)
    result = run_sweep(experiment, problem, subspace, grid, "g", chunk_points=18, progress=True)
    assert calls == [18, 18, 9]  # the three missing chunks, the last one short
    assert experiment.chunks_computed == 3
    assert torch.equal(result.values, sweep_grid(problem, subspace, grid).values)

    # Finished: a further call computes nothing and returns the same result.
    calls = _counting_sweep(monkeypatch, stop_after=None)
    again = run_sweep(experiment, problem, subspace, grid, "g", chunk_points=18, progress=False)
    assert calls == [] and experiment.chunks_computed == 0
    assert again.equals(result)
    assert _temporaries(tmp_path) == []


def test_sweep_refuses_other_inputs(
    tmp_path: Path, mlp_case: tuple[Problem, Subspace], monkeypatch: pytest.MonkeyPatch
) -> None:
    problem, subspace = mlp_case
    grid = Grid.uniform((-2.0, 2.0), 6, 2)
    experiment = Experiment("refuse", tmp_path)
    _counting_sweep(monkeypatch, stop_after=2)
    with pytest.raises(_Interrupt):
        run_sweep(experiment, problem, subspace, grid, "g", chunk_points=5, progress=False)
    before = {name: (tmp_path / name).read_bytes() for name in _files(tmp_path)}

    other_plane = Subspace.from_points(subspace.center, subspace.points.flip(0))
    other_problem = problem.with_probes(300, seed=99)
    cases = [
        ((problem, other_plane, grid), {"chunk_points": 5}, "subspace differs"),
        ((problem, subspace, Grid.uniform((-1.0, 2.0), 6, 2)), {"chunk_points": 5}, "grid differs"),
        ((problem, subspace, grid), {"chunk_points": 12}, "chunk_points: on disk 6, now 12"),
        ((problem, subspace, grid), {"chunk_points": 5, "backend": "torch"}, "backend"),
        ((other_problem, subspace, grid), {"chunk_points": 5}, "probes_hash"),
    ]
    for args, kwargs, message in cases:
        with pytest.raises(StoreError, match=message):
            run_sweep(experiment, *args, "g", progress=False, **kwargs)
    assert {name: (tmp_path / name).read_bytes() for name in _files(tmp_path)} == before


def _set_manifest(folder: Path, manifest: dict) -> None:
    """Give the grid in ``folder`` ``manifest``, as if it had been started with it: in J's
    attributes and in the copy kept with the checksums, the checksums recorded anew."""
    zarr_grids.open_values(folder, mode="r+").attrs["genni_manifest"] = manifest
    checksums = Checksums.load(folder)[0]
    assert checksums is not None
    write_checksums(folder, list(checksums.files), extra={"manifest": manifest})


def test_sweep_resumes_only_on_the_device_it_started_on(
    tmp_path: Path, mlp_case: tuple[Problem, Subspace], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manifest records the device; a grid started elsewhere is refused, naming the
    device, and one from before devices were recorded counts as the CPU's."""
    problem, subspace = mlp_case
    grid = Grid.uniform((-2.0, 2.0), 6, 2)
    experiment = Experiment("devices", tmp_path)
    _counting_sweep(monkeypatch, stop_after=2)
    with pytest.raises(_Interrupt):
        run_sweep(experiment, problem, subspace, grid, "g", chunk_points=5, progress=False)
    monkeypatch.undo()
    folder = experiment.grid_dir("g")
    manifest = dict(zarr_grids.open_values(folder).attrs["genni_manifest"])
    assert manifest["device"] == "cpu"
    _set_manifest(folder, {**manifest, "device": "cuda (NVIDIA H200)"})
    with pytest.raises(StoreError, match=r"device .*: on disk 'cuda \(NVIDIA H200\)', now 'cpu'"):
        run_sweep(experiment, problem, subspace, grid, "g", chunk_points=5, progress=False)
    _set_manifest(folder, {k: v for k, v in manifest.items() if k != "device"})
    result = run_sweep(experiment, problem, subspace, grid, "g", chunk_points=5, progress=False)
    assert result.metadata["device"] == "cpu"


def test_sweep_bad_input_leaves_no_files(
    tmp_path: Path, mlp_case: tuple[Problem, Subspace]
) -> None:
    problem, subspace = mlp_case
    experiment = Experiment("bad", tmp_path)
    with pytest.raises(InputError, match="coefficients per point"):
        run_sweep(experiment, problem, subspace, Grid.uniform((-1, 1), 3, 3), "g", progress=False)
    with pytest.raises(InputError, match="chunk_points"):
        run_sweep(
            experiment,
            problem,
            subspace,
            Grid.uniform((-1, 1), 3, 2),
            "g",
            chunk_points=0,
            progress=False,
        )
    with pytest.raises(InputError, match="grid name"):
        run_sweep(experiment, problem, subspace, Grid.uniform((-1, 1), 3, 2), "a/b")
    with pytest.raises(InputError, match="backend"):
        run_sweep(
            experiment,
            problem,
            subspace,
            Grid.uniform((-1, 1), 3, 2),
            "g",
            backend="gpu",
            progress=False,
        )
    assert _files(tmp_path) == []
