"""Paths in the full parameter space (analysis.connect) against known answers: the
two-neuron net's rescaling orbit (J = 0 along it) and the barrier between the orbit and
its unit-swapped copy (min(M₊s₊², M₋s₋²)), direct evaluation of J on the segment, and
permutation alignment of two separately trained digits MLPs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from genni_ext.analysis import connect, connect_many
from genni_ext.analysis.connections import swapped_orbit_barrier
from genni_ext.core.models import TwoNeuronNet, flatten_params, mlp
from genni_ext.core.problem import Problem
from genni_ext.errors import InputError

THETA = (0.8, -0.6, 0.9, 0.7)
"""a > 0 > b: [θ] is the 2-D rescaling orbit; s₊ = c·a = 0.72, s₋ = d·b = −0.42."""


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def two_neuron() -> Problem:
    theta = torch.tensor(THETA, dtype=torch.float64)
    return Problem(TwoNeuronNet().double(), theta=theta, num_probes=1024, seed=1)


def _rescaled(alpha: float, beta: float) -> torch.Tensor:
    a, b, c, d = THETA
    return torch.tensor([a * alpha, b * beta, c / alpha, d / beta], dtype=torch.float64)


def _swapped() -> torch.Tensor:
    a, b, c, d = THETA
    return torch.tensor([b, a, d, c], dtype=torch.float64)


def test_linear_is_j_on_the_segment() -> None:
    torch.manual_seed(0)
    model = mlp([3, 5, 4, 2]).double()
    problem = Problem(model, num_probes=256, seed=2)
    a = problem.theta + 0.3 * torch.randn(problem.num_params, dtype=torch.float64)
    b = problem.theta + 0.3 * torch.randn(problem.num_params, dtype=torch.float64)
    result = connect(problem, a, b, "linear", eps=1e-3, points=17, num_threads=1)
    direct = problem.loss(result.points).numpy()
    np.testing.assert_allclose(result.losses, direct, rtol=1e-10, atol=1e-14)
    assert torch.equal(result.points[0], a) and torch.allclose(result.points[-1], b)
    assert result.endpoint_losses == pytest.approx((float(problem.loss(a)), float(problem.loss(b))))
    assert result.barrier == pytest.approx(result.peak - max(result.endpoint_losses))
    assert np.all(np.diff(result.t) > 0) and result.t[0] == 0 and result.t[-1] == 1
    # The segment is a line: every point is a + t (b - a).
    expected = a + torch.from_numpy(result.t)[:, None] * (b - a)
    torch.testing.assert_close(result.points, expected)
    assert result.below_eps == (result.peak < 1e-3)


def test_orbit_joins_one_orbit_at_zero(two_neuron: Problem) -> None:
    result = connect(two_neuron, two_neuron.theta, _rescaled(2.0, 0.5), "orbit", eps_relative=0.05)
    assert not result.discontinuous
    assert torch.equal(result.points[0], two_neuron.theta)
    assert float(np.max(np.abs(result.losses))) <= 1e-24
    assert abs(result.barrier) <= 1e-24 and result.below_eps
    np.testing.assert_allclose(result.scales[0], [2.0, 0.5], rtol=1e-12)


def test_orbit_names_the_permutation(two_neuron: Problem) -> None:
    swapped = _rescaled(1.5, 0.8)[[1, 0, 3, 2]]
    result = connect(two_neuron, two_neuron.theta, swapped, "orbit", eps_relative=0.05)
    assert result.discontinuous
    assert result.permutations[0].tolist() == [1, 0]
    assert float(np.max(result.losses)) <= 1e-24
    assert "not continuous" in result.summary()


def test_orbit_refuses_a_point_off_the_orbit(two_neuron: Problem) -> None:
    off = _rescaled(1.0, 1.0) + torch.tensor([0.0, 0.0, 0.1, 0.0], dtype=torch.float64)
    with pytest.raises(InputError, match="G_ReLU image of a"):
        connect(two_neuron, two_neuron.theta, off, "orbit", eps_relative=0.05)


def test_curve_joins_one_orbit_below_a_thousandth_of_eps(two_neuron: Problem) -> None:
    result = connect(
        two_neuron, two_neuron.theta, _rescaled(2.0, 0.5), "curve", eps_relative=0.05,
        bends=6, steps=300, points=33, init="segment", num_threads=1,
    )  # fmt: skip
    linear = connect(two_neuron, two_neuron.theta, _rescaled(2.0, 0.5), eps_relative=0.05)
    assert linear.barrier_eps > 0.1  # the segment leaves the orbit
    assert 0 <= result.barrier_eps <= 1e-3 and result.below_eps


def _moments(problem: Problem) -> tuple[float, float]:
    x = problem.inputs.reshape(-1)
    return float((x.square() * (x > 0)).mean()), float((x.square() * (x < 0)).mean())


def test_swap_barrier_formula_against_brute_force(two_neuron: Problem) -> None:
    """min(M₊s₊², M₋s₋²) is (1) the highest J on an explicit path from θ to its swapped
    copy, evaluated finely, and (2) the lowest J on the set every path must cross (one
    input weight at 0, the other not yet crossed), by 1-D brute force over the weight
    that J still depends on there."""
    formula = swapped_orbit_barrier(two_neuron)
    upper, lower = _moments(two_neuron)
    a, b, c, d = THETA
    assert formula == pytest.approx(min(upper * (c * a) ** 2, lower * (d * b) ** 2), rel=1e-12)
    # (1) unit 2 drops the negative half-line (b → 0), is reset to b' = a with d = 0, takes
    # the positive half-line from unit 1, which is reset to a' = b and takes the negative.
    corners = torch.tensor(
        [THETA, (a, 0, c, d), (a, 0, c, 0), (a, a, c, 0), (a, a, 0, c), (b, a, 0, c), (b, a, d, c)],
        dtype=torch.float64,
    )
    share = torch.linspace(0, 1, 2001, dtype=torch.float64)[:, None]
    path = torch.cat([u + share * (v - u) for u, v in itertools.pairwise(corners)])
    assert float(two_neuron.loss(path).max()) == pytest.approx(formula, rel=1e-12)
    # (2) the first weight to reach 0 is b (a ≥ 0: only c still matters) or a (b ≤ 0: d).
    grid = torch.linspace(-3, 3, 6001, dtype=torch.float64)
    at_b = torch.stack(
        [torch.full_like(grid, a), torch.zeros_like(grid), grid, torch.full_like(grid, d)], 1
    )
    at_a = torch.stack(
        [torch.zeros_like(grid), torch.full_like(grid, b), torch.full_like(grid, c), grid], 1
    )
    lowest = min(float(two_neuron.loss(at_b).min()), float(two_neuron.loss(at_a).min()))
    assert lowest == pytest.approx(formula, rel=1e-5)


def test_curve_and_band_find_the_swap_barrier(two_neuron: Problem) -> None:
    formula = swapped_orbit_barrier(two_neuron)
    for method in ("curve", "neb"):
        result = connect(
            two_neuron, two_neuron.theta, _swapped(), method, eps_relative=0.05, steps=200,
            points=33, num_threads=1,
        )  # fmt: skip
        assert formula * (1 - 1e-9) <= result.barrier <= 1.05 * formula, method
        assert not result.below_eps


def test_many_pairs_match_one_at_a_time(two_neuron: Problem) -> None:
    pairs = [(two_neuron.theta, _rescaled(2.0, 0.5)), (two_neuron.theta, _swapped())]
    together = connect_many(two_neuron, pairs, "linear", eps_relative=0.05, points=17)
    for (a, b), result in zip(pairs, together, strict=True):
        alone = connect(two_neuron, a, b, "linear", eps_relative=0.05, points=17)
        np.testing.assert_allclose(result.losses, alone.losses, rtol=1e-12, atol=1e-15)


def _train_digits(seed: int, inputs: torch.Tensor, labels: torch.Tensor) -> nn.Module:
    torch.manual_seed(seed)
    model = mlp([64, 24, 24, 10]).double()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), labels).backward()
        optimizer.step()
    return model


def test_alignment_lowers_the_digits_barrier() -> None:
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    inputs = torch.tensor(digits.data / 16.0, dtype=torch.float64)
    labels = torch.tensor(digits.target)
    first = _train_digits(0, inputs, labels)
    second = _train_digits(1, inputs, labels)
    problem = Problem(first, inputs=inputs)
    a, b = flatten_params(first).detach(), flatten_params(second).detach()
    for align in ("weights", "activations"):
        result = connect(problem, a, b, eps_relative=0.05, align=align, points=17)
        assert result.before is not None
        assert result.barrier < result.before.barrier, align
        # The aligned b computes b's function: J at the path's end is J(b).
        end = float(problem.loss(result.points[-1]))
        assert end == pytest.approx(result.endpoint_losses[1], rel=1e-9)
