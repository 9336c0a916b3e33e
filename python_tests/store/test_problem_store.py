"""The store keeps the problem itself (problem.zarr): θ, the probes and the targets written
once when an experiment is made, read back by every command and worker, checked against
the model's code; bad input leaves no experiment folder."""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml

from genni_ext import cli
from genni_ext.core.grid import Grid
from genni_ext.core.problem import Problem
from genni_ext.core.subspace import Subspace
from genni_ext.errors import InputError, StoreError
from genni_ext.run.chunk_runs import StoreSource
from genni_ext.run.resumable import run_sweep
from genni_ext.run.searches import search
from genni_ext.store import Experiment, zarr_grids
from genni_ext.store.config import build_problem, validate_config

FACTORY = """\
from torch import nn


def small(width=4):
    return nn.Sequential(nn.Linear(3, width), nn.ReLU(), nn.Linear(width, 1))
"""


@pytest.fixture
def factory(tmp_path: Path) -> Path:
    """A model factory in a file of its own (a new module name per test: its path)."""
    path = tmp_path / "code" / "net.py"
    path.parent.mkdir()
    path.write_text(FACTORY)
    return path


def _forget_module(path: Path) -> None:
    """Drop the module imported from ``path``, so that its code is read again."""
    for name, module in list(sys.modules.items()):
        if getattr(module, "__file__", None) == str(path.resolve()):
            del sys.modules[name]


def _problem(factory: Path) -> Problem:
    config = validate_config(
        {
            "experiment": "x",
            "model": {"factory": f"{factory}:small", "kwargs": {"width": 4}},
            "seed": 3,
            "probes": {"num_probes": 64, "seed": 2},
        }
    )
    return build_problem(config)


def _genni(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = cli.main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def test_create_keeps_the_problem_and_reads_it_back(tmp_path: Path, factory: Path) -> None:
    problem = _problem(factory)
    experiment = Experiment.create(
        problem, "made", home=tmp_path / "home", model_spec=f"{factory}:small",
        model_kwargs={"width": 4},
    )  # fmt: skip
    assert experiment.keeps_problem and experiment.problem_path.is_dir()
    loaded = experiment.load_problem()
    for key in ("theta", "inputs", "targets"):
        assert torch.equal(getattr(loaded, key), getattr(problem, key)), key
    assert (loaded.theta_hash, loaded.probes_hash) == (problem.theta_hash, problem.probes_hash)
    assert experiment.load_config()["model"]["factory"] == f"{factory}:small"
    assert all(finding.kind == "ok" for finding in experiment.check())
    with pytest.raises(StoreError, match="exists already"):
        Experiment.create(problem, "made", home=tmp_path / "home")


def test_a_changed_factory_source_is_reported_and_changed_code_refused(
    tmp_path: Path, factory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    problem = _problem(factory)
    experiment = Experiment.create(problem, "made", home=tmp_path, model_spec=f"{factory}:small")
    factory.write_text(FACTORY + "# a comment: the same function\n")
    _forget_module(factory)
    with caplog.at_level(logging.WARNING, logger="genni_ext"):
        loaded = experiment.load_problem()
    assert torch.equal(loaded.targets, problem.targets)
    assert "changed since the experiment was made" in caplog.text
    assert str(factory.resolve()) in caplog.text
    factory.write_text(FACTORY.replace("nn.ReLU()", "nn.Tanh()"))
    _forget_module(factory)
    with pytest.raises(StoreError, match="the model's code changed"):
        experiment.load_problem()


def test_edited_weights_do_not_change_a_resumed_sweep(
    tmp_path: Path, factory: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A sweep interrupted (chunks forgotten), its weights file edited, then resumed: J is
    bitwise the uninterrupted sweep's, though the edited file gives another θ."""
    model = _problem(factory).model
    weights = tmp_path / "trained.pt"
    torch.save(model.state_dict(), weights)
    config = {
        "experiment": "trained",
        "model": {"factory": f"{factory}:small", "kwargs": {"width": 4}},
        "theta": {"weights": str(weights)},
        "probes": {"num_probes": 64, "seed": 2},
        "search": {"starts": 4, "steps": 40, "lr": 0.05, "batch_size": 32, "seed": 11},
        "subspace": {"eps": 10.0, "m": 2},
        "grids": [{"name": "plane", "bound": [-1, 1], "n": 6}],
        "chunk_points": 12,
    }
    path = tmp_path / "trained.yml"
    path.write_text(yaml.safe_dump(config))
    home = str(tmp_path / "home")
    for command in ("search", "sweep"):
        status, _out, err = _genni(capsys, command, "--config", str(path), "--home", home,
                                   "--no-progress")  # fmt: skip
        assert status == 0, err
    experiment = Experiment("trained", home)
    assert experiment.keeps_problem
    whole = experiment.load_grid("plane").values
    folder = experiment.grid_dir("plane")
    (folder / "metadata.json").unlink()
    for index in (1, 2):
        zarr_grids.forget_chunk(folder, index)
    assert experiment.sweep_status("plane").chunks_done == 1
    state = torch.load(weights)
    torch.save({key: 2.0 * value for key, value in state.items()}, weights)
    edited = build_problem(validate_config(config))
    assert edited.theta_hash != experiment.load_problem().theta_hash  # the file now differs
    status, out, err = _genni(capsys, "sweep", "--experiment", "trained", "--home", home,
                              "--no-progress")  # fmt: skip
    assert status == 0, err
    assert "computed 2 of 3 chunks in this run" in out
    assert torch.equal(experiment.load_grid("plane").values, whole)
    weights.rename(tmp_path / "moved.pt")  # a moved file: the stored θ is still there
    status, out, err = _genni(capsys, "sweep", "--experiment", "trained", "--home", home,
                              "--no-progress")  # fmt: skip
    assert status == 0 and "computing 0 chunks" in out, err


def test_a_damaged_problem_zarr_is_found_by_check(
    tmp_path: Path, factory: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    experiment = Experiment.create(
        _problem(factory), "made", home=home, model_spec=f"{factory}:small"
    )
    chunk = experiment.problem_path / "theta" / "c" / "0"
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 1
    chunk.write_bytes(bytes(data))
    status, out, _err = _genni(capsys, "check", "made", "--home", str(home))
    assert status == 1 and f"DAMAGED problem.zarr: {chunk} does not match" in out, out
    with pytest.raises(StoreError, match=r"theta/c/0 does not match"):
        experiment.load_problem()
    shutil.rmtree(experiment.problem_path)  # gone: damage, not an experiment made before it
    assert experiment.keeps_problem
    status, out, _err = _genni(capsys, "check", "made", "--home", str(home))
    assert status == 1 and "problem.zarr/zarr.json is missing" in out, out
    with pytest.raises(StoreError, match="is missing"):
        experiment.load_problem()


def test_bad_input_leaves_no_experiment_folder(tmp_path: Path, factory: Path) -> None:
    problem = _problem(factory)
    home = tmp_path / "home"
    other = tmp_path / "other.py"
    other.write_text(FACTORY.replace("nn.ReLU()", "nn.Tanh()"))
    bad = [
        (f"{tmp_path / 'absent.py'}:small", {}, "no file"),
        (f"{factory}:small", {"width": 5}, "parameters but θ has"),
        (f"{factory}:small", {"depth": 2}, "wrong kwargs"),
        (f"{other}:small", {}, "the model's code changed"),
    ]
    for spec, kwargs, message in bad:
        with pytest.raises(InputError, match=message):
            Experiment.create(problem, "bad", home=home, model_spec=spec, model_kwargs=kwargs)
        assert not Experiment("bad", home).exists
    with pytest.raises(InputError, match="without model_spec"):
        Experiment.create(problem, "bad", home=home, model_kwargs={"width": 4})
    with pytest.raises(InputError, match=r"must be a genni_ext\.Problem"):
        Experiment.create("not a problem", "bad", home=home)  # type: ignore[arg-type]
    assert not Experiment("bad", home).exists


def test_a_python_made_experiment_goes_through_the_cli(
    tmp_path: Path, factory: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    problem = _problem(factory)
    home = str(tmp_path / "home")
    experiment = Experiment.create(problem, "made", home=home, model_spec=f"{factory}:small",
                                   model_kwargs={"width": 4})  # fmt: skip
    result = search(problem, 4, steps=40, lr=0.05, batch_size=32, seed=11, progress=False)
    experiment.save_search(result, problem=problem)
    status, out, err = _genni(capsys, "ls", "--home", home)
    assert status == 0 and "made/" in out and "searches/search" in out, err
    status, out, err = _genni(
        capsys, "sweep", "--experiment", "made", "--home", home, "--no-progress",
        "--set", "subspace.eps=10", "--set", "grids=[{name: tiny, bound: [-1, 1], n: 4}]",
    )  # fmt: skip
    assert status == 0, err
    assert experiment.load_grid("tiny").values.shape == (4, 4)
    status, out, err = _genni(capsys, "analyse", "made", "--home", home, "--no-refine",
                              "--no-progress")  # fmt: skip
    assert status == 0, err
    assert experiment.load_analysis()["experiment"] == "made"

    bare = Experiment.create(problem, "bare", home=home)  # no model factory
    assert bare.problem_path.is_dir() and not bare.config_path.exists()
    status, out, err = _genni(capsys, "ls", "--home", home, "bare")
    assert status == 0 and "bare/" in out, err
    status, _out, err = _genni(capsys, "analyse", "bare", "--home", home, "--no-progress")
    assert status == 1 and "has no model factory" in err, err
    with pytest.raises(StoreError, match="has no model factory"):
        bare.load_problem()


def test_a_worker_without_the_model_code_says_so(tmp_path: Path, factory: Path) -> None:
    distributed = pytest.importorskip("distributed", reason="dask is in the test extra")
    problem = _problem(factory)
    experiment = Experiment.create(problem, "made", home=tmp_path, model_spec=f"{factory}:small")
    generator = torch.Generator().manual_seed(5)
    points = problem.theta + 0.3 * torch.randn(2, problem.num_params, generator=generator)
    subspace = Subspace.from_points(problem.theta, points)
    factory.rename(factory.with_suffix(".moved"))  # the workers cannot import it now
    source = StoreSource(experiment.home, experiment.name)
    with (
        distributed.Client(processes=False, n_workers=1, dashboard_address=None) as client,
        pytest.raises(StoreError, match=r"needs the model's code on its path") as error,
    ):
        run_sweep(
            experiment, problem, subspace, Grid.uniform((-1.0, 1.0), 4, 2), "g",
            chunk_points=8, progress=False, client=client, source=source,
        )  # fmt: skip
    assert f"{factory}:small" in str(error.value)


def test_a_factory_file_named_relative_is_kept_absolute(
    tmp_path: Path, factory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(factory.parent)
    experiment = Experiment.create(
        _problem(factory), "rel", home=tmp_path, model_spec="net.py:small"
    )
    monkeypatch.chdir(tmp_path)
    assert experiment.load_config()["model"]["factory"] == f"{factory}:small"
    assert experiment.load_problem().num_params == 3 * 4 + 4 + 4 + 1


def test_a_config_naming_another_problem_is_warned_about_and_not_used(
    tmp_path: Path, factory: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    problem = _problem(factory)
    home = str(tmp_path / "home")
    spec = {"factory": f"{factory}:small", "kwargs": {"width": 4}}
    Experiment.create(problem, "made", home=home, model_spec=spec["factory"],
                      model_kwargs=spec["kwargs"])  # fmt: skip
    config = {
        "experiment": "made",
        "model": spec,
        "seed": 99,  # another θ, and 16384 Gaussian probes: neither is used
        "search": {"starts": 2, "steps": 5, "batch_size": 16, "seed": 200},
    }
    path = tmp_path / "other.yml"
    path.write_text(yaml.safe_dump(config))
    status, out, err = _genni(capsys, "search", "--config", str(path), "--home", home,
                              "--no-progress")  # fmt: skip
    assert status == 0, err
    assert "this config's seed, probes differ from its config.yml and are not used" in out + err
    saved = Experiment("made", home).search_metadata()["problem"]
    assert (saved["theta_hash"], saved["probes_hash"]) == (problem.theta_hash, problem.probes_hash)
    assert Experiment("made", home).load_config()["seed"] == 0  # config.yml keeps the problem's


NORM_FACTORY = """\
from torch import nn


def normed():
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1)).eval()
"""


def test_buffers_such_as_batchnorm_statistics_are_kept(tmp_path: Path) -> None:
    """Running statistics are not in θ but change the function: kept with it, so the model
    rebuilt from its code computes the stored targets."""
    path = tmp_path / "normed.py"
    path.write_text(NORM_FACTORY)
    config = validate_config({"experiment": "x", "model": {"factory": f"{path}:normed"}})
    problem = build_problem({**config, "probes": {**config["probes"], "num_probes": 32}})
    norm = problem.model[1]
    with torch.no_grad():
        norm.running_mean.fill_(0.7)
        norm.running_var.fill_(3.0)
    problem = Problem(problem.model, problem.inputs)  # targets with those statistics
    experiment = Experiment.create(problem, "normed", home=tmp_path, model_spec=f"{path}:normed")
    loaded = experiment.load_problem()
    assert torch.equal(loaded.targets, problem.targets)
    assert torch.equal(dict(loaded.model.named_buffers())["1.running_var"], norm.running_var)
    assert loaded.unchecked_loss(problem.theta[None]).item() == 0.0
