"""The run layer: a resumable sweep on 1 and 2 local Dask workers against one process, the
per-task overhead of Dask, and the zarr store's write throughput against ``numpy.save``.

Groups (``extra_info`` holds the numbers ``benchmarks/README.md`` quotes):

* ``run layer: LeNet-5 3-D``: ``Experiment.run_sweep`` of a 14×14×14 grid of LeNet-5 (28×28,
  one output, 256 probes) in chunks of one slab (196 points, 14 chunks) — ``local`` in this process
  (torch's threads), ``dask-1`` and ``dask-2`` on a LocalCluster of 1 and 2 worker
  processes with one thread each. ``speedup_2_over_1`` is dask-1 / dask-2 (goal ≥ 1.7×).
* ``run layer: overhead``: the grid's points as a coefficient list (so that a chunk can be
  any number of points), one thread everywhere, on 1 worker against one process: all 2,744
  at the default chunk size, the first 200 in chunks of one point. ``overhead`` = dask time
  / local time − 1 (goal ≤ 5 % at the default chunk size).
* ``run layer: store writes``: 10⁶ float64 values written as a zarr grid (10 chunks,
  each with its record) against one ``numpy.save`` of the same array: MB/s of each.

Each sweep starts from an empty folder; the clusters start outside the timed region.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from pytest_benchmark.fixture import BenchmarkFixture

from genni_ext import run_sweep
from genni_ext.core.chunking import ChunkPlan
from genni_ext.core.grid import Grid
from genni_ext.core.models import LeNet5
from genni_ext.core.problem import Problem
from genni_ext.core.subspace import Subspace
from genni_ext.run.plan import auto_chunk_points
from genni_ext.store import Experiment, zarr_grids

distributed = pytest.importorskip("distributed")

SPEEDUP_GOAL = 1.7
LISTED_POINTS = {False: 2744, True: 200}  # one-point chunks: 200 tasks are enough to time
OVERHEAD_GOAL = 0.05
_SECONDS: dict[str, float] = {}


@functools.cache
def _case() -> tuple[Problem, Subspace, Grid]:
    torch.manual_seed(0)
    problem = Problem(LeNet5(), num_probes=256, seed=1)
    generator = torch.Generator().manual_seed(2)
    scale = 0.3 * float(problem.theta.abs().mean())
    points = problem.theta + scale * torch.randn(3, problem.num_params, generator=generator)
    return problem, Subspace.from_points(problem.theta, points), Grid.uniform((-1.0, 1.0), 14, 3)


@pytest.fixture(scope="module")
def clients() -> Iterator[dict[int, object]]:
    clusters = {
        workers: distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
        for workers in (1, 2)
    }
    connected = {workers: distributed.Client(cluster) for workers, cluster in clusters.items()}
    yield connected
    for workers in (1, 2):
        connected[workers].close()
        clusters[workers].close()


def _sweep(
    client: object, chunk_points: int, threads: int | None = None, listed: bool = False
) -> Callable[[], float]:
    problem, subspace, grid = _case()
    if listed:  # points as a coefficient list: chunks of any number of points
        grid = Grid.from_coeffs(grid.coeffs[: LISTED_POINTS[chunk_points == 1]])

    def run() -> float:
        home = Path(tempfile.mkdtemp(prefix="genni-bench-"))
        try:
            start = time.perf_counter()
            run_sweep(Experiment("bench", home),
                problem, subspace, grid, "g", chunk_points=chunk_points, progress=False,
                client=client, num_threads=threads,
            )  # fmt: skip
            return time.perf_counter() - start
        finally:
            shutil.rmtree(home, ignore_errors=True)

    return run


def _time(benchmark: BenchmarkFixture, run: Callable[[], float], key: str, rounds: int) -> float:
    seconds: list[float] = []
    benchmark.pedantic(lambda: seconds.append(run()), rounds=rounds, iterations=1)  # type: ignore[no-untyped-call]
    fastest = min(seconds)
    _SECONDS[key] = fastest
    benchmark.extra_info.update(
        {"method": key, "seconds": fastest, "timed": not benchmark.disabled}
    )
    return fastest


@pytest.mark.parametrize("method", ["local", "dask-1", "dask-2"])
def test_lenet_3d_on_workers(
    benchmark: BenchmarkFixture, clients: dict[int, object], method: str
) -> None:
    benchmark.group = "run layer: LeNet-5 3-D, 14x14x14 grid, 256 probes, chunks of 196"
    client = None if method == "local" else clients[int(method[-1])]
    seconds = _time(benchmark, _sweep(client, 196), method, rounds=2)
    problem, _subspace, grid = _case()
    benchmark.extra_info.update(
        {"grid_points": grid.size, "probes": problem.num_probes, "threads": torch.get_num_threads()}
    )
    if method == "dask-2" and "dask-1" in _SECONDS:
        speedup = _SECONDS["dask-1"] / seconds
        benchmark.extra_info.update({"speedup_2_over_1": speedup, "goal": SPEEDUP_GOAL})
        if "local" in _SECONDS:
            benchmark.extra_info["speedup_2_over_local"] = _SECONDS["local"] / seconds


@pytest.mark.parametrize("chunks", ["default", "one point"])
@pytest.mark.parametrize("method", ["local-1-thread", "dask-1"])
def test_task_overhead(
    benchmark: BenchmarkFixture, clients: dict[int, object], method: str, chunks: str
) -> None:
    problem, _subspace, grid = _case()
    chunk_points = auto_chunk_points(problem, grid.size) if chunks == "default" else 1
    benchmark.group = f"run layer: overhead, chunks of {chunk_points} points (coefficient list)"
    client = clients[1] if method == "dask-1" else None
    key = f"{method}/{chunks}"
    run = _sweep(client, chunk_points, threads=1, listed=True)
    seconds = _time(benchmark, run, key, rounds=2)
    benchmark.extra_info["chunk_points"] = chunk_points
    local = _SECONDS.get(f"local-1-thread/{chunks}")
    if method == "dask-1" and local:
        benchmark.extra_info.update(
            {
                "overhead": seconds / local - 1.0,
                "goal": OVERHEAD_GOAL if chunks == "default" else None,
            }
        )


@pytest.mark.parametrize("writer", ["numpy.save", "zarr grid"])
def test_store_write_throughput(benchmark: BenchmarkFixture, writer: str) -> None:
    benchmark.group = "run layer: store writes, 10^6 float64 values"
    grid = Grid.uniform((-1.0, 1.0), 100, 3)
    values = torch.randn(grid.size, dtype=torch.float64)
    plan = ChunkPlan.for_grid(grid.shape, grid.size // 10)

    def run() -> float:
        folder = Path(tempfile.mkdtemp(prefix="genni-bench-"))
        try:
            start = time.perf_counter()
            if writer == "numpy.save":
                np.save(folder / "values.npy", values.numpy())
            else:
                zarr_grids.create(folder, grid, plan, {"kind": "benchmark"})
                for index in range(plan.num_chunks):
                    zarr_grids.write_chunk(
                        folder, plan, index, values[slice(*plan.bounds(index))], 0.0
                    )
            return time.perf_counter() - start
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    seconds = _time(benchmark, run, writer, rounds=3)
    benchmark.extra_info["mb_per_s"] = values.numel() * 8 / seconds / 1e6
    if writer == "zarr grid" and "numpy.save" in _SECONDS:
        benchmark.extra_info["ratio_to_numpy_save"] = _SECONDS["numpy.save"] / seconds
