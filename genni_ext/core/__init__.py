"""The core layer: the objects of the GENNI method, computed in one process.

What is here: the models (``models``), the equivalence problem (``problem.Problem``: model,
θ, probes, targets), the SGD search for equivalent parameters in this process
(``sgd_search.plan_search(...).run()``, with defaults ``SearchOptions``; ``genni_ext.search``
is its front door), the subspace through found points (``subspace.Subspace``), grids
of coefficients and their results (``grid.Grid``, ``grid.GridResult``), how a grid splits
into chunks (``chunking.ChunkPlan``), and the user's own model code, trained weights and
probe data (``factories``, ``weights``, ``probe_data``).

May import: ``genni_ext.errors``, ``genni_ext._validate``, ``genni_ext.cluster``, torch and
numpy. Nothing from engine, run, store, analysis, plot or cli.
"""

from __future__ import annotations

from genni_ext.core import models
from genni_ext.core.chunking import ChunkPlan
from genni_ext.core.grid import Grid, GridResult, Marker
from genni_ext.core.problem import Problem
from genni_ext.core.sgd_search import SearchOptions, SearchResult, plan_search
from genni_ext.core.subspace import Subspace

__all__ = [
    "ChunkPlan",
    "Grid",
    "GridResult",
    "Marker",
    "Problem",
    "SearchOptions",
    "SearchResult",
    "Subspace",
    "models",
    "plan_search",
]
