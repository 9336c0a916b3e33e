"""Passes on a swept grid: how high J must rise on the way from one found point to another.

The pass between two grid points is the lowest J at which a path of grid points joins them,
the path's value being the highest J on it (its points included): minimax over every grid
path, with neighbours as in :mod:`genni_ext.analysis.persistence` (8 in 2-D, 26 in 3-D, points
sharing a corner). It is read off the sublevel merge tree: grid points are added in order of
J, each joined to its neighbours added before it, and two points are joined at the J of the
point whose addition first puts them in one component. Two points are joined below ε exactly
when they lie in one component of the grid's ε-set.

What is computed is a property of the grid: a pass narrower than a cell can be missed (the
grid sees a barrier that is not there between its points, or misses one between them), so a
pass height, like a Betti number, is worth checking at twice the resolution.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from genni_ext.analysis.persistence import nearest_grid_index
from genni_ext.core.grid import GridResult
from genni_ext.errors import InputError


@dataclass(frozen=True)
class Passes:
    """The lowest pass between every pair of named points on a grid.

    ``points``: name → grid index of each point (the found points by their marker names, at
    their nearest grid point; the grid's local minima that hold no marker as "min@c1,c2,...");
    ``heights``: (name, name) → pass height (J), for every pair in ``points`` order, with
    ``inf`` where no path of finite J joins them; ``eps``: the level ``joined`` refers to.
    """

    points: dict[str, tuple[int, ...]]
    heights: dict[tuple[str, str], float]
    eps: float

    def height(self, a: str, b: str) -> float:
        """The pass between the points ``a`` and ``b``, in either order."""
        if a == b:
            raise InputError(f"{a!r} is one point; ask for the pass between two")
        return self.heights[(a, b)] if (a, b) in self.heights else self.heights[(b, a)]

    def joined(self) -> list[tuple[str, str]]:
        """The pairs joined by a grid path that stays below ε (J < ε at every point)."""
        return [pair for pair, height in self.heights.items() if height < self.eps]

    def summary(self) -> str:
        """One sentence per pair of found points: the pass height, relative to ε."""
        lines = [
            f"{a}–{b}: pass at J = {height:.3g} ({height / self.eps:.3g} ε)"
            + (", joined below ε" if height < self.eps else "")
            for (a, b), height in self.heights.items()
        ]
        return (
            f"Lowest passes on the grid between {len(self.points)} points (minimax J over "
            "grid paths, corner neighbours): " + "; ".join(lines) + "."
            if lines
            else "Fewer than two points on the grid: no passes."
        )


def _neighbour_offsets(ndim: int) -> np.ndarray:
    """Every step to a grid point sharing a corner: 3^ndim − 1 of them."""
    steps = [s for s in itertools.product((-1, 0, 1), repeat=ndim) if any(s)]
    return np.array(steps, dtype=np.int64)


def _find(parent: np.ndarray, item: int) -> int:
    root = item
    while parent[root] != root:
        root = parent[root]
    while parent[item] != root:  # path compression
        parent[item], item = root, parent[item]
    return root


def minimax_heights(values: np.ndarray, sources: Sequence[tuple[int, ...]]) -> np.ndarray:
    """[k, k] pass heights between the grid points ``sources`` on the field ``values``
    (2-D or 3-D; NaN counts as +inf, never on a path below it)."""
    field = np.where(np.isnan(values), np.inf, values).astype(np.float64)
    shape = field.shape
    flat = field.ravel()
    count = len(sources)
    heights = np.full((count, count), np.inf)
    if count == 0:
        return heights
    where = {int(np.ravel_multi_index(index, shape)): [] for index in sources}
    for k, index in enumerate(sources):
        where[int(np.ravel_multi_index(index, shape))].append(k)
    parent = np.arange(flat.size)
    holds: dict[int, set[int]] = {}  # component root -> the sources in it
    added = np.zeros(flat.size, dtype=bool)
    offsets = _neighbour_offsets(len(shape))
    order = np.argsort(flat, kind="stable")
    coords = np.array(np.unravel_index(order, shape)).T
    remaining = count * (count - 1) // 2
    for point, position in zip(order.tolist(), coords, strict=True):
        level = flat[point]
        if not np.isfinite(level) or remaining == 0:
            break
        added[point] = True
        mine = set(where.get(point, ()))
        for a, b in itertools.combinations(sorted(mine), 2):  # sources at one grid point
            heights[a, b] = heights[b, a] = level
            remaining -= 1
        holds[point] = mine
        neighbours = position + offsets
        inside = np.all((neighbours >= 0) & (neighbours < shape), axis=1)
        for neighbour in np.ravel_multi_index(neighbours[inside].T, shape).tolist():
            if not added[neighbour]:
                continue
            root, other = _find(parent, point), _find(parent, neighbour)
            if root == other:
                continue
            for a in holds[root]:
                for b in holds[other]:
                    heights[a, b] = heights[b, a] = level
                    remaining -= 1
            parent[other] = root
            holds[root] |= holds.pop(other)
    for k in range(count):
        heights[k, k] = flat[int(np.ravel_multi_index(sources[k], shape))]
    return heights


def _local_minima(field: np.ndarray) -> list[tuple[int, ...]]:
    """Grid points with J below that of every corner neighbour (finite J only; a flat
    stretch of equal J holds none)."""
    padded = np.pad(np.where(np.isnan(field), np.inf, field), 1, constant_values=np.inf)
    core = tuple(slice(1, -1) for _ in field.shape)
    lowest = np.isfinite(padded[core])
    for step in _neighbour_offsets(field.ndim):
        shifted = tuple(slice(1 + s, padded.shape[d] - 1 + s) for d, s in enumerate(step))
        lowest &= padded[core] < padded[shifted]
    return [tuple(int(i) for i in index) for index in np.argwhere(lowest)]


def _coordinate(axis: np.ndarray, index: int) -> str:
    """``axis[index]`` to 3 digits, with round-off next to 0 (linspace's -1e-16) as 0."""
    value = float(axis[index])
    return f"{0.0 if abs(value) < 1e-9 * float(np.abs(axis).max()) else value:.3g}"


def lowest_passes(result: GridResult, eps: float, *, minima: bool = True) -> Passes:
    """The lowest pass between every pair of the grid's found points (markers) and, with
    ``minima``, its local minima that hold no marker; ``eps`` is the level of
    :meth:`Passes.joined`. A 2-D or 3-D axis grid only."""
    if not isinstance(result, GridResult):
        raise InputError(f"result must be a GridResult, got {type(result).__name__}")
    if result.grid.axes is None or result.grid.dim not in (2, 3):
        raise InputError("passes needs a 2-D or 3-D grid with axes (Grid.uniform or from_axes)")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise InputError(f"eps must be a positive number, got {eps!r}")
    axes = [axis.detach().cpu().double().numpy() for axis in result.grid.axes]
    field = result.values.detach().cpu().double().numpy()
    points: dict[str, tuple[int, ...]] = {}
    for marker in result.markers:
        coords = marker.coords.detach().to(device="cpu", dtype=torch.float64).reshape(-1)
        index = nearest_grid_index(coords.tolist(), axes)
        if index is not None:
            points[marker.name] = index
    if minima:
        taken = set(points.values())
        for index in _local_minima(field):
            if index not in taken:
                name = "min@" + ",".join(_coordinate(axes[d], i) for d, i in enumerate(index))
                points[name] = index
    names = list(points)
    table = minimax_heights(field, [points[name] for name in names])
    heights = {
        (a, b): float(table[i, j]) for (i, a), (j, b) in itertools.combinations(enumerate(names), 2)
    }
    return Passes(points=points, heights=heights, eps=float(eps))


__all__ = ["Passes", "lowest_passes", "minimax_heights"]
