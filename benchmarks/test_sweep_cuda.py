"""Speed of the sweep on a GPU: fused CUDA kernels vs the torch.func fallback vs a loop.

Skipped without a CUDA device. ``benchmarks/gpu/run.sh`` runs it on a GPU machine with the
build, the CUDA tests and compute-sanitizer in one call; ``benchmarks/gpu/report.py``
prints its table.

Each workload is one benchmark group with these benchmarks (float32 unless named):

* ``fused``: ``genni_ext.sweep(..., backend="fused")`` (the tiled kernel with its default
  plan wherever it fits);
* ``fused-reference``: the reference kernel (one thread per sample, activations in global
  memory), ``fused.fused_sweep(..., cuda_kernel="reference")``;
* ``tiled-…``: the tiled kernel with other plans (``TileOptions``), to choose the defaults;
* ``fused-f64``: the tiled kernel in float64 (correctness, not speed), and
  ``f64-torch-layout`` the same with torch's weight layout;
* ``fused-tf32``: ``genni_ext.sweep(..., backend="fused", precision="tf32")`` (tensor cores);
* ``torch``: ``genni_ext.sweep(..., backend="torch")``, float32 throughout (cuBLAS and
  cuDNN with TF32 off: torch's own default runs convolutions in TF32);
* ``torch-tf32``: the same with ``precision="tf32"`` (cuBLAS and cuDNN in TF32);
* ``loop``: ``genni_ext.testing.loop_sweep`` on a few grid points.

Grids too large to time whole in a short GPU session are timed on an evenly spaced subset
(``timed_points`` and ``note`` in extra_info); compare ``seconds_per_point``. Every timed
call ends with ``torch.cuda.synchronize()``. A "matmul" group times an 8192² float32
``torch.matmul`` with TF32 off and on: the card's practical fp32 and TF32 rates in the
same run.
The set-up is test_sweep.py's (``genni_ext.testing.benchmark_problem``), on the GPU.
"""

from __future__ import annotations

import functools
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
from pytest_benchmark.fixture import BenchmarkFixture
from torch import nn

import genni_ext
from genni_ext._validate import torch_precision
from genni_ext.core.models import LeNet5, TwoNeuronNet, mlp
from genni_ext.engine import fused
from genni_ext.engine.fused import TileOptions
from genni_ext.engine.lowering import Program, lower
from genni_ext.testing import BenchmarkProblem, benchmark_problem, loop_sweep

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or not genni_ext.build_info()["cuda"],
    reason="needs a visible CUDA device and a CUDA build of genni_ext",
)

LOOP_BATCH = 256


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    model: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    m: int
    points_per_axis: int
    bound: float
    probes: int
    fused_points: int | None  # None: the full grid
    torch_points: int | None
    loop_points: int
    slow_points: int | None = None  # the reference kernel and float64

    tiles: dict[str, TileOptions] = field(default_factory=dict)

    @property
    def grid_points(self) -> int:
        return self.points_per_axis**self.m

    @property
    def group(self) -> str:
        axes = "x".join([str(self.points_per_axis)] * self.m)
        return f"cuda {self.key}: {self.title}, {axes} grid, {self.probes} probes"


LENET_TILES = {
    "t8-torch-layout": TileOptions(samples=8, layout=1),
    "t8-128": TileOptions(samples=8, threads=128),
    "t16": TileOptions(samples=16),
}

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
        fused_points=None,
        torch_points=None,
        loop_points=20,
        tiles={
            "t1024-128": TileOptions(samples=1024, threads=128),
            "t2048-torch-layout": TileOptions(samples=2048, layout=1),
        },
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
        fused_points=None,
        torch_points=None,
        loop_points=10,
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
        fused_points=None,
        torch_points=None,
        loop_points=20,
        tiles={
            "t128-torch-layout": TileOptions(samples=128, layout=1),
            "t128-l8": TileOptions(samples=128, max_lanes=8),
            "t64": TileOptions(samples=64),
        },
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
        fused_points=None,
        torch_points=None,
        loop_points=10,
        tiles=LENET_TILES,
    ),
    Workload(
        key="paper",
        title="LeNet5() 28x28, one output (the paper's 2-D grid)",
        model=LeNet5,
        input_shape=(1, 28, 28),
        m=2,
        points_per_axis=100,
        bound=13.0,
        probes=8192,
        fused_points=1000,
        torch_points=500,
        loop_points=10,
        slow_points=200,
        tiles=LENET_TILES,
    ),
)
WORKLOADS_BY_KEY = {workload.key: workload for workload in WORKLOADS}


@dataclass(frozen=True)
class Problem:
    data: BenchmarkProblem
    program: Program


@functools.cache
def problem(key: str, dtype: torch.dtype = torch.float32) -> Problem:
    workload = WORKLOADS_BY_KEY[key]
    data = benchmark_problem(
        workload.model, workload.input_shape, m=workload.m,
        points_per_axis=workload.points_per_axis, bound=workload.bound, probes=workload.probes,
    ).to(device="cuda", dtype=dtype)  # fmt: skip
    return Problem(data, lower(data.model, workload.input_shape))


def _synchronized(call: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    def run() -> torch.Tensor:
        result = call()
        torch.cuda.synchronize()
        return result

    return run


def _timed(benchmark: BenchmarkFixture, call: Callable[[], torch.Tensor], rounds: int) -> tuple:
    seconds: list[float] = []

    def run() -> torch.Tensor:
        start = time.perf_counter()
        result = _synchronized(call)()
        seconds.append(time.perf_counter() - start)
        return result

    result = benchmark.pedantic(run, rounds=rounds, warmup_rounds=1, iterations=1)  # type: ignore[no-untyped-call]
    timed = seconds[1:] or seconds
    return result, min(timed), statistics.median(timed)


def _selected(variable: str) -> set[str] | None:
    """The comma-separated names in environment variable ``variable``, or None (all)."""
    value = os.environ.get(variable, "").strip()
    return {name.strip() for name in value.split(",")} if value else None


def _cases() -> list[object]:
    """Every (workload, method); GENNI_BENCH_WORKLOADS and GENNI_BENCH_METHODS (comma-
    separated) keep only the named ones, for a short GPU lease."""
    cases: list[object] = []
    workloads, chosen = _selected("GENNI_BENCH_WORKLOADS"), _selected("GENNI_BENCH_METHODS")
    for workload in WORKLOADS:
        if workloads is not None and workload.key not in workloads:
            continue
        methods = ["fused", "fused-reference", "fused-f64", "f64-torch-layout", "fused-tf32"]
        methods += ["torch", "torch-tf32", "loop"]
        methods += [f"tiled-{name}" for name in workload.tiles]
        if chosen is not None:
            methods = [method for method in methods if method in chosen]
        cases += [
            pytest.param(workload.key, method, id=f"{workload.key}-{method}") for method in methods
        ]
    return cases


@pytest.mark.parametrize("precision", ["full", "tf32"])
def test_cuda_matmul(benchmark: BenchmarkFixture, precision: str) -> None:
    """8192² float32 matmul, TF32 off ("full") or on: the card's practical rates in this run."""
    size = 8192
    left = torch.randn(size, size, device="cuda")
    right = torch.randn(size, size, device="cuda")
    mode = "TF32 on" if precision == "tf32" else "TF32 off"
    benchmark.group = f"cuda matmul: torch.matmul 8192x8192 float32 ({mode})"
    with torch_precision(precision):
        _, fastest, median = _timed(benchmark, lambda: torch.matmul(left, right), 5)
    flops = 2 * size**3
    benchmark.extra_info.update(
        {
            "method": "matmul" if precision == "full" else "matmul-tf32",
            "device": torch.cuda.get_device_name(),
            "seconds": fastest,
            "gflops": flops / fastest / 1e9,
            "gflops_median": flops / median / 1e9,
            "timed": not benchmark.disabled,
        }
    )


@pytest.mark.parametrize(("key", "method"), _cases())
def test_cuda_sweep(benchmark: BenchmarkFixture, key: str, method: str) -> None:
    workload = WORKLOADS_BY_KEY[key]
    dtype = torch.float64 if method in ("fused-f64", "f64-torch-layout") else torch.float32
    precision = "tf32" if method.endswith("tf32") else "full"
    prepared = problem(key, dtype)
    data = prepared.data
    benchmark.group = workload.group
    args = (data.center, data.directions)
    probes = (data.inputs, data.targets)
    rounds = 3
    if method in ("torch", "torch-tf32"):
        coeffs = data.subset(workload.torch_points)

        def call() -> torch.Tensor:
            return genni_ext.sweep(
                data.model, *args, coeffs, *probes, backend="torch", precision=precision
            )

    elif method == "loop":
        coeffs = data.subset(workload.loop_points)
        rounds = 2

        def call() -> torch.Tensor:
            return loop_sweep(data.model, *args, coeffs, *probes, batch_size=LOOP_BATCH)

    elif method in ("fused", "fused-tf32"):
        coeffs = data.subset(workload.fused_points)

        def call() -> torch.Tensor:
            return genni_ext.sweep(
                data.model, *args, coeffs, *probes, backend="fused", precision=precision
            )

    else:
        slow = method in ("fused-reference", "fused-f64", "f64-torch-layout")
        coeffs = data.subset(workload.slow_points if slow else workload.fused_points)
        kernel: fused.CudaKernel = "reference" if method == "fused-reference" else "tiled"
        tile = workload.tiles.get(method.removeprefix("tiled-"))
        if method == "f64-torch-layout":
            tile = TileOptions(layout=1)
        if dtype == torch.float64:
            rounds = 1

        def call() -> torch.Tensor:
            return fused.fused_sweep(
                prepared.program, *args, coeffs, *probes, num_threads=None, batch_points=None,
                progress=False, cuda_kernel=kernel, tile=tile,
            )  # fmt: skip

    values, fastest, median = _timed(benchmark, call, rounds)
    points = coeffs.shape[0]
    flops = prepared.program.flops_per_sample * workload.probes * points
    plan = fused.cuda_tile_plan(
        prepared.program, workload.probes, dtype,
        "reference" if method in ("torch", "torch-tf32", "loop", "fused-reference") else "auto",
        TileOptions(layout=1) if method == "f64-torch-layout"
        else workload.tiles.get(method.removeprefix("tiled-")),
        torch.device("cuda"), precision if method == "fused-tf32" else "full",
    )  # fmt: skip
    benchmark.extra_info.update(
        {
            "workload": workload.key,
            "title": workload.title,
            "method": method,
            "device": torch.cuda.get_device_name(),
            "dtype": str(dtype).removeprefix("torch."),
            "grid_points": workload.grid_points,
            "probes": workload.probes,
            "timed_points": points,
            "scaled": points < workload.grid_points,
            "timed": not benchmark.disabled,
            "seconds": fastest,
            "seconds_per_point": fastest / points,
            "seconds_per_point_median": median / points,
            "gflops": flops / fastest / 1e9,
            "plan": None if plan is None else plan.as_dict(),
        }
    )
    if points < workload.grid_points:
        benchmark.extra_info["note"] = (
            f"timed on {points} of {workload.grid_points} grid points (evenly spaced), "
            "scaled per point"
        )
    assert values.shape == (points,)
    assert bool(torch.isfinite(values).all())
    if method != "fused":
        reference = genni_ext.sweep(data.model, *args, coeffs, *probes, backend="fused")
        difference = float((values.double() - reference.double()).abs().max())
        benchmark.extra_info["max_abs_diff_vs_fused"] = difference
        scale = float(reference.abs().max()) + 1e-12
        benchmark.extra_info["max_rel_diff_vs_fused"] = difference / scale
        limit = 3e-2 if precision == "tf32" else 1e-3
        assert difference <= limit * scale, f"{method} disagrees with fused: {difference}"
