"""Pictures of J on a plane and of a search: surface, log contour, slices, convergence.

Every function returns a :class:`matplotlib.figure.Figure` made with
:func:`genni_ext.plot._style.new_figure` (no pyplot, no display). Grid values that are NaN
or infinite are masked, and the title says how many. On a log colour scale, values ≤ 0
are clipped to the smallest positive value (the title says how many); a grid with no
positive value at all is drawn on a linear scale instead, and the title says so. When an
ε is given and no grid point has J < ε, the picture says "ε-set empty" rather than
silently drawing no ε line.

Axes are sorted before drawing (``Grid.from_axes`` accepts them in any order), so a grid
with decreasing axes draws the same picture as one with increasing axes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize
from matplotlib.contour import ContourSet
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from genni_ext._validate import resolve_eps
from genni_ext.core.grid import GridResult
from genni_ext.errors import InputError
from genni_ext.plot import _style

CONVERGED_COLOUR = "tab:green"
NOT_CONVERGED_COLOUR = "tab:red"
CONSTANT_COLOUR = "grey"


# --------------------------------------------------------------------------- checks


def _check_eps(result: GridResult, eps: object, eps_relative: object) -> float | None:
    """ε for a picture of ``result``: ``eps``, ``eps_relative`` × the sweep's constant-function
    loss (:meth:`GridResult.resolve_eps`), or None when neither is given."""
    if eps is None and eps_relative is None:
        return None
    return result.resolve_eps(eps, eps_relative)  # type: ignore[arg-type]


def _check_grid(result: object, dim: int, what: str) -> GridResult:
    """``result`` as a GridResult on an axis grid of ``dim`` axes, at least 2 points each."""
    if not isinstance(result, GridResult):
        raise InputError(f"{what} needs a genni_ext.GridResult, got {type(result).__name__}")
    grid = result.grid
    if grid.axes is None:
        raise InputError(
            f"{what} needs a GridResult on a {dim}-D axis grid (Grid.uniform or "
            f"Grid.from_axes); this one is a coefficient list of {grid.size} points "
            f"with m={grid.dim}, which has no axes to draw on (use scatter3d or umap)"
        )
    if grid.dim != dim:
        raise InputError(
            f"{what} needs a {dim}-D axis grid, got a {grid.dim}-D one of shape "
            f"{list(grid.shape)}"
            + ("; use slices for a 3-D grid" if dim == 2 and grid.dim == 3 else "")
        )
    if min(grid.shape) < 2:
        raise InputError(
            f"{what} needs at least 2 points on every axis, got grid shape {list(grid.shape)}"
        )
    return result


def _sorted_grid(result: GridResult) -> tuple[list[np.ndarray], np.ndarray]:
    """The axes (each increasing) and the values reordered to match, as numpy float64."""
    assert result.grid.axes is not None
    axes = [axis.numpy().astype(np.float64) for axis in result.grid.axes]
    values = result.values.detach().cpu().numpy().astype(np.float64)
    orders = [np.argsort(axis, kind="stable") for axis in axes]
    values = values[np.ix_(*orders)]
    return [axis[order] for axis, order in zip(axes, orders, strict=True)], values


def _marker_coords(result: GridResult, dim: int, what: str) -> list[np.ndarray]:
    coords = []
    for marker in result.markers:
        c = torch.as_tensor(marker.coords).detach().cpu().reshape(-1).numpy().astype(np.float64)
        if c.shape != (dim,):
            raise InputError(
                f"{what}: marker {marker.name} has {c.size} coordinates but the grid has {dim} "
                "axes; markers must come from the same subspace as the grid"
            )
        coords.append(c)
    return coords


# --------------------------------------------------------------------------- colour scale


@dataclass
class _Scale:
    """The values as drawn (masked, clipped), the norm and the notes for the title."""

    values: np.ma.MaskedArray
    norm: Normalize
    levels: np.ndarray
    notes: list[str]


def _scale(raw: np.ndarray, *, log: bool, levels: int) -> _Scale:
    """Masked, clipped values and a norm/levels spanning the finite (positive) ones."""
    finite = np.isfinite(raw)
    bad = int(raw.size - finite.sum())
    notes = []
    if bad:
        notes.append(f"{bad} of {raw.size} values NaN/inf (masked)")
    shown = np.ma.masked_invalid(raw)
    if not finite.any():
        notes.append("no finite value to draw")
        return _Scale(shown, Normalize(0.0, 1.0), np.linspace(0.0, 1.0, levels + 1), notes)
    positive = finite & (raw > 0)
    if log and positive.any():
        low = float(raw[positive].min())
        high = float(raw[positive].max())
        clipped = int((finite & ~positive).sum())
        if clipped:
            notes.append(f"{clipped} values ≤ 0 clipped to {low:.3g} for the log scale")
            shown = np.ma.masked_invalid(np.where(finite & ~positive, low, raw))
        if high <= low:  # constant: give the scale some room around the single value
            low, high = low / 2.0, high * 2.0
        return _Scale(shown, LogNorm(low, high), np.geomspace(low, high, levels + 1), notes)
    if log:
        notes.append("no positive J: linear colour scale")
    low = float(raw[finite].min())
    high = float(raw[finite].max())
    if high <= low:
        pad = abs(low) * 0.5 or 1.0
        low, high = low - pad, high + pad
    return _Scale(shown, Normalize(low, high), np.linspace(low, high, levels + 1), notes)


def _eps_notes(raw: np.ndarray, eps: float | None) -> tuple[list[str], bool]:
    """Title notes on the ε-set and whether an ε line can be drawn (J crosses ε)."""
    if eps is None:
        return [], False
    finite = raw[np.isfinite(raw)]
    inside = int((finite < eps).sum())
    if inside == 0:
        low = f"{finite.min():.3g}" if finite.size else "none"
        return [f"ε-set empty: no J < ε = {eps:.3g} (smallest J {low})"], False
    note = f"ε-set: {inside} of {raw.size} points with J < ε = {eps:.3g}"
    return [note], inside < finite.size


def _trivial_level(result: GridResult, eps: float | None) -> tuple[list[str], float | None]:
    """Title notes and the J of the best constant function when ε reaches it.

    The baselines come from the sweep's metadata (``Problem.describe()``); where ε is at or
    above the constant function's J, grid points with constant_loss ≤ J < ε are in the
    ε-set but fit θ no better than a function that ignores its input.
    """
    problem = result.metadata.get("problem") if isinstance(result.metadata, dict) else None
    if eps is None or not isinstance(problem, dict):
        return [], None
    constant = problem.get("constant_loss")
    zero = problem.get("zero_loss")
    if not isinstance(constant, (int, float)) or not isinstance(zero, (int, float)):
        return [], None
    if eps < min(constant, zero):
        return [], None
    note = (
        f"warning: ε ≥ J of a trivial function (constant {constant:.3g}, zero {zero:.3g}); "
        "hatched: in the ε-set but no better than a constant"
    )
    return [note], float(min(constant, zero))


def _hatch_trivial(
    ax: Axes, axes: tuple[np.ndarray, np.ndarray], values: np.ma.MaskedArray, low: float, eps: float
) -> None:
    """Hatch where low ≤ J < ε: the part of the ε-set no better than a trivial function."""
    x, y = np.meshgrid(axes[0], axes[1], indexing="ij")
    finite = values.compressed()
    if not finite.size or not (finite.min() < eps and finite.max() >= low):
        return
    ax.contourf(x, y, values, levels=[low, eps], colors="none", hatches=["//"])
    ax.contour(x, y, values, levels=[low], colors="white", linewidths=1.0, linestyles="--")
    ax.plot(
        [],
        [],
        color="white",
        linestyle="--",
        label=f"J = {low:.3g} (trivial)",
        path_effects=[patheffects.withStroke(linewidth=3, foreground="black")],  # seen on white
    )


def _title(ax: Axes, title: str, notes: Sequence[str]) -> None:
    ax.set_title("\n".join([title, *notes]), fontsize=9)


def _colorbar(
    fig: Figure, mappable: ScalarMappable, axes: Axes | list[Axes], eps: float | None
) -> None:
    bar = fig.colorbar(mappable, ax=axes, label=_style.J_LABEL)
    _style.numeric_colorbar(bar, eps)


# --------------------------------------------------------------------------- 2-D pictures


def _draw_plane(
    ax: Axes,
    axes: tuple[np.ndarray, np.ndarray],
    scale: _Scale,
    values: np.ma.MaskedArray,
    eps_line: float | None,
) -> ContourSet | None:
    """Filled contour of ``values`` (first index along x) on ``ax``; returns the ContourSet."""
    x, y = np.meshgrid(axes[0], axes[1], indexing="ij")
    if values.mask is not np.ma.nomask and values.mask.all():
        ax.text(0.5, 0.5, "all values NaN/inf", ha="center", va="center", transform=ax.transAxes)
        return None
    filled = ax.contourf(x, y, values, levels=scale.levels, norm=scale.norm, cmap=_style.CMAP)
    if eps_line is not None:
        ax.contour(x, y, values, levels=[eps_line], colors=_style.EPS_COLOUR, linewidths=1.5)
        ax.plot([], [], color=_style.EPS_COLOUR, label=f"J = ε = {eps_line:.3g}")
    return filled


def plane_figure(
    result: GridResult,
    *,
    log: bool = True,
    eps: float | None = None,
    eps_relative: float | None = None,
    levels: int = 20,
    what: str = "contour",
) -> tuple[Figure, Axes, _style.MarkerLayer]:
    """The contour figure before its key and markers are settled: the figure, its plane
    axes and the markers' layer (other pictures draw over the plane, then settle)."""
    result = _check_grid(result, 2, what)
    eps = _check_eps(result, eps, eps_relative)
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise InputError(f"levels must be a positive int, got {levels!r}")
    coords = _marker_coords(result, 2, what)
    axes, raw = _sorted_grid(result)
    scale = _scale(raw, log=log, levels=levels)
    eps_notes, crosses = _eps_notes(raw, eps)

    trivial_notes, trivial = _trivial_level(result, eps)

    fig = _style.new_figure()
    ax = fig.add_subplot()
    filled = _draw_plane(ax, (axes[0], axes[1]), scale, scale.values, eps if crosses else None)
    if trivial is not None and eps is not None:
        _hatch_trivial(ax, (axes[0], axes[1]), scale.values, trivial, eps)
    layer = _style.MarkerLayer(ax)
    for index, (marker, c) in enumerate(zip(result.markers, coords, strict=True)):
        layer.add(index, marker.name, c)
    ax.set_xlabel(_style.AXIS_LABELS[0])
    ax.set_ylabel(_style.AXIS_LABELS[1])
    # Coordinates are Euclidean distances along orthonormal directions: equal scales.
    ax.set_aspect("equal")
    if filled is not None:
        _colorbar(fig, filled, ax, eps)
    kind = "log" if isinstance(scale.norm, LogNorm) else "linear"
    _title(ax, f"J on the plane ({kind} colour scale)", [*scale.notes, *eps_notes, *trivial_notes])
    return fig, ax, layer


def contour(
    result: GridResult,
    *,
    log: bool = True,
    eps: float | None = None,
    eps_relative: float | None = None,
    levels: int = 20,
) -> Figure:
    """Filled contour of J over a 2-D axis grid, markers at their coordinates.

    With ``log`` the colour scale is a :class:`~matplotlib.colors.LogNorm` over the finite
    positive values; values ≤ 0 are clipped to the smallest positive value. NaN/inf are
    masked. With ``eps`` the level J = ε is drawn as a black line (and on the colour bar);
    an empty ε-set is said in the title. Where ε reaches the J of a trivial function (the
    sweep's metadata holds the problem's ``zero_loss`` and ``constant_loss``), the part of
    the ε-set at or above it is hatched and the title warns. Axes have equal scales: the
    coordinates are distances in parameter space. The key sits below the plane.
    """
    fig, ax, layer = plane_figure(
        result, log=log, eps=eps, eps_relative=eps_relative, levels=levels
    )
    _style.key_below(fig, [ax])
    _style.settle(fig, [layer])
    return fig


def surface(
    result: GridResult, *, eps: float | None = None, eps_relative: float | None = None
) -> Figure:
    """3-D surface of J (linear scale) over a 2-D axis grid, markers at (c1, c2, J).

    NaN/inf values are masked (left out of the surface). With ``eps`` the level J = ε is
    drawn as a black contour at height ε and on the colour bar; an empty ε-set is said in
    the title. A marker whose J is not finite is drawn at the top of the surface. Markers
    are drawn over the surface (no depth sorting), so the surface never hides one.
    """
    result = _check_grid(result, 2, "surface")
    eps = _check_eps(result, eps, eps_relative)
    coords = _marker_coords(result, 2, "surface")
    axes, raw = _sorted_grid(result)
    scale = _scale(raw, log=False, levels=20)
    eps_notes, crosses = _eps_notes(raw, eps)

    fig = _style.new_figure(7.2, 5.6)
    ax = fig.add_subplot(projection="3d")
    x, y = np.meshgrid(axes[0], axes[1], indexing="ij")
    finite = np.isfinite(raw)
    if finite.any():
        z = np.where(finite, raw, np.nan)
        surf = ax.plot_surface(
            x, y, z, cmap=_style.CMAP, norm=scale.norm, linewidth=0, antialiased=False, alpha=0.85
        )
        if crosses and eps is not None:
            ax.contour(x, y, z, levels=[eps], colors=_style.EPS_COLOUR, linewidths=1.5)
            ax.plot([], [], color=_style.EPS_COLOUR, label=f"J = ε = {eps:.3g}")
        _colorbar(fig, surf, ax, eps)
        top = float(raw[finite].max())
    else:
        top = 0.0
    layer = _style.MarkerLayer(ax)  # drawn over the surface, which cannot hide them
    for index, (marker, c) in enumerate(zip(result.markers, coords, strict=True)):
        height = marker.loss if math.isfinite(marker.loss) else top
        layer.add(index, marker.name, (float(c[0]), float(c[1]), float(height)))
    ax.set_xlabel(_style.AXIS_LABELS[0])
    ax.set_ylabel(_style.AXIS_LABELS[1])
    ax.set_zlabel("J")
    _style.key_below(fig, [ax])
    _title(ax, "J on the plane (linear scale)", [*scale.notes, *eps_notes])
    _style.settle(fig, [layer])
    return fig


def _marker_planes(axis: np.ndarray, positions: Sequence[float]) -> list[int]:
    """Grid indices of the planes nearest the markers, then evenly spaced ones up to 4."""
    picked: list[int] = []
    for value in positions:
        index = int(np.argmin(np.abs(axis - value)))
        if index not in picked:
            picked.append(index)
    for index in np.round(np.linspace(0, axis.size - 1, min(4, axis.size))):
        if len(picked) >= 4:
            break
        if int(index) not in picked:
            picked.append(int(index))
    return sorted(picked)


def _nearest_indices(axis: np.ndarray, at: Sequence[float]) -> list[int]:
    if isinstance(at, (str, bytes)) or not isinstance(at, Sequence) or len(at) == 0:
        raise InputError(f"at must be a non-empty list of coefficient values, got {at!r}")
    picked: list[int] = []
    for value in at:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"at must hold numbers, got {value!r}")
        if not math.isfinite(value):
            raise InputError(f"at must hold finite numbers, got {value!r}")
        index = int(np.argmin(np.abs(axis - value)))
        if index not in picked:
            picked.append(index)
    return picked


def _panel_title(
    label: str, plane: float, step: float, names: list[str], positions: list[float]
) -> str:
    """ "c3 = 0", and where the markers drawn on the panel are not exactly on its plane,
    their own coordinate: "nearest grid plane" within half a grid step (drawn filled),
    "hollow, off this plane" beyond (drawn hollow: a projection, not a point of the plane).

    Values within 1e-6 of a grid step count as equal (and as 0 near 0): round-off of the
    grid's axis and of the markers' coordinates is not a place.
    """
    tiny = 1e-6 * step

    def shown(value: float) -> float:
        return 0.0 if abs(value) <= tiny else value

    def where(pairs: list[tuple[str, float]]) -> str:
        return ", ".join(f"{name} at {shown(value):.3g}" for name, value in pairs)

    title = f"{label} = {shown(plane):.3g}"
    pairs = list(zip(names, positions, strict=True))
    near = [(n, v) for n, v in pairs if tiny < abs(v - plane) and _style.on_plane(v, plane, step)]
    off = [(n, v) for n, v in pairs if not _style.on_plane(v, plane, step)]
    if near:
        title += f"\n(nearest grid plane: {where(near)})"
    if off:
        title += f"\n(hollow, off this plane: {where(off)})"
    return title


def slices(
    result: GridResult,
    axis: int,
    at: Sequence[float] | None = None,
    *,
    log: bool = True,
    eps: float | None = None,
    eps_relative: float | None = None,
    levels: int = 20,
) -> Figure:
    """Contour panels of J over a 3-D axis grid at several values of coefficient ``axis``.

    Panels sit at the grid values nearest to ``at`` (duplicates dropped); by default on
    the plane of every marker (its coordinate along ``axis``) and then evenly spaced planes
    up to 4 panels. They share one colour bar spanning the values drawn (log scale as
    :func:`contour`, values ≤ 0 clipped). Each marker is drawn on the panel nearest its
    coordinate along ``axis``: filled where it lies within half a grid step of the
    panel's plane (the title gives its own coordinate when that is not the plane's: the
    grid may have no point there), hollow where it does not (panels picked with ``at``
    away from it; the title says "off this plane" and where it is). With ``eps`` the level
    J = ε is drawn on every panel it crosses. Axes have equal scales; one key below.
    """
    result = _check_grid(result, 3, "slices")
    if isinstance(axis, bool) or not isinstance(axis, int) or not 0 <= axis < 3:
        raise InputError(f"axis must be 0, 1 or 2 (the coefficient to slice along), got {axis!r}")
    eps = _check_eps(result, eps, eps_relative)
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise InputError(f"levels must be a positive int, got {levels!r}")
    coords = _marker_coords(result, 3, "slices")
    axes, raw = _sorted_grid(result)
    positions = [float(c[axis]) for c in coords]
    picked = (
        _marker_planes(axes[axis], positions) if at is None else _nearest_indices(axes[axis], at)
    )
    others = [i for i in range(3) if i != axis]
    panels = [np.take(raw, index, axis=axis) for index in picked]
    drawn = np.stack(panels)
    scale = _scale(drawn, log=log, levels=levels)
    eps_notes, _ = _eps_notes(drawn, eps)

    count = len(picked)
    ncols = min(count, 4)
    nrows = math.ceil(count / ncols)
    fig = _style.new_figure(3.4 * ncols + 1.2, 3.2 * nrows + 0.6)
    grid_axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    flat = list(grid_axes.reshape(-1))
    for extra in flat[count:]:
        extra.set_visible(False)
    flat = flat[:count]
    picked_values = axes[axis][picked]
    owner = [int(np.argmin(np.abs(picked_values - c[axis]))) for c in coords]
    step = float(np.diff(axes[axis]).min())
    mappable = None
    layers = []
    for panel, (ax, index) in enumerate(zip(flat, picked, strict=True)):
        values = scale.values[panel]
        finite = values.compressed()
        line = (
            eps if eps is not None and finite.size and finite.min() < eps < finite.max() else None
        )
        filled = _draw_plane(ax, (axes[others[0]], axes[others[1]]), scale, values, line)
        if mappable is None:
            mappable = filled
        plane = float(axes[axis][index])
        layer = _style.MarkerLayer(ax)
        names, on_panel = [], []
        for m_index, (marker, c) in enumerate(zip(result.markers, coords, strict=True)):
            if owner[m_index] == panel:
                off = not _style.on_plane(float(c[axis]), plane, step)
                label = f"{marker.name} (hollow: off every panel's plane)" if off else None
                layer.add(m_index, marker.name, c[others], hollow=off, label=label)
                names.append(marker.name)
                on_panel.append(float(c[axis]))
        layers.append(layer)
        title = _panel_title(_style.AXIS_LABELS[axis], plane, step, names, on_panel)
        ax.set_title(title, fontsize=8)
        ax.set_xlabel(_style.AXIS_LABELS[others[0]])
        ax.set_ylabel(_style.AXIS_LABELS[others[1]])
        ax.set_aspect("equal")
    if mappable is not None:
        _colorbar(fig, mappable, flat, eps)
    _style.key_below(fig, flat)
    kind = "log" if isinstance(scale.norm, LogNorm) else "linear"
    head = f"J on slices along {_style.AXIS_LABELS[axis]} ({kind} colour scale)"
    fig.suptitle("\n".join([head, *scale.notes, *eps_notes]), fontsize=9)
    _style.settle(fig, layers)
    return fig


# --------------------------------------------------------------------------- search


def _check_search(search_result: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    for attribute in ("losses", "history", "history_steps"):
        if not isinstance(getattr(search_result, attribute, None), torch.Tensor):
            raise InputError(
                f"search_convergence needs a genni_ext.SearchResult (with tensor .{attribute}), "
                f"got {type(search_result).__name__}"
            )
    losses = search_result.losses.detach().cpu().double().reshape(-1).numpy()  # type: ignore[attr-defined]
    history = search_result.history.detach().cpu().double().numpy()  # type: ignore[attr-defined]
    steps = search_result.history_steps.detach().cpu().double().reshape(-1).numpy()  # type: ignore[attr-defined]
    k = losses.size
    if history.size == 0:
        history = np.zeros((k, 0))
    if history.ndim != 2 or history.shape[0] != k or history.shape[1] != steps.size:
        raise InputError(
            f"search result has losses [{k}], history {list(history.shape)} and history_steps "
            f"[{steps.size}]; history must be [K, R] with K starts and R recorded steps"
        )
    return losses, history, steps


def _constant_line(ax: Axes, constant: float | None) -> None:
    if constant is not None:
        ax.axhline(
            constant,
            color=CONSTANT_COLOUR,
            linestyle=":",
            linewidth=1.5,
            label=f"best constant function: J = {constant:.3g}",
        )


def search_convergence(
    search_result: object, eps: float | None = None, *, eps_relative: float | None = None
) -> Figure:
    """J against step for every start (log y) and the final J of each start, with ε.

    Converged starts (final J < ε) are green, the others red; the legend counts each.
    Where the search recorded the best constant function's J (``config["constant_loss"]``)
    it is drawn as a grey dotted line in both panels: starts ending on it found nothing
    better than a function that ignores its input.
    Values ≤ 0 are clipped to the smallest positive value for the log axis; NaN ends a
    line and a NaN final J is marked as such. A result without history says so in the
    left panel (the final J is still drawn).
    """
    losses, history, steps = _check_search(search_result)
    config = getattr(search_result, "config", None)
    constant = config.get("constant_loss") if isinstance(config, dict) else None
    eps_value = resolve_eps(eps, eps_relative, constant, "this search")
    converged = np.isfinite(losses) & (losses < eps_value)
    k = losses.size
    constant_line = (
        float(constant)
        if isinstance(constant, (int, float)) and math.isfinite(constant) and constant > 0
        else None
    )
    extra = [] if constant_line is None else [constant_line]
    everything = np.concatenate([history.reshape(-1), losses, [eps_value], extra])
    positive = everything[np.isfinite(everything) & (everything > 0)]
    floor = float(positive.min())

    def clip(values: np.ndarray) -> np.ndarray:
        return np.where(np.isfinite(values) & (values <= 0), floor, values)

    fig = _style.new_figure(11.0, 4.4)
    left, right = fig.subplots(1, 2, width_ratios=(2, 1))
    counts = {True: int(converged.sum()), False: int(k - converged.sum())}
    names = {True: f"converged (J < ε): {counts[True]}", False: f"not converged: {counts[False]}"}
    colours = {True: CONVERGED_COLOUR, False: NOT_CONVERGED_COLOUR}

    if history.shape[1] == 0:
        left.text(
            0.5,
            0.5,
            "no loss history recorded",
            ha="center",
            va="center",
            transform=left.transAxes,
        )
    else:
        labelled: set[bool] = set()
        style = "o-" if history.shape[1] == 1 else ".-"
        for start in range(k):
            state = bool(converged[start])
            label = names[state] if state not in labelled else "_nolegend_"
            labelled.add(state)
            (line,) = left.plot(
                steps,
                clip(history[start]),
                style,
                color=colours[state],
                linewidth=1,
                alpha=0.8,
                label=label,
            )
            line.set_gid(f"start {start}")
    left.axhline(eps_value, color=_style.EPS_COLOUR, linestyle="--", label=f"ε = {eps_value:.3g}")
    _constant_line(left, constant_line)
    left.set_yscale("log")
    left.set_xlabel("step")
    left.set_ylabel(_style.J_LABEL)
    left.legend(fontsize=8)
    left.set_title(f"J during the search: {counts[True]} of {k} starts reached J < ε", fontsize=9)

    index = np.arange(k)
    finite = np.isfinite(losses)
    for state in (True, False):
        chosen = finite & (converged == state)
        if chosen.any():
            right.scatter(
                index[chosen],
                clip(losses[chosen]),
                color=colours[state],
                label=names[state],
                zorder=3,
            )
    nan_starts = index[~finite]
    for start in nan_starts:
        right.annotate("NaN", (float(start), eps_value), ha="center", color=NOT_CONVERGED_COLOUR)
    right.axhline(eps_value, color=_style.EPS_COLOUR, linestyle="--", label=f"ε = {eps_value:.3g}")
    _constant_line(right, constant_line)
    right.set_yscale("log")
    right.set_xlim(-0.5, k - 0.5)
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_xlabel("start")
    right.set_ylabel("final J")
    right.legend(fontsize=8, loc="best")
    note = f" ({len(nan_starts)} NaN)" if len(nan_starts) else ""
    right.set_title(f"final J of each start{note}", fontsize=9)
    _style.fit_titles(fig)
    return fig
