"""Resumable sweeps on a Dask cluster (a LocalCluster of 2 worker processes): bitwise equal
to one process, a worker killed mid-sweep, a client killed and the sweep rerun, a worker
whose problem differs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from genni_ext import run_sweep
from genni_ext.core.grid import Grid
from genni_ext.core.models import LeNet5, TwoNeuronNet
from genni_ext.core.problem import Problem
from genni_ext.core.subspace import Subspace
from genni_ext.errors import InputError, StoreError
from genni_ext.run.chunk_runs import ConfigSource
from genni_ext.run.grid_sweep import sweep_grid
from genni_ext.store import Experiment, zarr_grids
from genni_ext.store.config import build_problem, validate_config

distributed = pytest.importorskip("distributed", reason="dask is in the test extra")


@pytest.fixture(scope="module")
def client() -> Iterator[object]:
    """A cluster of its own: one test here kills a worker."""
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as connected,
    ):
        yield connected


def _plane(problem: Problem, seed: int) -> Subspace:
    generator = torch.Generator().manual_seed(seed)
    scale = 0.3 * float(problem.theta.abs().mean())
    points = problem.theta + scale * torch.randn(2, problem.num_params, generator=generator).to(
        problem.theta.dtype
    )
    return Subspace.from_points(problem.theta, points)


def _two_neuron() -> tuple[Problem, Subspace, Grid]:
    torch.manual_seed(0)
    problem = Problem(TwoNeuronNet(), num_probes=256, seed=1)
    return problem, _plane(problem, 2), Grid.uniform((-1.0, 1.0), 24, 2)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["two_neuron", "lenet5"])
def test_dask_sweep_equals_one_process(model: str, tmp_path: Path, client: object) -> None:
    if model == "two_neuron":
        problem, subspace, grid = _two_neuron()
        chunk_points = 48
    else:
        torch.manual_seed(3)
        problem = Problem(LeNet5(input_size=16, padding=1, num_outputs=3), num_probes=24, seed=4)
        subspace, grid, chunk_points = _plane(problem, 5), Grid.uniform((-1.0, 1.0), 6, 2), 12
    experiment = Experiment("dask", tmp_path)
    result = run_sweep(
        experiment,
        problem,
        subspace,
        grid,
        model,
        chunk_points=chunk_points,
        progress=False,
        client=client,
    )
    assert experiment.chunks_computed == grid.size // chunk_points
    local = sweep_grid(problem, subspace, grid)
    assert torch.equal(result.values, local.values)
    assert result.metadata["backend"] == "fused-cpu"
    assert experiment.load_grid(model).equals(result)
    assert experiment.check_grid(model) == []


@pytest.mark.slow
def test_a_worker_killed_mid_sweep_costs_only_its_chunks(tmp_path: Path, client: object) -> None:
    torch.manual_seed(6)
    problem = Problem(LeNet5(input_size=16, padding=1, num_outputs=3), num_probes=400, seed=7)
    subspace, grid = _plane(problem, 8), Grid.uniform((-1.0, 1.0), 40, 2)
    experiment = Experiment("kill", tmp_path)
    done = experiment.grid_dir("g") / "done"
    pids = client.run(os.getpid)  # type: ignore[attr-defined]
    killed: list[int] = []

    def kill_one_worker() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if done.is_dir() and len(list(done.iterdir())) >= 3:
                pid = next(iter(pids.values()))
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one_worker)
    killer.start()
    result = run_sweep(
        experiment, problem, subspace, grid, "g", chunk_points=40, progress=False, client=client
    )
    killer.join()
    assert killed, "the sweep finished before a worker could be killed"
    assert torch.equal(result.values, sweep_grid(problem, subspace, grid).values)
    assert experiment.check_grid("g") == []


_CLIENT_SCRIPT = """
import sys, torch
from distributed import Client, LocalCluster
from genni_ext import run_sweep
from genni_ext.core.grid import Grid
from genni_ext.core.models import LeNet5
from genni_ext.core.problem import Problem
from genni_ext.store import Experiment
from genni_ext.core.subspace import Subspace

if __name__ == "__main__":
    torch.manual_seed(9)
    problem = Problem(LeNet5(input_size=16, padding=1, num_outputs=3), num_probes=400, seed=10)
    generator = torch.Generator().manual_seed(11)
    scale = 0.3 * float(problem.theta.abs().mean())
    points = problem.theta + scale * torch.randn(2, problem.num_params, generator=generator)
    subspace = Subspace.from_points(problem.theta, points)
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            run_sweep(
                Experiment("client", sys.argv[1]), problem, subspace,
                Grid.uniform((-1.0, 1.0), 40, 2), "g", chunk_points=40, progress=False,
                client=client,
            )
"""


@pytest.mark.slow
def test_a_killed_client_resumes_with_only_the_missing_chunks(
    tmp_path: Path, client: object
) -> None:
    script = tmp_path / "client.py"
    script.write_text(textwrap.dedent(_CLIENT_SCRIPT))
    process = subprocess.Popen([sys.executable, str(script), str(tmp_path)])
    done = tmp_path / "experiments" / "client" / "grids" / "g" / "done"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        if done.is_dir() and len(list(done.iterdir())) >= 5:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = len(list(done.iterdir()))
    assert 5 <= written < 40, f"the client wrote {written} of 40 chunks before it was killed"

    torch.manual_seed(9)
    problem = Problem(LeNet5(input_size=16, padding=1, num_outputs=3), num_probes=400, seed=10)
    subspace, grid = _plane_of_script(problem), Grid.uniform((-1.0, 1.0), 40, 2)
    experiment = Experiment("client", tmp_path)
    written = len(zarr_grids.recorded_chunks(experiment.grid_dir("g"), 40))
    result = run_sweep(
        experiment, problem, subspace, grid, "g", chunk_points=40, progress=False, client=client
    )
    assert experiment.chunks_computed == 40 - written
    assert torch.equal(result.values, sweep_grid(problem, subspace, grid).values)


def _plane_of_script(problem: Problem) -> Subspace:
    generator = torch.Generator().manual_seed(11)
    scale = 0.3 * float(problem.theta.abs().mean())
    points = problem.theta + scale * torch.randn(2, problem.num_params, generator=generator)
    return Subspace.from_points(problem.theta, points)


@pytest.mark.slow
def test_a_worker_with_another_theta_writes_nothing(tmp_path: Path, client: object) -> None:
    config = validate_config(
        {"experiment": "hashes", "model": {"name": "two_neuron"}, "probes": {"num_probes": 64}}
    )
    experiment = Experiment("hashes", tmp_path)
    experiment.save_config(config)
    problem = build_problem(config)
    subspace, grid = _plane(problem, 12), Grid.uniform((-1.0, 1.0), 8, 2)
    experiment.save_config({**config, "seed": 50})  # the workers rebuild another θ
    with pytest.raises(StoreError, match=r"this worker's problem is not the grid's .*theta_hash"):
        run_sweep(experiment,
            problem, subspace, grid, "g", chunk_points=8, progress=False, client=client,
            source=ConfigSource(tmp_path, "hashes"),
        )  # fmt: skip
    assert zarr_grids.recorded_chunks(experiment.grid_dir("g"), 8) == set()
    # Tasks of the failed run that were already running go on (Dask cannot stop them): wait
    # for them, so that the second run does not clear the folder while one writes into it.
    deadline = time.monotonic() + 120
    while any(client.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    experiment.save_config(config)
    result = run_sweep(experiment,
        problem, subspace, grid, "g", chunk_points=8, progress=False, client=client,
        source=ConfigSource(tmp_path, "hashes"),
    )  # fmt: skip
    # One of those tasks may have written its chunk, having passed its hash check.
    assert 1 <= experiment.chunks_computed <= 8
    assert experiment.check_grid("g") == []
    assert torch.equal(result.values, sweep_grid(problem, subspace, grid).values)


def test_client_must_be_a_dask_client(tmp_path: Path) -> None:
    problem, subspace, grid = _two_neuron()
    with pytest.raises(InputError, match=r"distributed\.Client"):
        run_sweep(Experiment("c", tmp_path), problem, subspace, grid, "g", client="local:2")
    assert not (tmp_path / "experiments").exists()


@pytest.mark.slow
def test_sweep_grid_on_a_cluster_equals_one_process(client: object) -> None:
    problem, subspace, grid = _two_neuron()
    local = sweep_grid(problem, subspace, grid)
    spread = sweep_grid(problem, subspace, grid, client=client, chunk_points=100)
    assert torch.equal(spread.values, local.values)
    assert spread.metadata["backend"] == local.metadata["backend"] == "fused-cpu"
