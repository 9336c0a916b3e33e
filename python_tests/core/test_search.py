"""The search (Algorithm 1): convergence with the paper's settings, batched equals one start
at a time, equals a plain torch.optim loop, starts and seeds, history and early stopping,
and every bad input."""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from genni_ext.core.models import LeNet5, TwoNeuronNet, flatten_params, load_flat_params, mlp
from genni_ext.core.problem import Problem
from genni_ext.core.sgd_search import SearchResult
from genni_ext.errors import InputError
from genni_ext.run.searches import search

EPS = 0.0025  # the paper's ε for the 4-parameter net


def _paper_problem(num_probes: int = 16384, dtype: torch.dtype = torch.float32) -> Problem:
    """The paper's 4-parameter experiment: θ a random initialisation (seed 10), standard
    normal probes (seed 10)."""
    torch.manual_seed(10)
    return Problem(TwoNeuronNet().to(dtype), num_probes=num_probes, seed=10)


# --- convergence ------------------------------------------------------------------------------


@pytest.mark.slow
def test_paper_settings_converge_and_stay_equivalent_on_fresh_probes() -> None:
    """16384 probes, batch 256, lr 0.015, seed 10, the default 2000 steps, 10 starts.

    Measured: all 10 starts reach J < ε = 0.0025, every one by step 500; on other θ
    (seeds 0-15) 2-10 of 10 do, the rest stay in local minima where more steps do not help
    (the two ReLUs on one side of 0, or one of them dead)."""
    problem = _paper_problem()
    result = search(problem, seed=10, progress=False)
    assert result.config["steps_run"] == 2000 and result.config["batch_size"] == 256
    assert result.config["lr"] == 0.015
    converged = result.converged(EPS)
    assert int(converged.sum()) >= 8, result.losses
    found = result.params[converged]
    # Equivalent points, not θ itself: every start began away from θ (J > ε or far in θ).
    assert float((result.starts - problem.theta).norm(dim=1).min()) > 0.05
    fresh = problem.with_probes(16384, seed=11)
    assert fresh.probes_hash != problem.probes_hash
    assert bool((fresh.loss(found) < EPS).all()), fresh.loss(found)


def test_adam_converges() -> None:
    """Adam (lr 0.01) on the paper's problem with 2048 probes (fewer, to keep the test
    fast: J on 2048 standard-normal probes is within a few % of J on 16384): measured 10 of
    10 below ε within 200 steps."""
    problem = _paper_problem(num_probes=2048)
    result = search(problem, steps=300, optimizer="adam", lr=0.01, seed=10, progress=False)
    assert result.config["optimizer"] == "adam"
    assert int(result.converged(EPS).sum()) >= 8
    assert bool((result.losses <= result.history[:, 0]).all())


# --- batched equals one start at a time, equals torch.optim ------------------------------------

OPTIMIZER_CASES = [
    pytest.param("sgd", 0.0, 0.015, id="sgd"),
    pytest.param("sgd", 0.9, 0.015, id="sgd-momentum"),
    pytest.param("adam", 0.0, 0.01, id="adam"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("optimizer", "momentum", "lr"), OPTIMIZER_CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_batched_equals_sequential(
    dtype: torch.dtype, optimizer: str, momentum: float, lr: float
) -> None:
    """K starts trained together equal the K runs search(problem, starts=start_k[None],
    seed=seed + k) one after another: same parameters, histories and losses."""
    problem = _paper_problem(num_probes=1000, dtype=dtype)  # batch 96: a remainder slice
    options = {
        "steps": 150,
        "lr": lr,
        "batch_size": 96,
        "optimizer": optimizer,
        "momentum": momentum,
        "record_every": 40,
        "progress": False,
    }
    batched = search(problem, 5, seed=20, **options)
    assert batched.seeds == [21, 22, 23, 24, 25]
    tolerance = (
        {"rtol": 1e-12, "atol": 1e-14} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-6}
    )
    for k in range(5):
        alone = search(problem, batched.starts[k : k + 1], seed=20 + k, **options)
        assert alone.seeds == [batched.seeds[k]]
        torch.testing.assert_close(alone.params[0], batched.params[k], **tolerance)
        torch.testing.assert_close(alone.history[0], batched.history[k], **tolerance)
        assert torch.equal(alone.history_steps, batched.history_steps)
    # A start's trajectory does not depend on K either.
    fewer = search(problem, 2, seed=20, **options)
    torch.testing.assert_close(fewer.params, batched.params[:2], **tolerance)


def _torch_optim_run(
    problem: Problem,
    start: torch.Tensor,
    seed: int,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    optimizer: str,
    momentum: float,
) -> torch.Tensor:
    """What a plain PyTorch user writes: a model, torch.optim, a shuffled minibatch per step
    (torch.randperm per epoch with a Generator seeded by the start's seed)."""
    model = copy.deepcopy(problem.model).to(problem.theta.dtype)
    load_flat_params(model, start)
    opt: torch.optim.Optimizer
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    count = problem.num_probes
    batch = min(batch_size, count)
    per_epoch = math.ceil(count / batch)
    order = torch.empty(0, dtype=torch.int64)
    for step in range(steps):
        position = step % per_epoch
        if position == 0:
            order = torch.randperm(count, generator=generator)
        index = order[position * batch : (position + 1) * batch]
        out = model(problem.inputs[index]).reshape(index.shape[0], -1)
        loss = (out - problem.targets[index]).square().sum(dim=-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return flatten_params(model)


def _tied_model() -> nn.Module:
    torch.manual_seed(5)
    first, second = nn.Linear(3, 3), nn.Linear(3, 3)
    second.weight = first.weight
    return nn.Sequential(first, nn.Tanh(), second, nn.Tanh(), nn.Linear(3, 1))


def _reused_model() -> nn.Module:
    torch.manual_seed(6)
    shared = nn.Linear(3, 3)
    return nn.Sequential(shared, nn.Tanh(), shared, nn.Tanh(), nn.Linear(3, 2))


@pytest.mark.slow
@pytest.mark.parametrize(("optimizer", "momentum", "lr"), OPTIMIZER_CASES)
@pytest.mark.parametrize(
    "make",
    [lambda: _paper_problem(num_probes=700, dtype=torch.float64), "tied", "reused"],
    ids=["two_neuron", "tied", "reused"],
)
def test_equals_a_torch_optim_loop(
    make: Callable[[], Problem] | str, optimizer: str, momentum: float, lr: float
) -> None:
    """Each start's trajectory is what torch.optim gives with the same minibatches, also for
    a weight tied between two modules and a module used twice (their gradients add up)."""
    if isinstance(make, str):
        model = (_tied_model if make == "tied" else _reused_model)().double()
        problem = Problem(model, num_probes=300, seed=1, input_shape=(3,))
    else:
        problem = make()
    options = {"steps": 60, "lr": lr, "batch_size": 64, "optimizer": optimizer}
    result = search(
        problem, 3, seed=4, momentum=momentum, record_every=1000, progress=False, **options
    )
    assert not torch.equal(result.params, result.starts)
    for k in range(3):
        expected = _torch_optim_run(
            problem, result.starts[k], result.seeds[k], momentum=momentum, **options
        )
        torch.testing.assert_close(result.params[k], expected, rtol=1e-10, atol=1e-12)


def test_batch_larger_than_the_probe_set_is_full_batch() -> None:
    problem = _paper_problem(num_probes=50, dtype=torch.float64)
    result = search(problem, 2, steps=20, batch_size=500, seed=3, progress=False)
    assert result.config["batch_size"] == 50
    model = copy.deepcopy(problem.model)
    for k in range(2):
        load_flat_params(model, result.starts[k])
        opt = torch.optim.SGD(model.parameters(), lr=0.015)
        for _ in range(20):
            loss = (model(problem.inputs) - problem.targets).square().sum(dim=-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        torch.testing.assert_close(result.params[k], flatten_params(model), rtol=1e-10, atol=1e-12)


# --- starts and seeds ---------------------------------------------------------------------------


def test_starts_are_the_models_initialisation_with_per_start_seeds() -> None:
    problem = _paper_problem(num_probes=100)
    state = torch.random.get_rng_state()
    result = search(problem, 3, steps=1, seed=30, progress=False)
    assert torch.equal(torch.random.get_rng_state(), state), "the caller's RNG state changed"
    assert result.seeds == [31, 32, 33]
    for k, seed in enumerate(result.seeds):
        torch.manual_seed(seed)
        assert torch.equal(result.starts[k], flatten_params(TwoNeuronNet()))
    assert torch.equal(flatten_params(problem.model), problem.theta), "the model was changed"


def test_small_steps_run_on_one_thread_and_restore_the_count() -> None:
    """The 4-parameter net's steps are far below SMALL_STEP: the search runs on one thread
    (see the module docstring) and gives the caller's thread count back."""
    problem = _paper_problem(num_probes=64)
    seen: list[int] = []
    original = problem.minibatch_loss

    def spy(*args: torch.Tensor) -> torch.Tensor:
        seen.append(torch.get_num_threads())
        return original(*args)

    problem.minibatch_loss = spy  # type: ignore[method-assign]
    before = torch.get_num_threads()
    search(problem, 2, steps=2, progress=False)
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == before


def test_lenet_starts_and_steps() -> None:
    """A conv net: starts from its initialisation (every Conv2d and Linear redrawn) and a
    few steps that lower J."""
    torch.manual_seed(0)
    problem = Problem(LeNet5(input_size=12), num_probes=64, seed=1)
    result = search(problem, 2, steps=5, lr=0.001, batch_size=32, seed=7, progress=False)
    torch.manual_seed(8)
    assert torch.equal(result.starts[0], flatten_params(LeNet5(input_size=12)))
    assert result.params.shape == (2, problem.num_params)
    assert bool(torch.isfinite(result.losses).all())
    assert bool((result.losses < result.history[:, 0]).all())


def test_a_start_equal_to_theta_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(11)  # the seed of start 0 when the search seed is 10
    problem = Problem(TwoNeuronNet(), num_probes=64)
    with caplog.at_level(logging.WARNING, logger="genni_ext"):
        result = search(problem, 2, steps=1, seed=10, progress=False)
    assert torch.equal(result.starts[0], problem.theta)
    assert any("start(s) [0] equal theta" in r.getMessage() for r in caplog.records)


def test_given_starts() -> None:
    problem = _paper_problem(num_probes=100)
    starts = torch.tensor([[1.0, -1.0, 0.5, 0.5], [0.2, 0.3, -0.4, 0.1]], dtype=torch.float64)
    result = search(problem, starts, steps=3, seed=2, progress=False)
    assert result.starts.dtype == torch.float32 and torch.equal(result.starts, starts.float())
    assert result.seeds == [3, 4]
    assert torch.equal(starts[0], torch.tensor([1.0, -1.0, 0.5, 0.5], dtype=torch.float64))


class _Scale(nn.Module):
    """A parameter that no reset_parameters() redraws."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.linear = nn.Linear(2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.linear(x)


def test_model_without_reset_parameters_needs_given_starts() -> None:
    problem = Problem(_Scale(), input_shape=(2,), num_probes=20)
    with pytest.raises(
        InputError, match=r"parameters scale belong to modules without reset_parameters"
    ):
        search(problem, 2, steps=1, progress=False)
    starts = problem.theta[None] + 0.1
    assert search(problem, starts, steps=2, progress=False).params.shape == (1, 4)


# --- history, early stopping, result ------------------------------------------------------------


def test_history_and_result() -> None:
    problem = _paper_problem(num_probes=256)
    result = search(problem, 3, steps=250, record_every=100, seed=1, progress=False)
    assert isinstance(result, SearchResult)
    assert result.history_steps.tolist() == [0, 100, 200, 250]
    assert result.history_steps.dtype == torch.int64
    assert result.history.shape == (3, 4) and result.history.dtype == torch.float64
    assert torch.equal(result.losses, result.history[:, -1])
    torch.testing.assert_close(result.history[:, 0], problem.loss(result.starts))
    torch.testing.assert_close(result.losses, problem.loss(result.params))
    assert result.params.shape == result.starts.shape == (3, 4)
    config = result.config
    assert json.loads(json.dumps(config)) == config
    assert set(config) == {
        "steps", "lr", "batch_size", "optimizer", "momentum", "tol", "seed", "record_every",
        "restart_collapsed", "max_restarts", "steps_run", "theta_hash", "probes_hash",
        "constant_loss",
    }  # fmt: skip
    assert config["restart_collapsed"] is False and result.restarts.tolist() == [0, 0, 0]
    assert config["theta_hash"] == problem.theta_hash
    assert config["probes_hash"] == problem.probes_hash
    assert config["constant_loss"] == problem.constant_loss
    # ε relative to the constant function's J, as the config recorded it.
    eps = 0.5 * problem.constant_loss
    assert torch.equal(result.converged(eps_relative=0.5), result.converged(eps))
    assert config["steps_run"] == 250 and config["tol"] is None and config["seed"] == 1


def test_converged_mask() -> None:
    result = SearchResult(
        params=torch.zeros(3, 4),
        losses=torch.tensor([1e-4, 0.01, float("nan")], dtype=torch.float64),
        history=torch.zeros(3, 1, dtype=torch.float64),
        history_steps=torch.zeros(1, dtype=torch.int64),
        starts=torch.zeros(3, 4),
        seeds=[1, 2, 3],
        config={},
    )
    assert result.converged(0.0025).tolist() == [True, False, False]
    assert result.converged(0.1).tolist() == [True, True, False]
    for eps in (0, -1.0, float("nan"), "0.1", True):
        with pytest.raises(InputError, match="eps must be a positive"):
            result.converged(eps)  # type: ignore[arg-type]


def test_early_stopping() -> None:
    problem = _paper_problem(num_probes=1024)
    result = search(problem, 4, steps=3000, tol=EPS, record_every=50, seed=10, progress=False)
    steps_run = result.config["steps_run"]
    assert 0 < steps_run < 3000 and steps_run % 50 == 0
    assert int(result.history_steps[-1]) == steps_run
    assert bool(result.converged(EPS).all())
    assert bool((result.history[:, -2] >= EPS).any()), "it should have stopped one record earlier"
    # The same run without tol, cut at steps_run, is the same run.
    plain = search(problem, 4, steps=steps_run, record_every=50, seed=10, progress=False)
    torch.testing.assert_close(plain.params, result.params, rtol=0, atol=0)


def test_early_stopping_at_the_start() -> None:
    problem = _paper_problem(num_probes=64)
    result = search(problem, problem.theta[None], steps=100, tol=1e-3, progress=False)
    assert result.config["steps_run"] == 0
    assert result.history_steps.tolist() == [0] and torch.equal(result.params, result.starts)


def test_divergence_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    problem = _paper_problem(num_probes=64)
    with caplog.at_level(logging.WARNING, logger="genni_ext"):
        result = search(problem, 2, steps=30, lr=1e6, record_every=10, seed=1, progress=False)
    assert any("NaN or Inf" in r.getMessage() for r in caplog.records)
    assert not bool(result.converged(EPS).any())


def test_progress_bar(capsys: pytest.CaptureFixture[str]) -> None:
    problem = _paper_problem(num_probes=64)
    search(problem, 2, steps=20, record_every=10, progress=True)
    assert "search" in capsys.readouterr().err
    search(problem, 2, steps=20, record_every=10, progress=False)
    assert capsys.readouterr().err == ""


# --- bad input ------------------------------------------------------------------------------


def _small() -> Problem:
    torch.manual_seed(0)
    return Problem(mlp([2, 3, 1]), num_probes=16)


BAD_SEARCHES: list[tuple[str, dict[str, object], str]] = [
    ("problem", {"problem": "p"}, r"problem must be a genni_ext\.Problem"),
    ("starts 0", {"starts": 0}, r"starts must be a positive int.*or a tensor \[K, 13\]"),
    ("starts negative", {"starts": -3}, r"starts must be a positive int"),
    ("starts bool", {"starts": True}, r"starts must be a positive int"),
    ("starts float", {"starts": 2.0}, r"starts must be a positive int"),
    ("starts 1-D", {"starts": torch.zeros(13)}, r"starts has shape \[13\].*starts\[None\]"),
    ("starts width", {"starts": torch.zeros(2, 12)}, r"starts has shape \[2, 12\].*\[K, 13\]"),
    ("starts empty", {"starts": torch.zeros(0, 13)}, r"starts has shape \[0, 13\]"),
    ("starts NaN", {"starts": torch.full((2, 13), float("nan"))}, r"starts contains NaN"),
    ("starts int", {"starts": torch.zeros(2, 13, dtype=torch.int64)}, r"starts has dtype"),
    ("steps 0", {"steps": 0}, r"steps must be a positive int"),
    ("steps float", {"steps": 10.5}, r"steps must be a positive int"),
    ("lr 0", {"lr": 0.0}, r"lr must be a positive"),
    ("lr negative", {"lr": -0.1}, r"lr must be a positive"),
    ("lr NaN", {"lr": float("nan")}, r"lr must be a positive finite"),
    ("lr str", {"lr": "0.1"}, r"lr must be a positive number"),
    ("batch_size 0", {"batch_size": 0}, r"batch_size must be a positive int"),
    ("optimizer", {"optimizer": "rmsprop"}, r"optimizer='rmsprop' is not known.*'sgd', 'adam'"),
    ("optimizer case", {"optimizer": "SGD"}, r"optimizer='SGD' is not known"),
    ("momentum 1", {"momentum": 1.0}, r"momentum must be a number in \[0, 1\)"),
    ("momentum negative", {"momentum": -0.5}, r"momentum must be a number in \[0, 1\)"),
    ("momentum with adam", {"optimizer": "adam", "momentum": 0.9}, r"applies to optimizer='sgd'"),
    ("tol 0", {"tol": 0.0}, r"tol must be a positive"),
    ("tol inf", {"tol": float("inf")}, r"tol must be a positive finite"),
    ("seed negative", {"seed": -1}, r"seed must be a non-negative int"),
    ("seed float", {"seed": 1.5}, r"seed must be a non-negative int"),
    ("record_every 0", {"record_every": 0}, r"record_every must be a positive int"),
    ("progress", {"progress": "yes"}, r"progress must be True or False"),
]


@pytest.mark.parametrize(
    ("change", "message"), [c[1:] for c in BAD_SEARCHES], ids=[c[0] for c in BAD_SEARCHES]
)
def test_bad_search(change: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"problem": _small(), "starts": 2, "steps": 2, "progress": False}
    arguments.update(change)
    problem = arguments.pop("problem")
    with pytest.raises(InputError, match=message):
        search(problem, **arguments)  # type: ignore[arg-type]
