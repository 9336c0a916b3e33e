"""Pictures of the passes on a grid (:func:`genni_ext.analysis.lowest_passes`).

:func:`pass_map` marks the passes on the log contour of a 2-D grid; :func:`disconnectivity_graph`
draws the sublevel merge tree of the points (a disconnectivity graph): each point hangs from
its own J, and two branches meet at the pass between them. The minimax pass heights are an
ultrametric, so single linkage on them rebuilds the merge tree exactly.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy.cluster.hierarchy import dendrogram, linkage
from scipy.spatial.distance import squareform

from genni_ext.analysis.passes import Passes
from genni_ext.core.grid import GridResult
from genni_ext.errors import InputError
from genni_ext.plot import _style
from genni_ext.plot.planes import plane_figure

MINIMUM_STYLE = {"marker": "v", "s": 30, "color": "black", "zorder": 8}
LABEL_BOX = {"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.8}
PASS_STYLE = {"marker": "X", "s": 70, "color": "white", "edgecolors": "black", "zorder": 9}


def _check(passes: object, result: object, what: str) -> tuple[Passes, GridResult]:
    if not isinstance(passes, Passes):
        raise InputError(f"{what} needs the Passes of lowest_passes, got {type(passes).__name__}")
    if not isinstance(result, GridResult) or result.grid.axes is None:
        raise InputError(f"{what} needs the GridResult (axis grid) the passes are of")
    return passes, result


def pass_map(passes: Passes, result: GridResult) -> Figure:
    """The log contour of a 2-D grid with the J = ε line and the found points; each pass the
    summary names drawn as a white cross at the grid point where the two first join,
    labelled with its height in units of ε; local minima without a found point as black
    triangles."""
    passes, result = _check(passes, result, "pass_map")
    if result.grid.dim != 2:
        raise InputError("pass_map draws a 2-D grid; for a 3-D grid see disconnectivity_graph")
    fig, ax, layer = plane_figure(result, eps=passes.eps, what="pass_map")
    minima = [passes.coords[name] for name in passes.minima]
    if minima:
        xs, ys = zip(*minima, strict=True)
        ax.scatter(xs, ys, label="local minimum without a found point", **MINIMUM_STYLE)
    saddles: dict[tuple[float, ...], float] = {}
    for a, b in passes.shown_pairs():
        where = passes.saddle(a, b)
        if where is not None:
            saddles[where] = passes.height(a, b)
    if saddles:
        xs, ys = zip(*saddles, strict=True)
        ax.scatter(xs, ys, label="pass (its J / ε beside it)", **PASS_STYLE)
        for (x, y), height in saddles.items():
            ax.annotate(
                f"{height / passes.eps:.3g}",
                (x, y),
                xytext=(5, 5),
                textcoords="offset points",
                fontsize=7,
                bbox=LABEL_BOX,
            )
    joined = sum(1 for group in passes.groups() if len(group) > 1)
    ax.set_title(
        f"Lowest passes on the grid (ε = {passes.eps:.3g}): {len(saddles)} "
        f"{'pass' if len(saddles) == 1 else 'passes'} between "
        f"{len(passes.found)} found points and {len(minima)} local minima; "
        f"{joined} {'group' if joined == 1 else 'groups'} of points joined below ε",
        fontsize=9,
    )
    _style.key_below(fig, [ax])
    _style.settle(fig, [layer])
    return fig


def disconnectivity_graph(passes: Passes, result: GridResult) -> Figure:
    """The merge tree of the points on a log J axis: a point's branch starts at its own J
    (a dot there), two branches join at the pass between them, and the dashed line is ε (the
    points under one branch below it share an ε-component of the grid). Found points are
    named and dotted in their colour; local minima in black."""
    passes, result = _check(passes, result, "disconnectivity_graph")
    names = list(passes.points)
    if len(names) < 2:
        raise InputError("disconnectivity_graph needs at least two points on the grid")
    count = len(names)
    distances = np.zeros((count, count))
    for i in range(count):
        for j in range(i + 1, count):
            distances[i, j] = distances[j, i] = passes.height(names[i], names[j])
    unjoined = not bool(np.isfinite(distances).all())
    top = float(distances[np.isfinite(distances)].max())  # the diagonal's 0 keeps it finite
    ceiling = 10 * max(top, passes.eps)  # where pairs no finite path joins are drawn
    distances = np.where(np.isfinite(distances), distances, ceiling)
    tree = dendrogram(linkage(squareform(distances, checks=False), method="single"), no_plot=True)
    positive = [v for v in passes.levels.values() if v > 0] + [passes.eps]
    floor = min(positive) / 10
    leaves = tree["leaves"]
    leaf_x = {5.0 + 10.0 * k: names[index] for k, index in enumerate(leaves)}

    fig = _style.new_figure(6.4, 5.0)
    ax = fig.add_subplot()
    ax.set_yscale("log")
    for xs, ys in zip(tree["icoord"], tree["dcoord"], strict=True):
        ys = list(ys)
        for end, x in ((0, xs[0]), (3, xs[3])):
            if x in leaf_x and ys[end] == 0.0:  # a leaf: its branch starts at its own J
                ys[end] = max(passes.levels[leaf_x[x]], floor)
        ax.plot(xs, [max(y, floor) for y in ys], color="black", linewidth=1)
    marker_index = {marker.name: index for index, marker in enumerate(result.markers)}
    for x, name in leaf_x.items():  # each point at its own J (a branch may have no length)
        found = name in marker_index
        ax.scatter(
            [x],
            [max(passes.levels[name], floor)],
            s=40 if found else 12,
            color=_style.marker_colour(marker_index[name]) if found else "black",
            edgecolors="black",
            zorder=5,
        )
    ax.set_xticks(list(leaf_x))
    ax.set_xticklabels(list(leaf_x.values()), rotation=60, ha="right", fontsize=7)
    for label in ax.get_xticklabels():
        name = label.get_text()
        if name in marker_index:
            label.set_color(_style.marker_colour(marker_index[name]))
            label.set_fontweight("bold")
    ax.axhline(passes.eps, color="grey", linestyle="--", linewidth=1)
    if unjoined:
        ax.axhline(ceiling, color="grey", linestyle=":", linewidth=1)
    ax.set_ylabel("J (log scale)")
    key = [Line2D([], [], color="grey", linestyle="--", label=f"ε = {passes.eps:.3g}")]
    _style.key_below(fig, [ax], key)
    low = min(floor, min(max(v, floor) for v in passes.levels.values()))
    ax.set_ylim(low / 2, 3 * (ceiling if unjoined else max(top, passes.eps)))
    note = " (dotted: not joined at finite J)" if unjoined else ""
    ax.set_title(
        f"Disconnectivity graph: {len(passes.found)} found points and "
        f"{count - len(passes.found)} local minima, joined at their lowest passes{note}",
        fontsize=9,
    )
    _style.fit_titles(fig)
    return fig


__all__ = ["disconnectivity_graph", "pass_map"]
