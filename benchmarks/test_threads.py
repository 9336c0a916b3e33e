"""The fused CPU engine's threads on an idle machine and with one other process busy.

Each workload is timed with ``num_threads=1``, ``num_threads=2`` and the default (no
``num_threads``), first on the machine as it is ("idle"), then while a
``python -c "while True: pass"`` that this module starts keeps one core busy ("loaded";
it is killed when the loaded cases are done). With ``--engine-before=PATH`` (a
``_C*.so`` built from another commit, e.g. the one before the thread pool) the default
and ``num_threads=1`` also run on that engine. One benchmark times all settings of a
workload and load **interleaved**: every round calls each setting once, in an order that
rotates from round to round, so that other work on a shared machine weighs on all of
them alike and their ratios are fair. Each call comes after a pause of ``PAUSE_MS``
(not timed), as calls do where anything else runs between them (``genni_ext.sweep``'s own
checks take about 2 ms): back to back, OpenMP's threads (the engine before the thread
pool) spin from one call into the next and hide most of their stalls. pytest-benchmark's
own statistics are of whole rounds; the per-setting times are in ``extra_info`` and in the
table printed at the end.

Workloads (float32, the set-up of ``benchmarks/test_sweep.py``):

* ``two tiny``, ``lenet tiny``: one grid point, 1,024 probes, of ``TwoNeuronNet`` and
  ``LeNet5`` (28x28, one output): the cost of one call, timed through the engine alone
  (``engine``: ``genni_ext.engine.fused.fused_sweep`` on the lowered program) and through
  ``genni_ext.sweep`` (``sweep``: input checks, the model run on two probes, the engine);
* ``two full``: the paper's grid, ``TwoNeuronNet`` on 100x100 points, 16,384 probes;
* ``lenet full``: ``LeNet5`` on 10x10 points, 1,024 probes.

The statistic is the **median** call of each setting (``extra_info["median_ms"]``; the
fastest is in ``min_ms``): under load the stalls are what is measured, and the fastest
call would hide them. The goals (issue 14), printed in a table at the end of the run and
never asserted (the machine is shared): a tiny two-neuron engine call with the default at
most 2 ms, idle and loaded, and every default at most 1.15x the faster of
``num_threads=1`` and 2.
Every call checks that its J equals, bitwise, the J of ``num_threads=1``.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
import torch
from pytest_benchmark.fixture import BenchmarkFixture
from torch import nn

import genni_ext
from genni_ext.core.models import LeNet5, TwoNeuronNet
from genni_ext.engine import fused
from genni_ext.engine.lowering import Program, lower
from genni_ext.testing import BenchmarkProblem, benchmark_problem

BUSY_LOOP = "while True: pass"
PER_CALL_GOAL_MS = 2.0
DEFAULT_OVER_BEST_GOAL = 1.15
PAUSE_MS = 5.0


@dataclass(frozen=True)
class Setting:
    """Which engine (this build or --engine-before) and how many threads (None: default)."""

    engine: str
    threads: int | None

    @property
    def label(self) -> str:
        threads = "default" if self.threads is None else str(self.threads)
        return threads if self.engine == "this" else f"before-{threads}"


THIS = (Setting("this", 1), Setting("this", 2), Setting("this", None))
BEFORE = (Setting("before", 1), Setting("before", None))


@dataclass(frozen=True)
class Workload:
    """One sweep problem and how often each setting is timed."""

    key: str
    model: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    points_per_axis: int
    probes: int
    rounds: int
    methods: tuple[str, ...]


WORKLOADS: tuple[Workload, ...] = (
    Workload("two tiny", TwoNeuronNet, (1,), 1, 1024, 200, ("engine", "sweep")),
    Workload("lenet tiny", LeNet5, (1, 28, 28), 1, 1024, 20, ("engine", "sweep")),
    Workload("two full", TwoNeuronNet, (1,), 100, 16384, 7, ("sweep",)),
    Workload("lenet full", LeNet5, (1, 28, 28), 10, 1024, 3, ("sweep",)),
)
WORKLOADS_BY_KEY = {workload.key: workload for workload in WORKLOADS}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One case per workload and method; the --engine-before settings only when given."""
    if "settings" not in metafunc.fixturenames:
        return
    settings = THIS + (BEFORE if metafunc.config.getoption("engine_before") else ())
    metafunc.parametrize("settings", [settings], ids=[""])
    metafunc.parametrize(
        ("key", "method"),
        [
            pytest.param(workload.key, method, id=f"{workload.key}-{method}")
            for workload in WORKLOADS
            for method in workload.methods
        ],
    )


@functools.cache
def _problem(key: str) -> tuple[BenchmarkProblem, Program]:
    workload = WORKLOADS_BY_KEY[key]
    data = benchmark_problem(
        workload.model, workload.input_shape, m=2, points_per_axis=workload.points_per_axis,
        bound=2.0, probes=workload.probes,
    )  # fmt: skip
    return data, lower(data.model, workload.input_shape)


@pytest.fixture(scope="module", params=["idle", "loaded"])
def load(request: pytest.FixtureRequest) -> Iterator[str]:
    """The machine as it is, or with one busy Python process started here (and killed)."""
    if request.param == "idle":
        yield "idle"
        return
    busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
    time.sleep(0.5)  # let the scheduler place it
    try:
        yield "loaded"
    finally:
        busy.kill()
        busy.wait()


@pytest.fixture(scope="module")
def engine_before(request: pytest.FixtureRequest) -> ModuleType | None:
    """The --engine-before build of genni_ext._C, loaded next to this one, or None."""
    path = request.config.getoption("engine_before")
    if not path:
        return None
    spec = importlib.util.spec_from_file_location("genni_ext_before._C", Path(path))
    if spec is None or spec.loader is None:
        raise pytest.UsageError(f"--engine-before={path} is not a loadable extension module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_threads(
    benchmark: BenchmarkFixture,
    threads_summary: list[str],
    engine_before: ModuleType | None,
    load: str,
    key: str,
    method: str,
    settings: tuple[Setting, ...],
) -> None:
    workload = WORKLOADS_BY_KEY[key]
    data, program = _problem(key)
    tensors = (data.center, data.directions, data.coeffs, data.inputs, data.targets)
    original = fused._extension

    def call(setting: Setting) -> tuple[torch.Tensor, float]:
        """J and the seconds of one call with ``setting``."""
        fused._extension = (lambda: engine_before) if setting.engine == "before" else original
        try:
            time.sleep(PAUSE_MS / 1e3)
            start = time.perf_counter()
            if method == "engine":
                values = fused.fused_sweep(
                    program, *tensors, num_threads=setting.threads, batch_points=None,
                    progress=False,
                )  # fmt: skip
            else:
                values = genni_ext.sweep(
                    data.model, *tensors, backend="fused", num_threads=setting.threads
                )
            return values, time.perf_counter() - start
        finally:
            fused._extension = original

    seconds: dict[Setting, list[float]] = {setting: [] for setting in settings}
    reference = call(settings[0])[0]

    def one_round() -> None:
        shift = len(seconds[settings[0]]) % len(settings)
        for setting in settings[shift:] + settings[:shift]:
            values, elapsed = call(setting)
            assert torch.equal(values, reference), f"J with {setting.label} differs"
            seconds[setting].append(elapsed)

    benchmark.group = f"threads: {key} ({method}), {load}"
    loadavg = os.getloadavg()[0]
    benchmark.pedantic(one_round, rounds=workload.rounds, warmup_rounds=1, iterations=1)  # type: ignore[no-untyped-call]
    medians = {}
    for setting, times in seconds.items():
        timed = times[1:] or times  # without the warm-up round
        medians[setting.label] = statistics.median(timed) * 1e3
        benchmark.extra_info[setting.label] = {
            "engine": setting.engine,
            "threads": fused.cpu_threads(setting.threads),
            "median_ms": medians[setting.label],
            "min_ms": min(timed) * 1e3,
            "calls": len(timed),
        }
    benchmark.extra_info.update(
        {
            "workload": key,
            "method": method,
            "load": load,
            "grid_points": data.coeffs.shape[0],
            "probes": workload.probes,
            "timed": not benchmark.disabled,
            "loadavg_1min_before": loadavg,
        }
    )
    line = _summary(key, method, load, medians, loadavg)
    threads_summary.append(line if not benchmark.disabled else f"{line} (untimed: one call)")


def _summary(key: str, method: str, load: str, medians: dict[str, float], loadavg: float) -> str:
    """One line of the end-of-run table: medians, default/best and the goals."""
    ratio = medians["default"] / min(medians["1"], medians["2"])
    met = ratio <= DEFAULT_OVER_BEST_GOAL
    goals = f"default/best {ratio:.2f}"
    if key == "two tiny" and method == "engine":
        met = met and medians["default"] <= PER_CALL_GOAL_MS
        goals += f", per call {medians['default']:.2f} ms"
    times = ", ".join(f"{label} {ms:.2f}" for label, ms in medians.items())
    line = f"{key} ({method}), {load} [load avg {loadavg:.1f}]: median ms {times}; {goals}"
    if "before-default" in medians:
        line += f"; before-default/default {medians['before-default'] / medians['default']:.2f}"
    return line + (" -> goals met" if met else " -> goals NOT met")
