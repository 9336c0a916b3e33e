"""The one-call sweep of a grid: :func:`sweep_grid`, in this process or on a Dask cluster."""

from __future__ import annotations

import time

from genni_ext._validate import positive_int
from genni_ext.cluster import check_client
from genni_ext.core.chunking import ChunkPlan
from genni_ext.core.grid import (
    Grid,
    GridResult,
    check_match,
    check_problem,
    grid_markers,
    grid_metadata,
)
from genni_ext.core.problem import Problem
from genni_ext.core.subspace import Subspace
from genni_ext.engine.front_door import checked_inputs, decide, run_decided
from genni_ext.run.chunk_runs import gather_on_cluster
from genni_ext.run.plan import auto_chunk_points


def sweep_grid(
    problem: Problem,
    subspace: Subspace,
    grid: Grid,
    *,
    backend: str = "auto",
    num_threads: int | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
    precision: str = "full",
    client: object = None,
) -> GridResult:
    """J(θ₀ + c @ B) at every point of ``grid`` on ``subspace``, as a :class:`GridResult`.

    Runs :func:`genni_ext.sweep` on the problem's model, probes and targets (coefficients
    cast to θ's dtype); ``backend``, ``num_threads``, ``chunk_size``, ``progress`` and
    ``precision`` are passed on. The subspace must be in the problem's dtype and on its
    device, and have as many directions as the grid has coefficients. A subspace that
    records the problem its points solve (``Subspace.from_search``) must come from this
    problem (same θ and probes); one without that record (``Subspace.from_points``) is
    accepted as it is.

    ``client`` (a ``distributed.Client``) evaluates the grid as one task per chunk of a
    :class:`~genni_ext.core.chunking.ChunkPlan` (``chunk_size`` points, default by
    :func:`~genni_ext.core.chunking.auto_chunk_points`) on the cluster's workers and gathers J
    here: bitwise the values of a run in this process. To keep finished chunks through
    interruptions, sweep into an experiment instead (``Experiment.run_sweep(..., client=...)``).
    """
    check_problem(problem)
    check_match(problem, subspace, grid)
    coeffs = grid.coeffs.to(dtype=problem.theta.dtype, device=problem.inputs.device)
    if chunk_size is not None:
        positive_int(chunk_size, "chunk_size")
    if num_threads is not None:
        positive_int(num_threads, "num_threads")
    if client is not None:
        check_client(client)
    _center, _basis, coeffs, inputs, targets = checked_inputs(
        problem.model, subspace.center, subspace.basis, coeffs, problem.inputs, problem.targets
    )
    decision = decide(problem.model, inputs, targets, backend, precision=precision, log=True)
    start = time.perf_counter()
    if client is None:
        values = run_decided(
            decision,
            problem.model,
            subspace.center,
            subspace.basis,
            coeffs,
            inputs,
            targets,
            num_threads=num_threads,
            chunk_size=chunk_size,
            progress=progress,
        )
    else:
        plan = ChunkPlan.for_grid(grid.shape, chunk_size or auto_chunk_points(problem, grid.shape))
        values = gather_on_cluster(
            client, decision, problem, subspace, coeffs, plan, num_threads, progress
        )
    wall_time_s = time.perf_counter() - start
    return GridResult(
        values=values.cpu().reshape(grid.shape),
        grid=grid,
        markers=grid_markers(problem, subspace),
        metadata=grid_metadata(
            problem, grid, backend=decision.backend, wall_time_s=wall_time_s, precision=precision
        ),
    )
