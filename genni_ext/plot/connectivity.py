"""Pictures of which points are joined below ε in the full parameter space
(:func:`genni_ext.analysis.connectivity_graph`).

:func:`connection_profiles` draws J along the lowest path found from θ to every point;
:func:`connectivity_graph_figure` draws the points grouped by the paths below ε, with the
lowest path found between θ's group and each other group.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from genni_ext.analysis.connectivity import THETA, ConnectivityGraph
from genni_ext.errors import InputError
from genni_ext.plot import _style

METHOD_COLOURS = {
    "linear": "tab:blue",
    "orbit": "tab:green",
    "curve": "tab:red",
    "neb": "tab:purple",
}


def _check(graph: object, what: str) -> ConnectivityGraph:
    if not isinstance(graph, ConnectivityGraph):
        raise InputError(
            f"{what} needs the ConnectivityGraph of connectivity_graph(), got "
            f"{type(graph).__name__}"
        )
    return graph


def connection_profiles(graph: ConnectivityGraph) -> Figure:
    """J (log scale) against the fraction of the path's length, along the lowest path
    found from θ to every point, coloured by the method that found it, with the ε line."""
    graph = _check(graph, "connection_profiles")
    fig = _style.new_figure(6.4, 4.8)
    ax = fig.add_subplot()
    ax.set_yscale("log")
    paths = [path for (a, _), path in graph.edges.items() if a == THETA]
    floor = min((float(v) for p in paths for v in p.losses if v > 0), default=graph.eps) / 10
    for path in paths:
        ax.plot(path.t, np.maximum(path.losses, floor), color=METHOD_COLOURS[path.method],
                linewidth=1, alpha=0.8)  # fmt: skip
    ax.axhline(graph.eps, color="black", linestyle="--", linewidth=1)
    ax.set_xlabel("fraction of the path's length from θ")
    ax.set_ylabel("J (log scale)")
    counts = {method: sum(p.method == method for p in paths) for method in METHOD_COLOURS}
    key = [
        Line2D([], [], color=METHOD_COLOURS[method], label=f"{method}: {count} paths")
        for method, count in counts.items()
        if count
    ]
    key.append(Line2D([], [], color="black", linestyle="--", label=f"ε = {graph.eps:.3g}"))
    _style.key_below(fig, [ax], key)
    below = sum(path.below_eps for path in paths)
    ax.set_title(
        f"J along the lowest path found from θ to each of {len(paths)} points: {below} stay "
        "below ε",
        fontsize=9,
    )
    _style.fit_titles(fig)
    return fig


def connectivity_graph_figure(graph: ConnectivityGraph) -> Figure:
    """Each group of points joined below ε on a circle of its own (θ's group first, θ in
    black), solid grey lines for the paths below ε that joined them, and a dashed red line
    from θ's group to each other group, labelled with the lowest peak found (in ε) and its
    method: no path found below ε, which is not a proof that none exists."""
    graph = _check(graph, "connectivity_graph_figure")
    groups = graph.components()
    fig = _style.new_figure(6.4, 3.8)
    ax = fig.add_subplot()
    ax.set_aspect("equal")
    ax.axis("off")
    position: dict[str, tuple[float, float]] = {}
    for index, members in enumerate(groups):
        centre = 3.0 * index
        radius = 0.2 + 0.12 * math.sqrt(len(members))
        for k, name in enumerate(members):
            angle = 2 * math.pi * k / max(1, len(members))
            position[name] = (centre + radius * math.cos(angle), radius * math.sin(angle))
        ax.annotate(f"{len(members)} points" if THETA not in members else
                    f"θ and {len(members) - 1} points", (centre, -radius - 0.25),
                    ha="center", va="top", fontsize=8)  # fmt: skip
    for (a, b), path in graph.edges.items():
        if path.below_eps:
            (xa, ya), (xb, yb) = position[a], position[b]
            ax.plot([xa, xb], [ya, yb], color="grey", linewidth=0.4, alpha=0.5, zorder=1)
    for members in groups[1:]:
        path = graph.lowest_between(groups[0], members)
        if path is None:
            continue
        (xa, ya), (xb, yb) = position[groups[0][0]], position[members[0]]
        ax.plot([xa, xb], [ya, yb], color="tab:red", linestyle="--", linewidth=1.2, zorder=2)
        label = f"{path.peak / graph.eps:.3g} ε ({path.method})"
        ax.annotate(label, ((xa + xb) / 2, (ya + yb) / 2), xytext=(0, 6),
                    textcoords="offset points", ha="center", fontsize=8,
                    color="tab:red")  # fmt: skip
    others = [name for name in graph.names if name != THETA]
    ax.scatter([position[n][0] for n in others], [position[n][1] for n in others], s=30,
               color="lightgrey", edgecolors="black", zorder=3)  # fmt: skip
    ax.scatter(*position[THETA], s=60, color="black", zorder=4)
    ax.annotate("θ", position[THETA], xytext=(-8, 0), textcoords="offset points", ha="right",
                va="center", fontsize=9)  # fmt: skip
    xs = [x for x, _ in position.values()]
    ys = [y for _, y in position.values()]
    ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    ax.set_ylim(min(ys) - 0.9, max(ys) + 0.5)
    key = [
        Line2D([], [], color="grey", label="path with J < ε at every evaluated point"),
        Line2D([], [], color="tab:red", linestyle="--",
               label="lowest path found between groups (its highest J / ε)"),
    ]  # fmt: skip
    _style.key_below(fig, [ax], key, ncol=1)
    ax.set_title(
        f"Groups joined below ε in the full space: {len(groups)} (a dashed line: no path "
        "found below ε, not a proof that none exists)",
        fontsize=9,
    )
    _style.fit_titles(fig)
    return fig


__all__ = ["connection_profiles", "connectivity_graph_figure"]
