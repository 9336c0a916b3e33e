"""Shared look of genni_ext's figures: marker colours, headless figures, colour bars.

One colour per found point in every figure: θ₀, θ₁, θ₂ red, purple and yellow as on the
GENNI paper's planes (the paper's UMAP pictures used other colours; here a point keeps its
colour from figure to figure), then brown and orange.
"""

from __future__ import annotations

from matplotlib.figure import Figure

MARKER_COLOURS = ("red", "purple", "gold", "brown", "darkorange", "deepskyblue")
AXIS_LABELS = ("c1", "c2", "c3", "c4", "c5", "c6")
J_LABEL = "J (mean squared output difference)"


def new_figure(width: float = 6.4, height: float = 4.8) -> Figure:
    """A Figure that needs no display (no pyplot, no GUI backend)."""
    return Figure(figsize=(width, height), layout="constrained")


def marker_colour(index: int) -> str:
    """Colour of marker θ_index, the same in every figure; cycles past the named ones."""
    return MARKER_COLOURS[index % len(MARKER_COLOURS)]
