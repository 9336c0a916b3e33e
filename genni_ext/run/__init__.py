"""The run layer: grid sweeps (in one call or resumably) and searches, here or on Dask.

What is here: the one preamble of every grid sweep (``plan.plan_sweep``: the checks, the
engine's one Decision and the chunks, with the default chunk size ``auto_chunk_points``),
the one-call ``sweep_grid`` (``grid_sweep``), the chunk tasks and the local and Dask
runners (``chunk_runs``), the resumable sweep into an experiment (``resumable.run_sweep``)
and the search here or on Dask (``searches.search``). Runners and chunks trust the plan:
nothing is checked or decided again per chunk.

May import: ``genni_ext.engine``, ``genni_ext.store``, ``genni_ext.core`` and below. The
store never imports this layer: the runners write the store's chunks.
"""

from __future__ import annotations

from genni_ext.run.chunk_runs import ConfigSource
from genni_ext.run.grid_sweep import sweep_grid
from genni_ext.run.plan import auto_chunk_points, plan_sweep
from genni_ext.run.resumable import run_sweep
from genni_ext.run.searches import search

__all__ = [
    "ConfigSource",
    "auto_chunk_points",
    "plan_sweep",
    "run_sweep",
    "search",
    "sweep_grid",
]
