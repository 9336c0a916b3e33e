"""Shared fixtures of the fused-engine tests: sweep cases, J tolerances, comparisons.

The tests run with ``--import-mode=importlib``, so test modules cannot import this file;
helpers reach them as session-scoped fixtures (session scope also keeps them usable
inside hypothesis ``@given`` tests). A sweep case is the tuple of ``sweep``'s positional
arguments: ``(model, center, directions, coeffs, inputs, targets)``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import pytest
import torch
from torch import nn

import genni_ext
from genni_ext.core.models import flatten_params
from genni_ext.engine.fused import FirstLayer, fused_sweep
from genni_ext.engine.lowering import lower
from genni_ext.testing import loop_sweep

Case = tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
MakeCase = Callable[..., Case]
CheckJ = Callable[[torch.Tensor, torch.Tensor, Case], None]
ThreeWay = Callable[..., torch.Tensor]
FusedFirstLayer = Callable[..., torch.Tensor]

# Tolerances on J = mean ‖y - t‖²: rtol, plus an atol that is a fraction of the size S of
# the squares J is a difference of, S = max(mean ‖t‖², max J). Where y - t is small next
# to y, the outputs' own round-off δy still moves J by 2 |y - t| δy, which is small next
# to S but not next to J.
# Measured over every comparison in these tests and 4000 float32 / 700 float64 runs of
# the fuzz tests (1-2100 probes, 1-3000 grid points, J from ~1e-9 to ~10); "use" is the
# largest |difference| / (rtol |J| + atol) seen, which must stay below 1:
# - float64: fused, torch and the per-point loop sum in different orders; the relative
#   difference is ~1e-14 typically, 3e-13 at most. rtol 1e-10, atol 1e-12 S: use < 1e-3,
#   and any wrong index, offset or activation (which moves J by 1e-3 or more) fails.
# - float32: each output carries ~1e-7 relative round-off that differs between the
#   engines (summation order, fused multiply-adds, expf/tanhf); J's relative difference
#   is ~1e-6 typically, up to 1e-2 at points where J is tiny next to S (one probe, one
#   grid point), but never above 4e-6 S. rtol 1e-4, atol 1e-5 S: use < 0.06.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    # dtype: (rtol, atol as a fraction of S)
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-4, 1e-5),
}


def _make_case(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    num_samples: int = 17,
    m: int = 2,
    num_points: int = 5,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    spread: float = 0.05,
) -> Case:
    """A sweep around the model's own parameters θ with targets computed at θ.

    The centre is θ moved by ``spread`` (relative to θ's RMS) so that J is not zero at
    c = 0, the directions are random with entries of that size, and the coefficients are
    uniform in [-1, 1]: J stays well away from 0 without blowing up on deep nets.
    """
    generator = torch.Generator().manual_seed(seed)
    theta = flatten_params(model).to(dtype)
    scale = spread * max(float(theta.square().mean().sqrt()), 1e-3)
    inputs = torch.randn(num_samples, *input_shape, generator=generator).to(dtype)
    with torch.no_grad():
        targets = copy.deepcopy(model).to(dtype)(inputs).reshape(num_samples, -1)
    noise = torch.randn(theta.shape, generator=generator).to(dtype)
    center = theta + scale * noise
    directions = (scale * torch.randn(m, theta.numel(), generator=generator)).to(dtype)
    coeffs = (2.0 * torch.rand(num_points, m, generator=generator) - 1.0).to(dtype)
    return model, center, directions, coeffs, inputs, targets


def _output_scale(targets: torch.Tensor, values: torch.Tensor) -> float:
    """max(Y², max J) with Y² = mean ‖t‖²: the size of the squares that J is a difference
    of (max J stands in for the outputs' power where the targets are all zero)."""
    power = float(targets.double().square().sum(dim=1).mean())
    return max(power, float(values.abs().max()))


def _check_j(got: torch.Tensor, expected: torch.Tensor, case: Case) -> None:
    """J is float64, finite, shaped like ``expected`` and close to it within the tolerance
    of the case's compute dtype (TOLERANCES)."""
    assert got.dtype == torch.float64, f"J must be float64, got {got.dtype}"
    assert got.shape == expected.shape, f"J has shape {tuple(got.shape)}, not {expected.shape}"
    assert bool(torch.isfinite(got).all()), f"J has non-finite values: {got}"
    rtol, atol_fraction = TOLERANCES[case[5].dtype]
    atol = atol_fraction * _output_scale(case[5], expected)
    torch.testing.assert_close(got.cpu(), expected.cpu(), rtol=rtol, atol=atol)


def _three_way(case: Case, *, loop_points: int | None = None) -> torch.Tensor:
    """Fused, torch and the per-point loop agree on J; returns the fused J.

    ``loop_points`` limits the slow loop to the first grid points (None: all of them).
    """
    model, center, directions, coeffs, inputs, targets = case
    fused = genni_ext.sweep(*case, backend="fused")
    reference = genni_ext.sweep(*case, backend="torch")
    _check_j(fused, reference, case)
    head = coeffs if loop_points is None else coeffs[:loop_points]
    looped = loop_sweep(model, center, directions, head, inputs, targets)
    _check_j(fused[: head.shape[0]], looped, case)
    _check_j(reference[: head.shape[0]], looped, case)
    # A sweep that only ever sees J = 0 would agree with anything.
    assert float(reference.max()) > 0.0, "degenerate case: J is zero everywhere"
    return fused


def _fused_first_layer(
    case: Case, first_layer: FirstLayer, *, num_threads: int | None = None
) -> torch.Tensor:
    """The fused engine with the first-layer path forced ("affine" or "direct")."""
    model, center, directions, coeffs, inputs, targets = case
    program = lower(model, inputs.shape[1:])
    return fused_sweep(
        program,
        center,
        directions,
        coeffs,
        inputs,
        targets,
        num_threads=num_threads,
        batch_points=None,
        progress=False,
        first_layer=first_layer,
    )


@pytest.fixture(scope="session")
def make_case() -> MakeCase:
    """``make_case(model, input_shape, *, num_samples, m, num_points, dtype, seed)``."""
    return _make_case


@pytest.fixture(scope="session")
def check_j() -> CheckJ:
    """``check_j(got, expected, case)``: float64, finite, close within TOLERANCES."""
    return _check_j


@pytest.fixture(scope="session")
def three_way() -> ThreeWay:
    """``three_way(case, *, loop_points=None)`` -> fused J."""
    return _three_way


@pytest.fixture(scope="session")
def fused_first_layer() -> FusedFirstLayer:
    """``fused_first_layer(case, "affine" | "direct", *, num_threads=None)`` -> J."""
    return _fused_first_layer


@pytest.fixture(scope="session")
def dask_client(request: pytest.FixtureRequest) -> object:
    """A ``distributed.Client`` of a local cluster of 2 worker processes with one thread
    each, closed at the end of the session; skips when dask is not installed."""
    distributed = pytest.importorskip(
        "distributed", reason='dask is not installed (pip install "genni_ext[dask]")'
    )
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = distributed.Client(cluster)

    def close() -> None:
        client.close()
        cluster.close()

    request.addfinalizer(close)
    return client
