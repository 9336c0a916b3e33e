"""Pictures of the ε-equivalent set, drawn headless with matplotlib (no display needed).

Planes (2-D grids): :func:`surface` (J on a linear scale) and :func:`contour` (log scale).
3-D grids: :func:`scatter3d` (the ε-set from several angles), :func:`slices`, and
:func:`scatter3d_html`, an interactive view in one self-contained HTML file (needs the
``interactive`` extra, plotly). Grids of 3 or more dimensions: :func:`umap` (needs the
``umap`` extra). Searches: :func:`search_convergence`. What the ε-set is:
``plot.analysis`` (topology, found points, Morse graphs, representations) and
``plot.passes`` (pass maps, disconnectivity graphs). Every function returns a
``matplotlib.figure.Figure`` (the HTML one a path) and marks the found points θ₀…θₘ.
``genni plot`` draws every picture that fits an experiment (:func:`draw_experiment`).
"""

from __future__ import annotations

from genni_ext.plot.interactive import scatter3d_html
from genni_ext.plot.planes import contour, search_convergence, slices, surface
from genni_ext.plot.report import draw_experiment
from genni_ext.plot.sets import scatter3d, umap

__all__ = [
    "contour",
    "draw_experiment",
    "scatter3d",
    "scatter3d_html",
    "search_convergence",
    "slices",
    "surface",
    "umap",
]
