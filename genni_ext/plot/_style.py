"""Shared look of genni_ext's figures: marker colours, headless figures, colour bars.

Colours follow the GENNI paper: on planes θ₀, θ₁, θ₂ are red, purple and yellow; in UMAP
pictures θ₀…θ₄ are blue, red, purple, yellow and brown.
"""

from __future__ import annotations

from matplotlib.figure import Figure

PLANE_MARKER_COLOURS = ("red", "purple", "gold", "brown", "darkorange")
UMAP_MARKER_COLOURS = ("blue", "red", "purple", "gold", "brown", "darkorange")
AXIS_LABELS = ("c1", "c2", "c3", "c4", "c5", "c6")
J_LABEL = "J (mean squared output difference)"


def new_figure(width: float = 6.4, height: float = 4.8) -> Figure:
    """A Figure that needs no display (no pyplot, no GUI backend)."""
    return Figure(figsize=(width, height), layout="constrained")


def marker_colour(index: int, umap: bool = False) -> str:
    """Colour of marker θ_index; cycles past the named ones."""
    colours = UMAP_MARKER_COLOURS if umap else PLANE_MARKER_COLOURS
    return colours[index % len(colours)]
