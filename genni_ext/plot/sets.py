"""Pictures of the ε-equivalent set of a grid: 3-D scatter from several angles, and UMAP.

The ε-set is exactly the grid points with J < ε (:meth:`GridResult.eps_set`); NaN values
are never below ε, so they are left out, and the title counts them.

UMAP needs m ≥ 3. For m ≤ 2 the plane's own coordinates are already a faithful 2-D
picture (the basis is orthonormal, so parameter-space distances equal coefficient
distances), and UMAP would only distort it: use the contour or surface plots instead.
For the same reason parameter-space UMAP of a grid differs from coefficient-space UMAP
only by round-off; it is offered because the GENNI paper draws both.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from genni_ext.core.grid import GridResult
from genni_ext.core.subspace import Subspace
from genni_ext.errors import InputError
from genni_ext.plot import _style

SPACES = ("coefficients", "parameters")


def _check_result(result: object, what: str) -> GridResult:
    if not isinstance(result, GridResult):
        raise InputError(f"{what} needs a genni_ext.GridResult, got {type(result).__name__}")
    return result


def eps_points(result: GridResult, eps: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Coefficients [K, m] and J [K] of the ε-set (grid order), and the number of NaNs."""
    mask = result.eps_mask(eps).reshape(-1)
    coeffs = result.grid.coeffs[mask].numpy()
    values = result.values.reshape(-1)[mask].numpy()
    return coeffs, values, int(torch.isnan(result.values).sum())


def _norm(values: np.ndarray, eps: float) -> Normalize:
    """Colour scale from the smallest plotted J (0 if none) to ε: the top is ε."""
    low = float(values.min()) if values.size else 0.0
    return Normalize(vmin=min(low, eps), vmax=eps)


def eps_set_summary(result: GridResult, eps: float, count: int, nans: int) -> str:
    """A picture's title: how many of the grid's points are in the ε-set, and the NaNs left
    out."""
    total = result.grid.size
    text = f"ε-set: {count} of {total} points with J < ε = {eps:.3g}"
    if nans:
        text += f" ({nans} NaN excluded)"
    return text


def empty_eps_set_reason(result: GridResult, eps: float) -> str:
    """Why a picture of the ε-set is empty: every value NaN, or the smallest J not below ε."""
    finite = result.values[~torch.isnan(result.values)]
    if finite.numel() == 0:
        return "empty ε-set: every grid value is NaN"
    return f"empty ε-set: no point has J < ε = {eps:.3g} (smallest J = {float(finite.min()):.3g})"


def _colour_bar(fig: Figure, norm: Normalize, axes: Sequence[Axes] | Axes) -> None:
    mappable = ScalarMappable(norm=norm, cmap=_style.CMAP)
    bar = fig.colorbar(mappable, ax=axes, shrink=0.8)
    bar.set_label(_style.J_LABEL + f"; top = ε = {norm.vmax:.3g}")
    _style.numeric_colorbar(bar)


def scatter3d(
    result: GridResult,
    eps: float | None = None,
    *,
    eps_relative: float | None = None,
    views: Sequence[tuple[float, float]] = ((30, 45), (30, 135), (60, 225), (0, 0)),
) -> Figure:
    """The ε-set of a 3-D grid as a 3-D scatter coloured by J, one panel per
    (elevation, azimuth) view, with markers θ0..θm and a colour bar topped by ε.

    The markers are drawn over the ε-set in every view, each named beside it where the
    name overlaps no other name or marker; the key is below the panels."""
    result = _check_result(result, "scatter3d")
    eps = result.resolve_eps(eps, eps_relative)
    if result.grid.dim != 3:
        raise InputError(
            f"scatter3d needs a grid with m = 3 coefficients per point, got m = "
            f"{result.grid.dim}; use contour/surface for m = 2 or umap for m >= 3"
        )
    views = [tuple(view) for view in views]
    if not views or any(
        len(view) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in view)
        for view in views
    ):
        raise InputError(f"views must be a non-empty list of (elevation, azimuth) pairs: {views}")
    coeffs, values, nans = eps_points(result, eps)
    norm = _norm(values, eps)
    cols = min(len(views), 2)
    rows = math.ceil(len(views) / cols)
    fig = _style.new_figure(4.2 * cols + 1.2, 3.8 * rows)
    all_coeffs = result.grid.coeffs.numpy()
    marker_coords = [m.coords.numpy() for m in result.markers]
    extent = np.vstack([all_coeffs.min(0), all_coeffs.max(0), *marker_coords])
    low, high = extent.min(0), extent.max(0)
    panels: list[Axes] = []
    layers: list[_style.MarkerLayer] = []
    for index, (elev, azim) in enumerate(views):
        ax = fig.add_subplot(rows, cols, index + 1, projection="3d")
        ax.scatter(
            coeffs[:, 0],
            coeffs[:, 1],
            coeffs[:, 2],
            c=values,
            cmap=_style.CMAP,
            norm=norm,
            s=4,
            depthshade=False,
            label="ε-set",
            gid="eps_set",
        )
        layer = _style.MarkerLayer(ax)  # on top of the ε-set from every angle
        for number, marker in enumerate(result.markers):
            layer.add(number, marker.name, marker.coords.tolist())
        layers.append(layer)
        ax.set_xlim(low[0], high[0])
        ax.set_ylim(low[1], high[1])
        ax.set_zlim(low[2], high[2])
        ax.set_xlabel(_style.AXIS_LABELS[0])
        ax.set_ylabel(_style.AXIS_LABELS[1])
        ax.set_zlabel(_style.AXIS_LABELS[2])
        ax.view_init(elev=elev, azim=azim)
        up, around = np.radians([elev, azim])
        eye = (np.cos(up) * np.cos(around), np.cos(up) * np.sin(around), np.sin(up))
        for axis, along in zip((ax.xaxis, ax.yaxis, ax.zaxis), eye, strict=True):
            if abs(along) > 0.95:  # seen end-on: its tick labels would pile up on one spot
                axis.set_major_formatter(NullFormatter())
        ax.set_title(f"elev {elev:g}°, azim {azim:g}°", fontsize=9)
        if coeffs.shape[0] == 0:
            ax.text2D(
                0.5,
                0.5,
                empty_eps_set_reason(result, eps),
                transform=ax.transAxes,
                ha="center",
                va="center",
                fontsize=8,
                wrap=True,
            )
        panels.append(ax)
    _style.key_below(fig, [panels[0]], ncol=6)
    _colour_bar(fig, norm, panels)
    fig.suptitle(eps_set_summary(result, eps, coeffs.shape[0], nans))
    _style.settle(fig, layers, names=True)
    return fig


def _subsample(count: int, keep: int, seed: int) -> np.ndarray:
    """``keep`` sorted indices of range(count), chosen with ``seed`` (all when keep >= count)."""
    if keep >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=keep, replace=False))


def _parameters(
    result: GridResult,
    eps: float,
    subspace: Subspace | None,
    coeffs: np.ndarray,
    values: np.ndarray,
    memory_budget: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Parameters of (a subsample of) the ε-set within ``memory_budget`` bytes.

    Returns (params [k, P], the kept rows' indices into the ε-set, marker params, k dropped).
    The budget covers the kept rows, the markers' rows and two chunks in flight (the chunk
    and its product c @ B).
    """
    if not isinstance(subspace, Subspace):
        raise InputError(
            'space="parameters" needs subspace=, the Subspace the grid was swept on; got '
            f"{type(subspace).__name__}"
        )
    if subspace.dim != result.grid.dim:
        raise InputError(
            f"subspace has m={subspace.dim} directions but the grid has m={result.grid.dim}; "
            "pass the subspace the grid was swept on"
        )
    if isinstance(memory_budget, bool) or not isinstance(memory_budget, int) or memory_budget <= 0:
        raise InputError(f"memory_budget must be a positive number of bytes, got {memory_budget!r}")
    row_bytes = subspace.num_params * subspace.center.element_size()
    capacity = memory_budget // row_bytes
    markers = len(result.markers)
    chunk = max(1, min(4096, capacity // 8))
    keep = capacity - 2 * chunk - markers
    if keep < 3:
        need = (3 + 2 + markers) * row_bytes
        raise InputError(
            f"memory_budget={memory_budget} bytes holds {capacity} rows of "
            f"{subspace.num_params} parameters; UMAP needs at least {need} bytes here "
            "(3 points, the markers and a chunk)"
        )
    rows = _subsample(coeffs.shape[0], keep, seed)
    kept = GridResult(
        values=torch.from_numpy(values[rows]).clone(),
        grid=type(result.grid).from_coeffs(torch.from_numpy(coeffs[rows])),
        markers=[],
        metadata={},
    )
    dtype = torch.empty((), dtype=subspace.center.dtype).numpy().dtype
    out = np.empty((rows.shape[0], subspace.num_params), dtype=dtype)
    first = 0
    for part in kept.eps_params(eps, subspace, batch_rows=chunk):
        out[first : first + part.shape[0]] = part.detach().cpu().numpy()
        first += part.shape[0]
        del part
    marker_params = np.empty((0, subspace.num_params), dtype=out.dtype)
    if result.markers:
        coords = torch.stack([m.coords for m in result.markers])
        marker_params = subspace.params(coords).detach().cpu().numpy()
    return out, rows, marker_params, coeffs.shape[0] - rows.shape[0]


def _message_figure(fig: Figure, ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def umap(
    result: GridResult,
    eps: float | None = None,
    *,
    eps_relative: float | None = None,
    space: str = "coefficients",
    subspace: Subspace | None = None,
    seed: int = 0,
    memory_budget: int = 256 << 20,
    n_neighbors: int = 15,
) -> Figure:
    """UMAP (umap-learn, ``random_state=seed``) of the ε-set of an m ≥ 3 grid to 2-D.

    ``space="coefficients"`` embeds the points' coordinates c; ``space="parameters"`` (needs
    ``subspace``) embeds θ₀ + c @ B, built in chunks and never more than ``memory_budget``
    bytes of them: a larger ε-set is subsampled with ``seed`` and the title says so. Points
    are coloured by J (colour bar topped by ε); markers θ0..θm are embedded with the same
    fitted UMAP, drawn on top and named where no two names overlap. An ε-set of fewer
    than 3 points gives a figure that says so.
    """
    result = _check_result(result, "umap")
    eps = result.resolve_eps(eps, eps_relative)
    if space not in SPACES:
        raise InputError(f"space={space!r} is not known; use one of {', '.join(SPACES)}")
    m = result.grid.dim
    if m < 3:
        raise InputError(
            f"umap needs a grid with m >= 3 coefficients per point, got m = {m}; a plane's "
            "own coordinates are already its 2-D picture: use contour or surface"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a non-negative int, got {seed!r}")
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, int) or n_neighbors < 2:
        raise InputError(f"n_neighbors must be an int >= 2, got {n_neighbors!r}")
    coeffs, values, nans = eps_points(result, eps)
    marker_coords = (
        np.stack([mk.coords.numpy() for mk in result.markers])
        if result.markers
        else (np.empty((0, m)))
    )
    notes: list[str] = []
    if space == "parameters":
        data, rows, marker_data, dropped = _parameters(
            result, eps, subspace, coeffs, values, memory_budget, seed
        )
        values = values[rows]
        if dropped:
            notes.append(
                f"subsampled to {rows.shape[0]} of {coeffs.shape[0]} points (seed {seed}) to "
                f"stay within memory_budget={memory_budget} bytes"
            )
    else:
        data, marker_data = coeffs, marker_coords
    fig = _style.new_figure(6.4, 5.2)
    ax = fig.add_subplot()
    norm = _norm(values, eps)
    title = f"UMAP of {space}, " + eps_set_summary(result, eps, coeffs.shape[0], nans)
    count = data.shape[0]
    if count < 3:
        reason = (
            empty_eps_set_reason(result, eps)
            if count == 0
            else f"the ε-set has {count} point{'s' if count > 1 else ''}; UMAP needs at least 3"
        )
        _message_figure(fig, ax, reason)
        ax.set_title(title, fontsize=9)
        _colour_bar(fig, norm, ax)
        _style.fit_titles(fig)
        return fig
    neighbors = min(n_neighbors, count - 1)
    if neighbors < n_neighbors:
        notes.append(f"n_neighbors reduced to {neighbors}")
    import umap as umap_learn  # slow import (numba): only when a UMAP is drawn

    reducer = umap_learn.UMAP(
        n_neighbors=neighbors,
        n_components=2,
        random_state=seed,
        init="spectral" if count > 10 else "random",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        embedding = reducer.fit_transform(np.asarray(data, dtype=np.float64))
        marker_xy = (
            reducer.transform(np.asarray(marker_data, dtype=np.float64))
            if marker_data.shape[0]
            else np.empty((0, 2))
        )
    ax.scatter(
        embedding[:, 0],
        embedding[:, 1],
        c=values,
        cmap=_style.CMAP,
        norm=norm,
        s=6,
        label="ε-set",
        gid="eps_set",
    )
    layer = _style.MarkerLayer(ax)
    for number, marker in enumerate(result.markers):
        layer.add(number, marker.name, marker_xy[number])
    _style.key_below(fig, [ax], ncol=6)
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_title("\n".join([title, *notes]), fontsize=9)
    _colour_bar(fig, norm, ax)
    _style.settle(fig, [layer], names=True)
    return fig
