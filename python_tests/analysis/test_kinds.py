"""The kinds of found points (``explain``) on parameters built by hand, one per kind."""

from __future__ import annotations

import torch
from torch import nn

from genni_ext import Problem, SearchResult
from genni_ext.analysis.alignment import EXACT_RELATIVE, KINDS, SYMMETRY_TOL, explain
from genni_ext.core.models import TwoNeuronNet, flatten_params

# φ = c·ReLU(a x) + d·ReLU(b x) with a > 0 > b: one unit per half-line (the demo's θ).
A, B, C, D = 0.66, -0.75, 0.58, 0.45


def search_of(points: torch.Tensor, problem: Problem) -> SearchResult:
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


def two_neuron(theta: tuple[float, ...]) -> Problem:
    return Problem(
        TwoNeuronNet().double(), theta=torch.tensor(theta, dtype=torch.float64), num_probes=4096
    )


def test_each_kind_of_the_two_neuron_net() -> None:
    problem = two_neuron((A, B, C, D))
    points = torch.tensor(
        [
            [2 * B, 0.5 * A, D / 2, 2 * C],  # units swapped and rescaled
            [A, A, C / 2, C / 2],  # both units on x > 0: θ there, 0 for x < 0
            [A, 0.0, C, 1.0],  # unit 2 dead on every probe: the same function
            [1e-3, -1e-3, 1e-3, 1e-3],  # within 1e-6 of the zero function
            [A * 1.01, B, C, D],  # J < ε, no degeneracy
            [A, B, -C, D],  # far from everything
        ],
        dtype=torch.float64,
    )
    eps = 0.05 * problem.constant_loss
    result = explain(search_of(points, problem), problem, eps)
    assert result.kinds == [
        "G_ReLU image",
        "collapsed",
        "collapsed",
        "near-constant",
        "approximate",
        "not converged",
    ]
    assert result.thresholds["bias_free"] is True
    assert result.thresholds["input_ignoring_loss"] == problem.zero_loss
    assert (result.thresholds["theta_dead"], result.thresholds["theta_merged"]) == (0, 0)
    assert (result.dead[1], result.merged[1]) == (0, 1)
    assert (result.dead[2], result.merged[2]) == (1, 0)
    # The collapsed points compute θ's function for x > 0 and 0 for x < 0: they differ
    # on the probes x < 0 where θ's output is above the tolerance.
    size = SYMMETRY_TOL * float(problem.targets.square().mean().sqrt())
    off = float(((problem.inputs < 0) & (problem.targets.abs() > size)).double().mean())
    assert 0.4 < off < 0.6
    assert abs(result.differing[1] - off) < 1e-12
    assert abs(result.differing[2] - off) < 1e-12
    assert result.differing[0] == 0.0
    assert result.counts == dict.fromkeys(KINDS, 1) | {"collapsed": 2, "other exact": 0}
    text = result.summary()
    assert "2 collapsed (more hidden units dead on every probe or merged with another" in text
    assert "2 with 1 unit" in text
    assert "the zero function, the only input-ignoring function a bias-free net" in text
    assert "trivial" not in text


def test_exact_is_relative_to_the_size_of_the_targets() -> None:
    # a, b < 0: φ depends on c·a + d·b only, so moving along (1/a, −1/b) in (c, d) keeps the
    # function; a tiny θ (mean ‖y‖² about 1e-4, like the paper's) and a small extra step
    # put J/mean ‖y‖² at about 2e-8, as exact as a float32 search gets but above 1e-12.
    a, b, c, d = -0.08, -0.03, -0.27, 0.16
    problem = two_neuron((a, b, c, d))
    power = float(problem.targets.square().mean())
    assert 1e-5 < power < 1e-3
    shift = 0.2
    transfer = torch.tensor([a, b, c + shift / a, d - shift / b], dtype=torch.float64)
    direction = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    near = transfer + 1e-5 * a * direction
    further = transfer + 1e-3 * a * direction
    points = torch.stack([transfer, near, further])
    result = explain(search_of(points, problem), problem, 0.05 * problem.constant_loss)
    ratios = result.losses / power
    assert ratios[0] < 1e-20 and 1e-9 < ratios[1] < EXACT_RELATIVE < ratios[2]
    assert float(result.losses[1]) > 1e-12  # an absolute 1e-12 would call it inexact
    assert result.kinds == ["other exact", "other exact", "approximate"]
    # Both units are active on x < 0 only: on the probes they act as one unit.
    assert result.details[:2] == ["merged units", "merged units"]
    assert result.thresholds["theta_merged"] == 1
    assert (result.residuals > SYMMETRY_TOL).all()
    assert result.thresholds["exact"] == EXACT_RELATIVE * power


def biased_net() -> tuple[nn.Module, torch.Tensor]:
    """Linear(1, 2) → ReLU → Linear(2, 1) with biases; unit 1 has bias 10 and weight 0.1,
    so it is active on every normal probe (|x| < 100)."""
    model = nn.Sequential(nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 1)).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0], [0.1]]))
        model[0].bias.copy_(torch.tensor([0.0, 10.0]))
        model[2].weight.copy_(torch.tensor([[0.7, -0.4]]))
        model[2].bias.copy_(torch.tensor([0.3]))
    return model, flatten_params(model)


def test_always_active_unit_trading_bias_and_the_best_constant() -> None:
    model, theta = biased_net()
    problem = Problem(model, num_probes=4096)
    traded = theta.clone()
    # Unit 1's bias up by 2, the output bias down by its outgoing weight × 2: the same
    # function on every probe, and not a G_ReLU image (G_ReLU does not move biases apart).
    traded[3] += 2.0  # model[0].bias[1]
    traded[6] -= -0.4 * 2.0  # model[2].bias
    constant = torch.zeros_like(theta)
    constant[6] = float(problem.targets.mean())
    points = torch.stack([traded, constant])
    result = explain(search_of(points, problem), problem, 0.05 * problem.constant_loss)
    assert result.kinds == ["other exact", "near-constant"]
    assert result.details == ["always-active unit trading bias", ""]
    assert result.thresholds["bias_free"] is False
    assert result.thresholds["input_ignoring_loss"] == problem.constant_loss
    assert "1 always-active unit trading bias" in result.summary()
