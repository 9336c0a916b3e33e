"""Where the demo's plane meets the class: four isolated exact equivalents of θ in the box
[−2.5, 2.5]², found two ways (exactly, as the real solutions of two conics per branch of
the class; and by local least-squares minimisation of J in the plane in float64 from each
ε-component's lowest grid point and each found point), and which ε-component holds each.

For φ = c·ReLU(a x) + d·ReLU(b x) with a > 0 > b the class of θ is exactly
{a'c' = ac, b'd' = bd, a' > 0 > b'} ∪ {a'c' = bd, b'd' = ac, a' < 0 < b'}: a point
computes φ_θ on x > 0 and x < 0 only if one unit carries each half-line's slope.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
import torch
from scipy import ndimage
from scipy.optimize import least_squares
from torch.func import functional_call

from genni_ext import Problem, sweep
from genni_ext.analysis.alignment import align
from genni_ext.core.models import TwoNeuronNet, unflatten_params
from genni_ext.core.subspace import Subspace

# The demo's θ (two_neuron, seed 5) and plane: centre θ₀ and points θ₁, θ₂ (its search
# points 4, 0 and 1 with collapsed starts restarted, float32 values as stored); its ε.
DEMO_THETA = [0.6605037450790405, -0.7477781772613525, 0.5762491226196289, 0.4524451494216919]
PLANE = [
    [-0.7331500053405762, 0.855135977268219, 0.4614713191986084, 0.44509357213974],
    [0.5104134678840637, -0.7838419675827026, 0.7456949949264526, 0.4316275119781494],
    [-0.7203667163848877, 0.6255701780319214, 0.4696602523326874, 0.6084247827529907],
]
EPS = 0.002333782655258421
# (u, v) of the four exact equivalents, as computed by this test.
EXPECTED = [(0.0, 0.0), (2.0769, 0.0), (0.1889, 0.2096), (-2.3585, -0.4179)]


def _plane() -> tuple[Problem, torch.Tensor, torch.Tensor]:
    theta = torch.tensor(DEMO_THETA, dtype=torch.float32)
    problem = Problem(TwoNeuronNet(), theta=theta, num_probes=16384, seed=5)
    points = torch.tensor(PLANE, dtype=torch.float32)
    plane = Subspace.from_points(points[0], points[1:])
    return problem, plane.center.double(), plane.basis.double()


def _exact_intersections(center: np.ndarray, basis: np.ndarray) -> list[tuple[float, float]]:
    """(u, v) in the box where center + u·e1 + v·e2 lies in the class: the real roots of
    the resultant of each branch's two conics (exact rational arithmetic), with the
    branch's signs."""
    a, b, c, d = DEMO_THETA
    u, v = sp.symbols("u v")
    p = [
        sp.Rational(float(center[k]))
        + sp.Rational(float(basis[0, k])) * u
        + sp.Rational(float(basis[1, k])) * v
        for k in range(4)
    ]
    found = []
    for first, second, signs in ((a * c, b * d, (1, -1)), (b * d, a * c, (-1, 1))):
        one = sp.expand(p[0] * p[2] - sp.Rational(first))
        two = sp.expand(p[1] * p[3] - sp.Rational(second))
        for root in sp.Poly(sp.resultant(one, two, v), u).nroots(n=30):
            if abs(sp.im(root)) > 1e-20 or abs(sp.re(root)) > 2.5:
                continue
            for other in sp.Poly(one.subs(u, sp.re(root)), v).nroots(n=30):
                at = {u: sp.re(root), v: sp.re(other)}
                if abs(sp.im(other)) > 1e-20 or abs(two.subs(at)) > 1e-15:
                    continue
                q = [float(x.subs(at)) for x in p]
                if abs(at[v]) <= 2.5 and np.sign(q[0]) == signs[0] and np.sign(q[1]) == signs[1]:
                    found.append((float(at[u]), float(at[v])))
    return sorted(found)


@pytest.mark.slow
def test_the_demo_plane_meets_the_class_at_four_points_in_three_components() -> None:
    problem, center, basis = _plane()
    exact = _exact_intersections(center.numpy(), basis.numpy())
    assert len(exact) == 4
    for found, expected in zip(exact, sorted(EXPECTED), strict=True):
        np.testing.assert_allclose(found, expected, atol=1e-4)

    # The ε-set on the demo's 101² grid and its components (corner neighbours connect).
    axis = torch.linspace(-2.5, 2.5, 101, dtype=torch.float64)
    coeffs = torch.cartesian_prod(axis, axis)
    values = sweep(
        problem.model, center.float(), basis.float(), coeffs.float(), problem.inputs,
        problem.targets,
    ).reshape(101, 101).numpy()  # fmt: skip
    labels, count = ndimage.label(values < EPS, structure=np.ones((3, 3)))
    assert count == 3

    model = TwoNeuronNet().double()
    theta = torch.tensor(DEMO_THETA, dtype=torch.float64)
    inputs = problem.inputs.double()
    with torch.no_grad():
        targets = functional_call(model, unflatten_params(model, theta), (inputs,)).reshape(-1)

    def point(c: np.ndarray) -> torch.Tensor:
        return center + torch.as_tensor(c, dtype=torch.float64) @ basis

    def residuals(c: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = functional_call(model, unflatten_params(model, point(c)), (inputs,))
        return ((out.reshape(-1) - targets) / np.sqrt(targets.numel())).numpy()

    def component(c: np.ndarray) -> int:
        nearest = [int(np.argmin(np.abs(axis.numpy() - value))) for value in c]
        return int(labels[tuple(nearest)])

    starts = [np.array(c) for c in ((0.0, 0.0), *EXPECTED[1:3])]  # θ₀, θ₁, θ₂
    for k in range(1, count + 1):
        where = np.argwhere(labels == k)
        i, j = where[np.argmin(values[labels == k])]
        starts.append(np.array([float(axis[i]), float(axis[j])]))
    holders: dict[int, set[int]] = {}
    for start in starts:
        fit = least_squares(residuals, start, method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15)
        assert float(np.sum(residuals(fit.x) ** 2)) < 1e-28  # exact in float64
        assert align(model, theta, point(fit.x)).residual < 1e-12  # a G_ReLU image of θ
        (which,) = [k for k, c in enumerate(exact) if np.abs(np.subtract(c, fit.x)).max() < 1e-6]
        holders.setdefault(component(fit.x), set()).add(which)
    # Every exact intersection is a local minimum reached, and θ₀, θ₂ share one
    # component while θ₁ and the fourth point each have their own.
    assert set().union(*holders.values()) == set(range(4))
    assert sorted(len(held) for held in holders.values()) == [1, 1, 2]
    fourth = exact.index(min(exact))  # the one at u ≈ −2.359
    assert holders[component(np.array(exact[fourth]))] == {fourth}
    theta0, theta2 = (exact.index(min(exact, key=lambda c, e=e: np.hypot(*np.subtract(c, e))))
                      for e in (EXPECTED[0], EXPECTED[2]))  # fmt: skip
    assert holders[component(np.array(EXPECTED[0]))] == {theta0, theta2}
