"""Problem: defaults (θ, probes, input shape), targets, J for one vector and for a batch
against the sweep and the per-point loop, hashes and description, and every bad input."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable

import pytest
import torch
from torch import nn

import genni_ext
import genni_ext.core.problem as problem_module
from genni_ext.core.models import LeNet5, TwoNeuronNet, flatten_params, load_flat_params, mlp
from genni_ext.core.problem import Problem, infer_input_shape
from genni_ext.errors import InputError
from genni_ext.testing import loop_sweep


class _Custom(nn.Module):
    """A model with its own forward: its input shape cannot be known without running it."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x).tanh()


def _two_neuron(seed: int = 10, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    return TwoNeuronNet().to(dtype)


# --- defaults ------------------------------------------------------------------------------


def test_defaults_for_the_two_neuron_net() -> None:
    model = _two_neuron()
    problem = Problem(model)
    assert problem.input_shape == (1,)
    assert problem.num_probes == 16384 and problem.num_params == 4
    assert problem.inputs.shape == (16384, 1) and problem.inputs.dtype == torch.float32
    assert problem.seed == 0
    expected = torch.randn(16384, 1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(problem.inputs, expected)
    assert torch.equal(problem.theta, flatten_params(model))
    with torch.no_grad():
        assert torch.equal(problem.targets, model(problem.inputs))
    assert problem.targets.shape == (16384, 1) and not problem.targets.requires_grad


def test_probes_follow_the_seed() -> None:
    model = _two_neuron()
    first, again, other = (Problem(model, num_probes=64, seed=s) for s in (3, 3, 4))
    assert torch.equal(first.inputs, again.inputs) and first.probes_hash == again.probes_hash
    assert not torch.equal(first.inputs, other.inputs) and first.probes_hash != other.probes_hash


def test_input_shape_of_lenet5() -> None:
    model = LeNet5(in_channels=2, input_size=12)
    assert model.input_shape == (2, 12, 12)
    problem = Problem(model, num_probes=3)
    assert problem.inputs.shape == (3, 2, 12, 12) and problem.targets.shape == (3, 1)


@pytest.mark.parametrize(
    ("make", "shape"),
    [
        (lambda: mlp([3, 5, 2]), (3,)),
        (lambda: mlp([7, 2], activation="tanh", bias=False), (7,)),
        (lambda: nn.Sequential(nn.Dropout(0.0), nn.Sequential(nn.Tanh(), nn.Linear(4, 2))), (4,)),
        (lambda: nn.Linear(6, 1), (6,)),
    ],
)
def test_input_shape_of_a_plain_sequential(make: Callable[[], nn.Module], shape: tuple) -> None:
    model = make()
    assert infer_input_shape(model) == shape
    problem = Problem(model, num_probes=5)
    assert problem.inputs.shape == (5, *shape)


@pytest.mark.parametrize(
    "make",
    [
        _Custom,
        lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 1)),
        lambda: nn.Sequential(nn.Flatten(), nn.Linear(4, 1)),
    ],
)
def test_input_shape_that_cannot_be_inferred(make: Callable[[], nn.Module]) -> None:
    model = make()
    assert infer_input_shape(model) is None
    with pytest.raises(InputError, match=r"cannot infer the input shape.*inputs=.*input_shape="):
        Problem(model, num_probes=4)


def test_input_shape_or_inputs_given() -> None:
    model = _Custom()
    by_shape = Problem(model, num_probes=6, input_shape=[3], seed=1)
    assert by_shape.input_shape == (3,) and by_shape.inputs.shape == (6, 3)
    inputs = torch.randn(9, 3)
    given = Problem(model, inputs)
    assert given.inputs.data_ptr() == inputs.data_ptr()  # kept, not copied
    assert given.input_shape == (3,) and given.num_probes == 9
    assert Problem(model, inputs, input_shape=(3,)).input_shape == (3,)


def test_theta_is_a_copy_and_the_model_is_not_used_for_it() -> None:
    model = _two_neuron()
    theta = torch.tensor([0.5, -1.0, 2.0, 0.25])
    problem = Problem(model, theta=theta, num_probes=32)
    theta.zero_()
    assert torch.equal(problem.theta, torch.tensor([0.5, -1.0, 2.0, 0.25]))
    reference = copy.deepcopy(model)
    load_flat_params(reference, problem.theta)
    with torch.no_grad():
        torch.testing.assert_close(problem.targets, reference(problem.inputs))
    # Changing the model's parameters afterwards changes nothing either.
    before = problem.loss(flat := torch.tensor([0.4, -1.0, 2.0, 0.3]))
    with torch.no_grad():
        model[0].weight.fill_(7.0)
    assert torch.equal(problem.loss(flat), before)


def test_float64_model() -> None:
    problem = Problem(_two_neuron(dtype=torch.float64), num_probes=10)
    assert problem.inputs.dtype == problem.targets.dtype == torch.float64
    assert problem.loss(problem.theta).dtype == torch.float64


def test_describe_and_hashes() -> None:
    model = _two_neuron()
    problem = Problem(model, num_probes=100, seed=7)
    info = problem.describe()
    assert json.loads(json.dumps(info)) == info
    assert info["model"] == "TwoNeuronNet" and info["repr"] == repr(model)
    assert info["num_params"] == 4 and info["num_probes"] == 100 and info["seed"] == 7
    assert info["input_shape"] == [1] and info["dtype"] == "float32"
    for key in ("theta_hash", "probes_hash"):
        assert len(info[key]) == 16 and int(info[key], 16) >= 0
    assert info["theta_hash"] == problem.theta_hash
    other = Problem(model, theta=problem.theta + 1.0, num_probes=100, seed=7)
    assert other.theta_hash != problem.theta_hash and other.probes_hash == problem.probes_hash
    assert "TwoNeuronNet" in repr(problem)


def test_hashes_and_baselines_are_computed_once_until_the_tensor_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    problem = Problem(_two_neuron(), num_probes=100, seed=7)
    hashed: list[int] = []
    real_hash = problem_module._short_hash
    monkeypatch.setattr(
        problem_module, "_short_hash", lambda t: hashed.append(t.numel()) or real_hash(t)
    )
    first = problem.describe()
    assert problem.describe() == first and len(hashed) == 2  # θ and the probes, once each
    before = problem.theta_hash
    problem.theta.add_(1.0)  # in place: the version counter moves
    assert problem.theta_hash == real_hash(problem.theta) != before and len(hashed) == 3
    zero = problem.zero_loss
    problem.targets.mul_(2.0)
    assert problem.zero_loss == pytest.approx(4 * zero, rel=1e-12)
    assert problem.constant_loss == pytest.approx(
        float((problem.targets.double() - problem.targets.double().mean(0)).square().sum(1).mean()),
        rel=1e-12,
    )


def test_with_probes() -> None:
    problem = Problem(_two_neuron(), theta=torch.tensor([1.0, -1.0, 0.5, 2.0]), num_probes=50)
    fresh = problem.with_probes(200, seed=5)
    assert fresh.model is problem.model and torch.equal(fresh.theta, problem.theta)
    assert fresh.num_probes == 200 and fresh.seed == 5 and fresh.input_shape == (1,)
    assert torch.equal(fresh.inputs, Problem(problem.model, num_probes=200, seed=5).inputs)


# --- J ---------------------------------------------------------------------------------------


def _sweep_case(model: nn.Module, dtype: torch.dtype, seed: int = 0) -> tuple:
    """A problem and a batch of points center + coeffs @ directions around θ."""
    model = model.to(dtype)
    problem = Problem(model, num_probes=300, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    scale = 0.3 * float(problem.theta.square().mean().sqrt())
    center = problem.theta + scale * torch.randn(problem.num_params, generator=generator).to(dtype)
    directions = (scale * torch.randn(2, problem.num_params, generator=generator)).to(dtype)
    coeffs = (2 * torch.rand(7, 2, generator=generator) - 1).to(dtype)
    return problem, center, directions, coeffs


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", ["two_neuron", "mlp", "lenet"])
def test_loss_equals_sweep_and_loop(name: str, dtype: torch.dtype) -> None:
    torch.manual_seed(3)
    model = {
        "two_neuron": TwoNeuronNet,
        "mlp": lambda: mlp([4, 8, 3], activation="tanh"),
        "lenet": lambda: LeNet5(input_size=12),
    }[name]()
    problem, center, directions, coeffs = _sweep_case(model, dtype)
    params = center + coeffs @ directions
    got = problem.loss(params)
    assert got.dtype == torch.float64 and got.shape == (7,)
    probes = (problem.inputs, problem.targets)
    swept = genni_ext.sweep(model, center, directions, coeffs, *probes, backend="torch")
    looped = loop_sweep(model, center, directions, coeffs, *probes)
    tolerance = (
        {"rtol": 1e-10, "atol": 0.0} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-9}
    )
    torch.testing.assert_close(got, swept, **tolerance)
    torch.testing.assert_close(got, looped, **tolerance)
    one = problem.loss(params[3])
    assert one.dtype == torch.float64 and one.shape == ()
    torch.testing.assert_close(one, looped[3], **tolerance)
    assert float(problem.loss(problem.theta)) < (1e-20 if dtype == torch.float64 else 1e-10)


def test_loss_casts_params_to_thetas_dtype() -> None:
    problem = Problem(_two_neuron(), num_probes=40)
    point = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    assert torch.equal(problem.loss(point), problem.loss(point.float()))


def _tied() -> nn.Module:
    first, second = nn.Linear(4, 4), nn.Linear(4, 4)
    second.weight = first.weight
    return nn.Sequential(first, nn.Tanh(), second)


def _reused() -> nn.Module:
    shared = nn.Linear(4, 4)
    return nn.Sequential(shared, nn.Tanh(), shared)


@pytest.mark.parametrize("make", [_tied, _reused], ids=["tied", "reused"])
def test_tied_and_reused_modules(make: Callable[[], nn.Module]) -> None:
    """J of a model with a weight tied between two modules or a module used twice matches
    the per-point loop, and the model keeps its own Parameters."""
    torch.manual_seed(4)
    model = make()
    weights = [m.weight for m in model if isinstance(m, nn.Linear)]
    before = flatten_params(model)
    problem, center, directions, coeffs = _sweep_case(model, torch.float64)
    looped = loop_sweep(model, center, directions, coeffs, problem.inputs, problem.targets)
    torch.testing.assert_close(
        problem.loss(center + coeffs @ directions), looped, rtol=1e-10, atol=0
    )
    assert [m.weight for m in model if isinstance(m, nn.Linear)] == weights
    assert torch.equal(flatten_params(model), before.double())


def test_large_batch_is_chunked() -> None:
    """More rows than one chunk holds give the same J as one row at a time."""
    problem = Problem(_two_neuron(dtype=torch.float64), num_probes=50)
    params = problem.theta + 0.1 * torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    problem._bytes_per_sample = 1 << 24  # one row and 64 probes per chunk for this test
    chunked = problem.loss(params)
    problem._bytes_per_sample = 1
    torch.testing.assert_close(chunked, problem.loss(params), rtol=1e-12, atol=0.0)


# --- bad input ------------------------------------------------------------------------------


class _NoParams(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _Scalar(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.weight).sum()


def _model() -> nn.Module:
    torch.manual_seed(0)
    return mlp([3, 4, 2])


BAD_PROBLEMS: list[tuple[str, Callable[[], object], str]] = [
    ("model", lambda: Problem("mlp"), r"model must be a torch\.nn\.Module"),  # type: ignore[arg-type]
    ("no params", lambda: Problem(_NoParams(), input_shape=(2,)), r"has no parameters"),
    ("theta list", lambda: Problem(_model(), theta=[0.0] * 26), r"theta must be a torch\.Tensor"),
    ("theta size", lambda: Problem(_model(), theta=torch.zeros(25)), r"theta has shape \[25\].*26"),
    (
        "theta 2-D",
        lambda: Problem(_model(), theta=torch.zeros(1, 26)),
        r"theta has shape \[1, 26\]",
    ),
    ("theta int", lambda: Problem(_model(), theta=torch.zeros(26, dtype=torch.int64)), r"theta"),
    (
        "theta NaN",
        lambda: Problem(_model(), theta=torch.full((26,), float("nan"))),
        r"theta contains NaN",
    ),
    (
        "inputs 1-D",
        lambda: Problem(_model(), torch.zeros(3)),
        r"inputs must have shape \[N, \.\.\.\]",
    ),
    (
        "inputs empty",
        lambda: Problem(_model(), torch.zeros(0, 3)),
        r"inputs must have shape.*N >= 1",
    ),
    (
        "inputs NaN",
        lambda: Problem(_model(), torch.full((4, 3), float("nan"))),
        r"inputs contains NaN",
    ),
    (
        "inputs Inf",
        lambda: Problem(_model(), torch.full((4, 3), float("inf"))),
        r"inputs contains Inf",
    ),
    (
        "inputs dtype",
        lambda: Problem(_model(), torch.zeros(4, 3).double()),
        r"inputs is torch\.float64",
    ),
    ("inputs list", lambda: Problem(_model(), [[0.0] * 3]), r"inputs must be a torch\.Tensor"),  # type: ignore[arg-type]
    (
        "inputs shape vs model",
        lambda: Problem(_model(), torch.zeros(4, 5)),
        r"cannot run on inputs of shape \[4, 5\]",
    ),
    (
        "input_shape mismatch",
        lambda: Problem(_model(), torch.zeros(4, 3), input_shape=(4,)),
        r"input_shape=\(4,\) does not match.*\(3,\)",
    ),
    ("input_shape zero", lambda: Problem(_model(), input_shape=(0,)), r"input_shape\[0\]"),
    ("input_shape str", lambda: Problem(_model(), input_shape="3"), r"input_shape must be"),
    ("input_shape empty", lambda: Problem(_model(), input_shape=()), r"input_shape must be"),
    ("num_probes 0", lambda: Problem(_model(), num_probes=0), r"num_probes must be a positive int"),
    ("num_probes float", lambda: Problem(_model(), num_probes=10.0), r"num_probes"),  # type: ignore[arg-type]
    ("seed negative", lambda: Problem(_model(), seed=-1), r"seed must be a non-negative int"),
    ("seed bool", lambda: Problem(_model(), seed=True), r"seed must be"),
    (
        "scalar output",
        lambda: Problem(_Scalar(), input_shape=(2,), num_probes=3),
        r"must return one row of outputs per probe",
    ),
    (
        "targets NaN",
        lambda: Problem(_model(), theta=torch.full((26,), 1e30), num_probes=4),
        r"outputs NaN or Inf at theta",
    ),
]


@pytest.mark.parametrize(
    ("make", "message"), [c[1:] for c in BAD_PROBLEMS], ids=[c[0] for c in BAD_PROBLEMS]
)
def test_bad_problem(make: Callable[[], object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        make()


BAD_PARAMS: list[tuple[str, object, str]] = [
    ("list", [0.0] * 26, r"params must be a torch\.Tensor"),
    ("size", torch.zeros(25), r"params has shape \[25\].*\[26\].*\[K, 26\]"),
    ("3-D", torch.zeros(1, 2, 26), r"params has shape \[1, 2, 26\]"),
    ("empty batch", torch.zeros(0, 26), r"params has shape \[0, 26\].*K >= 1"),
    ("NaN", torch.full((26,), float("nan")), r"params contains NaN"),
    ("Inf", torch.full((2, 26), float("inf")), r"params contains Inf"),
    ("int", torch.zeros(26, dtype=torch.int32), r"params has dtype torch\.int32"),
    ("complex", torch.zeros(26, dtype=torch.complex64), r"params is complex"),
]


@pytest.mark.parametrize(
    ("params", "message"), [c[1:] for c in BAD_PARAMS], ids=[c[0] for c in BAD_PARAMS]
)
def test_bad_loss_params(params: object, message: str) -> None:
    problem = Problem(_model(), num_probes=8)
    with pytest.raises(InputError, match=message):
        problem.loss(params)  # type: ignore[arg-type]


def test_bad_with_probes() -> None:
    problem = Problem(_model(), num_probes=8)
    with pytest.raises(InputError, match="num_probes"):
        problem.with_probes(0, seed=1)
    with pytest.raises(InputError, match="seed"):
        problem.with_probes(8, seed=-2)
