"""Grids of coefficients on a subspace, the sweep over them, and its result.

A :class:`Grid` is a list of coefficient vectors c ∈ ℝᵐ ([G, m] float64, on the CPU),
either the Cartesian product of m axes (stored in C order, ``indexing="ij"``: the last
axis varies fastest, so row i·n₁ + j of a 2-D grid is (axes[0][i], axes[1][j]), the order
of ``torch.cartesian_prod``) or a plain list of points. :func:`sweep_grid` evaluates
J(θ₀ + c @ B) at every row with :func:`genni_ext.sweep` and returns a :class:`GridResult`:
the values shaped like the grid (``values[i, j]`` at (axes[0][i], axes[1][j])), the
markers θ₀..θₘ, and the metadata that makes the run reproducible.

:func:`grid_metadata` and :func:`grid_markers` are the pieces of ``sweep_grid`` that the
experiment store's resumable sweep shares, and both take the engine from one
:class:`genni_ext.engine.Decision` (the markers' J is computed on it), so that a sweep run
in chunks (here, on a Dask cluster or resumed from the store) yields the same
``GridResult`` as one uninterrupted call.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from genni_ext._validate import (
    INT_DTYPES,
    check_finite,
    device_label,
    positive_int,
    resolve_eps,
)
from genni_ext._version import __version__
from genni_ext.core.subspace import Subspace
from genni_ext.errors import InputError

if TYPE_CHECKING:
    import xarray

    from genni_ext.core.problem import Problem

# A grid larger than this is almost certainly a typo (n and dim swapped, say); its
# coefficients alone would take tens of gigabytes.
_MAX_POINTS = 10**9
VALUES = "J"
"""The name of J in an xarray view and in the store."""


def _is_number(value: object) -> bool:
    """A real number (Python or NumPy scalar), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _real_number(value: object, name: str) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _as_float64(name: str, value: object) -> torch.Tensor:
    """A real tensor or nested sequence of numbers as a float64 CPU tensor (a copy)."""
    if isinstance(value, torch.Tensor):
        if value.layout != torch.strided:
            raise InputError(f"{name} is a {value.layout} tensor; pass a dense one")
        if not (value.is_floating_point() or value.dtype in INT_DTYPES):
            raise InputError(f"{name} has dtype {value.dtype}; pass real numbers")
        if value.device.type == "meta":
            raise InputError(f"{name} is on the meta device and has no values")
        tensor = value.detach().to(device="cpu", dtype=torch.float64)
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        for index, item in enumerate(value):
            if not _is_number(item):
                raise InputError(f"{name}[{index}] must be a number, got {item!r}")
        tensor = torch.tensor([float(item) for item in value], dtype=torch.float64)
    else:
        raise InputError(
            f"{name} must be a tensor or a sequence of numbers, got {type(value).__name__} "
            "(convert an array with torch.as_tensor)"
        )
    check_finite(name, tensor, "every coefficient must be finite")
    return tensor.contiguous().clone()


def _check_size(shape: Sequence[int]) -> None:
    size = math.prod(shape)
    if size > _MAX_POINTS:
        raise InputError(
            f"a grid of shape {tuple(shape)} has {size:.3g} points, more than the "
            f"{_MAX_POINTS:.0e} allowed; use fewer points per axis or fewer dimensions"
        )


def dims(grid: Grid) -> tuple[str, ...]:
    """The dimension names of J: c1..cm for an axis grid, ("point",) for a list."""
    if grid.axes is None:
        return ("point",)
    return tuple(f"c{i + 1}" for i in range(len(grid.axes)))


@dataclass(frozen=True, eq=False)
class Grid:
    """Coefficients c ∈ ℝᵐ to sweep: ``coeffs`` [G, m] float64 (CPU), C order.

    ``shape`` is (n₁, ..., nₘ) for an axis grid and (G,) for a coefficient list; ``axes``
    are the m float64 axes of an axis grid, None for a list. Build one with
    :meth:`uniform`, :meth:`from_axes` or :meth:`from_coeffs`.
    """

    coeffs: torch.Tensor
    shape: tuple[int, ...]
    axes: tuple[torch.Tensor, ...] | None

    def __post_init__(self) -> None:
        coeffs = self.coeffs
        if (
            not isinstance(coeffs, torch.Tensor)
            or coeffs.dtype != torch.float64
            or coeffs.ndim != 2
            or 0 in coeffs.shape
        ):
            raise InputError(
                "Grid.coeffs must be a float64 tensor [G, m] with G, m >= 1; build grids "
                "with Grid.uniform, Grid.from_axes or Grid.from_coeffs"
            )
        shape = tuple(self.shape)
        if not shape or any(isinstance(n, bool) or not isinstance(n, int) for n in shape):
            raise InputError(f"Grid.shape must be a tuple of ints, got {self.shape!r}")
        if math.prod(shape) != coeffs.shape[0]:
            raise InputError(
                f"Grid.shape {shape} has {math.prod(shape)} points but coeffs has "
                f"{coeffs.shape[0]} rows"
            )
        if self.axes is None:
            if len(shape) != 1:
                raise InputError(f"a coefficient-list Grid has shape (G,), got {shape}")
        else:
            axes = tuple(self.axes)
            if len(axes) != coeffs.shape[1] or len(shape) != len(axes):
                raise InputError(
                    f"Grid has {len(axes)} axes and shape {shape} but coeffs has "
                    f"{coeffs.shape[1]} columns; give one axis per column"
                )
            for index, (axis, n) in enumerate(zip(axes, shape, strict=True)):
                if not isinstance(axis, torch.Tensor) or axis.shape != (n,):
                    raise InputError(f"Grid.axes[{index}] must be a tensor of {n} values")
            object.__setattr__(self, "axes", axes)
        object.__setattr__(self, "shape", shape)

    @property
    def dim(self) -> int:
        """m, the number of coefficients per point."""
        return int(self.coeffs.shape[1])

    @property
    def size(self) -> int:
        """G, the number of grid points."""
        return int(self.coeffs.shape[0])

    @classmethod
    def uniform(cls, bound: tuple[float, float], n: int, dim: int) -> Grid:
        """``n`` evenly spaced points on [a, b] per axis, endpoints included, ``dim`` axes.

        ``n`` must be at least 2, the two endpoints: one point cannot span [a, b] (as
        ``torch.linspace`` it would be a alone). For a single value on an axis, use
        :meth:`from_axes`, e.g. ``from_axes([[0.0], torch.linspace(a, b, n)])``.
        """
        if isinstance(bound, (str, bytes)) or not isinstance(bound, Sequence) or len(bound) != 2:
            raise InputError(f"bound must be a pair (a, b) of numbers, got {bound!r}")
        low = _real_number(bound[0], "bound[0]")
        high = _real_number(bound[1], "bound[1]")
        if not low < high:
            raise InputError(f"bound=({low}, {high}) is empty or reversed; pass (a, b) with a < b")
        if not math.isfinite(high - low):
            raise InputError(
                f"bound=({low}, {high}) is too wide: b - a overflows float64; pass a narrower one"
            )
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise InputError(
                f"n must be an int >= 2 (points per axis: the endpoints a and b and n - 2 "
                f"between), got {n!r}; for a single value on an axis use Grid.from_axes"
            )
        dim = positive_int(dim, "dim")
        _check_size((n,) * dim)
        axis = torch.linspace(low, high, n, dtype=torch.float64)
        return cls.from_axes([axis] * dim)

    @classmethod
    def from_axes(cls, axes: Sequence[torch.Tensor | Sequence[float]]) -> Grid:
        """The Cartesian product of ``axes`` (one 1-D tensor or list of numbers per direction).

        Values are used in the order given: they need not be sorted, evenly spaced or
        distinct (but plots that draw surfaces expect increasing axes). Every value must
        be finite; axes are copied to float64. A 2-D tensor [m, n] is read as m axes.
        """
        if isinstance(axes, torch.Tensor):
            if axes.ndim != 2:
                raise InputError(
                    f"axes is a tensor of shape {list(axes.shape)}; pass a list of 1-D axes "
                    "(one per direction; [axis] for a single one) or a 2-D tensor [m, n]"
                )
            axes = list(axes)
        if isinstance(axes, (str, bytes)) or not isinstance(axes, Sequence) or len(axes) == 0:
            raise InputError(
                f"axes must be a non-empty list of 1-D axes (one per direction), got {axes!r}"[:200]
            )
        converted: list[torch.Tensor] = []
        for index, axis in enumerate(axes):
            tensor = _as_float64(f"axes[{index}]", axis)
            if tensor.ndim != 1 or tensor.shape[0] == 0:
                raise InputError(
                    f"axes[{index}] must be a non-empty 1-D list of values, got shape "
                    f"{list(tensor.shape)}"
                )
            converted.append(tensor)
        shape = tuple(int(axis.shape[0]) for axis in converted)
        _check_size(shape)
        mesh = torch.meshgrid(*converted, indexing="ij")
        coeffs = torch.stack([part.reshape(-1) for part in mesh], dim=1).contiguous()
        return cls(coeffs, shape, tuple(converted))

    @classmethod
    def from_coeffs(cls, coeffs: torch.Tensor) -> Grid:
        """A list of coefficient vectors ``coeffs`` [G, m] (copied to float64, shape (G,))."""
        if not isinstance(coeffs, torch.Tensor):
            raise InputError(f"coeffs must be a torch.Tensor [G, m], got {type(coeffs).__name__}")
        tensor = _as_float64("coeffs", coeffs)
        if tensor.ndim != 2 or 0 in tensor.shape:
            raise InputError(
                f"coeffs must have shape [G, m] with G, m >= 1 (one point per row), got "
                f"{list(tensor.shape)}"
            )
        return cls(tensor, (int(tensor.shape[0]),), None)

    def equals(self, other: Grid) -> bool:
        """Same shape, coefficients and axes (torch.equal)."""
        if not isinstance(other, Grid) or self.shape != other.shape:
            return False
        if not torch.equal(self.coeffs, other.coeffs):
            return False
        if self.axes is None or other.axes is None:
            return self.axes is None and other.axes is None
        return all(torch.equal(a, b) for a, b in zip(self.axes, other.axes, strict=True))


@dataclass(frozen=True)
class Marker:
    """A found point on the plane: ``name`` ("θ0" the centre, "θ1".."θm" the points that
    built the subspace), its coordinates [m] float64 and its J.

    Equality compares the coordinates with ``torch.equal`` (the generated dataclass
    ``==`` would ask a tensor for its truth value).
    """

    name: str
    coords: torch.Tensor
    loss: float

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise InputError(f"Marker name must be a str, got {type(self.name).__name__}")
        coords = self.coords
        if (
            not isinstance(coords, torch.Tensor)
            or coords.dtype != torch.float64
            or coords.ndim != 1
        ):
            got = (
                f"{coords.dtype} {list(coords.shape)}"
                if isinstance(coords, torch.Tensor)
                else type(coords).__name__
            )
            raise InputError(
                f"Marker coords must be a float64 tensor [m] (coordinates on the plane), got {got}"
            )
        if not _is_number(self.loss):
            raise InputError(f"Marker loss must be a number (J at the point), got {self.loss!r}")
        object.__setattr__(self, "loss", float(self.loss))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Marker):
            return NotImplemented
        same_loss = self.loss == other.loss or (math.isnan(self.loss) and math.isnan(other.loss))
        return self.name == other.name and same_loss and torch.equal(self.coords, other.coords)

    def __hash__(self) -> int:
        return hash((self.name, self.loss))


def _jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), for comparisons."""
    return json.loads(json.dumps(value))


@dataclass(eq=False)
class GridResult:
    """J on a grid: ``values`` float64 shaped like ``grid.shape`` (C order, axis i along
    direction i), the ``grid``, the ``markers`` θ₀..θₘ and JSON-able ``metadata``."""

    values: torch.Tensor
    grid: Grid
    markers: list[Marker]
    metadata: dict

    def __post_init__(self) -> None:
        if not isinstance(self.grid, Grid):
            raise InputError(f"grid must be a Grid, got {type(self.grid).__name__}")
        if (
            not isinstance(self.values, torch.Tensor)
            or self.values.dtype != torch.float64
            or tuple(self.values.shape) != self.grid.shape
        ):
            got = (
                f"{self.values.dtype} {list(self.values.shape)}"
                if isinstance(self.values, torch.Tensor)
                else type(self.values).__name__
            )
            raise InputError(
                f"values must be a float64 tensor of the grid's shape {list(self.grid.shape)}, "
                f"got {got}"
            )
        if not isinstance(self.markers, list):
            raise InputError(f"markers must be a list of Marker, got {type(self.markers).__name__}")
        for index, marker in enumerate(self.markers):
            if not isinstance(marker, Marker):
                raise InputError(
                    f"markers[{index}] must be a Marker, got {type(marker).__name__}; build them "
                    "with grid_markers(problem, subspace)"
                )
        if not isinstance(self.metadata, dict):
            raise InputError(f"metadata must be a dict, got {type(self.metadata).__name__}")

    @property
    def axes(self) -> tuple[torch.Tensor, ...] | None:
        """The grid's axes (None for a coefficient list)."""
        return self.grid.axes

    def resolve_eps(self, eps: float | None = None, eps_relative: float | None = None) -> float:
        """The absolute ε: ``eps``, or ``eps_relative`` × the constant-function loss of the
        problem the grid was swept for (``metadata["problem"]["constant_loss"]``)."""
        problem = self.metadata.get("problem") if isinstance(self.metadata, dict) else None
        constant = problem.get("constant_loss") if isinstance(problem, dict) else None
        return resolve_eps(eps, eps_relative, constant, "this grid's metadata")

    def eps_mask(
        self, eps: float | None = None, *, eps_relative: float | None = None
    ) -> torch.Tensor:
        """bool, shaped like the grid: where J < ε (``eps``, or ``eps_relative`` × the
        constant-function loss, see :meth:`resolve_eps`)."""
        return self.values < self.resolve_eps(eps, eps_relative)

    def eps_set(
        self, eps: float | None = None, *, eps_relative: float | None = None
    ) -> torch.Tensor:
        """The coefficients [K, m] (float64, grid order) of the points with J < ε."""
        return self.grid.coeffs[self.eps_mask(eps, eps_relative=eps_relative).reshape(-1)]

    def eps_params(
        self, eps: float, subspace: Subspace, *, batch_rows: int = 4096
    ) -> Iterator[torch.Tensor]:
        """The parameters θ₀ + c @ B of the ε-set, in batches of at most ``batch_rows`` rows
        ([k, P], the subspace's dtype and device), in the order of :meth:`eps_set`.

        Arguments are checked when this is called; parameters are computed chunk by chunk
        as the iterator is consumed, so the ε-set of a large net never sits in memory whole.
        """
        coeffs = self.eps_set(eps)
        if not isinstance(subspace, Subspace):
            raise InputError(f"subspace must be a Subspace, got {type(subspace).__name__}")
        if subspace.dim != self.grid.dim:
            raise InputError(
                f"subspace has m={subspace.dim} directions but the grid has {self.grid.dim} "
                "coefficients per point; pass the subspace the grid was swept on"
            )
        batch_rows = positive_int(batch_rows, "batch_rows")

        def chunks() -> Iterator[torch.Tensor]:
            for first in range(0, coeffs.shape[0], batch_rows):
                yield subspace.params(coeffs[first : first + batch_rows])

        return chunks()

    def to_xarray(self) -> xarray.DataArray:
        """J as an ``xarray.DataArray`` named "J": dims c1..cm with the axes as coordinates
        (a coefficient list: dim "point", each coefficient a coordinate along it), the
        metadata in ``attrs["genni_metadata"]``."""

        return data_array(self.values, self.grid, self.metadata)

    def equals(self, other: GridResult) -> bool:
        """Same values (torch.equal), grid, markers and metadata (compared as JSON)."""
        return (
            isinstance(other, GridResult)
            and torch.equal(self.values, other.values)
            and self.grid.equals(other.grid)
            and list(self.markers) == list(other.markers)
            and _jsonable(self.metadata) == _jsonable(other.metadata)
        )


def check_problem(problem: object) -> None:
    for attribute in ("model", "theta", "inputs", "targets", "loss", "describe"):
        if not hasattr(problem, attribute):
            raise InputError(
                f"problem must be a genni_ext.Problem, got {type(problem).__name__} "
                f"without .{attribute}"
            )


def grid_metadata(
    problem: Problem, grid: Grid, *, backend: str, wall_time_s: float, precision: str = "full"
) -> dict:
    """The JSON-able metadata of a sweep of ``problem`` over ``grid``.

    Keys: backend (``Decision.backend``: "fused-cpu", "fused-cuda" or "torch"), dtype,
    precision ("full" or "tf32"), device, seeds, theta_hash, probes_hash, version,
    wall_time_s, problem (``problem.describe()``), grid_shape, m.
    """

    check_problem(problem)
    if not isinstance(grid, Grid):
        raise InputError(f"grid must be a Grid, got {type(grid).__name__}")
    return {
        "backend": str(backend),
        "dtype": str(problem.theta.dtype).removeprefix("torch."),
        "precision": precision,
        "device": device_label(problem.inputs.device),
        "seeds": {"problem": int(problem.seed)},
        "theta_hash": problem.theta_hash,
        "probes_hash": problem.probes_hash,
        "version": __version__,
        "wall_time_s": float(wall_time_s),
        "problem": problem.describe(),
        "grid_shape": list(grid.shape),
        "m": grid.dim,
    }


def grid_markers(
    problem: Problem, subspace: Subspace, losses: torch.Tensor | None = None
) -> list[Marker]:
    """Markers "θ0" (the centre, coordinates 0) and "θ1".."θm" (the subspace's points),
    with their coordinates on the plane and J: ``losses`` ([m + 1], J at θ0..θm as the
    sweep's engine computed it) where given, else ``problem.loss``."""
    check_problem(problem)
    if not isinstance(subspace, Subspace):
        raise InputError(f"subspace must be a Subspace, got {type(subspace).__name__}")
    points = torch.cat([subspace.center[None], subspace.points])
    if losses is None:
        losses = problem.loss(points.to(dtype=problem.theta.dtype, device=problem.theta.device))
    elif tuple(losses.shape) != (points.shape[0],):
        raise InputError(
            f"losses has shape {list(losses.shape)}; pass J at the {points.shape[0]} markers"
        )
    coords = subspace.coordinates(points).cpu()
    return [
        Marker(f"θ{index}", coords[index].clone(), float(losses[index]))
        for index in range(points.shape[0])
    ]


def check_match(problem: Problem, subspace: Subspace, grid: Grid) -> None:
    """Raise InputError unless the subspace and grid fit the problem (types, m, P, dtype,
    and the problem the subspace's points solve, where the subspace records it)."""
    if not isinstance(subspace, Subspace):
        raise InputError(f"subspace must be a Subspace, got {type(subspace).__name__}")
    if not isinstance(grid, Grid):
        raise InputError(f"grid must be a Grid, got {type(grid).__name__}")
    if grid.dim != subspace.dim:
        raise InputError(
            f"grid has {grid.dim} coefficients per point but the subspace has m={subspace.dim} "
            "directions; build the grid with dim=subspace.dim"
        )
    theta = problem.theta
    if subspace.num_params != theta.numel():
        raise InputError(
            f"subspace lives in a space of {subspace.num_params} parameters but the problem's "
            f"model has {theta.numel()}; build the subspace from this problem's parameters"
        )
    center = subspace.center
    if center.dtype != theta.dtype or center.device != problem.inputs.device:
        raise InputError(
            f"subspace is {center.dtype} on {center.device} but the problem is {theta.dtype} "
            f"on {problem.inputs.device}; build the subspace from points of the problem's "
            "dtype and device"
        )
    for name, recorded in (
        ("theta_hash", subspace.theta_hash),
        ("probes_hash", subspace.probes_hash),
    ):
        if recorded is not None and recorded != getattr(problem, name):
            what = "θ" if name == "theta_hash" else "probe set"
            raise InputError(
                f"the subspace was built from a search of another problem: its {name} is "
                f"{recorded} but this problem's is {getattr(problem, name)} (another {what}); "
                "sweep it with the problem the search ran on, or, to sweep the plane on this "
                "problem on purpose, pass dataclasses.replace(subspace, theta_hash=None, "
                "probes_hash=None)"
            )


def data_array(values: torch.Tensor, grid: Grid, metadata: dict[str, Any]) -> xarray.DataArray:
    """J as an xarray DataArray: dims c1..cm (or "point"), coordinates from the grid."""
    import xarray

    names = dims(grid)
    coordinates: dict[str, Any] = {}
    for index in range(grid.dim):
        name = f"c{index + 1}"
        if grid.axes is None:
            coordinates[name] = ("point", grid.coeffs[:, index].numpy())
        else:
            coordinates[name] = (name, grid.axes[index].numpy())
    return xarray.DataArray(
        values.detach().cpu().numpy(),
        dims=names,
        coords=coordinates,
        name=VALUES,
        attrs={"genni_metadata": metadata},
    )
