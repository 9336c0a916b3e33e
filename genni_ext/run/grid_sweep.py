"""The one-call sweep of a grid: :func:`sweep_grid`, in this process or on a Dask cluster."""

from __future__ import annotations

import time

from genni_ext._validate import positive_int
from genni_ext.cluster import check_client
from genni_ext.core.grid import Grid, GridResult, grid_markers, grid_metadata
from genni_ext.core.problem import Problem
from genni_ext.core.subspace import Subspace
from genni_ext.engine.front_door import run_decided
from genni_ext.run.chunk_runs import gather_on_cluster
from genni_ext.run.plan import marker_losses, plan_sweep


def sweep_grid(
    problem: Problem,
    subspace: Subspace,
    grid: Grid,
    *,
    backend: str = "auto",
    num_threads: int | None = None,
    chunk_points: int | None = None,
    progress: bool = False,
    precision: str = "full",
    compile: bool | None = None,
    client: object = None,
) -> GridResult:
    """J(θ₀ + c @ B) at every point of ``grid`` on ``subspace``, as a :class:`GridResult`.

    Computes what :func:`genni_ext.sweep` computes on the problem's model, probes and
    targets (coefficients cast to θ's dtype), planned once by :func:`plan_sweep` (the model
    is not run on the probes again: the problem's targets stand for that run); ``backend``,
    ``num_threads``, ``progress``, ``precision`` and ``compile`` are passed on.
    ``chunk_points`` is the number of grid points computed as one piece: here per engine
    call (``sweep``'s ``batch_points``; default from a memory budget), on a cluster per task
    (default :func:`~genni_ext.run.plan.auto_chunk_points`). The markers' J is computed on
    the same engine as the grid's. The subspace must be in the problem's dtype and on its
    device, and have as many directions as the grid has coefficients. A subspace that records the
    problem its points solve (``Subspace.from_search``) must come from this problem (same θ
    and probes); one without that record (``Subspace.from_points``) is accepted as it is.

    ``client`` (a ``distributed.Client``) evaluates the grid as one task per chunk of a
    :class:`~genni_ext.core.chunking.ChunkPlan` on the cluster's workers and gathers J
    here: bitwise the values of a run in this process. To keep finished chunks through
    interruptions, sweep into an experiment instead
    (``genni_ext.run_sweep(experiment, ..., client=...)``).
    """
    if chunk_points is not None:
        positive_int(chunk_points, "chunk_points")
    if num_threads is not None:
        positive_int(num_threads, "num_threads")
    if client is not None:
        check_client(client)
    plan = plan_sweep(
        problem,
        subspace,
        grid,
        backend=backend,
        precision=precision,
        compile=compile,
        chunk_points=chunk_points,
        chunked=client is not None,
        log=True,
    )
    checked, decision = plan.inputs, plan.decision
    start = time.perf_counter()
    if plan.chunks is None:
        values = run_decided(
            decision,
            problem.model,
            checked.center,
            checked.directions,
            checked.coeffs,
            checked.inputs,
            checked.targets,
            num_threads=num_threads,
            batch_points=chunk_points,
            progress=progress,
        )
    else:
        values = gather_on_cluster(
            client, decision, problem, subspace, checked.coeffs, plan.chunks, num_threads, progress
        )
    wall_time_s = time.perf_counter() - start
    return GridResult(
        values=values.cpu().reshape(grid.shape),
        grid=grid,
        markers=grid_markers(problem, subspace, marker_losses(plan, num_threads)),
        metadata=grid_metadata(
            problem, grid, backend=decision.backend, wall_time_s=wall_time_s, precision=precision
        ),
    )
