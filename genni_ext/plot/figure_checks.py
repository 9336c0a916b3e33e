"""What a reader of a figure sees, measured on the rendered figure: for the tests.

Each function draws the figure on its Agg canvas (as ``savefig`` does) and reads the
result from matplotlib's renderer: colour bars' tick labels as numbers, texts that
overlap or leave the figure, markers that are not on top or not outlined, and markers
whose colour does not reach the rendered pixels.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import PathCollection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.text import Text
from matplotlib.transforms import Bbox

_POWER = re.compile(r"^(?:(?P<m>[-+0-9.]+)\\times)?10\^\{(?P<e>[-+0-9]+)\}$")


def render(fig: Figure) -> object:
    """Draw ``fig`` as it will be saved and return the renderer."""
    fig.canvas.draw()
    return fig.canvas.get_renderer()  # type: ignore[attr-defined]


def tick_number(label: str) -> float:
    """The number a tick label shows: plain ("0.01", "1e-05") or mathtext m×10^k."""
    text = label.strip().strip("$").replace("\\mathdefault{", "").replace("}}", "}")
    text = text.replace("−", "-")
    match = _POWER.match(text)
    if match:
        mantissa = float(match["m"]) if match["m"] else 1.0
        return mantissa * 10.0 ** int(match["e"])
    return float(text)


def colorbars(fig: Figure) -> list[Axes]:
    return [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]


def colorbar_ticks(fig: Figure) -> list[list[tuple[float, str]]]:
    """Per colour bar, (tick value, label text) of every major tick inside its range."""
    render(fig)
    found = []
    for bar in colorbars(fig):
        low, high = sorted(bar.get_ylim())
        ticks = [
            (float(tick.get_loc()), tick.label2.get_text() or tick.label1.get_text())
            for tick in bar.yaxis.get_major_ticks()
            if low * (1 - 1e-9) - 1e-300 <= tick.get_loc() <= high * (1 + 1e-9) + 1e-300
        ]
        found.append(ticks)
    return found


def marker_collections(fig: Figure) -> Iterator[tuple[Axes, PathCollection]]:
    """(axes, collection) of every found point drawn by ``_style.MarkerLayer``."""
    for ax in fig.axes:
        for artist in ax.collections:
            if (artist.get_gid() or "").startswith("marker:"):
                yield ax, artist  # type: ignore[misc]


def markers_not_on_top(fig: Figure) -> list[str]:
    """Markers with an artist of the same axes drawn at the same or a higher zorder
    (other than markers and their names), or without an outline."""
    bad = []
    for ax, marker in marker_collections(fig):
        name = marker.get_gid()
        others = [
            a
            for a in ax.get_children()
            if a is not marker
            and a.get_visible()
            and not (a.get_gid() or "").startswith(("marker:", "label:"))
            and a is not ax.patch
            and a.zorder >= marker.zorder
            and not isinstance(a, (Legend, Text))
            and a not in ax.spines.values()
            and a not in (ax.xaxis, ax.yaxis, getattr(ax, "zaxis", None))
        ]
        if others:
            bad.append(f"{name} under {others[0]!r}")
        if ax.name == "3d" and ax.computed_zorder:  # type: ignore[attr-defined]
            bad.append(f"{name} depth-sorted on 3-D axes: a surface can hide it")
        edges = marker.get_edgecolor()
        if len(edges) == 0 or float(np.max(marker.get_linewidths())) <= 0 or edges[0][3] == 0:
            bad.append(f"{name} has no outline")
    return bad


def _centre_pixels(ax: Axes, marker: PathCollection) -> np.ndarray:
    """The marker's centre in display pixels (after a draw: 3-D offsets are projected)."""
    return ax.transData.transform(np.asarray(marker.get_offsets(), dtype=float))[0]


def marker_pixels(fig: Figure) -> dict[str, int]:
    """Per marker, the rendered pixels within its disc that show its own colour (the
    face, or the edge of a hollow one; the fewest over the panels it is on): 0 means
    something hides it."""
    render(fig)
    image = np.asarray(fig.canvas.buffer_rgba(), dtype=float)[..., :3] / 255.0  # type: ignore[attr-defined]
    height = image.shape[0]
    counts = {}
    for ax, marker in marker_collections(fig):
        face = marker.get_facecolor()
        colour = face[0] if len(face) and face[0][3] > 0 else marker.get_edgecolor()[0]
        x, y = _centre_pixels(ax, marker)
        radius = np.sqrt(marker.get_sizes()[0]) / 2 * fig.dpi / 72.0
        rows = slice(max(0, int(height - y - radius)), int(height - y + radius) + 1)
        cols = slice(max(0, int(x - radius)), int(x + radius) + 1)
        patch = image[rows, cols]
        close = np.abs(patch - np.asarray(to_rgba(colour))[:3]).max(axis=-1) < 0.08
        name = str(marker.get_gid()).removeprefix("marker:")
        counts[name] = min(counts.get(name, int(close.sum())), int(close.sum()))
    return counts


def label_boxes(fig: Figure) -> dict[str, list[Bbox]]:
    """Rendered extents of the markers' names, by name (one per panel it is on)."""
    renderer = render(fig)
    boxes: dict[str, list[Bbox]] = {}
    for ax in fig.axes:
        for text in ax.texts:
            gid = text.get_gid() or ""
            if gid.startswith("label:"):
                name = gid.removeprefix("label:")
                boxes.setdefault(name, []).append(text.get_window_extent(renderer))  # type: ignore[arg-type]
    return boxes


def overlapping_labels(fig: Figure) -> list[tuple[str, str]]:
    """Pairs of markers' names whose rendered texts intersect on the same panel."""
    renderer = render(fig)
    clashes = []
    for ax in fig.axes:
        texts = [t for t in ax.texts if (t.get_gid() or "").startswith("label:")]
        boxes = [t.get_window_extent(renderer) for t in texts]  # type: ignore[arg-type]
        for i in range(len(texts)):
            for j in range(i + 1, len(texts)):
                if boxes[i].overlaps(boxes[j]):
                    clashes.append((texts[i].get_text(), texts[j].get_text()))
    return clashes


def texts_outside(fig: Figure) -> list[str]:
    """Titles, the suptitle and legends whose rendered extent leaves the figure."""
    renderer = render(fig)
    frame = fig.bbox.padded(1.0)
    items: list[tuple[str, object]] = []
    for ax in fig.axes:
        for title in (ax.title, ax._left_title, ax._right_title):  # type: ignore[attr-defined]
            if title.get_text():
                items.append((title.get_text(), title))
        if ax.get_legend() is not None:
            items.append(("legend", ax.get_legend()))
    if fig._suptitle is not None and fig._suptitle.get_text():  # type: ignore[attr-defined]
        items.append((fig._suptitle.get_text(), fig._suptitle))  # type: ignore[attr-defined]
    items += [("figure legend", legend) for legend in fig.legends]
    outside = []
    for what, artist in items:
        box = artist.get_window_extent(renderer)  # type: ignore[attr-defined]
        if not (
            frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
        ):
            outside.append(what)
    return outside


def legend_texts(fig: Figure) -> list[str]:
    """Every entry of the figure's legends (figure-level and per axes)."""
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    return [text.get_text() for legend in legends for text in legend.get_texts()]
