"""Sweep J over a plane of the GENNI paper's 4-parameter net, on the fused engine.

φ(x) = c·ReLU(a x) + d·ReLU(b x) is unchanged by the rescalings (a, c) → (αa, c/α) and
(b, d) → (βb, d/β) for α, β > 0. The plane through θ and two such rescalings of it therefore
holds three exactly equivalent points; the sweep shows the low-J set that joins them.

Run: python examples/two_neuron_sweep.py
"""

from __future__ import annotations

import time

import torch

import genni_ext
from genni_ext.core.models import TwoNeuronNet, flatten_params

EPS = 0.0025  # the paper's ε

torch.manual_seed(10)
model = TwoNeuronNet()
theta = flatten_params(model)
a, b, c, d = theta.tolist()
rescaled_ac = torch.tensor([2.0 * a, b, c / 2.0, d])
rescaled_bd = torch.tensor([a, 0.5 * b, c, d / 0.5])

# Orthonormal directions from θ towards the two rescaled points.
directions, _ = torch.linalg.qr(torch.stack([rescaled_ac - theta, rescaled_bd - theta]).T)
directions = directions.T.contiguous()

probes = torch.randn(16384, 1)
with torch.no_grad():
    targets = model(probes)

axis = torch.linspace(-2.0, 2.0, 100)
coeffs = torch.cartesian_prod(axis, axis)  # C order: row i * 100 + j is (axis[i], axis[j])

print(genni_ext.explain_backend(model, probes))
start = time.perf_counter()
values = genni_ext.sweep(model, theta, directions, coeffs, probes, targets, progress=True)
seconds = time.perf_counter() - start
grid = values.reshape(100, 100)

# The three equivalent points, in plane coordinates, and J there (exactly 0 up to round-off).
marked = torch.stack(
    [torch.zeros(2)] + [(p - theta) @ directions.T for p in (rescaled_ac, rescaled_bd)]
)
at_marked = genni_ext.sweep(model, theta, directions, marked, probes, targets)

print(f"{coeffs.shape[0]} grid points x {probes.shape[0]} probes in {seconds:.2f} s")
for name, point, value in zip(
    ("θ", "θ rescaled (a, c)", "θ rescaled (b, d)"), marked, at_marked, strict=True
):
    print(f"  {name:18s} at c = ({point[0]:+.3f}, {point[1]:+.3f}): J = {value:.1e}")
print(f"min J on the grid {grid.min():.2e}, max {grid.max():.2e}")
print(f"ε-equivalent set (J < {EPS}): {int((grid < EPS).sum())} of {grid.numel()} grid points")
