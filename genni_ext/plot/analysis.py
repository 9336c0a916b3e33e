"""Pictures of what the ε-set is: its Betti curve, persistence diagram, components, and
what the found points are.

Each function takes a result of :mod:`genni_ext.analysis` and returns a
:class:`matplotlib.figure.Figure` (headless). Titles state the numbers the figure shows,
including the resolution check of a topology result, so that a figure read alone does not
overstate what the grid resolved.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from ..analysis.alignment import Explanation
from ..analysis.persistence import FEATURE_NAMES, Topology
from ..errors import InputError
from ..grid import GridResult
from . import _style

EPS_COLOUR = "black"
# Found-point classes in the order the bar shows them, with their colours.
KIND_COLOURS = {
    "symmetry": "tab:green",
    "exact": "tab:blue",
    "approximate": "tab:olive",
    "not converged": "tab:gray",
    "trivial": "tab:red",
}


def _check_topology(value: object, what: str) -> Topology:
    if not isinstance(value, Topology):
        raise InputError(
            f"{what} needs a genni_ext.analysis.Topology (from topology(result, eps)), got "
            f"{type(value).__name__}"
        )
    return value


def _resolution_note(topo: Topology) -> str:
    check = topo.resolution
    if not check.checked:
        return "resolution not checked"
    if check.stable:
        return f"stable when refined to {'×'.join(map(str, check.shape or ()))}"
    return (
        f"NOT stable: {check.betti_coarse} here, {check.betti_refined} at "
        f"{'×'.join(map(str, check.shape or ()))} (grid artefacts)"
    )


def betti_curve(topo: Topology) -> Figure:
    """β_k of {J < ε} against ε (log scale), with the analysed ε marked."""
    topo = _check_topology(topo, "betti_curve")
    eps_values, numbers = topo.betti_curve
    names = FEATURE_NAMES[len(topo.shape)]
    fig = _style.new_figure()
    ax = fig.add_subplot()
    for k in range(numbers.shape[1]):
        ax.step(eps_values, numbers[:, k], where="post", label=f"β{k}: {names[k][1]}")
    ax.axvline(topo.eps, color=EPS_COLOUR, linestyle="--", linewidth=1.0, label="analysed ε")
    ax.set_xscale("log")
    ax.set_xlabel("ε (the set is J < ε)")
    ax.set_ylabel("count")
    ax.legend(fontsize=8)
    ax.set_title(
        f"Betti numbers of the ε-set against ε ({'×'.join(map(str, topo.shape))} grid)\n"
        f"at ε = {topo.eps:.3g}: β = {topo.betti}\n{_resolution_note(topo)}",
        fontsize=9,
    )
    return fig


def persistence_diagram(topo: Topology) -> Figure:
    """Birth against death of every feature of the sublevel filtration of J.

    Features that never die are drawn on a line at the top labelled "∞". Points far above
    the diagonal are features that persist over a wide range of ε; points near it are
    short-lived (often noise of the grid).
    """
    topo = _check_topology(topo, "persistence_diagram")
    names = FEATURE_NAMES[len(topo.shape)]
    finite = [
        value
        for _, birth, death in topo.persistence
        for value in (birth, death)
        if math.isfinite(value)
    ]
    fig = _style.new_figure(5.6, 5.2)
    ax = fig.add_subplot()
    if not finite:
        ax.text(0.5, 0.5, "no features", ha="center", va="center", transform=ax.transAxes)
        ax.set_title("Persistence diagram of J: empty", fontsize=9)
        return fig
    low, high = min(finite), max(finite)
    top = high + 0.1 * (high - low or abs(high) or 1.0)
    for k in range(len(topo.shape)):
        points = [(b, d) for dim, b, d in topo.persistence if dim == k]
        if not points:
            continue
        births = np.array([b for b, _ in points])
        deaths = np.array([d if math.isfinite(d) else top for _, d in points])
        ax.scatter(births, deaths, s=18, label=f"dim {k} ({names[k][1]}): {len(points)}")
    ax.plot([low, top], [low, top], color="grey", linewidth=0.8)
    ax.axhline(top, color="grey", linewidth=0.5, linestyle=":")
    ax.text(low, top, " ∞", va="bottom", fontsize=8)
    ax.axvline(topo.eps, color=EPS_COLOUR, linestyle="--", linewidth=0.8)
    ax.axhline(topo.eps, color=EPS_COLOUR, linestyle="--", linewidth=0.8)
    ax.set_xlabel("birth (J at which the feature appears)")
    ax.set_ylabel("death")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(
        "Persistence diagram of the sublevel sets of J\n"
        f"features alive at ε = {topo.eps:.3g} (dashed): born left of it, dying above it",
        fontsize=9,
    )
    return fig


def component_map(topo: Topology, result: GridResult) -> Figure:
    """The ε-set of a 2-D grid coloured by component, with the found points marked.

    For a 3-D grid, the slice through the largest component's largest cross-section is
    drawn (the title says which).
    """
    topo = _check_topology(topo, "component_map")
    if not isinstance(result, GridResult) or result.grid.axes is None:
        raise InputError("component_map needs the GridResult on an axis grid the topology is of")
    if tuple(result.grid.shape) != tuple(topo.shape):
        raise InputError(
            f"component_map: the topology is of a {topo.shape} grid but the result's grid is "
            f"{tuple(result.grid.shape)}; pass the result it was computed from"
        )
    axes = [axis.numpy().astype(np.float64) for axis in result.grid.axes]
    labels = topo.labels
    note = ""
    if labels.ndim == 3:
        counts = (labels == 1).sum(axis=(0, 1)) if topo.component_sizes else np.zeros(1)
        plane = int(np.argmax(counts))
        labels = labels[:, :, plane]
        note = f"; slice c3 = {axes[2][plane]:.3g}"
    count = max(1, len(topo.component_sizes))
    palette = ["white", *(f"C{i % 10}" for i in range(count))]
    fig = _style.new_figure()
    ax = fig.add_subplot()
    x, y = np.meshgrid(axes[0], axes[1], indexing="ij")
    ax.pcolormesh(x, y, labels, cmap=ListedColormap(palette), vmin=-0.5, vmax=count + 0.5)
    for index, marker in enumerate(result.markers):
        coords = marker.coords.detach().cpu().double().numpy()
        component = topo.marker_components.get(marker.name, 0)
        ax.scatter(
            [coords[0]],
            [coords[1]],
            s=60,
            color=_style.marker_colour(index),
            edgecolors="black",
            zorder=5,
            label=f"{marker.name}: {'component ' + str(component) if component else 'outside'}",
        )
    ax.set_aspect("equal")
    ax.set_xlabel(_style.AXIS_LABELS[0])
    ax.set_ylabel(_style.AXIS_LABELS[1])
    if result.markers:
        ax.legend(fontsize=7, loc="upper right")
    sizes = ", ".join(f"{size:,}" for size in topo.component_sizes[:6])
    more = "…" if len(topo.component_sizes) > 6 else ""
    ax.set_title(
        f"Components of the ε-set (J < {topo.eps:.3g}): {len(topo.component_sizes)} "
        f"({sizes}{more} points){note}\n{_resolution_note(topo)}",
        fontsize=9,
    )
    return fig


def found_points(explanation: Explanation) -> Figure:
    """A bar of the found points by class: symmetry image of θ, exact, approximate, …"""
    if not isinstance(explanation, Explanation):
        raise InputError(
            "found_points needs a genni_ext.analysis.Explanation (from explain(...)), got "
            f"{type(explanation).__name__}"
        )
    counts = {kind: explanation.kinds.count(kind) for kind in KIND_COLOURS}
    total = len(explanation.kinds)
    fig = _style.new_figure(6.4, 2.4)
    ax = fig.add_subplot()
    left = 0
    for kind, colour in KIND_COLOURS.items():
        if counts[kind]:
            ax.barh([0], [counts[kind]], left=left, color=colour, label=f"{kind}: {counts[kind]}")
            ax.text(left + counts[kind] / 2, 0, str(counts[kind]), ha="center", va="center")
            left += counts[kind]
    ax.set_xlim(0, max(total, 1))
    ax.set_ylim(-0.5, 1.1)
    ax.set_yticks([])
    ax.set_xlabel("found points")
    ax.legend(fontsize=8, ncol=len(KIND_COLOURS), loc="upper center", frameon=False)
    shown = ", ".join(f"{counts[kind]} {kind}" for kind in KIND_COLOURS if counts[kind])
    ax.set_title(f"What the {total} found points are: {shown}", fontsize=9)
    return fig
