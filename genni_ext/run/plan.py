"""The plan of a grid sweep, made once before any chunk runs: :func:`plan_sweep` checks the
problem, subspace and grid, makes the engine's one :class:`Decision` and cuts the grid into
the chunks of a :class:`ChunkPlan` (how many points a chunk holds by default:
:func:`auto_chunk_points`, one rule for the local, resumable and Dask runners); the runners
and chunks trust it. :func:`marker_losses` runs the markers on the same engine."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from genni_ext._validate import contiguous_finite, module_argument, positive_int
from genni_ext.core.chunking import ChunkPlan, format_shape
from genni_ext.core.grid import Grid, check_match, check_problem
from genni_ext.core.problem import Problem
from genni_ext.core.subspace import Subspace
from genni_ext.engine.front_door import Decision, SweepInputs, decide, run_decided
from genni_ext.engine.lowering import Program, lower
from genni_ext.store.experiment import Experiment

logger = logging.getLogger("genni_ext")

FLOPS_PER_CHUNK = 2e11
"""Forward work per chunk at most, by default: 1-5 s on two cores, so an interruption loses
little (see :func:`auto_chunk_points` for the whole rule)."""

MIN_CHUNKS = 16
"""Chunks a grid is cut into at least, by default, where it has the points and slabs for
them: an interruption then loses at most about 1/16 of the grid (a chunk per worker)."""

MIN_CHUNK_POINTS = 1024
"""Points a chunk holds at least when MIN_CHUNKS asks for smaller ones: each chunk costs a
file and a record (and on Dask a task, about 10 ms), so small grids stay in few chunks."""

MAX_CHUNK_POINTS = 2**20
"""Points a chunk holds at most, by default: its coefficients and J (m + 1 float64 values a
point, 24-40 MB for m = 2-4) are held in memory until the chunk is written."""


def auto_chunk_points(
    problem: Problem, shape: int | Sequence[int], *, program: Program | None = None
) -> int:
    """Grid points per chunk for a grid of ``shape`` (an int: that many points in a row)
    swept on ``problem``, by one rule:

    - at most about FLOPS_PER_CHUNK of forward work (time) and MAX_CHUNK_POINTS (memory);
    - at least MIN_CHUNKS chunks where the grid has MIN_CHUNKS × MIN_CHUNK_POINTS points and
      a first axis of MIN_CHUNKS points or more, so that a sweep resumes after an
      interruption having lost little; a grid of more than MIN_CHUNK_POINTS points but not
      that many takes chunks of about MIN_CHUNK_POINTS; a smaller grid is one chunk;
    - a chunk is a whole number of slabs of the first axis (:class:`ChunkPlan`), at least
      one. So a grid whose first axis has fewer than MIN_CHUNKS points (1 or 2, say) has
      at most that many chunks, and where one slab holds more than the bounds allow, each
      chunk is one slab, over the bounds: then, if that leaves fewer than MIN_CHUNKS chunks,
      a warning is logged advising to put the longest axis first.

    The result is a multiple of the slab size, so :meth:`ChunkPlan.for_grid` keeps it. The
    forward work comes from ``program`` (the model lowered for the problem's probes) where
    given, else from lowering the model here, else it is taken as 2 flops a parameter.
    """
    dims = (int(shape),) if isinstance(shape, int) else tuple(int(n) for n in shape)
    num_points, row = math.prod(dims), math.prod(dims[1:])
    flops = None if program is None else program.flops_per_sample
    if program is None:
        with contextlib.suppress(Exception):
            flops = lower(problem.model, tuple(problem.inputs.shape[1:])).flops_per_sample
    if not flops:
        flops = 2 * problem.num_params
    per_point = max(1, int(flops)) * problem.num_probes
    bound = min(MAX_CHUNK_POINTS, max(1, math.ceil(FLOPS_PER_CHUNK / per_point)))
    slabs = min(dims[0], max(1, bound // row))  # within the bounds, and at least one slab
    if num_points >= MIN_CHUNKS * MIN_CHUNK_POINTS and dims[0] >= MIN_CHUNKS:
        slabs = min(slabs, dims[0] // MIN_CHUNKS)  # rounded down: at least MIN_CHUNKS chunks
    elif num_points > MIN_CHUNK_POINTS:
        slabs = min(slabs, math.ceil(MIN_CHUNK_POINTS / row))
    chunks = math.ceil(dims[0] / slabs)
    if chunks < MIN_CHUNKS and row > bound:
        logger.warning(
            "grid of shape %s: a chunk is a whole slab of the first axis (%d points, more than "
            "the %d a chunk should hold), so it is swept in only %d chunk(s) and an "
            "interruption loses up to a slab's work; put the longest axis first",
            format_shape(dims),
            row,
            bound,
            chunks,
        )
    return slabs * row


@dataclass(frozen=True)
class SweepPlan:
    """A grid sweep as decided before any chunk runs: the ``problem``, ``subspace`` and
    ``grid``, the checked tensors (``inputs.coeffs``: every grid point, in the problem's
    dtype on its device), the engine's one ``decision`` and the ``chunks`` (None for a
    sweep in one call)."""

    problem: Problem
    subspace: Subspace
    grid: Grid
    inputs: SweepInputs
    decision: Decision
    chunks: ChunkPlan | None


def plan_sweep(
    problem: Problem,
    subspace: Subspace,
    grid: Grid,
    *,
    backend: str = "auto",
    precision: str = "full",
    compile: bool | None = None,
    chunk_points: int | None = None,
    chunked: bool = True,
    experiment: Experiment | None = None,
    name: str | None = None,
    log: bool = False,
) -> SweepPlan:
    """The one preamble of ``sweep_grid`` and ``run_sweep``: every check, the Decision (logged
    when ``log``) and, when ``chunked``, the ChunkPlan of about ``chunk_points`` points a
    chunk (None: the one grid ``name`` of ``experiment`` was begun with, if any, else
    :func:`auto_chunk_points`). ``compile``: whether torch.func compiles, as
    :func:`genni_ext.sweep` takes it (None: by the rule, for the whole grid's size).

    Nothing :func:`genni_ext.sweep` checks is checked again here: the Problem, the Subspace
    and the Grid checked their tensors when they were made (shapes, dtypes, devices,
    finite, contiguous) and :func:`check_match` checks that they fit together; the problem
    ran the model on its probes (plain and under vmap) when it made the targets, and the
    targets give its output width. Only the model's mode is checked again, since the
    caller may have changed it.
    """
    check_problem(problem)
    check_match(problem, subspace, grid)
    if chunk_points is not None:
        positive_int(chunk_points, "chunk_points")
    module_argument(problem.model)  # it may have been switched to training mode since
    coeffs = grid.coeffs.to(dtype=problem.theta.dtype, device=problem.inputs.device)
    inputs = SweepInputs(
        problem.model,
        subspace.center,
        subspace.basis,
        contiguous_finite("coeffs", coeffs),  # float32 may overflow what float64 held
        problem.inputs,
        problem.targets,
        problem.targets.shape[1],
    )
    decision = decide(
        problem.model,
        inputs.inputs,
        inputs.targets,
        backend,
        precision=precision,
        num_directions=subspace.dim,
        num_points=grid.coeffs.shape[0],
        compile=compile,
        log=log,
    )
    chunks = None
    if chunked:
        if chunk_points is None and experiment is not None and name is not None:
            chunk_points = experiment.recorded_chunk_points(name, grid)
        if chunk_points is None:
            chunk_points = auto_chunk_points(problem, grid.shape, program=decision.program)
        chunks = ChunkPlan.for_grid(grid.shape, chunk_points)
    return SweepPlan(problem, subspace, grid, inputs, decision, chunks)


def marker_losses(plan: SweepPlan, num_threads: int | None = None) -> torch.Tensor:
    """J at the markers θ0..θm (CPU float64 [m + 1]) on the engine the plan decided.

    The points are the rows of the directions, with centre 0 and the identity as
    coefficients, so that each is built exactly (1·θᵢ plus zeros) rather than rebuilt from
    its coordinates on the plane."""
    problem, subspace = plan.problem, plan.subspace
    like = {"dtype": problem.theta.dtype, "device": problem.inputs.device}
    points = torch.cat([subspace.center[None], subspace.points]).to(**like).contiguous()
    values = run_decided(
        plan.decision,
        problem.model,
        torch.zeros(points.shape[1], **like),
        points,
        torch.eye(points.shape[0], **like),
        problem.inputs,
        problem.targets,
        num_threads=num_threads,
    )
    return values.cpu()
