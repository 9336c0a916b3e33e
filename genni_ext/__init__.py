"""genni_ext: find and see the functional equivalence classes of neural-network parameters.

The GENNI method: given a model φ(x, θ), a reference θ and probe inputs (``Problem``),
``search`` for parameters θ̃ with φ(·, θ̃) ≈ φ(·, θ), span a plane through some of them
(``Subspace``), and sweep the auxiliary loss J over a ``Grid`` on that plane
(``sweep_grid``). ``sweep`` runs on a fused C++/OpenMP (CPU) or
CUDA engine for MLPs and LeNet-style conv nets and on torch.func for every other model.
"""

from __future__ import annotations

try:
    from genni_ext._C import build_info
except ImportError as error:  # a source tree without a build: say how to get one
    raise ImportError(
        f"genni_ext needs its compiled engine genni_ext._C ({error}), which the source tree "
        'does not hold: install it with `pip install .` (tests: `pip install ".[test]"`, then '
        "`pytest`, not `python -m pytest` from the source tree)"
    ) from error

from genni_ext._version import __version__
from genni_ext.core import models
from genni_ext.core.grid import Grid, GridResult, Marker
from genni_ext.core.problem import Problem
from genni_ext.core.sgd_search import SearchResult
from genni_ext.core.subspace import Subspace
from genni_ext.engine.front_door import explain_backend, sweep
from genni_ext.errors import (
    BackendUnavailableError,
    GenniError,
    InputError,
    LoweringError,
    StoreError,
)
from genni_ext.run.grid_sweep import sweep_grid
from genni_ext.run.resumable import run_sweep
from genni_ext.run.searches import search
from genni_ext.store.experiment import Experiment, open_grid
from genni_ext.store.home import genni_home

__all__ = [
    "BackendUnavailableError",
    "Experiment",
    "GenniError",
    "Grid",
    "GridResult",
    "InputError",
    "LoweringError",
    "Marker",
    "Problem",
    "SearchResult",
    "StoreError",
    "Subspace",
    "__version__",
    "build_info",
    "explain_backend",
    "genni_home",
    "models",
    "open_grid",
    "run_sweep",
    "search",
    "sweep",
    "sweep_grid",
]
