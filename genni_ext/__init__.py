"""genni_ext: find and see the functional equivalence classes of neural-network parameters.

The GENNI method: given a model φ(x, θ), a reference θ and probe inputs (``Problem``),
``search`` for parameters θ̃ with φ(·, θ̃) ≈ φ(·, θ), span a plane through some of them
(``Subspace``), and sweep the auxiliary loss J over a ``Grid`` on that plane
(``sweep_grid``). ``sweep`` runs on a fused C++/OpenMP (CPU) or
CUDA engine for MLPs and LeNet-style conv nets and on torch.func for every other model.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from . import models
from .errors import BackendUnavailableError, GenniError, InputError, LoweringError
from .grid import Grid, GridResult, Marker, sweep_grid
from .problem import Problem
from .search import SearchResult, search
from .store import Experiment, StoreError, genni_home, open_grid
from .subspace import Subspace
from .sweep import explain_backend, sweep

try:
    __version__ = version("genni_ext")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"


def build_info() -> dict[str, object]:
    """What the compiled engine contains and sees now.

    Keys include ``cpu``, ``cuda`` (CUDA kernel compiled), ``cuda_devices`` (visible now),
    ``openmp``, ``cuda_archs``, ``cuda_note`` (why CUDA was not built and how to add it;
    empty when it was) and the compiler flags. ``compiled`` is False (and the reason
    given) when the extension cannot be imported.
    """
    try:
        from . import _C
    except ImportError as error:
        return {
            "compiled": False,
            "reason": str(error),
            "cpu": False,
            "cuda": False,
            "cuda_devices": 0,
            "openmp": False,
            "cuda_archs": "",
            "cuda_note": "",
        }
    return {"compiled": True, **_C.build_info()}


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
    "search",
    "sweep",
    "sweep_grid",
]
