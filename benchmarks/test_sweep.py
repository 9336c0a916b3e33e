"""Speed of the sweep: fused CPU engine vs torch.compile, the torch.func fallback and a loop.

Each workload is one pytest-benchmark group with these benchmarks:

* ``fused``: ``genni_ext.sweep(..., backend="fused")`` on the full grid;
* ``torch``: ``genni_ext.sweep(..., backend="torch")`` on the full grid, or on an evenly
  spaced subset when the full grid would take more than ~20 s (``scaled`` in extra_info);
* ``compiled``: ``torch.compile`` of the vmapped J a user would write without this package
  (:func:`user_j`), called on the chunks the torch backend uses; the first pass over the
  grid (which compiles) is timed apart (``first_pass_seconds``, ``compile_seconds`` in
  extra_info), the steady state is the benchmark; under --benchmark-disable it runs on a
  small slice of the grid (it still compiles and is checked);
* ``loop``: ``genni_ext.testing.loop_sweep`` (θ(c) copied into the model, probes in
  batches of 256, MSE) on an evenly spaced subset of a few grid points;
* for (c) and (d) also ``fused-affine`` and ``fused-direct``: ``genni_ext.engine.fused.fused_sweep``
  with the first layer forced to the affine shortcut or run directly.

A "matmul" group times a 2048x2048 float32 ``torch.matmul``: the practical roofline of the
machine in the same run. Since some benchmarks time a subset, compare
``extra_info["seconds_per_point"]`` (the fastest round divided by the grid points that round
evaluated), not the raw times. ``benchmarks/report.py`` turns the JSON into tables.

Problem set-up (fixed seeds, float32, CPU): θ is the model's default initialisation after
``torch.manual_seed(0)`` and is also the centre of the grid; the targets are the model's
outputs at θ; the probes are standard normal (``torch.Generator`` seeded 100). The m
directions are the differences between m further initialisations (seeds 1..m) and θ,
orthonormalised by QR: the unit-norm basis that GENNI's Gram-Schmidt of (θᵢ - θ₀) gives,
so a grid coordinate is a Euclidean distance in parameter space.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from pytest_benchmark.fixture import BenchmarkFixture
from torch import nn
from torch.func import functional_call, vmap

import genni_ext
from genni_ext.core.functional import (
    DEFAULT_MEMORY_BUDGET,
    buffers_for,
    every_path,
    probe_forward,
)
from genni_ext.core.models import LeNet5, TwoNeuronNet, mlp
from genni_ext.engine import fused
from genni_ext.engine.lowering import Program, lower
from genni_ext.testing import BenchmarkProblem, benchmark_problem, loop_sweep

THETA_SEED = 0
PROBE_SEED = 100
LOOP_BATCH = 256
TIMING_STATISTIC = "min"
SMOKE_COMPILED_POINTS = 16  # the compiled baseline's slice of the grid under --benchmark-disable


@dataclass(frozen=True)
class Rounds:
    """How often pytest-benchmark times one benchmark (ignored under --benchmark-disable)."""

    rounds: int
    warmup: int


@dataclass(frozen=True)
class Workload:
    """One sweep problem and how many grid points each baseline is timed on."""

    key: str
    title: str
    model: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    m: int
    points_per_axis: int
    bound: float
    probes: int
    torch_points: int | None  # None: the full grid
    loop_points: int
    fused_rounds: Rounds
    torch_rounds: Rounds
    loop_rounds: Rounds
    compiled_rounds: Rounds
    first_layer_variants: bool = False

    @property
    def grid_points(self) -> int:
        return math.prod([self.points_per_axis] * self.m)

    @property
    def group(self) -> str:
        axes = "x".join([str(self.points_per_axis)] * self.m)
        return f"{self.key}: {self.title}, {axes} grid, {self.probes} probes"


WORKLOADS: tuple[Workload, ...] = (
    Workload(
        key="a",
        title="TwoNeuronNet 2-D",
        model=TwoNeuronNet,
        input_shape=(1,),
        m=2,
        points_per_axis=100,
        bound=2.0,
        probes=16384,
        torch_points=None,  # ~3 s for all 10,000 points
        loop_points=25,
        fused_rounds=Rounds(7, 2),
        torch_rounds=Rounds(3, 1),
        loop_rounds=Rounds(5, 1),
        compiled_rounds=Rounds(7, 1),
    ),
    Workload(
        key="b",
        title="TwoNeuronNet 3-D",
        model=TwoNeuronNet,
        input_shape=(1,),
        m=3,
        points_per_axis=50,
        bound=2.0,
        probes=16384,
        torch_points=10000,  # the full 125,000 points would take ~40 s
        loop_points=25,
        fused_rounds=Rounds(3, 1),
        torch_rounds=Rounds(3, 1),
        loop_rounds=Rounds(5, 1),
        compiled_rounds=Rounds(3, 1),
    ),
    Workload(
        key="c",
        title="mlp([12, 64, 64, 1])",
        model=functools.partial(mlp, [12, 64, 64, 1]),
        input_shape=(12,),
        m=2,
        points_per_axis=64,
        bound=2.0,
        probes=4096,
        torch_points=None,  # ~9 s for all 4,096 points
        loop_points=25,
        fused_rounds=Rounds(5, 1),
        torch_rounds=Rounds(3, 1),
        loop_rounds=Rounds(5, 1),
        compiled_rounds=Rounds(3, 0),
        first_layer_variants=True,
    ),
    Workload(
        key="d",
        title="LeNet5() 28x28, one output",
        model=LeNet5,
        input_shape=(1, 28, 28),
        m=2,
        points_per_axis=10,
        bound=2.0,
        probes=1024,
        torch_points=None,  # ~11 s for all 100 points
        loop_points=5,
        fused_rounds=Rounds(9, 1),
        torch_rounds=Rounds(2, 1),
        loop_rounds=Rounds(3, 1),
        compiled_rounds=Rounds(3, 1),
        first_layer_variants=True,
    ),
)

WORKLOADS_BY_KEY = {workload.key: workload for workload in WORKLOADS}


@dataclass(frozen=True)
class Problem:
    """The tensors of one workload, built once per session."""

    data: BenchmarkProblem
    program: Program

    def __getattr__(self, name: str) -> object:
        return getattr(self.data, name)


@functools.cache
def problem(workload: Workload) -> Problem:
    """θ, the orthonormal directions, the grid, probes and targets (see module doc)."""
    data = benchmark_problem(
        workload.model, workload.input_shape, m=workload.m,
        points_per_axis=workload.points_per_axis, bound=workload.bound, probes=workload.probes,
        theta_seed=THETA_SEED, probe_seed=PROBE_SEED,
    )  # fmt: skip
    return Problem(data=data, program=lower(data.model, workload.input_shape))


def user_j(
    model: nn.Module,
    center: torch.Tensor,
    directions: torch.Tensor,
    inputs: torch.Tensor,
    targets: torch.Tensor,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The J a user writes without this package: vmap over grid points c ([B, m]) of the
    mean squared error of ``functional_call(model, θ₀ + c @ D, inputs)`` against the
    targets (float32 throughout), compiled with ``torch.compile``'s defaults."""
    buffers = dict(model.named_buffers())
    layout = [(name, parameter.shape) for name, parameter in model.named_parameters()]
    sizes = [shape.numel() for _, shape in layout]

    def loss(c: torch.Tensor) -> torch.Tensor:
        theta = center + c @ directions
        pieces = torch.split(theta, sizes)
        params = {name: pieces[index].view(shape) for index, (name, shape) in enumerate(layout)}
        out = functional_call(model, (params, buffers), (inputs,))
        return (out.reshape(targets.shape) - targets).square().sum(dim=-1).mean()

    return torch.compile(vmap(loss))  # type: ignore[return-value]


def torch_chunk_points(data: Problem) -> int:
    """Grid points a chunk of ``genni_ext.sweep(..., backend="torch")`` holds for this problem
    (the default memory budget over the activations a grid point writes)."""
    model, inputs = data.model, data.inputs
    probe = probe_forward(model, every_path(model, data.center), buffers_for(model, inputs), inputs)
    bytes_per_point = 2 * probe.activations_per_sample * inputs.element_size() * inputs.shape[0]
    return max(1, DEFAULT_MEMORY_BUDGET // bytes_per_point)


class _Timed:
    """Wraps a call and keeps its wall times (used where pytest-benchmark keeps none)."""

    def __init__(self, call: Callable[[], torch.Tensor]) -> None:
        self.call = call
        self.seconds: list[float] = []

    def __call__(self) -> torch.Tensor:
        start = time.perf_counter()
        result = self.call()
        self.seconds.append(time.perf_counter() - start)
        return result


def _run(
    benchmark: BenchmarkFixture, call: Callable[[], torch.Tensor], rounds: Rounds
) -> tuple[torch.Tensor, float, float]:
    """Benchmark ``call``; return its result and the fastest and median seconds per call.

    Under --benchmark-disable the call runs once and that one wall time is returned.
    """
    timed = _Timed(call)
    result: torch.Tensor = benchmark.pedantic(  # type: ignore[no-untyped-call]
        timed, rounds=rounds.rounds, warmup_rounds=rounds.warmup, iterations=1
    )
    stats = benchmark.stats
    if stats is not None and stats.stats.rounds > 0:
        return result, float(stats.stats.min), float(stats.stats.median)
    return result, min(timed.seconds), statistics.median(timed.seconds)


def _describe(workload: Workload, data: Problem, method: str) -> dict[str, object]:
    return {
        "workload": workload.key,
        "title": workload.title,
        "method": method,
        "model": type(data.model).__name__,
        "params": data.center.numel(),
        "m": workload.m,
        "grid_points": workload.grid_points,
        "grid": f"[-{workload.bound:g}, {workload.bound:g}]^{workload.m}, "
        f"{workload.points_per_axis} per axis",
        "probes": workload.probes,
        "flops_per_sample": data.program.flops_per_sample,
        "first_fan_in": data.program.first_fan_in,
        "dtype": "float32",
        "torch_threads": torch.get_num_threads(),
        "center_norm": round(float(data.center.norm()), 4),
        "directions": "QR-orthonormalised (init seed i) - θ, i = 1..m; unit norm",
    }


def _record(
    benchmark: BenchmarkFixture,
    workload: Workload,
    data: Problem,
    points: int,
    fastest: float,
    median: float,
) -> None:
    """Put the per-grid-point time and the useful forward GFLOP/s into extra_info."""
    scaled = points < workload.grid_points
    flops = data.program.flops_per_sample * workload.probes * points
    benchmark.extra_info.update(
        {
            "timed_points": points,
            "scaled": scaled,
            "timing_statistic": TIMING_STATISTIC,
            "timed": not benchmark.disabled,
            "seconds": fastest,
            "seconds_per_point": fastest / points,
            "seconds_per_point_median": median / points,
            "gflops": flops / fastest / 1e9,
        }
    )
    if scaled:
        benchmark.extra_info["note"] = (
            f"timed on {points} of {workload.grid_points} grid points (evenly spaced), "
            "scaled per point"
        )


def _check_against_fused(
    benchmark: BenchmarkFixture, data: Problem, coeffs: torch.Tensor, values: torch.Tensor
) -> None:
    """The baseline computed the same J as the fused engine (else the timing means nothing)."""
    fused = genni_ext.sweep(
        data.model, data.center, data.directions, coeffs, data.inputs, data.targets,
        backend="fused",
    )  # fmt: skip
    difference = (values - fused).abs().max().item()
    benchmark.extra_info["max_abs_diff_vs_fused"] = difference
    torch.testing.assert_close(values, fused, rtol=1e-3, atol=1e-6)


def _cases() -> list[object]:
    """(workload key, method) in workload-major order: a group's benchmarks run back to back."""
    cases: list[object] = []
    for workload in WORKLOADS:
        methods = ["fused", "torch", "compiled", "loop"]
        if workload.first_layer_variants:
            methods += ["fused-affine", "fused-direct"]
        cases += [
            pytest.param(workload.key, method, id=f"{workload.key}-{method}") for method in methods
        ]
    return cases


def test_matmul(benchmark: BenchmarkFixture) -> None:
    """A large float32 matmul: the machine's practical GFLOP/s in this run."""
    size = 2048
    generator = torch.Generator().manual_seed(0)
    left = torch.randn(size, size, generator=generator)
    right = torch.randn(size, size, generator=generator)
    benchmark.group = "matmul: torch.matmul 2048x2048 float32"
    _, fastest, median = _run(benchmark, lambda: torch.matmul(left, right), Rounds(10, 2))
    flops = 2 * size**3
    benchmark.extra_info.update(
        {
            "method": "matmul",
            "size": size,
            "flops": flops,
            "timing_statistic": TIMING_STATISTIC,
            "timed": not benchmark.disabled,
            "seconds": fastest,
            "gflops": flops / fastest / 1e9,
            "gflops_median": flops / median / 1e9,
            "torch_threads": torch.get_num_threads(),
        }
    )


@pytest.mark.parametrize(("key", "method"), _cases())
def test_sweep(benchmark: BenchmarkFixture, key: str, method: str) -> None:
    workload = WORKLOADS_BY_KEY[key]
    data = problem(workload)
    benchmark.group = workload.group
    benchmark.extra_info.update(_describe(workload, data, method))
    args = (data.center, data.directions)
    probes = (data.inputs, data.targets)

    if method == "fused":
        coeffs = data.coeffs
        affine = fused.uses_affine_first_layer(data.program, workload.m)
        benchmark.extra_info["first_layer"] = "auto: " + ("affine" if affine else "direct")

        def call() -> torch.Tensor:
            return genni_ext.sweep(data.model, *args, coeffs, *probes, backend="fused")

        rounds = workload.fused_rounds
    elif method in ("fused-affine", "fused-direct"):
        coeffs = data.coeffs
        first_layer: fused.FirstLayer = "affine" if method == "fused-affine" else "direct"
        benchmark.extra_info["first_layer"] = first_layer

        def call() -> torch.Tensor:
            return fused.fused_sweep(
                data.program, *args, coeffs, *probes,
                num_threads=None, batch_points=None, progress=False, first_layer=first_layer,
            )  # fmt: skip

        rounds = workload.fused_rounds
    elif method == "torch":
        coeffs = data.subset(workload.torch_points)

        def call() -> torch.Tensor:
            return genni_ext.sweep(data.model, *args, coeffs, *probes, backend="torch")

        rounds = workload.torch_rounds
    elif method == "compiled":
        coeffs = data.coeffs
        if benchmark.disabled:
            coeffs = data.subset(SMOKE_COMPILED_POINTS)
        chunk = torch_chunk_points(data)
        function = user_j(data.model, *args, *probes)

        def call() -> torch.Tensor:
            with torch.no_grad():
                parts = [
                    function(coeffs[start : start + chunk])
                    for start in range(0, len(coeffs), chunk)
                ]
            return torch.cat(parts).double()

        first_start = time.perf_counter()
        call()  # compiles, for every chunk length
        first_pass = time.perf_counter() - first_start
        benchmark.extra_info.update({"chunk_points": chunk, "first_pass_seconds": first_pass})
        rounds = workload.compiled_rounds
    elif method == "loop":
        coeffs = data.subset(workload.loop_points)
        benchmark.extra_info["batch_size"] = LOOP_BATCH

        def call() -> torch.Tensor:
            return loop_sweep(data.model, *args, coeffs, *probes, batch_size=LOOP_BATCH)

        rounds = workload.loop_rounds
    else:  # pragma: no cover - _cases() makes only the methods above
        raise AssertionError(method)

    values, fastest, median = _run(benchmark, call, rounds)
    _record(benchmark, workload, data, coeffs.shape[0], fastest, median)
    if method == "compiled":
        first_pass = float(benchmark.extra_info["first_pass_seconds"])  # type: ignore[arg-type]
        benchmark.extra_info["compile_seconds"] = first_pass - fastest
    assert values.shape == (coeffs.shape[0],)
    assert bool(torch.isfinite(values).all())
    if method in ("torch", "compiled", "loop"):
        _check_against_fused(benchmark, data, coeffs, values)
