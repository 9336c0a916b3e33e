"""Speed of the search: K starts trained together against the same K trained one by one.

The paper's 4-parameter experiment: ``TwoNeuronNet`` with θ its initialisation after
``torch.manual_seed(10)``, 16384 standard-normal probes (seed 10), minibatches of 256,
SGD with lr 0.015. 16 starts (the model's initialisation with seeds 11..26, drawn once
and given to both), ``STEPS`` steps, J on the whole probe set recorded at the start and
at the end. One pytest-benchmark group, two benchmarks:

* ``batched``: ``genni_ext.search(problem, starts, seed=10, ...)``, all 16 starts
  in one ``vmap(grad(...))`` per step;
* ``sequential``: the 16 runs ``search(problem, starts[k:k+1], seed=10 + k, ...)`` one
  after another: the same steps, seeds and minibatches (their results are checked equal
  to the batched run's).

``extra_info["seconds"]`` is the fastest round; ``sequential`` also holds
``ratio_sequential_over_batched`` when ``batched`` ran first in the same session (the goal
is ≥ 5×). ``benchmarks/report.py`` prints both in its "Search" section.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable

import torch
from pytest_benchmark.fixture import BenchmarkFixture

from genni_ext.core.models import TwoNeuronNet
from genni_ext.core.problem import Problem
from genni_ext.core.sgd_search import SMALL_STEP, SearchResult, initial_params
from genni_ext.run.searches import search

SEED = 10
NUM_STARTS = 16
STEPS = 200
PROBES = 16384
BATCH = 256
LR = 0.015
GROUP = f"search: TwoNeuronNet, {NUM_STARTS} starts, {STEPS} steps, {PROBES} probes, batch {BATCH}"
GOAL = 5.0

_FASTEST: dict[str, float] = {}


@functools.cache
def _problem() -> tuple[Problem, torch.Tensor]:
    torch.manual_seed(SEED)
    problem = Problem(TwoNeuronNet(), num_probes=PROBES, seed=SEED)
    starts = initial_params(problem, [SEED + 1 + k for k in range(NUM_STARTS)])
    return problem, starts


def _options() -> dict[str, object]:
    return {"steps": STEPS, "lr": LR, "batch_size": BATCH, "record_every": STEPS, "progress": False}


def _batched() -> torch.Tensor:
    problem, starts = _problem()
    return search(problem, starts, seed=SEED, **_options()).params  # type: ignore[arg-type]


def _sequential() -> torch.Tensor:
    problem, starts = _problem()
    runs: list[SearchResult] = [
        search(problem, starts[k : k + 1], seed=SEED + k, **_options())  # type: ignore[arg-type]
        for k in range(NUM_STARTS)
    ]
    return torch.cat([run.params for run in runs])


def _run(benchmark: BenchmarkFixture, call: Callable[[], torch.Tensor], rounds: int) -> tuple:
    seconds: list[float] = []

    def timed() -> torch.Tensor:
        start = time.perf_counter()
        result = call()
        seconds.append(time.perf_counter() - start)
        return result

    result = benchmark.pedantic(timed, rounds=rounds, warmup_rounds=1, iterations=1)  # type: ignore[no-untyped-call]
    stats = benchmark.stats
    if stats is not None and stats.stats.rounds > 0:
        return result, float(stats.stats.min), float(stats.stats.median)
    return result, min(seconds), statistics.median(seconds)


def _search_threads() -> int:
    """Threads the search runs on (one for small steps: see genni_ext.core.sgd_search)."""
    problem, _ = _problem()
    small = NUM_STARTS * BATCH * problem.activations_per_sample < SMALL_STEP
    return 1 if small else torch.get_num_threads()


def _describe(benchmark: BenchmarkFixture, method: str, fastest: float, median: float) -> None:
    benchmark.group = GROUP
    benchmark.extra_info.update(
        {
            "search": "two_neuron",
            "method": method,
            "model": "TwoNeuronNet",
            "starts": NUM_STARTS,
            "steps": STEPS,
            "probes": PROBES,
            "batch_size": BATCH,
            "lr": LR,
            "optimizer": "sgd",
            "seed": SEED,
            "torch_threads": torch.get_num_threads(),
            "search_threads": _search_threads(),
            "timing_statistic": "min",
            "timed": not benchmark.disabled,
            "seconds": fastest,
            "seconds_median": median,
            "seconds_per_start_step": fastest / (NUM_STARTS * STEPS),
            "goal": GOAL,
        }
    )


def test_search_batched(benchmark: BenchmarkFixture) -> None:
    params, fastest, median = _run(benchmark, _batched, rounds=5)
    _describe(benchmark, "batched", fastest, median)
    _FASTEST["batched"] = fastest
    assert params.shape == (NUM_STARTS, 4) and bool(torch.isfinite(params).all())


def test_search_sequential(benchmark: BenchmarkFixture) -> None:
    params, fastest, median = _run(benchmark, _sequential, rounds=3)
    _describe(benchmark, "sequential", fastest, median)
    if "batched" in _FASTEST:
        benchmark.extra_info["batched_seconds"] = _FASTEST["batched"]
        benchmark.extra_info["ratio_sequential_over_batched"] = fastest / _FASTEST["batched"]
    batched = _batched()
    difference = float((params - batched).abs().max())
    benchmark.extra_info["max_abs_diff_vs_batched"] = difference
    torch.testing.assert_close(params, batched, rtol=1e-4, atol=1e-5)
