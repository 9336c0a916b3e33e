"""Alignment to G_ReLU images and the kinds of found points, on planted answers.

Symmetry images are built here from the modules' weight tensors (permute and scale the
rows of one layer, the columns of the next), independently of the flat-index structure
that the code under test reads from the lowered program.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from genni_ext import Problem, SearchResult
from genni_ext.analysis.alignment import align, explain
from genni_ext.core.models import LeNet5, TwoNeuronNet, flatten_params, mlp
from genni_ext.errors import InputError

DEMO_THETA = (-0.084, -0.034, -0.265, 0.163)


def planted(units: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random permutation and scales in [0.3, 3]."""
    permutation = torch.randperm(units, generator=generator)
    scales = 0.3 + 2.7 * torch.rand(units, generator=generator, dtype=torch.float64)
    return permutation, scales


@torch.no_grad()
def transform_rows(layer: nn.Module, permutation: torch.Tensor, scales: torch.Tensor) -> None:
    """Unit i of the layer becomes scales[i] × unit permutation[i] (weight rows, bias)."""
    shape = (-1,) + (1,) * (layer.weight.ndim - 1)
    layer.weight.copy_(layer.weight[permutation] * scales.view(shape))
    if layer.bias is not None:
        layer.bias.copy_(layer.bias[permutation] * scales)


@torch.no_grad()
def transform_columns(
    layer: nn.Module, permutation: torch.Tensor, scales: torch.Tensor, block: int = 1
) -> None:
    """The next layer reads unit i's ``block`` inputs from where unit permutation[i]'s were,
    divided by scales[i]."""
    weight = layer.weight
    grouped = weight.reshape(weight.shape[0], -1, block, *weight.shape[2:])
    grouped = grouped[:, permutation] / scales.view(1, -1, *(1,) * (grouped.ndim - 2))
    weight.copy_(grouped.reshape(weight.shape))


def permuted_like(
    model: nn.Module, seed: int
) -> tuple[nn.Module, torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """A planted G_ReLU image of an mlp with Linear layers at 0, 2, 4."""
    image = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    permutations, scales = [], []
    for first, second in ((0, 2), (2, 4)):
        permutation, scale = planted(image[first].out_features, generator)
        transform_rows(image[first], permutation, scale)
        transform_columns(image[second], permutation, scale)
        permutations.append(permutation)
        scales.append(scale)
    return image, flatten_params(image), permutations, scales


def test_align_recovers_planted_mlp_symmetry() -> None:
    torch.manual_seed(4)
    model = mlp([5, 12, 17, 3]).double()
    _, image, permutations, scales = permuted_like(model, seed=4)
    result = align(model, flatten_params(model), image)
    assert result.explained
    assert result.residual <= 1e-12
    for found, expected in zip(result.permutations, permutations, strict=True):
        np.testing.assert_array_equal(found, expected.numpy())
    for found, expected in zip(result.scales, scales, strict=True):
        np.testing.assert_allclose(found, expected.numpy(), rtol=1e-12)
    torch.testing.assert_close(result.aligned, image)
    assert result.notes == ()


def test_align_recovers_planted_lenet_symmetry() -> None:
    torch.manual_seed(5)
    model = LeNet5().double()
    image = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(6)
    # (layer, next layer, block of inputs per unit in the next layer)
    pairs = ((0, 3, 1), (3, 7, 25), (7, 9, 1), (9, 11, 1))
    expected = []
    for first, second, block in pairs:
        units = image[first].weight.shape[0]
        permutation, scale = planted(units, generator)
        transform_rows(image[first], permutation, scale)
        transform_columns(image[second], permutation, scale, block)
        expected.append(permutation)
    result = align(model, flatten_params(model), flatten_params(image))
    assert result.residual <= 1e-6 and result.explained
    for found, planted_permutation in zip(result.permutations, expected, strict=True):
        np.testing.assert_array_equal(found, planted_permutation.numpy())


def test_transfer_direction_is_not_a_symmetry() -> None:
    a, b, c, d = DEMO_THETA
    model = TwoNeuronNet().double()
    theta = torch.tensor(DEMO_THETA, dtype=torch.float64)
    shift = 0.05
    other = torch.tensor([a, b, c + shift / a, d - shift / b], dtype=torch.float64)
    problem = Problem(model, theta=theta, num_probes=256)
    assert float(problem.loss(other)) < 1e-28  # the same function (a, b < 0)
    result = align(model, theta, other)
    assert not result.explained
    # The closest G_ReLU element leaves 3.6 % (test_align_orbit checks align against a
    # brute-force orbit distance); the tolerance is 3.45e-4.
    assert result.residual > 0.03


def dead_unit_mlp() -> tuple[nn.Module, torch.Tensor]:
    """mlp (3, 6, 4, 2) whose first-layer unit 2 is dead (zero weights, bias −1); the
    second layer's weights and biases are positive, so its units are alive."""
    torch.manual_seed(7)
    model = mlp([3, 6, 4, 2]).double()
    with torch.no_grad():
        model[0].weight[2] = 0.0
        model[0].bias[2] = -1.0
        model[2].weight.abs_()
        model[2].bias.fill_(0.1)
    return model, flatten_params(model)


def changed_unit(model: nn.Module, unit: int, weights: list[float], bias: float) -> torch.Tensor:
    other = copy.deepcopy(model)
    with torch.no_grad():
        other[0].weight[unit] = torch.tensor(weights, dtype=torch.float64)
        other[0].bias[unit] = bias
    return flatten_params(other)


def test_changed_dead_unit_is_not_a_symmetry() -> None:
    model, theta = dead_unit_mlp()
    other = changed_unit(model, 2, [0.3, -0.2, 0.1], -50.0)
    problem = Problem(model, num_probes=256)
    assert float(problem.loss(other)) == 0.0  # still dead on every probe
    result = align(model, theta, other)
    assert not result.explained and result.residual > 1e-3


def test_tanh_layers_search_permutations_only() -> None:
    torch.manual_seed(8)
    model = mlp([3, 5, 2], "tanh").double()
    permutation = torch.tensor([3, 0, 4, 1, 2])
    ones = torch.ones(5, dtype=torch.float64)
    image = copy.deepcopy(model)
    transform_rows(image[0], permutation, ones)
    transform_columns(image[2], permutation, ones)
    result = align(model, flatten_params(model), flatten_params(image))
    assert result.explained
    np.testing.assert_array_equal(result.permutations[0], permutation.numpy())
    assert len(result.notes) == 1 and "only permutations" in result.notes[0]
    scaled = copy.deepcopy(image)
    transform_rows(scaled[0], torch.arange(5), 2.0 * ones)
    transform_columns(scaled[2], torch.arange(5), 2.0 * ones)
    assert not align(model, flatten_params(model), flatten_params(scaled)).explained


def search_result_of(points: torch.Tensor, problem: Problem) -> SearchResult:
    losses = problem.loss(points)
    return SearchResult(
        params=points,
        losses=losses,
        history=losses[:, None],
        history_steps=torch.zeros(1, dtype=torch.int64),
        starts=points.clone(),
        seeds=list(range(points.shape[0])),
        config={},
    )


def scaled_perturbation(problem: Problem, target: float, seed: int) -> torch.Tensor:
    """θ moved along a random direction until J is about ``target`` (bisection on the
    step; J grows with it near θ)."""
    direction = torch.randn(
        problem.num_params, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    low, high = 0.0, 1.0
    while float(problem.loss(problem.theta + high * direction)) < target:
        high *= 2
    for _ in range(25):
        middle = (low + high) / 2
        if float(problem.loss(problem.theta + middle * direction)) < target:
            low = middle
        else:
            high = middle
    return problem.theta + high * direction


def test_explain_sorts_planted_points() -> None:
    model, _ = dead_unit_mlp()
    problem = Problem(model, num_probes=512, seed=1)
    constant = float((problem.targets - problem.targets.mean(0)).square().sum(1).mean())
    eps = 0.1 * constant
    _, image_one, _, _ = permuted_like(model, seed=1)
    _, image_two, _, _ = permuted_like(model, seed=2)
    dead = changed_unit(model, 2, [0.3, -0.2, 0.1], -50.0)
    # Unit 2 alive but with zero outgoing weights: the same function.
    silent_model = copy.deepcopy(model)
    with torch.no_grad():
        silent_model[0].weight[2] = torch.tensor([0.5, 0.1, -0.3], dtype=torch.float64)
        silent_model[0].bias[2] = 1.0
        silent_model[2].weight[:, 2] = 0.0
    silent = flatten_params(silent_model)
    approximate = scaled_perturbation(problem, 1e-3 * eps, seed=3)
    unconverged = scaled_perturbation(problem, 0.5 * (eps + constant), seed=4)
    constant_model = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in constant_model.parameters():
            parameter.zero_()
        constant_model[4].bias.copy_(problem.targets.mean(0))
    near_constant = flatten_params(constant_model)
    points = torch.stack(
        [image_one, image_two, dead, silent, approximate, unconverged, near_constant]
    )
    result = explain(search_result_of(points, problem), problem, eps)
    assert result.kinds == [
        "G_ReLU image",
        "G_ReLU image",
        "other exact",
        "other exact",
        "approximate",
        "not converged",
        "near-constant",
    ]
    assert result.details[2:4] == ["dead unit", "zero outgoing weights"]
    assert result.counts == {
        "G_ReLU image": 2,
        "other exact": 2,
        "near-constant": 1,
        "collapsed": 0,
        "approximate": 1,
        "not converged": 1,
    }
    assert (result.residuals[:2] <= 1e-6).all()
    assert result.thresholds["input_ignoring_loss"] == pytest.approx(constant)
    assert result.thresholds["theta_dead"] == 1
    text = result.summary()
    assert "Of 7 found points: 2 G_ReLU images" in text
    assert ": 1 dead unit, 1 zero outgoing weights;" in text
    assert "1 near-constant (within 1% of the best constant function)" in text
    assert result.notes == ()


def test_explain_recomputes_losses_and_handles_nan_points() -> None:
    model, theta = dead_unit_mlp()
    problem = Problem(model, num_probes=128)
    points = torch.stack([theta, torch.full_like(theta, math.nan)])
    stored = search_result_of(points[:1], problem)
    result_input = SearchResult(
        params=points,
        losses=torch.tensor([0.5, math.nan], dtype=torch.float64),
        history=stored.history.expand(2, 1),
        history_steps=stored.history_steps,
        starts=points,
        seeds=[0, 1],
        config={},
    )
    result = explain(result_input, problem, 0.01)
    assert result.kinds == ["G_ReLU image", "not converged"]
    assert result.losses[0] == 0.0 and math.isnan(result.losses[1])
    assert result.stored_losses[0] == 0.5
    assert any("[0]" in note for note in result.notes)
    wide = explain(result_input, problem, 2 * result.thresholds["input_ignoring_loss"])
    assert any("exceeds J of the best input-ignoring function" in note for note in wide.notes)


def test_align_and_explain_reject_models_that_do_not_lower() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.GELU(), nn.Linear(3, 1)).double()
    theta = flatten_params(model)
    with pytest.raises(InputError, match="GELU"):
        align(model, theta, theta)
    problem = Problem(model, num_probes=16)
    with pytest.raises(InputError, match="GELU"):
        explain(search_result_of(theta[None], problem), problem, 0.1)


def test_align_rejects_shared_parameters() -> None:
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.ReLU(), shared).double()
    theta = flatten_params(model)
    with pytest.raises(InputError, match="shares parameters"):
        align(model, theta, theta)


@pytest.mark.parametrize(
    ("other", "tol", "message"),
    [
        (torch.zeros(3, dtype=torch.float64), 1e-6, "shape"),
        (torch.full((4,), math.nan, dtype=torch.float64), 1e-6, "NaN"),
        (torch.zeros(4, dtype=torch.int64), 1e-6, "dtype"),
        ("point", 1e-6, "Tensor"),
        (torch.zeros(4, dtype=torch.float64), 0.0, "tol"),
        (torch.zeros(4, dtype=torch.float64), math.inf, "tol"),
    ],
)
def test_align_bad_arguments(other: object, tol: float, message: str) -> None:
    model = TwoNeuronNet().double()
    with pytest.raises(InputError, match=message):
        align(model, flatten_params(model), other, tol=tol)  # type: ignore[arg-type]


def test_align_needs_an_input_shape_it_cannot_infer() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 1))
    theta = flatten_params(model)
    with pytest.raises(InputError, match="input_shape"):
        align(model, theta, theta)
    assert align(model, theta, theta, input_shape=(1, 4, 4)).explained


@pytest.mark.parametrize("eps", [0.0, -1.0, math.nan, "0.1"])
def test_explain_bad_eps(eps: object) -> None:
    model, theta = dead_unit_mlp()
    problem = Problem(model, num_probes=16)
    with pytest.raises(InputError, match="eps"):
        explain(search_result_of(theta[None], problem), problem, eps)  # type: ignore[arg-type]


def test_explain_bad_search_result_and_problem() -> None:
    model, theta = dead_unit_mlp()
    problem = Problem(model, num_probes=16)
    result = search_result_of(theta[None], problem)
    with pytest.raises(InputError, match="SearchResult"):
        explain(theta, problem, 0.1)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="Problem"):
        explain(result, model, 0.1)  # type: ignore[arg-type]
    other = Problem(TwoNeuronNet().double(), num_probes=16)
    with pytest.raises(InputError, match=r"\[K, 4\]"):
        explain(result, other, 0.1)
