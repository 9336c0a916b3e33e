"""The search on a Dask cluster (the ``dask_client`` fixture: 2 worker processes, 1 thread
each): the same SearchResult as a local run, bitwise for Linear nets, with early stopping,
warnings, progress and worker errors as locally; ``genni_ext.cluster``'s checks."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from genni_ext.cluster import check_client, connect, require_distributed
from genni_ext.core.models import LeNet5, TwoNeuronNet, mlp
from genni_ext.core.problem import Problem
from genni_ext.core.sgd_search import SearchResult
from genni_ext.errors import BackendUnavailableError, InputError
from genni_ext.run.searches import search

distributed = pytest.importorskip("distributed", reason="dask is in the test extra")

FIELDS = ("params", "losses", "history", "history_steps", "starts", "restarts")


def _paper_problem(num_probes: int, dtype: torch.dtype = torch.float32) -> Problem:
    """The paper's 4-parameter net: θ drawn with seed 10, standard normal probes (seed 10)."""
    torch.manual_seed(10)
    return Problem(TwoNeuronNet().to(dtype), num_probes=num_probes, seed=10)


def _assert_identical(remote: SearchResult, local: SearchResult) -> None:
    """Every tensor bitwise equal (dtype and shape included), seeds and config equal."""
    for field in FIELDS:
        got, expected = getattr(remote, field), getattr(local, field)
        assert got.dtype == expected.dtype, field
        assert torch.equal(got, expected), f"{field} differs: {got} vs {expected}"
    assert remote.seeds == local.seeds
    assert remote.config == local.config


def _group_tasks(client: object, run: Callable[[], object]) -> list[str]:
    """The worker of each search-group task that ran while ``run()`` ran. Which worker
    takes which group is the scheduler's choice: usually one group each, but both on one
    worker when the other is still busy (seen once in CI)."""
    with distributed.get_task_stream(client) as stream:
        run()
    return [task["worker"] for task in stream.data if "run_group" in str(task["key"])]


# --- the same result as a local run -------------------------------------------------------------

OPTIMIZERS = [
    pytest.param({"optimizer": "sgd"}, id="sgd"),
    pytest.param({"optimizer": "sgd", "momentum": 0.9}, id="sgd-momentum"),
    pytest.param({"optimizer": "adam", "lr": 0.01}, id="adam"),
]


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("options", OPTIMIZERS)
def test_two_neuron_net_equals_local(
    dask_client: object, dtype: torch.dtype, options: dict[str, Any]
) -> None:
    """5 starts on 2 workers' threads (groups of 3 and 2, two tasks): bitwise the local run."""
    problem = _paper_problem(1000, dtype)
    settings: dict[str, Any] = {
        "steps": 90,
        "batch_size": 96,
        "record_every": 40,
        "seed": 20,
        "progress": False,
    }
    settings.update(options)
    local = search(problem, 5, **settings)
    remote: list[SearchResult] = []
    groups = _group_tasks(
        dask_client,
        lambda: remote.append(search(problem, 5, client=dask_client, **settings)),
    )
    assert len(groups) == 2, groups
    _assert_identical(remote[0], local)
    assert remote[0].history_steps.tolist() == [0, 40, 80, 90]
    assert not torch.equal(local.params, local.starts), "nothing was trained"


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mlp_equals_local(dask_client: object, dtype: torch.dtype) -> None:
    """A small tanh MLP, 7 starts (groups of 4 and 3), Adam: bitwise the local run."""
    torch.manual_seed(0)
    problem = Problem(mlp([3, 16, 16, 2], activation="tanh").to(dtype), num_probes=500, seed=1)
    settings: dict[str, Any] = {
        "steps": 60,
        "lr": 0.01,
        "optimizer": "adam",
        "batch_size": 64,
        "seed": 3,
    }
    local = search(problem, 7, record_every=25, progress=False, **settings)
    remote = search(problem, 7, record_every=25, progress=False, client=dask_client, **settings)
    _assert_identical(remote, local)
    assert bool((local.losses < local.history[:, 0]).all())


@pytest.mark.slow
@pytest.mark.parametrize("options", OPTIMIZERS)
def test_restarts_equal_local(dask_client: object, options: dict[str, Any]) -> None:
    """restart_collapsed on 9 starts of the demo's θ (groups of 5 and 4): each group restarts
    its own collapsed starts with the whole search's seeds (seed + 1 + k + 9 (r + 1)), so
    restarts, seeds, starts and trajectories are the local run's, bitwise."""
    torch.manual_seed(5)
    problem = Problem(TwoNeuronNet(), num_probes=512, seed=5)
    settings: dict[str, Any] = {
        "steps": 200,
        "batch_size": 64,
        "record_every": 25,
        "seed": 30,
        "restart_collapsed": True,
        "max_restarts": 2,
        "progress": False,
    }
    settings.update(options)
    local = search(problem, 9, **settings)
    remote = search(problem, 9, client=dask_client, **settings)
    _assert_identical(remote, local)
    assert int(local.restarts.sum()) > 0, "nothing was restarted"
    assert any(seed > 30 + 9 for seed in local.seeds)


@pytest.mark.slow
def test_given_starts_and_one_start(dask_client: object) -> None:
    """Starts passed as a tensor, and K = 1 (one group): the local run."""
    problem = _paper_problem(256)
    starts = torch.randn(3, 4, generator=torch.Generator().manual_seed(5))
    for given in (starts, starts[:1]):
        local = search(problem, given, steps=30, seed=7, progress=False)
        _assert_identical(
            search(problem, given, steps=30, seed=7, progress=False, client=dask_client), local
        )


@pytest.mark.slow
def test_lenet_float64_equals_local_up_to_round_off(dask_client: object) -> None:
    """A conv net is not always bitwise: torch's float64 conv kernels round differently for
    another number of starts in the vmap batch (5 starts locally, 3 and 2 on the workers)
    and another thread count. Measured on LeNet-5 (12x12 and 16x16, K = 5, 7, 8, 40 steps
    of SGD, momentum and Adam): parameters equal or at most 6e-17 apart, J at most 9e-16
    relative; float32 was bitwise."""
    torch.manual_seed(0)
    problem = Problem(LeNet5(input_size=12).double(), num_probes=64, seed=1)
    settings: dict[str, Any] = {
        "steps": 12,
        "lr": 0.001,
        "batch_size": 16,  # one thread locally: 2 threads stall on a busy 2-core machine
        "record_every": 6,
        "seed": 7,
    }
    local = search(problem, 5, progress=False, **settings)
    remote = search(problem, 5, progress=False, client=dask_client, **settings)
    for field in FIELDS:
        torch.testing.assert_close(
            getattr(remote, field), getattr(local, field), rtol=1e-13, atol=1e-15
        )
    assert remote.seeds == local.seeds and remote.config == local.config


@pytest.mark.slow
def test_early_stopping_at_the_common_record_point(dask_client: object) -> None:
    """With tol the run stops where every start has J < tol, as locally, although the two
    groups (3 and 2 starts) on their own stop at different record points."""
    problem = _paper_problem(1024)
    settings: dict[str, Any] = {"steps": 3000, "tol": 0.0025, "record_every": 50, "progress": False}
    local = search(problem, 5, seed=10, **settings)
    first = search(problem, local.starts[:3], seed=10, **settings)
    second = search(problem, local.starts[3:], seed=13, **settings)
    alone = {first.config["steps_run"], second.config["steps_run"]}
    assert len(alone) == 2 and local.config["steps_run"] == max(alone), alone
    _assert_identical(search(problem, 5, seed=10, client=dask_client, **settings), local)


# --- warnings, progress, errors -----------------------------------------------------------------


@pytest.mark.slow
def test_divergence_warning_as_locally(
    dask_client: object, caplog: pytest.LogCaptureFixture
) -> None:
    problem = _paper_problem(64)
    settings: dict[str, Any] = {
        "steps": 30,
        "lr": 1e6,
        "record_every": 10,
        "seed": 1,
        "progress": False,
    }
    messages = []
    for client in (None, dask_client):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="genni_ext"):
            search(problem, 5, client=client, **settings)
        messages.append([r.getMessage() for r in caplog.records if "NaN or Inf" in r.getMessage()])
    assert len(messages[0]) == 1 and messages[1] == messages[0], messages


@pytest.mark.slow
def test_progress_counts_groups(dask_client: object, capsys: pytest.CaptureFixture[str]) -> None:
    problem = _paper_problem(64)
    search(problem, 4, steps=5, client=dask_client)
    err = capsys.readouterr().err
    assert "search" in err and "2/2" in err and "group" in err, err
    search(problem, 4, steps=5, client=dask_client, progress=False)
    assert capsys.readouterr().err == ""


def _exploding_problem() -> Problem:
    """A Problem whose model raises InputError once ``explode`` is set (after the targets).
    The class is local, so cloudpickle sends it to the workers by value."""

    class Exploding(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(2, 1)
            self.explode = False

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.explode:
                raise InputError("the model refuses to run: explode is set")
            return self.linear(x)

    torch.manual_seed(0)
    problem = Problem(Exploding(), num_probes=32, input_shape=(2,))
    problem.model.explode = True
    return problem


@pytest.mark.slow
def test_a_worker_error_surfaces_as_locally(dask_client: object) -> None:
    problem = _exploding_problem()
    with pytest.raises(InputError) as local:
        search(problem, 4, steps=5, progress=False)
    with pytest.raises(InputError) as remote:
        search(problem, 4, steps=5, progress=False, client=dask_client)
    assert type(remote.value) is type(local.value) is InputError
    assert str(remote.value) == str(local.value) == "the model refuses to run: explode is set"
    # The cluster is still usable afterwards.
    problem.model.explode = False
    assert search(problem, 4, steps=5, progress=False, client=dask_client).params.shape == (4, 3)


# --- genni_ext.cluster ----------------------------------------------------------------------------


@pytest.mark.parametrize("client", ["tcp://127.0.0.1:8786", None, 3, object()])
def test_check_client_refuses_a_non_client(client: object) -> None:
    name = type(client).__name__
    with pytest.raises(InputError, match=rf"client must be a distributed\.Client, got {name}"):
        check_client(client)
    if client is not None:  # None means: run locally
        with pytest.raises(InputError, match=rf"got {name}"):
            search(_paper_problem(16), 2, steps=1, progress=False, client=client)


@pytest.mark.slow
def test_check_client_accepts_a_client(dask_client: object) -> None:
    assert check_client(dask_client) is dask_client


# The scheduler's HTTP server (metrics, even with the dashboard off) asks for port 8787,
# which the session's cluster already holds.
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Port 8787 is already in use")
def test_connect_local() -> None:
    """local:2 is a cluster of 2 single-threaded worker processes, closed with its client."""
    client = connect("local:2")
    try:
        assert sorted(client.nthreads().values()) == [1, 1]
        pids = set(client.run(os.getpid).values())
        assert len(pids) == 2 and os.getpid() not in pids
        cluster = client.cluster
        assert cluster.scheduler_spec["options"]["dashboard"] is False
    finally:
        client.close()
    assert cluster.status.name == "closed"


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("local:0", r"needs a positive number of workers after 'local:'"),
        ("local:x", r"needs a positive number of workers"),
        ("udp://x", r"'udp://x' is not understood"),
        ("", r"'' is not understood"),
        ("tcp://host", r"'tcp://host' is not understood"),
        ("tcp://host:99999", r"is not understood"),
    ],
)
def test_connect_refuses_bad_addresses(address: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as error:
        connect(address)
    assert '"local:N"' in str(error.value) and '"tcp://HOST:PORT"' in str(error.value)


def test_connect_to_no_scheduler_is_one_clear_error() -> None:
    started = time.perf_counter()
    with pytest.raises(BackendUnavailableError, match=r"cannot reach a Dask scheduler at tcp://"):
        connect("tcp://127.0.0.1:1", timeout=1)
    assert time.perf_counter() - started < 15


def test_without_dask_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed fails
    with pytest.raises(BackendUnavailableError, match=r'pip install "genni_ext\[dask\]"'):
        require_distributed()
    with pytest.raises(BackendUnavailableError, match=r"dask is not installed"):
        connect("local:2")
