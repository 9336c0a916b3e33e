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
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from genni_ext.analysis.alignment import KINDS as FOUND_KINDS
from genni_ext.analysis.alignment import Explanation
from genni_ext.analysis.dynamics import KINDS, MorseGraph
from genni_ext.analysis.persistence import FEATURE_NAMES, Topology
from genni_ext.analysis.similarity import Comparison
from genni_ext.analysis.stitching import Stitch
from genni_ext.core.grid import GridResult
from genni_ext.errors import InputError
from genni_ext.plot import _style
from genni_ext.plot.planes import plane_figure

# Components of the ε-set take matplotlib's ten cycle colours; past ten they repeat.
COMPONENT_COLOURS = tuple(f"C{i}" for i in range(10))
# Found-point kinds (explain's, in its order) with their colours and what each means.
KIND_COLOURS = dict(
    zip(
        FOUND_KINDS,
        ("tab:green", "tab:blue", "tab:red", "tab:orange", "tab:olive", "tab:gray"),
        strict=True,
    )
)
KIND_MEANINGS = {
    "G_ReLU image": "θ permuted and rescaled (align residual ≤ {tol:.2g})",
    "other exact": "θ's function (J ≤ {exact_relative:.2g} × mean ‖y‖²), not a G_ReLU image",
    "near-constant": "within {near_constant_relative:.0%} of the best input-ignoring function",
    "collapsed": "hidden units dead on every probe or merged",
    "approximate": "J < ε = {eps:.3g}",
    "not converged": "J ≥ ε, or not finite",
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
    finer = "×".join(map(str, check.shape or ()))
    if check.unchanged:
        return f"unchanged at 2× resolution ({finer}); features smaller than a cell unseen"
    return f"changed: {check.betti_coarse} here, {check.betti_refined} at {finer} (grid artefacts)"


def betti_curve(topo: Topology) -> Figure:
    """β_k of {J < ε} against ε (log scale), with the analysed ε marked."""
    topo = _check_topology(topo, "betti_curve")
    eps_values, numbers = topo.betti_curve
    names = FEATURE_NAMES[len(topo.shape)]
    fig = _style.new_figure()
    ax = fig.add_subplot()
    for k in range(numbers.shape[1]):
        ax.step(eps_values, numbers[:, k], where="post", label=f"β{k}: {names[k][1]}")
    ax.axvline(topo.eps, color=_style.EPS_COLOUR, linestyle="--", linewidth=1.0, label="analysed ε")
    ax.set_xscale("log")
    ax.set_xlabel("ε (the set is J < ε)")
    ax.set_ylabel("count")
    ax.legend(fontsize=8)
    ax.set_title(
        f"Betti numbers of the ε-set against ε ({'×'.join(map(str, topo.shape))} grid)\n"
        f"at ε = {topo.eps:.3g}: β = {topo.betti}\n{_resolution_note(topo)}",
        fontsize=9,
    )
    _style.fit_titles(fig)
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
        _style.fit_titles(fig)
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
    ax.axvline(topo.eps, color=_style.EPS_COLOUR, linestyle="--", linewidth=0.8)
    ax.axhline(topo.eps, color=_style.EPS_COLOUR, linestyle="--", linewidth=0.8)
    ax.set_xlabel("birth (J at which the feature appears)")
    ax.set_ylabel("death")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(
        "Persistence diagram of the sublevel sets of J\n"
        f"features alive at ε = {topo.eps:.3g} (dashed): born left of it, dying above it",
        fontsize=9,
    )
    _style.fit_titles(fig)
    return fig


def _slice_of(axes: list[np.ndarray], index: int) -> tuple[float, float]:
    """The c3 value of plane ``index`` of a 3-D grid (0 within round-off of it) and the
    grid step along c3."""
    plane, step = float(axes[2][index]), float(np.diff(np.sort(axes[2])).min())
    return (0.0 if abs(plane) <= 1e-6 * step else plane), step


def _busiest_plane(axes: list[np.ndarray], labels: np.ndarray, result: GridResult) -> int:
    """Index of the c3 plane holding the most found points (within half a grid step),
    among those the one with the largest cross-section of the largest component."""
    step = _slice_of(axes, 0)[1]
    heights = [float(marker.coords[2]) for marker in result.markers]
    holding = [sum(_style.on_plane(h, float(c3), step) for h in heights) for c3 in axes[2]]
    cross = (labels == 1).sum(axis=(0, 1))
    return max(range(len(axes[2])), key=lambda k: (holding[k], int(cross[k]), -k))


def _markers_on_slice(
    ax: Axes,
    result: GridResult,
    plane: tuple[float, float] | None,
    describe: dict[str, str] | None = None,
) -> tuple[_style.MarkerLayer, list[str]]:
    """Draw the found points at their (c1, c2). On a slice ``plane`` = (c3, step) of a 3-D
    grid, a point is drawn filled only where its c3 is within half a grid step of the
    slice; the others are drawn hollow (a projection, not a point of the slice), their
    key entry saying where they are. Returns the layer and the hollow points' names."""
    layer = _style.MarkerLayer(ax)
    hollow: list[str] = []
    for index, marker in enumerate(result.markers):
        coords = marker.coords.detach().cpu().double().numpy()
        label = marker.name + (f": {describe[marker.name]}" if describe else "")
        off = plane is not None and not _style.on_plane(float(coords[2]), *plane)
        if off:
            assert plane is not None
            height = 0.0 if abs(coords[2]) <= 1e-6 * plane[1] else float(coords[2])
            hollow.append(marker.name)
            label = f"{label} (hollow: c3 = {height:.3g}, off this slice)"
        layer.add(index, marker.name, coords[:2], hollow=off, label=label)
    return layer, hollow


def _hollow_note(hollow: list[str]) -> str:
    return (
        f"\nhollow: {', '.join(hollow)} (not on this slice, drawn at their c1, c2)"
        if hollow
        else ""
    )


def component_map(topo: Topology, result: GridResult) -> Figure:
    """The ε-set of a 2-D grid coloured by component (a key names each colour and its
    size), with the found points marked and the component each lies in.

    For a 3-D grid, one c3 slice is drawn (the title says which): the plane holding the
    most found points, among those the one through the largest component's largest
    cross-section; found points off it (more than half a grid step away in c3) are drawn
    hollow and the title names them.
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
    plane = None
    if labels.ndim == 3:
        index = _busiest_plane(axes, labels, result)
        labels = labels[:, :, index]
        plane = _slice_of(axes, index)
        note = f"; slice c3 = {plane[0]:.3g}"
    count = max(1, len(topo.component_sizes))
    palette = ["white", *(COMPONENT_COLOURS[i % 10] for i in range(count))]
    fig = _style.new_figure(6.4, 5.4)
    ax = fig.add_subplot()
    x, y = np.meshgrid(axes[0], axes[1], indexing="ij")
    ax.pcolormesh(x, y, labels, cmap=ListedColormap(palette), vmin=-0.5, vmax=count + 0.5)
    describe = {
        name: f"component {component}" if component else "outside"
        for name, component in topo.marker_components.items()
    }
    layer, hollow = _markers_on_slice(ax, result, plane, describe)
    ax.set_aspect("equal")
    ax.set_xlabel(_style.AXIS_LABELS[0])
    ax.set_ylabel(_style.AXIS_LABELS[1])
    shown = [int(k) for k in np.unique(labels) if k > 0]
    key: list[Patch] = [
        Patch(
            facecolor=palette[k],
            edgecolor="black",
            label=f"component {k}: {topo.component_sizes[k - 1]:,} points",
        )
        for k in shown[:10]
    ]
    if len(shown) > 10:
        key.append(
            Patch(fill=False, edgecolor="none", label=f"{len(shown) - 10} more (colours repeat)")
        )
    _style.key_below(fig, [ax], key, ncol=3)
    sizes = ", ".join(f"{size:,}" for size in topo.component_sizes[:6])
    more = "…" if len(topo.component_sizes) > 6 else ""
    ax.set_title(
        f"Components of the ε-set (J < {topo.eps:.3g}): {len(topo.component_sizes)} "
        f"({sizes}{more} points){note}\n{_resolution_note(topo)}{_hollow_note(hollow)}",
        fontsize=9,
    )
    _style.settle(fig, [layer])
    return fig


def found_points(explanation: Explanation) -> Figure:
    """A bar of the found points by kind (explain's kinds, in its order), with a key below
    that says what each kind means and the thresholds that decided it."""
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
            ax.barh([0], [counts[kind]], left=left, color=colour)
            ax.text(left + counts[kind] / 2, 0, str(counts[kind]), ha="center", va="center")
            left += counts[kind]
    ax.set_xlim(0, max(total, 1))
    ax.set_ylim(-0.5, 0.5)
    ax.set_yticks([])
    ax.set_xlabel("found points")
    meanings = {kind: text.format(**explanation.thresholds) for kind, text in KIND_MEANINGS.items()}
    key = [
        Patch(
            facecolor=colour, edgecolor="black", label=f"{kind}: {counts[kind]} ({meanings[kind]})"
        )
        for kind, colour in KIND_COLOURS.items()
    ]
    _style.key_below(fig, [ax], key, ncol=2)
    shown = ", ".join(f"{counts[kind]} {kind}" for kind in KIND_COLOURS if counts[kind])
    ax.set_title(f"What the {total} found points are: {shown}", fontsize=9)
    _style.fit_titles(fig)
    return fig


def _check_morse(morse: object, result: object, what: str) -> tuple[MorseGraph, GridResult]:
    if not isinstance(morse, MorseGraph):
        raise InputError(
            f"{what} needs a genni_ext.analysis.MorseGraph (from morse_graph(result)), got "
            f"{type(morse).__name__}"
        )
    if not isinstance(result, GridResult) or result.grid.axes is None:
        raise InputError(f"{what} needs the GridResult on an axis grid the Morse graph is of")
    return morse, result


def _kind_colour(kind: str, index: int) -> str:
    palette = {
        "attracting": ("tab:blue", "tab:cyan", "tab:green", "navy"),
        "saddle": ("tab:orange", "gold"),
        "repelling": ("tab:red", "magenta"),
    }
    colours = palette.get(kind, ("grey",))
    return colours[index % len(colours)]


def _set_key(morse: MorseGraph) -> list[Patch]:
    """One patch per Morse set in the colour both Morse pictures give it."""
    return [
        Patch(
            facecolor=_kind_colour(s.kind, number),
            edgecolor="black",
            label=f"set {s.index}: {s.kind}",
        )
        for number, s in enumerate(morse.morse_sets)
    ]


def morse_sets(morse: MorseGraph, result: GridResult) -> Figure:
    """The Morse sets' boxes over the log contour of J (a 3-D grid: projected onto c1, c2),
    coloured by kind (attracting blue/green, saddle orange, repelling red; the key below
    names each set), with markers."""
    morse, result = _check_morse(morse, result, "morse_sets")

    if result.grid.dim == 2:
        fig, ax, layer = plane_figure(result, what="morse_sets")
    else:
        fig = _style.new_figure()
        ax = fig.add_subplot()
        ax.set_aspect("equal")
        ax.set_xlabel(_style.AXIS_LABELS[0])
        ax.set_ylabel(_style.AXIS_LABELS[1])
        ax.set_xlim(morse.lower_bounds[0], morse.upper_bounds[0])
        ax.set_ylim(morse.lower_bounds[1], morse.upper_bounds[1])
        layer, _ = _markers_on_slice(ax, result, None)
    for number, (morse_set, rects) in enumerate(
        zip(morse.morse_sets, morse.rectangles((0, 1)), strict=True)
    ):
        colour = _kind_colour(morse_set.kind, number)
        for x, y, width, height in rects:
            ax.add_patch(Rectangle((x, y), width, height, color=colour, alpha=0.6, linewidth=0))
    _style.key_below(fig, [ax], _set_key(morse))
    what = "log J" if morse.log else "J"
    projected = " (projected onto c1, c2)" if result.grid.dim == 3 else ""
    ax.set_title(
        f"Morse sets of descent on {what}{projected}: {len(morse.morse_sets)} "
        f"({'×'.join(map(str, morse.box_shape))} boxes)",
        fontsize=9,
    )
    _style.settle(fig, [layer])
    return fig


def morse_graph_figure(morse: MorseGraph) -> Figure:
    """The Morse graph: one node per Morse set at the height of its lowest J (log scale),
    an arrow from a set to each set descent reaches from it; node colours as in
    :func:`morse_sets`, with the same key."""
    if not isinstance(morse, MorseGraph):
        raise InputError(f"morse_graph_figure needs a MorseGraph, got {type(morse).__name__}")
    fig = _style.new_figure(5.6, 5.2)
    ax = fig.add_subplot()
    sets = morse.morse_sets
    floor = min((s.min_loss for s in sets if s.min_loss > 0), default=1e-12)
    heights = {s.index: math.log10(max(s.min_loss, floor)) for s in sets}
    # Sets within half a decade of J share a row, side by side.
    xs: dict[int, int] = {}
    row_height, column, widest = -math.inf, 0, 1
    for s in sorted(sets, key=lambda item: heights[item.index]):
        if heights[s.index] - row_height < 0.5:
            column += 1
        else:
            row_height, column = heights[s.index], 0
        xs[s.index] = column
        widest = max(widest, column + 1)
    for source, target in morse.graph.edges:
        ax.annotate(
            "", xy=(xs[target], heights[target]), xytext=(xs[source], heights[source]),
            arrowprops={"arrowstyle": "->", "color": "grey", "shrinkA": 12, "shrinkB": 12},
        )  # fmt: skip
    for number, s in enumerate(sets):
        ax.scatter([xs[s.index]], [heights[s.index]], s=300, color=_kind_colour(s.kind, number),
                   edgecolors="black", zorder=5)  # fmt: skip
        label = f"{s.index}" + (f" ({', '.join(s.markers)})" if s.markers else "")
        ax.annotate(label, (xs[s.index], heights[s.index]), xytext=(10, 0),
                    textcoords="offset points", va="center", fontsize=8)  # fmt: skip
    ax.set_xticks([])
    ax.set_xlim(-0.5, widest - 0.5 + 0.8)
    ax.set_ylabel("log10 of the lowest J in the set")
    _style.key_below(fig, [ax], _set_key(morse), ncol=3)
    kinds = ", ".join(f"{sum(s.kind == k for s in sets)} {k}" for k in KINDS)
    ax.set_title(f"Morse graph: {len(sets)} sets ({kinds})", fontsize=9)
    _style.fit_titles(fig)
    return fig


def retraction(morse: MorseGraph, result: GridResult) -> Figure:
    """Each grid point coloured by the Morse set descent from it reaches (white: undecided at
    this resolution, several attractors reachable; the key below names every colour); a
    3-D grid shows its middle c3 slice, with found points off it drawn hollow."""
    morse, result = _check_morse(morse, result, "retraction")
    axes = [axis.numpy().astype(np.float64) for axis in result.grid.axes]
    field = morse.grid_retraction
    note = ""
    plane = None
    if field.ndim == 3:
        middle = field.shape[2] // 2
        field = field[:, :, middle]
        plane = _slice_of(axes, middle)
        note = f"; slice c3 = {plane[0]:.3g}"
    count = len(morse.morse_sets)
    palette = ["white", *(_kind_colour(s.kind, n) for n, s in enumerate(morse.morse_sets))]
    fig = _style.new_figure(6.4, 5.4)
    ax = fig.add_subplot()
    x, y = np.meshgrid(axes[0], axes[1], indexing="ij")
    ax.pcolormesh(x, y, field + 1, cmap=ListedColormap(palette), vmin=-0.5, vmax=count + 0.5)
    layer, hollow = _markers_on_slice(ax, result, plane)
    ax.set_aspect("equal")
    ax.set_xlabel(_style.AXIS_LABELS[0])
    ax.set_ylabel(_style.AXIS_LABELS[1])
    key = [
        Patch(
            facecolor=_kind_colour(s.kind, number),
            edgecolor="black",
            label=f"to set {s.index} ({s.kind}): {100 * s.share:.0f} %",
        )
        for number, s in enumerate(morse.morse_sets)
    ]
    key.append(Patch(facecolor="white", edgecolor="black", label="undecided"))
    _style.key_below(fig, [ax], key, ncol=3)
    ax.set_title(f"Where descent goes (order retraction){note}{_hollow_note(hollow)}", fontsize=9)
    _style.settle(fig, [layer])
    return fig


def similarity_heatmap(comparison: Comparison) -> Figure:
    """The layer × layer similarity of θ's (rows) and the other point's (columns) hidden
    layers, values printed in the cells; NaN cells (no value defined) are left blank."""
    if not isinstance(comparison, Comparison):
        raise InputError(
            f"similarity_heatmap needs a Comparison (from compare(...)), got "
            f"{type(comparison).__name__}"
        )
    matrix = np.asarray(comparison.matrix, dtype=np.float64)
    count = len(comparison.layers)
    fig = _style.new_figure(max(4.2, 2.2 + 0.9 * count), 2.2 + 0.8 * count)
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(matrix), vmin=0.0, vmax=1.0, cmap="viridis")
    for i in range(count):
        for j in range(count):
            if math.isfinite(matrix[i, j]):
                shade = "white" if matrix[i, j] < 0.6 else "black"
                ax.text(j, i, f"{matrix[i, j]:.3f}", ha="center", va="center", fontsize=8,
                        color=shade)  # fmt: skip
    ax.set_xticks(range(count), comparison.layers, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(count), comparison.layers, fontsize=8)
    ax.set_xlabel("other point's layer")
    ax.set_ylabel("θ's layer")
    _style.numeric_colorbar(fig.colorbar(image, ax=ax, shrink=0.8, label=comparison.metric))
    ax.set_title(
        f"{comparison.metric} of hidden layers\n({comparison.num_probes} inputs)", fontsize=9
    )
    _style.fit_titles(fig)
    return fig


def stitching_penalties(stitches: list[Stitch]) -> Figure:
    """The stitched network's J against the layer where θ's network is stitched into the
    other point's, with the other point's own J for reference (log scale)."""
    if not isinstance(stitches, (list, tuple)) or not stitches:
        raise InputError("stitching_penalties needs a non-empty list of Stitch (stitch_all)")
    for item in stitches:
        if not isinstance(item, Stitch):
            raise InputError(f"stitching_penalties needs Stitch results, got {type(item).__name__}")
    layers = [item.layer for item in stitches]
    penalties = [max(item.penalty, 1e-300) for item in stitches]
    fig = _style.new_figure(6.4, 4.2)
    ax = fig.add_subplot()
    ax.plot(range(len(layers)), penalties, marker="o", label="stitched network")
    ax.axhline(stitches[0].other_loss, color="grey", linestyle="--", label="other point alone")
    ax.axhline(stitches[0].constant_loss, color="tab:red", linestyle=":",
               label="best constant function")  # fmt: skip
    ax.set_yscale("log")
    ax.set_xticks(range(len(layers)), layers, rotation=30, ha="right", fontsize=8)
    ax.set_xlabel("stitched after θ's layer")
    ax.set_ylabel("J of the stitched network")
    ax.legend(fontsize=8)
    first = stitches[0]
    ax.set_title(
        f"Stitching θ into the other point ({first.kind}, {first.init} init, {first.steps} steps)",
        fontsize=9,
    )
    _style.fit_titles(fig)
    return fig
