"""search(restart_collapsed=True): the collapse detector on hand-built parameters, the restart
rule on planted starts of the two-neuron net, its seeds and optimizer state, determinism, the
default unchanged, and the refusals."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from genni_ext.core.models import TwoNeuronNet, flatten_params, mlp
from genni_ext.core.problem import Problem
from genni_ext.core.sgd_search import (
    COLLAPSE_PROBES,
    CollapseDetector,
    _Optimizer,
    collapse_probes,
    collapsed_units,
    initial_params,
)
from genni_ext.errors import InputError
from genni_ext.run.searches import search
from genni_ext.store import Experiment, zarr_searches
from genni_ext.store.experiment import search_id
from genni_ext.store.files import files_under, write_checksums


def _opposite_signs_problem(num_probes: int = 2048) -> Problem:
    """The default demo's θ (seed 5): a and b of opposite sign, so no unit is collapsed."""
    torch.manual_seed(5)
    problem = Problem(TwoNeuronNet(), num_probes=num_probes, seed=5)
    a, b = problem.theta[:2].tolist()
    assert a * b < 0, problem.theta
    return problem


# --- the detector ---------------------------------------------------------------------------


def test_collapsed_units_counts_dead_and_merged_units() -> None:
    """Hand-built ReLU outputs on 4 probes, 5 units: unit 1 dead, unit 2 = 3 x unit 0
    (merged), unit 3 distinct, unit 4 = unit 3 + 1e-3 on one probe (not merged)."""
    base = torch.tensor([1.0, 0.0, 2.0, 0.5])
    other = torch.tensor([0.0, 1.0, 1.0, 0.0])
    near = other + torch.tensor([1e-3, 0.0, 0.0, 0.0])
    units = torch.stack([base, torch.zeros(4), 3 * base, other, near], dim=1)  # [N, C]
    assert collapsed_units(units[None]).tolist() == [2]
    # Conv layout [R, N, C, H, W]: a channel counts over all positions.
    conv = torch.stack([units, 2 * units], dim=-1)[..., None]  # [N, C, 2, 1]
    assert collapsed_units(conv[None]).tolist() == [2]
    healthy = torch.stack([base, other], dim=1)
    assert collapsed_units(torch.stack([healthy, units[:, :2]])).tolist() == [0, 1]


def test_mlp_detector_on_hand_built_parameters() -> None:
    """mlp [2, 4, 1]: hidden unit 0 dead (weights 0, bias -1), unit 2 = 2 x unit 1 (weights
    and bias doubled), unit 3 its own: 2 collapsed units; θ (random) has 0."""
    torch.manual_seed(0)
    problem = Problem(mlp([2, 4, 1]), num_probes=512, seed=0)
    detector = CollapseDetector(problem)
    assert detector.reference == 0
    model = mlp([2, 4, 1])
    with torch.no_grad():
        first = model[0]
        first.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, -0.5], [2.0, -1.0], [-0.3, 0.8]]))
        first.bias.copy_(torch.tensor([-1.0, 0.2, 0.4, 0.1]))
    params = torch.stack([flatten_params(model), problem.theta])
    assert detector.counts(params).tolist() == [2, 0]
    assert detector.collapsed(params).tolist() == [True, False]


def test_conv_detector_on_hand_built_parameters() -> None:
    """A conv net: channel 0 dead (kernel 0, bias -1), channel 2 = 3 x channel 1; its two
    ReLU layers are both read (the Linear's 3 units after the second are all live)."""
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 3), nn.ReLU(),
        nn.Linear(3, 1),
    )  # fmt: skip
    problem = Problem(model, inputs=torch.randn(256, 1, 6, 6))
    detector = CollapseDetector(problem)
    other = copy.deepcopy(model)
    with torch.no_grad():
        conv = other[0]
        kernel = torch.randn(3, 3)
        conv.weight[0].zero_()
        conv.bias[0] = -1.0
        conv.weight[1, 0] = kernel
        conv.bias[1] = 0.1
        conv.weight[2, 0] = 3 * kernel
        conv.bias[2] = 0.3
    params = flatten_params(other)[None]
    assert detector.counts(params).tolist() == [detector.reference + 2]


def test_collapse_probes_are_a_fixed_subset() -> None:
    torch.manual_seed(0)
    problem = Problem(TwoNeuronNet(), num_probes=3 * COLLAPSE_PROBES, seed=0)
    chosen = collapse_probes(problem)
    assert chosen.shape == (COLLAPSE_PROBES, 1)
    assert torch.equal(chosen, collapse_probes(problem))
    small = problem.with_probes(100, seed=1)
    assert torch.equal(collapse_probes(small), small.inputs)


# --- the restart rule -----------------------------------------------------------------------


def test_a_planted_collapsed_start_is_restarted_and_a_healthy_one_is_not() -> None:
    """Start 0 has a, b > 0 (both units on x > 0: merged), start 1 is θ slightly moved.
    With record points at 100 and 200 of 200 steps, start 0 is restarted exactly once (at
    step 100; the last record point restarts nothing) with seed 7 + 1 + 0 + 2 x 1."""
    problem = _opposite_signs_problem()
    a, b, c, d = problem.theta.tolist()
    collapsed = torch.tensor([abs(a), abs(b), c, d])
    healthy = problem.theta + 0.05
    starts = torch.stack([collapsed, healthy])
    result = search(
        problem, starts, steps=200, record_every=100, seed=7, restart_collapsed=True,
        progress=False,
    )  # fmt: skip
    assert result.restarts.tolist() == [1, 0]
    assert result.seeds == [7 + 1 + 0 + 2 * 1, 7 + 2]
    assert torch.equal(result.starts[0], initial_params(problem, [10])[0])
    assert torch.equal(result.starts[1], healthy)
    assert result.config["restart_collapsed"] is True and result.config["max_restarts"] == 3
    # The history shows the restart: J at step 100 is the collapsed trajectory's.
    plain = search(problem, starts, steps=100, record_every=100, seed=7, progress=False)
    assert torch.equal(result.history[:, :2], plain.history)
    assert plain.restarts.tolist() == [0, 0]


def test_tol_spares_a_collapsed_start_below_it() -> None:
    """With tol above the collapsed start's J, collapse alone does not restart it."""
    problem = _opposite_signs_problem()
    a, b, c, d = problem.theta.tolist()
    starts = torch.tensor([[abs(a), abs(b), c, d]])
    kwargs = {"steps": 200, "record_every": 100, "seed": 7, "progress": False}
    high = search(problem, starts, tol=10.0, restart_collapsed=True, **kwargs)
    assert high.restarts.tolist() == [0] and high.config["steps_run"] == 0
    low = search(problem, starts, tol=1e-9, restart_collapsed=True, **kwargs)
    assert low.restarts.tolist() == [1]


def test_max_restarts_bounds_every_start() -> None:
    problem = _opposite_signs_problem(num_probes=512)
    result = search(
        problem, 12, steps=400, record_every=20, seed=3, restart_collapsed=True,
        max_restarts=2, progress=False,
    )  # fmt: skip
    assert int(result.restarts.max()) <= 2 and int(result.restarts.sum()) > 0
    for k, (seed, restarts) in enumerate(zip(result.seeds, result.restarts.tolist(), strict=True)):
        assert seed == 3 + 1 + k + 12 * restarts
    none = search(
        problem, 12, steps=400, record_every=20, seed=3, restart_collapsed=True,
        max_restarts=0, progress=False,
    )  # fmt: skip
    assert none.restarts.tolist() == [0] * 12


@pytest.mark.parametrize(("optimizer", "momentum", "lr"), [("sgd", 0.9, 0.015), ("adam", 0, 0.01)])
def test_restarts_are_deterministic(optimizer: str, momentum: float, lr: float) -> None:
    """The same search twice: the same restarts, seeds, history and found points (that a
    start depends only on itself is checked on Dask: python_tests/run/test_search_dask.py)."""
    problem = _opposite_signs_problem(num_probes=512)
    kwargs = {
        "steps": 300, "record_every": 50, "seed": 2, "optimizer": optimizer,
        "momentum": momentum, "lr": lr, "restart_collapsed": True, "progress": False,
    }  # fmt: skip
    first = search(problem, 8, **kwargs)
    second = search(problem, 8, **kwargs)
    assert int(first.restarts.sum()) > 0
    assert torch.equal(first.params, second.params) and first.seeds == second.seeds
    assert torch.equal(first.restarts, second.restarts)
    assert torch.equal(first.history, second.history)


@pytest.mark.parametrize(("optimizer", "momentum", "lr"), [("sgd", 0.0, 0.015), ("adam", 0, 0.01)])
def test_no_collapse_means_the_plain_search_bitwise(
    optimizer: str, momentum: float, lr: float
) -> None:
    """Healthy starts (θ moved a little) are never restarted, and the run with
    restart_collapsed=True is then the plain search bit for bit."""
    problem = _opposite_signs_problem(num_probes=512)
    starts = problem.theta + 0.05 * torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
    assert bool((starts[:, 0] * starts[:, 1] < 0).all())
    kwargs = {"steps": 150, "record_every": 50, "optimizer": optimizer, "momentum": momentum}
    plain = search(problem, starts, lr=lr, progress=False, **kwargs)
    restarting = search(problem, starts, lr=lr, progress=False, restart_collapsed=True, **kwargs)
    assert restarting.restarts.tolist() == [0] * 4
    assert torch.equal(plain.params, restarting.params)
    assert torch.equal(plain.history, restarting.history)
    assert plain.config["restart_collapsed"] is False


def test_a_reset_adam_row_takes_a_fresh_runs_step() -> None:
    """After reset, row 1's next update is that of a new optimizer's first step; row 0
    keeps its moments and step count."""
    params = torch.randn(2, 5, generator=torch.Generator().manual_seed(0))
    gradient = torch.randn(2, 5, generator=torch.Generator().manual_seed(1))
    update = _Optimizer("adam", 0.01, 0.0, params)
    moved = update.update(update.update(params, gradient), gradient)
    update.reset(torch.tensor([1]))
    assert update.step_count.tolist() == [2, 0]
    after = update.update(moved, gradient)
    fresh = _Optimizer("adam", 0.01, 0.0, params).update(moved, gradient)
    assert torch.equal(after[1], fresh[1])
    kept = _Optimizer("adam", 0.01, 0.0, params)
    kept_moved = kept.update(kept.update(params, gradient), gradient)
    assert torch.equal(after[0], kept.update(kept_moved, gradient)[0])


# --- refusals ---------------------------------------------------------------------------------


def test_a_model_without_relu_is_refused() -> None:
    torch.manual_seed(0)
    problem = Problem(mlp([2, 3, 1], activation="tanh"), num_probes=64, seed=0)
    with pytest.raises(InputError, match="defined for ReLU units only"):
        search(problem, 2, steps=2, restart_collapsed=True, progress=False)
    search(problem, 2, steps=2, progress=False)  # without restarts it runs


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"restart_collapsed": 1}, "restart_collapsed must be True or False"),
        ({"restart_collapsed": True, "max_restarts": -1}, "max_restarts must be an int >= 0"),
        ({"restart_collapsed": True, "max_restarts": 2.0}, "max_restarts must be an int >= 0"),
        ({"restart_collapsed": True, "seed": 2**64 - 30}, "seed=.* is too large"),
    ],
)
def test_bad_restart_arguments(change: dict[str, object], message: str) -> None:
    problem = _opposite_signs_problem(num_probes=64)
    with pytest.raises(InputError, match=message):
        search(problem, **{"starts": 8, "steps": 2, "progress": False, **change})


def test_a_model_without_reset_parameters_is_refused() -> None:
    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.weight

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 1), Scale())
    problem = Problem(model, num_probes=64, seed=0)
    starts = problem.theta[None] + 0.1
    with pytest.raises(InputError, match="without reset_parameters"):
        search(problem, starts, steps=2, restart_collapsed=True, progress=False)


# --- the store ------------------------------------------------------------------------------


def _restarted_search() -> tuple[Problem, object]:
    problem = _opposite_signs_problem(num_probes=256)
    result = search(
        problem, 4, steps=100, record_every=20, seed=3, restart_collapsed=True, progress=False
    )
    assert int(result.restarts.sum()) > 0
    return problem, result


def test_restarts_are_saved_and_loaded(tmp_path: Path) -> None:
    problem, result = _restarted_search()
    experiment = Experiment("restarts", tmp_path)
    experiment.save_search(result, problem=problem)
    loaded = experiment.load_search()
    assert loaded.restarts.dtype == torch.int64
    assert torch.equal(loaded.restarts, result.restarts)
    assert loaded.seeds == result.seeds and torch.equal(loaded.starts, result.starts)
    assert loaded.config["restart_collapsed"] is True
    assert experiment.check_search("search") == []
    assert experiment.open_search()["restarts"].dims == ("start",)
    # Restarts are part of the id where some start was restarted.
    unrestarted = copy.copy(result)
    unrestarted.restarts = torch.zeros_like(result.restarts)
    assert search_id(unrestarted) != search_id(result)


def test_a_search_saved_before_restarts_loads_with_zeros(tmp_path: Path) -> None:
    """A search folder as the store wrote it before restarts existed (no restarts array, no
    such tensor in the metadata): it loads, checksums hold, restarts are zeros, and its id
    is what it was (all-zero restarts are left out of the hash)."""
    torch.manual_seed(10)
    problem = Problem(TwoNeuronNet(), num_probes=256, seed=10)
    result = search(problem, 3, steps=20, seed=11, progress=False)
    experiment = Experiment("old", tmp_path)
    folder = experiment.save_search(result, problem=problem)
    tensors = {key: experiment.load_search().__dict__[key] for key in zarr_searches.DIMS}
    del tensors["restarts"]
    shutil.rmtree(folder / zarr_searches.ZARR_NAME)
    zarr_searches.write(folder, tensors)
    metadata = json.loads((folder / "metadata.json").read_text())
    del metadata["tensors"]["restarts"]
    (folder / "metadata.json").write_text(json.dumps(metadata))
    write_checksums(folder, files_under(folder))
    assert not (folder / zarr_searches.ZARR_NAME / "restarts").exists()
    loaded = experiment.load_search()
    assert loaded.restarts.tolist() == [0, 0, 0]
    assert torch.equal(loaded.params, result.params)
    assert experiment.check_search("search") == []
    assert experiment.search_id() == search_id(loaded) == metadata["id"]
