"""How many grid points a chunk holds by default: :func:`auto_chunk_points`, one rule for
the local, resumable and Dask runners (the chunks themselves: :class:`ChunkPlan`)."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Sequence

from genni_ext.core.chunking import format_shape
from genni_ext.core.problem import Problem
from genni_ext.engine.lowering import lower

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


def auto_chunk_points(problem: Problem, shape: int | Sequence[int]) -> int:
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

    The result is a multiple of the slab size, so :meth:`ChunkPlan.for_grid` keeps it.
    """
    dims = (int(shape),) if isinstance(shape, int) else tuple(int(n) for n in shape)
    num_points, row = math.prod(dims), math.prod(dims[1:])
    flops = None
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
