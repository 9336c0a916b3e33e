"""Topology of the ε-set {J < ε}: Betti numbers, persistence, components, and whether the
numbers survive a finer grid.

A sweep samples J on a grid; the ε-set's topology is read off that sample, so a coarse
grid can break a thin set into pieces or open tunnels that the exact set does not have
(a 50³ grid showed 24 tunnels where the exact set has 1). :func:`topology` therefore
reports its numbers together with a resolution check: the caller's own sweep of a grid
with twice the resolution, and whether the Betti numbers are unchanged there. Unchanged
at 2× resolution is not the same as correct: a feature smaller than a cell of the finer
grid (a pinhole, a thread thinner than the step) is invisible at both resolutions.

Adjacency convention, used everywhere in this module: each grid value is a closed
top-dimensional cell of a cubical complex (gudhi's ``CubicalComplex`` with
``top_dimensional_cells``), and the ε-set is the union of the closed cells with J < ε. Two
grid points in the set are connected when their cells share anything, a corner included:
8-connectivity in 2-D, 26-connectivity in 3-D. A hole (2-D), tunnel or cavity (3-D) is a
region outside the set enclosed by it. The comparison is strict: a point with J == ε is
outside. The sublevel filtration of J (cells entering at their value) has the ε-set as
its stage just below ε, so an interval [birth, death) counts at ε when
birth < ε <= death; :attr:`Topology.betti_curve` counts that way from one persistence
computation.

gudhi is optional (``pip install "genni_ext[topology]"``) and imported only when needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Real

import numpy as np
import torch
from scipy import ndimage

from genni_ext._validate import positive_int, positive_number
from genni_ext.core.grid import Grid, GridResult, Marker
from genni_ext.errors import BackendUnavailableError, InputError

SUPPORTED_DIMS = (2, 3)
DEFAULT_CURVE_POINTS = 60
DEFAULT_MAX_REFINED_POINTS = 2_000_000
UNSEEN = "a resolution check cannot see features smaller than a cell of the finer grid"
"""What "unchanged at 2× resolution" does not rule out, said wherever the check is."""
# (singular, plural) names of the features counted by β0, β1, β2 of a set in ℝ² or ℝ³.
FEATURE_NAMES = {
    2: (("component", "components"), ("hole", "holes")),
    3: (("component", "components"), ("tunnel", "tunnels"), ("cavity", "cavities")),
}


@dataclass(frozen=True)
class ResolutionCheck:
    """Whether the ε-set's Betti numbers are unchanged on a grid with twice the resolution.

    ``checked`` is False when no finer sweep was run (``reason`` says why). Otherwise
    ``shape`` is the refined grid's shape, ``betti_coarse`` and ``betti_refined`` the
    Betti numbers of the compared region (the whole grid, or the box ``box`` around the
    largest component: one ``(first, last)`` index pair per axis, inclusive) at the
    grid's and at the refined resolution, ``unchanged`` whether they are equal, and
    ``reason`` what was compared. Equal numbers do not make them correct: neither grid sees
    features smaller than its cells (see :data:`UNSEEN`).
    """

    checked: bool
    shape: tuple[int, ...] | None
    betti_coarse: tuple[int, ...] | None
    betti_refined: tuple[int, ...] | None
    unchanged: bool | None
    box: tuple[tuple[int, int], ...] | None
    reason: str


@dataclass(frozen=True, eq=False)
class Topology:
    """The topology of the ε-set {J < ``eps``} of a grid of shape ``shape``.

    - ``betti``: (β0, β1) in 2-D, (β0, β1, β2) in 3-D, as :func:`betti` gives.
    - ``persistence``: (dimension, birth, death) of every interval of the sublevel
      filtration of J (death ``math.inf`` for the one component that never dies),
      sorted by dimension, birth and death.
    - ``betti_curve``: (ε values [K], Betti numbers [K, dims] int) from ``persistence``.
    - ``labels``: int, shaped like the grid: 0 outside the ε-set, 1..β0 the components
      numbered by decreasing size; ``component_sizes`` their numbers of grid points.
    - ``marker_components``: marker name -> label of its nearest grid point (0 when that
      point is outside the set or the marker lies beyond the grid's bounds).
    - ``resolution``: the :class:`ResolutionCheck`.
    """

    eps: float
    shape: tuple[int, ...]
    betti: tuple[int, ...]
    persistence: list[tuple[int, float, float]]
    betti_curve: tuple[np.ndarray, np.ndarray]
    labels: np.ndarray
    component_sizes: list[int]
    marker_components: dict[str, int]
    resolution: ResolutionCheck

    def summary(self) -> str:
        """One or two plain sentences for a report: the counts, and whether they were
        unchanged on a grid twice as fine (never "correct": see :data:`UNSEEN`)."""
        dims = len(self.shape)
        opening = (
            f"ε-set (J < {self.eps:g}) on the {_shape_text(self.shape)} grid: "
            f"{_counts_text(self.betti, dims, self.component_sizes)}"
        )
        check = self.resolution
        if not check.checked:
            return f"{opening}; resolution not checked ({check.reason})."
        coarse_shape = self.shape
        region = ""
        if check.box is not None:
            coarse_shape = tuple(last - first + 1 for first, last in check.box)
            region = (
                f"; in the box around the largest component ({_shape_text(coarse_shape)} "
                f"points: {_counts_text(check.betti_coarse, dims)})"
            )
        refined = (
            f"{region}; refined to {_shape_text(check.shape)}: "
            f"{_counts_text(check.betti_refined, dims)}"
        )
        if check.unchanged:
            return f"{opening}{refined}: unchanged at 2× resolution ({UNSEEN})."
        changes = "; ".join(
            f"{_count_text(coarse, names)} at {_shape_text(coarse_shape)}, "
            f"{fine} at {_shape_text(check.shape)}"
            for coarse, fine, names in zip(
                check.betti_coarse, check.betti_refined, FEATURE_NAMES[dims], strict=True
            )
            if coarse != fine
        )
        return (
            f"{opening}{refined}: changed at 2× resolution: {changes}; these numbers are grid "
            "artefacts, not facts: refine further before reporting them."
        )


def betti(values: torch.Tensor | np.ndarray, eps: float) -> tuple[int, ...]:
    """Betti numbers of {J < ``eps``}: (β0, β1) for a 2-D array, (β0, β1, β2) for 3-D.

    ``values`` is J on a grid (torch tensor or numpy array, finite, at least 2 points per
    axis). Grid points are closed cells that touch their corner neighbours
    (8-connectivity in 2-D, 26 in 3-D); a point with J == ``eps`` is outside. Needs gudhi.
    """
    field = _finite_field(values, "values")
    return _mask_betti(field < positive_number(eps, "eps"))


def topology(
    result: GridResult,
    eps: float,
    *,
    eps_range: Sequence[float] | np.ndarray | torch.Tensor | None = None,
    sweep_refined: Callable[[Grid], GridResult] | None = None,
    max_refined_points: int = DEFAULT_MAX_REFINED_POINTS,
) -> Topology:
    """The topology of the ε-set of a 2-D or 3-D axis grid, with a resolution check.

    ``eps_range``: the ε values of the Betti curve (default: 60 log-spaced from the
    grid's smallest positive J to its largest); ``eps`` is always added.

    ``sweep_refined(grid) -> GridResult`` runs the caller's sweep on the grid it is
    given (this analysis never sweeps by itself). That grid has the same bounds and
    2n − 1 points per axis (the old points and the midpoints); if it would have more
    than ``max_refined_points`` points, it covers instead the box around the largest
    component (one grid step of margin) at twice the resolution, and only the ε-set in
    that box is compared. Without ``sweep_refined`` the resolution is not checked.
    Axes must be strictly increasing; they need not be evenly spaced. Needs gudhi.
    """
    if not isinstance(result, GridResult):
        raise InputError(f"result must be a GridResult, got {type(result).__name__}")
    axes = _grid_axes(result.grid)
    eps = positive_number(eps, "eps")
    curve_eps = _curve_eps(eps_range, eps)
    if sweep_refined is not None and not callable(sweep_refined):
        raise InputError(
            "sweep_refined must be a callable (Grid) -> GridResult, got "
            f"{type(sweep_refined).__name__}"
        )
    max_refined_points = positive_int(max_refined_points, "max_refined_points")
    field = _finite_field(result.values, "result.values")
    if curve_eps is None:
        curve_eps = _default_curve_eps(field, eps)

    mask = field < eps
    betti_numbers = _mask_betti(mask)
    intervals = _sublevel_persistence(field)
    labels, sizes = _components(mask)
    if sweep_refined is None:
        resolution = _not_checked("pass sweep_refined to check")
    else:
        resolution = _check_resolution(
            field, eps, axes, labels, betti_numbers, sweep_refined, max_refined_points
        )
    return Topology(
        eps=eps,
        shape=tuple(field.shape),
        betti=betti_numbers,
        persistence=intervals,
        betti_curve=(curve_eps, _betti_curve(intervals, field.ndim, curve_eps)),
        labels=labels,
        component_sizes=sizes,
        marker_components=_marker_components(result.markers, axes, labels),
        resolution=resolution,
    )


def _cubical_persistence(cells: np.ndarray) -> object:
    """gudhi's CubicalComplex of ``cells`` (top-dimensional values), persistence computed."""
    try:
        import gudhi
    except ImportError as error:
        raise BackendUnavailableError(
            "the topology of the ε-set needs gudhi, which is not installed; "
            'install it with pip install "genni_ext[topology]"'
        ) from error
    complex_ = gudhi.CubicalComplex(top_dimensional_cells=cells)
    complex_.compute_persistence()
    return complex_


def _finite_field(values: object, name: str) -> np.ndarray:
    """``values`` as a float64 numpy array: 2-D or 3-D, >= 2 points per axis, finite."""
    if isinstance(values, torch.Tensor):
        if values.is_complex() or values.dtype == torch.bool:
            raise InputError(f"{name} has dtype {values.dtype}; pass real values of J")
        if values.device.type == "meta":
            raise InputError(f"{name} is on the meta device and has no values")
        field = values.detach().to(device="cpu", dtype=torch.float64).numpy()
    elif isinstance(values, np.ndarray):
        if values.dtype.kind not in "iuf":
            raise InputError(f"{name} has dtype {values.dtype}; pass real values of J")
        field = values.astype(np.float64)
    else:
        raise InputError(
            f"{name} must be a torch tensor or numpy array of J, got {type(values).__name__}"
        )
    if field.ndim == 1:
        raise InputError(
            f"{name} is 1-D: the ε-set of a 1-D grid is a union of intervals with no holes, "
            "so there is no interesting topology; count its intervals with "
            "scipy.ndimage.label, or pass a 2-D or 3-D grid"
        )
    if field.ndim not in SUPPORTED_DIMS:
        raise InputError(
            f"{name} has {field.ndim} dimensions, shape {list(field.shape)}; pass J on a 2-D "
            "or 3-D grid"
        )
    if min(field.shape) < 2:
        raise InputError(
            f"{name} has shape {list(field.shape)}; every axis needs at least 2 points"
        )
    finite = np.isfinite(field)
    if not finite.all():
        nans = int(np.isnan(field).sum())
        infs = int(field.size - finite.sum()) - nans
        raise InputError(
            f"{name} has {nans} NaN and {infs} infinite values out of {field.size}; the sweep "
            "must be finite everywhere (rerun it in float64, or on smaller bounds)"
        )
    return field


def _grid_axes(grid: Grid) -> tuple[np.ndarray, ...]:
    """The axes of a 2-D or 3-D axis grid as numpy arrays, each strictly increasing."""
    if grid.axes is None:
        raise InputError(
            f"result's grid is a list of {grid.size} coefficient vectors without axes; "
            "topology needs a 2-D or 3-D axis grid (Grid.uniform or Grid.from_axes)"
        )
    if grid.dim not in SUPPORTED_DIMS:
        raise InputError(
            f"result's grid has {grid.dim} axes; topology needs a 2-D or 3-D grid (for more "
            "dimensions, sweep a 2-D or 3-D slice)"
        )
    axes = tuple(axis.numpy() for axis in grid.axes)
    for index, axis in enumerate(axes):
        if axis.shape[0] >= 2 and not bool(np.all(np.diff(axis) > 0)):
            raise InputError(
                f"axis {index} of result's grid is not strictly increasing, so neighbouring "
                "values are not neighbours in the plane; sweep a grid with sorted axes"
            )
    return axes


def _curve_eps(eps_range: object, eps: float) -> np.ndarray | None:
    """The sorted, distinct ε values of the Betti curve (``eps`` added); None for default."""
    if eps_range is None:
        return None
    if isinstance(eps_range, (torch.Tensor, np.ndarray)):
        array = (
            eps_range.detach().cpu().numpy() if isinstance(eps_range, torch.Tensor) else eps_range
        )
        if array.dtype.kind not in "iuf":
            raise InputError(f"eps_range has dtype {array.dtype}; pass positive numbers")
        values = array.astype(np.float64)
    elif isinstance(eps_range, Sequence) and not isinstance(eps_range, (str, bytes)):
        if any(isinstance(item, bool) or not isinstance(item, Real) for item in eps_range):
            raise InputError(f"eps_range must hold numbers only, got {list(eps_range)!r}"[:200])
        values = np.asarray(eps_range, dtype=np.float64)
    else:
        raise InputError(
            f"eps_range must be a sequence of positive numbers, got {type(eps_range).__name__}"
        )
    if values.ndim != 1 or values.size == 0:
        raise InputError(f"eps_range must be a non-empty 1-D list, got shape {list(values.shape)}")
    if not bool(np.all(np.isfinite(values) & (values > 0))):
        raise InputError("eps_range must hold positive finite numbers only")
    return np.unique(np.append(values, eps))


def _default_curve_eps(field: np.ndarray, eps: float) -> np.ndarray:
    """60 values log-spaced from the smallest positive J to the largest, plus ``eps``."""
    positive = field[field > 0]
    if positive.size == 0:
        return np.array([eps])
    spread = np.geomspace(positive.min(), positive.max(), DEFAULT_CURVE_POINTS)
    return np.unique(np.append(spread, eps))


def _mask_betti(mask: np.ndarray) -> tuple[int, ...]:
    """Betti numbers of the union of the closed cells where ``mask`` is True."""
    dims = mask.ndim
    if not mask.any():
        return (0,) * dims
    # Cells outside the set add nothing to the union: only its bounding box is needed.
    box = []
    for axis in range(dims):
        others = tuple(other for other in range(dims) if other != axis)
        occupied = np.flatnonzero(mask.any(axis=others))
        box.append(slice(int(occupied[0]), int(occupied[-1]) + 1))
    cells = np.where(mask[tuple(box)], 0.0, 1.0)
    numbers = _cubical_persistence(cells).persistent_betti_numbers(0.0, 0.0)
    return tuple(int(number) for number in numbers[:dims])


def _sublevel_persistence(field: np.ndarray) -> list[tuple[int, float, float]]:
    """(dimension, birth, death) of the sublevel filtration of ``field``, sorted."""
    complex_ = _cubical_persistence(field)
    intervals = [
        (dim, float(birth), float(death))
        for dim in range(field.ndim)
        for birth, death in complex_.persistence_intervals_in_dimension(dim)
    ]
    return sorted(intervals)


def _betti_curve(
    intervals: list[tuple[int, float, float]], dims: int, eps_values: np.ndarray
) -> np.ndarray:
    """β_k(ε) = #{intervals of dimension k with birth < ε <= death}, [K, dims] int."""
    curve = np.zeros((eps_values.size, dims), dtype=np.int64)
    for dim in range(dims):
        births = np.sort([birth for k, birth, _ in intervals if k == dim])
        deaths = np.sort([death for k, _, death in intervals if k == dim])
        # Every interval that died before ε was also born before it.
        curve[:, dim] = np.searchsorted(births, eps_values, side="left") - np.searchsorted(
            deaths, eps_values, side="left"
        )
    return curve


def _components(mask: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Labels (0 outside, 1.. by decreasing size, corner neighbours connected) and sizes."""
    structure = np.ones((3,) * mask.ndim, dtype=bool)
    raw, count = ndimage.label(mask, structure=structure)
    sizes = np.bincount(raw.ravel(), minlength=count + 1)[1:]
    order = np.argsort(-sizes, kind="stable")
    relabel = np.zeros(count + 1, dtype=raw.dtype)
    relabel[order + 1] = np.arange(1, count + 1, dtype=raw.dtype)
    return relabel[raw], [int(size) for size in sizes[order]]


def _marker_components(
    markers: Sequence[Marker], axes: tuple[np.ndarray, ...], labels: np.ndarray
) -> dict[str, int]:
    """Component label at each marker's nearest grid point (0 beyond the grid's bounds)."""
    found: dict[str, int] = {}
    for marker in markers:
        coords = marker.coords.detach().to(device="cpu", dtype=torch.float64).reshape(-1)
        if coords.shape[0] != len(axes) or not bool(torch.isfinite(coords).all()):
            raise InputError(
                f"marker {marker.name!r} has coordinates {coords.tolist()}; a marker of a "
                f"{len(axes)}-D grid needs {len(axes)} finite coordinates"
            )
        index = nearest_grid_index(coords.tolist(), axes)
        found[marker.name] = int(labels[index]) if index is not None else 0
    return found


def nearest_grid_index(
    coords: Sequence[float], axes: Sequence[np.ndarray]
) -> tuple[int, ...] | None:
    """The grid index nearest ``coords`` (None when they lie beyond the grid by over half a
    cell on some axis)."""
    index = []
    for axis, value in zip(axes, coords, strict=True):
        below = axis[0] - (axis[1] - axis[0]) / 2
        above = axis[-1] + (axis[-1] - axis[-2]) / 2
        if not below <= value <= above:
            return None
        index.append(int(np.argmin(np.abs(axis - value))))
    return tuple(index)


def _refined_axis(axis: np.ndarray) -> torch.Tensor:
    """The points of ``axis`` and the midpoints between them: 2n − 1 values."""
    refined = np.empty(2 * axis.shape[0] - 1)
    refined[::2] = axis
    refined[1::2] = (axis[:-1] + axis[1:]) / 2
    return torch.from_numpy(refined)


def _check_resolution(
    field: np.ndarray,
    eps: float,
    axes: tuple[np.ndarray, ...],
    labels: np.ndarray,
    betti_numbers: tuple[int, ...],
    sweep_refined: Callable[[Grid], GridResult],
    max_refined_points: int,
) -> ResolutionCheck:
    """Sweep the refined grid (or the largest component's box) and compare Betti numbers."""
    full_points = math.prod(2 * n - 1 for n in field.shape)
    limit = f"max_refined_points={max_refined_points:,}"
    if full_points <= max_refined_points:
        grid = Grid.from_axes([_refined_axis(axis) for axis in axes])
        refined = _betti_of_sweep(sweep_refined, grid, eps)
        reason = (
            f"compared the ε-set on the {_shape_text(field.shape)} grid with the same bounds "
            f"at {_shape_text(grid.shape)} (the old points and the midpoints)"
        )
        return ResolutionCheck(
            checked=True,
            shape=grid.shape,
            betti_coarse=betti_numbers,
            betti_refined=refined,
            unchanged=refined == betti_numbers,
            box=None,
            reason=reason,
        )
    too_big = f"the refined grid would have {full_points:,} points, more than {limit}"
    if not labels.any():
        return _not_checked(
            f"{too_big}, and the ε-set is empty on this grid, so there is no component "
            "whose box could be refined instead; raise max_refined_points to check",
        )
    where = np.nonzero(labels == 1)
    box = tuple(
        (max(int(index.min()) - 1, 0), min(int(index.max()) + 1, n - 1))
        for index, n in zip(where, field.shape, strict=True)
    )
    box_points = math.prod(2 * (last - first) + 1 for first, last in box)
    if box_points > max_refined_points:
        return _not_checked(
            f"{too_big}, and even the box around the largest component refined would have "
            f"{box_points:,}; raise max_refined_points to check",
        )
    grid = Grid.from_axes(
        [
            _refined_axis(axis[first : last + 1])
            for axis, (first, last) in zip(axes, box, strict=True)
        ]
    )
    coarse = _mask_betti(field[tuple(slice(first, last + 1) for first, last in box)] < eps)
    refined = _betti_of_sweep(sweep_refined, grid, eps)
    indices = " × ".join(f"[{first}, {last}]" for first, last in box)
    reason = (
        f"{too_big}; compared instead the ε-set inside the box around the largest component "
        f"(indices {indices}, one grid step of margin) at the grid's resolution and at twice "
        f"it, {_shape_text(grid.shape)}; other components were not checked"
    )
    return ResolutionCheck(
        checked=True,
        shape=grid.shape,
        betti_coarse=coarse,
        betti_refined=refined,
        unchanged=refined == coarse,
        box=box,
        reason=reason,
    )


def _not_checked(reason: str) -> ResolutionCheck:
    return ResolutionCheck(
        checked=False,
        shape=None,
        betti_coarse=None,
        betti_refined=None,
        unchanged=None,
        box=None,
        reason=reason,
    )


def _betti_of_sweep(
    sweep_refined: Callable[[Grid], GridResult], grid: Grid, eps: float
) -> tuple[int, ...]:
    """Betti numbers of the ε-set of ``sweep_refined(grid)``, after checking it swept ``grid``."""
    swept = sweep_refined(grid)
    if not isinstance(swept, GridResult):
        raise InputError(
            f"sweep_refined returned {type(swept).__name__}; it must return the GridResult of "
            "a sweep of the grid it is given"
        )
    if not swept.grid.equals(grid):
        raise InputError(
            f"sweep_refined returned the result of a grid of shape {list(swept.grid.shape)}, "
            f"not of the grid it was given (shape {list(grid.shape)}: the old points and the "
            "midpoints between them); sweep exactly that grid"
        )
    return _mask_betti(_finite_field(swept.values, "the refined sweep's values") < eps)


def _shape_text(shape: Sequence[int]) -> str:
    return "×".join(str(n) for n in shape)


def _count_text(count: int, names: tuple[str, str]) -> str:
    return f"{count:,} {names[0] if count == 1 else names[1]}"


def _counts_text(
    numbers: Sequence[int], dims: int, component_sizes: Sequence[int] | None = None
) -> str:
    """The counts in words, e.g. "2 components (3,120 and 410 points), 0 holes"."""
    parts = [
        _count_text(count, names) for count, names in zip(numbers, FEATURE_NAMES[dims], strict=True)
    ]
    if component_sizes:
        if len(component_sizes) <= 2:
            sizes = " and ".join(f"{size:,}" for size in component_sizes) + " points"
        else:
            sizes = f"{component_sizes[0]:,} points in the largest, {sum(component_sizes):,} in all"
        parts[0] += f" ({sizes})"
    return ", ".join(parts)
