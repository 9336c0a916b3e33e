"""A grid sweep is decided and checked once: the model runs on the probes at most once before
the first chunk, the engine is planned once for all chunks, the markers run on the grid's
engine, and a Dask worker builds a ConfigSource's problem once, not once per chunk."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from genni_ext.core.grid import Grid
from genni_ext.core.models import mlp
from genni_ext.core.problem import Problem
from genni_ext.core.subspace import Subspace
from genni_ext.engine import front_door
from genni_ext.run import chunk_runs, grid_sweep, plan
from genni_ext.run.grid_sweep import sweep_grid
from genni_ext.run.resumable import run_sweep
from genni_ext.store import Experiment
from genni_ext.store.config import build_problem, validate_config

GRID = Grid.uniform((-1.0, 1.0), 9, 2)  # 81 points: chunks of 18 points make 5 chunks
CHUNK_POINTS = 18
NUM_CHUNKS = 5


def _case() -> tuple[Problem, Subspace]:
    torch.manual_seed(0)
    problem = Problem(mlp([6, 16, 1]).double(), num_probes=64, seed=1)
    generator = torch.Generator().manual_seed(2)
    points = problem.theta + 0.3 * torch.randn(2, problem.num_params, generator=generator)
    return problem, Subspace.from_points(problem.theta, points)


def _counting(
    monkeypatch: pytest.MonkeyPatch, module: object, name: str, calls: list[Any], record: Any
) -> None:
    """Patch ``module.name`` to append ``record()`` to ``calls`` at each call, then run it."""
    original: Callable[..., Any] = getattr(module, name)

    def counted(*args: object, **kwargs: object) -> Any:
        calls.append(record())
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)


def _forward_counter(monkeypatch: pytest.MonkeyPatch) -> list[None]:
    """A list whose length is the number of Linear forwards from now on: the model (an MLP)
    runs on probes exactly when they happen. (A forward hook would count too, but the fused
    engine refuses models with hooks.)"""
    forwards: list[None] = []
    _counting(monkeypatch, nn.Linear, "forward", forwards, lambda: None)
    return forwards


@pytest.mark.parametrize("backend", ["fused", "torch"])
def test_sweep_grid_runs_the_model_on_the_probes_zero_times_before_sweeping(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """0, not 1: the Problem ran the model on its probes (with the checks a sweep makes)
    when it made the targets, and the targets give the output width, so the sweep's checks
    do not run it again. On the fused engine the model is never run at all."""
    problem, subspace = _case()
    forwards = _forward_counter(monkeypatch)
    at_first_chunk: list[int] = []
    _counting(monkeypatch, grid_sweep, "run_decided", at_first_chunk, lambda: len(forwards))
    result = sweep_grid(problem, subspace, GRID, backend=backend)
    assert at_first_chunk == [0]
    assert result.metadata["backend"] == ("torch" if backend == "torch" else "fused-cpu")
    if backend == "fused":
        assert forwards == []


@pytest.mark.parametrize("backend", ["fused", "torch"])
def test_run_sweep_runs_the_model_zero_times_before_the_first_chunk(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """0, as for sweep_grid: the Problem's targets stand for the model's run on its probes."""
    problem, subspace = _case()
    forwards = _forward_counter(monkeypatch)
    at_chunks: list[int] = []
    _counting(monkeypatch, chunk_runs, "run_decided", at_chunks, lambda: len(forwards))
    experiment = Experiment("once", tmp_path)
    run_sweep(
        experiment, problem, subspace, GRID, "g", chunk_points=CHUNK_POINTS, backend=backend,
        progress=False,
    )  # fmt: skip
    assert len(at_chunks) == NUM_CHUNKS and at_chunks[0] == 0
    if backend == "fused":
        assert forwards == []


def test_a_sweep_of_several_chunks_is_planned_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One Decision, one lowering and one chunk plan for all the chunks; each chunk runs
    the engine with that Decision."""
    problem, subspace = _case()
    decisions: list[None] = []
    lowerings: list[None] = []
    plans: list[None] = []
    chunks: list[Any] = []
    _counting(monkeypatch, plan, "decide", decisions, lambda: None)
    _counting(monkeypatch, front_door, "lower", lowerings, lambda: None)
    _counting(monkeypatch, plan, "auto_chunk_points", plans, lambda: None)
    run_decided = chunk_runs.run_decided

    def chunk(decision: front_door.Decision, *args: Any, **kwargs: Any) -> torch.Tensor:
        chunks.append(decision)
        return run_decided(decision, *args, **kwargs)

    monkeypatch.setattr(chunk_runs, "run_decided", chunk)
    experiment = Experiment("planned", tmp_path)
    grid = Grid.uniform((-1.0, 1.0), 48, 2)  # 2304 points: chunks of about 1024 by default
    result = run_sweep(experiment, problem, subspace, grid, "g", progress=False)
    assert (len(decisions), len(lowerings), len(plans)) == (1, 1, 1)
    assert result.metadata["store"]["num_chunks"] == len(chunks) > 1
    assert all(decision is chunks[0] for decision in chunks)
    assert chunks[0].first_layer in ("affine", "direct")


def test_markers_run_on_the_grids_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Marker J comes from the Decision the grid ran on, at the points themselves, and
    agrees with torch.func's J to round-off."""
    problem, subspace = _case()
    engines: list[str] = []
    _counting(monkeypatch, front_door.fused, "fused_sweep", engines, lambda: "fused")
    _counting(monkeypatch, front_door, "torch_sweep", engines, lambda: "torch")
    result = sweep_grid(problem, subspace, GRID, backend="fused")
    assert engines == ["fused", "fused"]  # the grid, then the markers
    points = torch.cat([subspace.center[None], subspace.points])
    expected = problem.loss(points)
    got = torch.tensor([marker.loss for marker in result.markers], dtype=torch.float64)
    assert float(expected[1:].min()) > 1e-3  # the points are not equivalent: J is not 0
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-20)


@pytest.mark.slow
def test_a_dask_worker_builds_a_config_source_problem_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ConfigSource sweep of five chunks on one in-process worker builds (and hashes) the
    problem once; a second grid of the same sweep setup reuses it."""
    distributed = pytest.importorskip("distributed", reason="dask is in the test extra")
    config = validate_config(
        {"experiment": "built", "model": {"name": "two_neuron"}, "probes": {"num_probes": 64}}
    )
    experiment = Experiment("built", tmp_path)
    experiment.save_config(config)
    problem = build_problem(config)
    generator = torch.Generator().manual_seed(3)
    points = problem.theta + 0.3 * torch.randn(2, problem.num_params, generator=generator)
    subspace = Subspace.from_points(problem.theta, points.to(problem.theta.dtype))
    builds: list[None] = []
    checks: list[None] = []
    _counting(monkeypatch, chunk_runs, "build_problem", builds, lambda: None)
    _counting(monkeypatch, chunk_runs.ChunkTask, "check_problem", checks, lambda: None)
    source = chunk_runs.ConfigSource(tmp_path, "built")
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        for name in ("a", "b"):
            result = run_sweep(
                experiment, problem, subspace, GRID, name, chunk_points=CHUNK_POINTS,
                progress=False, client=client, source=source,
            )  # fmt: skip
            assert result.metadata["store"]["num_chunks"] == NUM_CHUNKS
    assert experiment.chunks_computed == NUM_CHUNKS
    assert (len(builds), len(checks)) == (1, 1)
    assert torch.equal(result.values, sweep_grid(problem, subspace, GRID).values)
