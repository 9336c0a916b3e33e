"""Running a resumable sweep's missing chunks: in this process, or one Dask task each.

A :class:`ChunkTask` is everything a chunk needs besides the problem and the subspace: the
grid's folder, the chunk plan, the engine decided once for the sweep, and the hashes the
problem must have. Run on a worker it first checks those hashes (a worker whose problem
differs writes nothing; a worker builds and checks the problem once, and its later chunks
reuse it), computes its chunk and writes it to the grid's zarr array; so a
worker that dies costs only its chunk, which Dask runs again elsewhere, and the values are
those of a one-process run bit for bit (every grid point is computed independently, in a
fixed order).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from genni_ext.core.chunking import ChunkPlan
from genni_ext.engine.front_door import run_decided
from genni_ext.errors import StoreError
from genni_ext.store import zarr_grids
from genni_ext.store.config import build_problem, validate_config
from genni_ext.store.experiment import Experiment
from genni_ext.store.files import tensor_hash

if TYPE_CHECKING:
    from genni_ext.core.problem import Problem
    from genni_ext.core.subspace import Subspace
    from genni_ext.engine.front_door import Decision


@dataclass(frozen=True)
class ConfigSource:
    """A problem a worker rebuilds from an experiment's config instead of receiving it:
    ``genni sweep --dask`` sends this (a few hundred bytes) rather than the probes."""

    home: Path
    experiment: str

    def build(self) -> Problem:
        experiment = Experiment(self.experiment, self.home)
        return build_problem(validate_config(experiment.load_config()))


@dataclass(frozen=True)
class StoreSource:
    """A problem a worker reads from the experiment's store (problem.zarr: θ, the probes and
    the targets) on ``device``, with the model built from its stored spec: the worker needs
    the model's code on its path and the store at the same path, nothing else. ``genni sweep
    --dask`` sends this for an experiment that keeps its problem."""

    home: Path
    experiment: str
    device: str = "cpu"

    def build(self) -> Problem:
        return Experiment(self.experiment, self.home).load_problem(device=self.device)


_worker_lock = threading.Lock()
# The problem each ConfigSource or StoreSource last built in this process, with the hashes it
# was checked against: a worker builds and hashes it once per sweep, not once per chunk.
_built: dict[ConfigSource | StoreSource, tuple[tuple[Any, ...], Problem]] = {}
# The hashes each problem object here was found to have (a shipped problem is one object on
# a worker for every task of a sweep), so that it is hashed once.
_checked: weakref.WeakKeyDictionary[Problem, tuple[Any, ...]] = weakref.WeakKeyDictionary()


ProblemSource = Any  # a Problem, a ConfigSource or a StoreSource
_SOURCES = (ConfigSource, StoreSource)


@dataclass(frozen=True)
class ChunkTask:
    """Compute and store chunks of the sweep of ``folder`` (see the module docstring)."""

    folder: Path
    plan: ChunkPlan
    decision: Decision
    num_threads: int | None
    expected: dict[str, Any]  # the manifest's "problem": hashes the problem must have

    def compute(
        self, problem: Problem, subspace: Subspace, coeffs: torch.Tensor, index: int
    ) -> tuple[torch.Tensor, float]:
        """J of chunk ``index`` (its coefficient rows ``coeffs``) and the seconds it took."""
        start = time.perf_counter()
        values = chunk_values(self.decision, problem, subspace, coeffs, self.num_threads)
        return values, time.perf_counter() - start

    def check_problem(self, problem: Problem) -> None:
        """StoreError unless ``problem`` is the one the grid's manifest was made for."""
        found = {
            "theta_hash": problem.theta_hash,
            "probes_hash": problem.probes_hash,
            "targets_hash": tensor_hash(problem.targets),
        }
        wrong = [
            f"{key} {value} (the grid's manifest says {self.expected.get(key)})"
            for key, value in found.items()
            if value != self.expected.get(key)
        ]
        if wrong:
            raise StoreError(
                f"this worker's problem is not the grid's ({'; '.join(wrong)}), so it wrote "
                f"nothing to {self.folder}: give every worker the experiment's config and "
                "package versions the sweep was started with"
            )

    def worker_problem(self, source: ProblemSource) -> Problem:
        """The problem ``source`` gives this worker, checked by :meth:`check_problem`: built
        (for a ConfigSource or StoreSource) and checked once per worker and grid, then
        reused by its other chunks."""
        expected = tuple(sorted(self.expected.items()))
        with _worker_lock:
            if isinstance(source, _SOURCES):
                cached = _built.get(source)
                if cached is not None and cached[0] == expected:
                    return cached[1]
                problem = source.build()
            else:
                problem = source
                if _checked.get(problem) == expected:
                    return problem
            self.check_problem(problem)
            if isinstance(source, _SOURCES):
                _built[source] = (expected, problem)
            else:
                _checked[problem] = expected
            return problem

    def run(
        self, source: ProblemSource, subspace: Subspace, coeffs: torch.Tensor, index: int
    ) -> int:
        """On a worker: check the problem, compute chunk ``index``, write it; returns index."""
        problem = self.worker_problem(source)
        values, seconds = self.compute(problem, subspace, coeffs, index)
        zarr_grids.write_chunk(self.folder, self.plan, index, values, seconds)
        return index


def run_local(
    task: ChunkTask,
    problem: Problem,
    subspace: Subspace,
    coeffs: torch.Tensor,
    missing: Sequence[int],
    progress: bool,
    name: str,
) -> int:
    """Compute and write the ``missing`` chunks here, in order; returns how many."""
    from tqdm.auto import tqdm

    plan = task.plan
    done_points = plan.num_points - sum(_length(plan, index) for index in missing)
    with tqdm(
        total=plan.num_points, initial=done_points, unit="pt", desc=f"sweep {name}",
        disable=not progress,
    ) as bar:  # fmt: skip
        for index in missing:
            rows = coeffs[slice(*plan.bounds(index))]
            values, seconds = task.compute(problem, subspace, rows, index)
            zarr_grids.write_chunk(task.folder, plan, index, values, seconds)
            bar.update(values.shape[0])
    return len(missing)


def run_on_cluster(
    client: Any,
    task: ChunkTask,
    source: ProblemSource,
    subspace: Subspace,
    coeffs: torch.Tensor,
    missing: Sequence[int],
    progress: bool,
    name: str,
) -> int:
    """One task per ``missing`` chunk on ``client``'s workers; returns how many ran.

    The problem (or its ConfigSource or StoreSource) and the subspace go to every worker
    once; each task gets its chunk's coefficient rows (CPU float64). A task that fails
    raises here, after the others are cancelled (a task already running goes on: Dask
    cannot stop it, and what it writes has passed its own checks); chunks already written
    stay, so a rerun resumes."""
    from distributed import as_completed
    from tqdm.auto import tqdm

    if not missing:
        return 0
    plan = task.plan
    cpu_subspace = subspace.to(subspace.center.cpu())
    shipped_source, shipped_subspace = client.scatter([source, cpu_subspace], broadcast=True)
    futures = [
        client.submit(
            task.run,
            shipped_source,
            shipped_subspace,
            coeffs[slice(*plan.bounds(index))].cpu(),
            index,
            key=f"genni-chunk-{name}-{index}-{task.expected.get('theta_hash')}",
            pure=False,
        )
        for index in missing
    ]
    done_points = plan.num_points - sum(_length(plan, index) for index in missing)
    try:
        with tqdm(
            total=plan.num_points, initial=done_points, unit="pt", desc=f"sweep {name} (dask)",
            disable=not progress,
        ) as bar:  # fmt: skip
            for future in as_completed(futures):
                index = future.result()
                bar.update(_length(plan, index))
    except BaseException:
        client.cancel(futures)
        raise
    return len(missing)


def chunk_values(
    decision: Decision,
    problem: Problem,
    subspace: Subspace,
    coeffs: torch.Tensor,
    num_threads: int | None,
) -> torch.Tensor:
    """J (CPU float64) of coefficient rows ``coeffs``, moved to the problem's device."""

    coeffs = coeffs.to(dtype=problem.theta.dtype, device=problem.inputs.device)
    subspace = subspace.to(problem.theta)
    values = run_decided(
        decision,
        problem.model,
        subspace.center,
        subspace.basis,
        coeffs,
        problem.inputs,
        problem.targets,
        num_threads=num_threads,
    )
    return values.cpu()


def gather_on_cluster(
    client: Any,
    decision: Decision,
    problem: Problem,
    subspace: Subspace,
    coeffs: torch.Tensor,
    plan: ChunkPlan,
    num_threads: int | None,
    progress: bool,
) -> torch.Tensor:
    """J of every grid point (float64, flat), one task per chunk of ``plan`` on ``client``'s
    workers, gathered here in order."""
    from distributed import as_completed
    from tqdm.auto import tqdm

    shipped_problem, shipped_subspace = client.scatter(
        [problem, subspace.to(subspace.center.cpu())], broadcast=True
    )
    futures = [
        client.submit(
            chunk_values,
            decision,
            shipped_problem,
            shipped_subspace,
            coeffs[slice(*plan.bounds(index))].cpu(),
            num_threads,
            pure=False,
        )
        for index in range(plan.num_chunks)
    ]
    try:
        with tqdm(
            total=plan.num_points, unit="pt", desc="sweep (dask)", disable=not progress
        ) as bar:
            for future in as_completed(futures):
                bar.update(future.result().shape[0])
        return torch.cat([future.result() for future in futures])
    except BaseException:
        client.cancel(futures)
        raise


def _length(plan: ChunkPlan, index: int) -> int:
    first, last = plan.bounds(index)
    return last - first
