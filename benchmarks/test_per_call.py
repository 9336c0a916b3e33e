"""The fixed cost of one call: ``sweep`` and ``sweep_grid`` on a 4-point (2×2) grid.

Group ``per call: <model>``: the engine alone (``fused_sweep`` on a program lowered once,
the tensors already checked; ``engine``: as a direct call, which checks the tensors and plans
the kernel each time; ``engine-planned``: with an ``EnginePlan`` made once, as the front
door's Decision passes it), ``genni_ext.sweep`` on the same tensors, and
``genni_ext.sweep_grid`` on a ``Problem``/``Subspace``/``Grid`` holding them. At 4 points
the engine's work is small, so the difference is what the front door adds (checks, the
model run on the probes, planning). ``extra_info["over_engine"]`` = call time / engine
time, from the medians of this run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
import torch
from pytest_benchmark.fixture import BenchmarkFixture
from torch import nn

import genni_ext
from genni_ext import Grid, Problem, Subspace
from genni_ext.core.models import LeNet5, TwoNeuronNet
from genni_ext.engine.fused import fused_sweep, plan_fused_sweep
from genni_ext.engine.lowering import lower

PROBES = 1024
MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "two-neuron": (TwoNeuronNet, (1,)),
    "lenet5": (LeNet5, (1, 28, 28)),
}
_MEDIANS: dict[tuple[str, str], float] = {}


@functools.cache
def _case(name: str) -> tuple[Problem, Subspace, Grid]:
    build, shape = MODELS[name]
    torch.manual_seed(0)
    problem = Problem(build(), inputs=torch.randn(PROBES, *shape))
    generator = torch.Generator().manual_seed(1)
    points = problem.theta + torch.randn(2, problem.num_params, generator=generator)
    return problem, Subspace.from_points(problem.theta, points), Grid.uniform((-1.0, 1.0), 2, 2)


def _call(name: str, method: str) -> Callable[[], torch.Tensor]:
    problem, subspace, grid = _case(name)
    coeffs = grid.coeffs.to(problem.theta.dtype)
    tensors = (subspace.center, subspace.basis, coeffs, problem.inputs, problem.targets)
    if method == "engine":
        program = lower(problem.model, problem.inputs.shape[1:])
        return lambda: fused_sweep(
            program, *tensors, num_threads=None, batch_points=None, progress=False
        )
    if method == "engine-planned":
        program = lower(problem.model, problem.inputs.shape[1:])
        plan = plan_fused_sweep(program, *tensors)
        return lambda: fused_sweep(
            program, *tensors, num_threads=None, batch_points=None, progress=False, plan=plan
        )
    if method == "sweep":
        return lambda: genni_ext.sweep(problem.model, *tensors, backend="fused")
    return lambda: genni_ext.sweep_grid(problem, subspace, grid, backend="fused").values


@pytest.mark.parametrize("method", ["engine", "engine-planned", "sweep", "sweep_grid"])
@pytest.mark.parametrize("name", list(MODELS))
def test_per_call(benchmark: BenchmarkFixture, name: str, method: str) -> None:
    call = _call(name, method)
    expected = _call(name, "engine")().reshape(-1)
    benchmark.group = f"per call: {name}"
    benchmark.extra_info.update(model=name, method=method, points=4, probes=PROBES)
    values = benchmark.pedantic(call, rounds=30, warmup_rounds=3)
    assert torch.equal(values.reshape(-1).to(expected.dtype), expected)
    if benchmark.stats is None:  # --benchmark-disable: the values were still checked
        return
    _MEDIANS[(name, method)] = benchmark.stats.stats.median
    engine = _MEDIANS.get((name, "engine"))
    if engine:
        benchmark.extra_info["over_engine"] = _MEDIANS[(name, method)] / engine
