"""Shared look of genni_ext's figures: marker colours, headless figures, colour bars, and
the found points drawn on top of everything with names that do not overlap.

One colour per found point in every figure: θ₀, θ₁, θ₂ red, purple and yellow as on the
GENNI paper's planes (the paper's UMAP pictures used other colours; here a point keeps its
colour from figure to figure), then brown and orange.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib import patheffects
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection
from matplotlib.colorbar import Colorbar
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.text import Annotation, Text
from matplotlib.ticker import FuncFormatter
from matplotlib.transforms import Bbox

MARKER_COLOURS = ("red", "purple", "gold", "brown", "darkorange", "deepskyblue")
AXIS_LABELS = ("c1", "c2", "c3", "c4", "c5", "c6")
J_LABEL = "J (mean squared output difference)"
EPS_COLOUR = "black"
CMAP = "viridis"
"""The colour map of J in every picture (matplotlib and plotly both know it by this name)."""

# Found points are drawn above every other artist of their axes, their names above them.
MARKER_ZORDER = 10
LABEL_ZORDER = 11
MARKER_SIZE = 8.0  # diameter in points
# The least width (points) of a marker left showing beside a later one drawn over it:
# a marker closer than this to a later one's centre grows until that much shows.
RING_WIDTH = 0.5 * MARKER_SIZE
MOST_TICKS = 8
# Where a name is tried around its marker, in order (then the same further out).
_DIRECTIONS = ((1, 1), (-1, 1), (1, -1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1))


def new_figure(width: float = 6.4, height: float = 4.8) -> Figure:
    """A Figure that needs no display (no pyplot, no GUI backend), on an Agg canvas so
    that text extents can be measured while the figure is made."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def marker_colour(index: int) -> str:
    """Colour of marker θ_index, the same in every figure; cycles past the named ones."""
    return MARKER_COLOURS[index % len(MARKER_COLOURS)]


def on_plane(value: float, plane: float, step: float) -> bool:
    """Whether a coordinate ``value`` lies on the grid plane at ``plane`` (within half a
    grid ``step``, with room for round-off): the rule for drawing a point on a slice."""
    return abs(value - plane) <= 0.5 * step * (1.0 + 1e-9)


# --------------------------------------------------------------------------- colour bars


def log_ticks(low: float, high: float) -> np.ndarray:
    """Tick values for a log scale from ``low`` to ``high`` (both > 0): powers of ten
    (every k-th when there are many decades), else 1-2-5 steps, else 4 values spread
    evenly on the log scale and rounded to 2 significant digits. Never fewer than 2."""
    slack = 1e-9
    first = math.ceil(math.log10(low) - slack)
    last = math.floor(math.log10(high) + slack)
    inside = [float(10.0**k) for k in range(first, last + 1)]
    if len(inside) >= 3:
        stride = math.ceil(len(inside) / MOST_TICKS)
        return np.array(inside[::stride])
    steps = [
        m * 10.0**k
        for k in range(first - 1, last + 1)
        for m in (1.0, 2.0, 5.0)
        if low * (1 - slack) <= m * 10.0**k <= high * (1 + slack)
    ]
    if len(steps) >= 3:
        return np.array(steps)
    spread = np.geomspace(low, high, 4)
    return np.unique([float(f"{value:.2g}") for value in spread])


def tick_label(value: float) -> str:
    """A log-scale tick's number: plain between 0.01 and 1000, else m×10^k (mathtext)."""
    if value == 0 or 1e-2 <= abs(value) < 1e3:
        return f"{value:.3g}"
    mantissa, exponent = f"{value:.2e}".split("e")
    power = f"10^{{{int(exponent)}}}"
    if float(mantissa) == 1.0:
        return f"${power}$"
    return f"${float(mantissa):g}\\times{power}$"


def numeric_colorbar(bar: Colorbar, eps: float | None = None) -> None:
    """Numbers on every major tick of ``bar`` (log scales: :func:`log_ticks` labelled by
    :func:`tick_label`; linear: 3 significant digits, no offset text), no unlabelled
    minor ticks, and ε as a black line marked "ε" where it is in range."""
    norm = bar.norm
    low, high = norm.vmin, norm.vmax
    if isinstance(norm, LogNorm) and low is not None and high is not None:
        bar.set_ticks(log_ticks(float(low), float(high)))
        bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: tick_label(value)))
    else:
        span = abs(float(high) - float(low)) if low is not None and high is not None else 1.0

        def linear(value: float, _: object) -> str:
            return "0" if abs(value) <= 1e-9 * span else f"{value:.3g}"

        bar.ax.yaxis.set_major_formatter(FuncFormatter(linear))
    bar.ax.minorticks_off()
    if eps is not None and low is not None and high is not None and low <= eps <= high:
        bar.ax.axhline(eps, color=EPS_COLOUR, linewidth=1.5)
        bar.ax.text(
            -0.15, eps, "ε", transform=bar.ax.get_yaxis_transform(), ha="right", va="center"
        )


def key_below(
    fig: Figure, axes: Sequence[Axes], extra: Sequence[Artist] = (), ncol: int = 4
) -> None:
    """One key below the panels for every labelled artist of ``axes`` (first of each
    label) and the ``extra`` handles (patches for colours that mean something), outside
    the axes so that it covers no marker and no data; in at most ``ncol`` columns, fewer
    where that is wider than the figure."""
    handles: list[Artist] = []
    labels: list[str] = []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    for handle in extra:
        handles.append(handle)
        labels.append(str(handle.get_label()))
    if not handles:
        return
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    for columns in range(min(len(handles), ncol), 0, -1):  # fewer columns until it fits
        legend = fig.legend(handles, labels, loc="outside lower center", ncol=columns, fontsize=8)
        if columns == 1 or legend.get_window_extent(renderer).width <= 0.98 * fig.bbox.width:
            return
        legend.remove()


# --------------------------------------------------------------------------- markers


@dataclass
class _Drawn:
    artist: PathCollection
    coords: tuple[float, ...]
    name: str
    colour: str


class MarkerLayer:
    """The found points of one Axes, drawn last and on top (zorder above every other
    artist; on 3-D axes depth sorting is switched off so a surface cannot hide them),
    outlined in black, or hollow and dashed in their colour where they are drawn away
    from their own place (off a slice). Call :func:`settle` once the figure is complete.
    """

    def __init__(self, ax: Axes) -> None:
        self.ax = ax
        self.three_d = ax.name == "3d"
        self.drawn: list[_Drawn] = []
        if self.three_d:
            ax.computed_zorder = False  # type: ignore[attr-defined]

    def add(
        self,
        index: int,
        name: str,
        coords: Sequence[float],
        *,
        hollow: bool = False,
        label: str | None = None,
    ) -> PathCollection:
        """Draw found point ``name`` (θ_index's colour) at ``coords`` (2 or 3 numbers)."""
        colour = marker_colour(index)
        point = tuple(float(value) for value in coords)
        style: dict[str, object] = {
            "s": MARKER_SIZE**2,
            "zorder": MARKER_ZORDER,
            "label": name if label is None else label,
            "gid": f"marker:{name}",
        }
        if hollow:
            style |= {"facecolors": "none", "edgecolors": colour, "linewidths": 1.5}
            style["linestyles"] = "--"
        else:
            style |= {"color": colour, "edgecolors": "black", "linewidths": 1.0}
        if self.three_d:
            artist = self.ax.scatter(*([v] for v in point), depthshade=False, **style)  # type: ignore[call-arg]
        else:
            artist = self.ax.scatter([point[0]], [point[1]], **style)  # type: ignore[arg-type]
        self.drawn.append(_Drawn(artist, point, name, colour))
        return artist

    def _display(self) -> np.ndarray:
        """Where the markers are on the canvas, in pixels [n, 2]."""
        if not self.drawn:
            return np.empty((0, 2))
        points = np.array([d.coords for d in self.drawn])
        if self.three_d:
            from mpl_toolkits.mplot3d import proj3d

            x, y, _ = proj3d.proj_transform(
                points[:, 0],
                points[:, 1],
                points[:, 2],
                self.ax.get_proj(),  # type: ignore[attr-defined]
            )
            points = np.column_stack([x, y])
        return self.ax.transData.transform(points[:, :2])

    def _rings(self, pixels: np.ndarray, points_per_pixel: float) -> list[float]:
        """Diameters (points): a marker less than :data:`RING_WIDTH` from the centre of a
        later one (which would cover it, or leave a sliver) grows until a crescent that
        wide shows beyond it (a ring, where they coincide); one further off already
        shows that much."""
        sizes = [MARKER_SIZE] * len(self.drawn)
        for i in range(len(self.drawn) - 2, -1, -1):
            for j in range(i + 1, len(self.drawn)):
                apart = float(np.hypot(*(pixels[i] - pixels[j]))) * points_per_pixel
                if apart < RING_WIDTH:
                    sizes[i] = max(sizes[i], sizes[j] + 2 * (RING_WIDTH - apart))
        return sizes

    def _name(
        self,
        index: int,
        pixels: np.ndarray,
        sizes: list[float],
        taken: list[Bbox],
        renderer: object,
    ) -> Annotation:
        """Write marker ``index``'s name at the first free place tried outward from it:
        clear of the names already written and of every marker, inside the axes where
        possible; a name moved more than one ring out gets a thin leader line."""
        drawn = self.drawn[index]
        anchor = pixels[index]
        pixels_per_point = self.ax.figure.dpi / 72.0
        style = {
            "color": drawn.colour,
            "fontsize": 9,
            "ha": "left",
            "va": "bottom",
            "path_effects": [patheffects.withStroke(linewidth=2.5, foreground="white")],
        }
        probe = Text(0, 0, drawn.name, figure=self.ax.figure, **style)  # type: ignore[arg-type]
        box = probe.get_window_extent(renderer)  # type: ignore[arg-type]
        width, height = box.width, box.height
        discs = [
            Bbox.from_bounds(x - r, y - r, 2 * r, 2 * r)
            for (x, y), size in zip(pixels, sizes, strict=True)
            for r in [size / 2 * pixels_per_point]
        ]
        frame = self.ax.bbox
        own = sizes[index] / 2 * pixels_per_point + 2 * pixels_per_point
        best: tuple[int, float, float, int] | None = None
        for ring in range(8):
            reach = own + ring * height
            for ux, uy in _DIRECTIONS:
                left = anchor[0] + reach * ux - (width if ux < 0 else width / 2 if ux == 0 else 0)
                bottom = (
                    anchor[1] + reach * uy - (height if uy < 0 else height / 2 if uy == 0 else 0)
                )
                place = Bbox.from_bounds(left, bottom, width, height)
                clashes = sum(place.overlaps(other) for other in [*taken, *discs])
                inside = (
                    frame.x0 <= place.x0
                    and place.x1 <= frame.x1
                    and frame.y0 <= place.y0
                    and place.y1 <= frame.y1
                )
                cost = 2 * clashes + (0 if inside else 1)
                if best is None or cost < best[0]:
                    best = (cost, left - anchor[0], bottom - anchor[1], ring)
            if best is not None and best[0] == 0:
                break
        assert best is not None
        _, dx, dy, ring = best
        xy = self.ax.transData.inverted().transform(anchor)
        leader = {
            "arrowstyle": "-",
            "color": drawn.colour,
            "linewidth": 0.6,
            "shrinkB": sizes[index] / 2,
        }
        text = self.ax.annotate(
            drawn.name,
            xy,
            xytext=(dx / pixels_per_point, dy / pixels_per_point),
            textcoords="offset points",
            zorder=LABEL_ZORDER,
            gid=f"label:{drawn.name}",
            annotation_clip=False,
            arrowprops=leader if ring > 1 else None,
            **style,  # type: ignore[arg-type]
        )
        text.set_in_layout(False)
        taken.append(text.get_window_extent(renderer))  # type: ignore[arg-type]
        return text

    def settle(self, renderer: object, *, names: bool) -> None:
        """Grow covered markers into crescents or rings and, with ``names``, write each
        name where it overlaps no other name or marker (inside the axes where possible)."""
        if not self.drawn:
            return
        pixels_per_point = self.ax.figure.dpi / 72.0
        pixels = self._display()
        sizes = self._rings(pixels, 1.0 / pixels_per_point)
        for drawn, size in zip(self.drawn, sizes, strict=True):
            drawn.artist.set_sizes([size**2])
        if names:
            taken: list[Bbox] = []
            for index in range(len(pixels)):
                self._name(index, pixels, sizes, taken, renderer)


def _wrap(text: Text, limit: float, renderer: object) -> None:
    """Re-break the lines of ``text`` until it is at most ``limit`` pixels wide."""
    lines = text.get_text().split("\n")
    width = max(len(line) for line in lines)
    while text.get_window_extent(renderer).width > limit and width > 12:  # type: ignore[arg-type]
        width = int(width * 0.9)
        text.set_text("\n".join(textwrap.fill(line, width) for line in lines))


def fit_titles(fig: Figure) -> None:
    """Break long titles (every axes' and the figure's) into lines so that each lies
    inside the figure where the layout puts it, then lay the figure out again."""
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    frame = fig.bbox
    for ax in fig.axes:
        if ax.title.get_text():
            centre = 0.5 * (ax.bbox.x0 + ax.bbox.x1)
            _wrap(ax.title, 1.96 * min(centre - frame.x0, frame.x1 - centre), renderer)
    suptitle = fig._suptitle  # type: ignore[attr-defined]
    if suptitle is not None and suptitle.get_text():
        _wrap(suptitle, 0.98 * frame.width, renderer)
    fig.draw_without_rendering()


def settle(fig: Figure, layers: Sequence[MarkerLayer], *, names: bool = False) -> None:
    """Lay ``fig`` out as it will be saved (titles fitted), then settle every layer's
    markers (rings, and names that do not overlap). Call last, once titles, legends and
    colour bars exist."""
    fit_titles(fig)
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    for layer in layers:
        layer.settle(renderer, names=names)
