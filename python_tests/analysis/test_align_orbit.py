"""``align`` against known answers: the brute-force orbit distance of the two-neuron net,
the identity element on random points, and the demo's genuine images of θ."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from genni_ext.analysis.alignment import SYMMETRY_TOL, align
from genni_ext.core.models import TwoNeuronNet, flatten_params, mlp

# The demo's θ (two_neuron, seed 5) and points of its search (float32 values as stored):
# seven that reach J ≈ 1e-12 and one collapsed point (both units active for x > 0 only).
DEMO_THETA = [0.6605037450790405, -0.7477781772613525, 0.5762491226196289, 0.4524451494216919]
DEMO_IMAGES = [
    [-0.7331500053405762, 0.855135977268219, 0.4614713191986084, 0.44509357213974],
    [0.6598578691482544, -0.8379727005958557, 0.5768097043037415, 0.4037456214427948],
    [0.6295422911643982, -0.730072021484375, 0.6045859456062317, 0.46341678500175476],
    [-0.9368481040000916, 0.7160842418670654, 0.36113420128822327, 0.5315194725990295],
    [0.7813265323638916, -0.5853856205940247, 0.48713791370391846, 0.5779544711112976],
    [0.5996530652046204, -0.6119396686553955, 0.6347211599349976, 0.5528752207756042],
    [0.46873319149017334, -0.5631554126739502, 0.812005341053009, 0.60076904296875],
]
DEMO_COLLAPSED = [0.7677602767944336, 0.8180286884307861, -0.17995326220989227, 0.6341784000396729]


def brute_force_distance(theta: np.ndarray, other: np.ndarray) -> float:
    """min over both permutations and both scales s1, s2 > 0 of ‖other − g·θ‖ / ‖other‖
    for φ = c·ReLU(a x) + d·ReLU(b x), θ = (a, b, c, d): a grid over (log s1, log s2)
    and Nelder–Mead on the 2-D problem from its best point, in float64."""
    units = [(theta[0], theta[2]), (theta[1], theta[3])]
    grid = np.linspace(-8.0, 8.0, 161)

    def distance(logs: np.ndarray, order: tuple[int, int]) -> float:
        s1, s2 = np.exp(logs)
        (a, c), (b, d) = units[order[0]], units[order[1]]
        image = np.array([s1 * a, s2 * b, c / s1, d / s2])
        return float(np.sum((other - image) ** 2))

    best = np.inf
    for order in ((0, 1), (1, 0)):
        values = [(distance(np.array(p), order), p) for p in itertools.product(grid, grid)]
        start = min(values)[1]
        fit = minimize(
            distance, np.array(start), args=(order,), method="Nelder-Mead",
            options={"xatol": 1e-12, "fatol": 1e-18, "maxiter": 20000},
        )  # fmt: skip
        best = min(best, fit.fun)
    return float(np.sqrt(best) / np.linalg.norm(other))


@pytest.mark.slow
def test_align_equals_the_brute_force_orbit_distance_on_the_two_neuron_net() -> None:
    model = TwoNeuronNet().double()
    generator = np.random.default_rng(16)
    pairs = [(np.array(DEMO_THETA), np.array(point)) for point in [*DEMO_IMAGES, DEMO_COLLAPSED]]
    pairs += [(generator.normal(size=4), generator.normal(size=4)) for _ in range(12)]
    for theta, other in pairs:
        result = align(model, torch.from_numpy(theta), torch.from_numpy(other))
        expected = brute_force_distance(theta, other)
        assert abs(result.residual - expected) <= 1e-6, (theta, other)
        # The residual is the distance of the element align returns.
        aligned = result.aligned.numpy()
        assert np.linalg.norm(other - aligned) / np.linalg.norm(other) == pytest.approx(
            result.residual, rel=1e-12
        )
        assert (result.scales[0] > 0).all()


@pytest.mark.parametrize("seed", range(6))
def test_align_is_never_worse_than_the_identity(seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([3, 7, 5, 2]).double()
    theta = flatten_params(model)
    generator = torch.Generator().manual_seed(100 + seed)
    for scale in (0.01, 1.0, 100.0):
        other = theta + scale * torch.randn(theta.shape, generator=generator, dtype=torch.float64)
        if seed % 2:  # some units with zero incoming or outgoing weights
            other[:3] = 0.0
        result = align(model, theta, other)
        identity = float((other - theta).norm() / other.norm())
        assert result.residual <= identity * (1 + 1e-12)
        assert all((scales > 0).all() and np.isfinite(scales).all() for scales in result.scales)


def test_the_demos_genuine_images_are_explained_and_the_collapsed_point_is_not() -> None:
    model = TwoNeuronNet().double()
    theta = torch.tensor(DEMO_THETA, dtype=torch.float64)
    for point in DEMO_IMAGES:
        result = align(model, theta, torch.tensor(point, dtype=torch.float64))
        assert result.explained and result.tol == SYMMETRY_TOL
        assert result.residual < 1e-5
    collapsed = align(model, theta, torch.tensor(DEMO_COLLAPSED, dtype=torch.float64))
    assert not collapsed.explained and collapsed.residual > 0.5
