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
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from genni_ext.analysis.persistence import nearest_grid_index
from genni_ext.core.grid import GridResult
from genni_ext.errors import InputError

MAX_MINIMA = 8
"""Local minima without a found point kept as pass endpoints (the lowest ones): the pairs
grow as the square of the points, and a rough grid has many shallow minima."""


@dataclass(frozen=True)
class Passes:
    """The lowest pass between every pair of named points on a grid.

    ``points``: name → grid index of each point (the found points by their marker names, at
    their nearest grid point; then up to :data:`MAX_MINIMA` of the grid's lowest local minima
    that hold no marker, as "min@c1,c2,..."; ``minima_left_out`` counts the others);
    ``levels``: J at each point's grid index; ``coords``: its grid coordinates;
    ``heights``: (name, name) → pass height (J), for every pair in ``points`` order, with
    ``inf`` where no path of finite J joins them; ``saddles``: (name, name) → the grid
    coordinates of the point where the two first join (the pass), None where they never do;
    ``found``: the names that are found points; ``eps``: the level ``joined`` refers to.
    """

    points: dict[str, tuple[int, ...]]
    levels: dict[str, float]
    coords: dict[str, tuple[float, ...]]
    heights: dict[tuple[str, str], float]
    saddles: dict[tuple[str, str], tuple[float, ...] | None]
    found: tuple[str, ...]
    eps: float
    minima_left_out: int = 0

    def height(self, a: str, b: str) -> float:
        """The pass between the points ``a`` and ``b``, in either order."""
        if a == b:
            raise InputError(f"{a!r} is one point; ask for the pass between two")
        return self.heights[(a, b)] if (a, b) in self.heights else self.heights[(b, a)]

    def saddle(self, a: str, b: str) -> tuple[float, ...] | None:
        """Where the points ``a`` and ``b`` first join, in either order (None: never)."""
        return self.saddles[(a, b)] if (a, b) in self.saddles else self.saddles[(b, a)]

    @property
    def minima(self) -> list[str]:
        """The local minima without a found point, in ``points`` order."""
        return [name for name in self.points if name not in self.found]

    def lowest_found(self, name: str) -> str:
        """The found point that ``name`` joins at the lowest pass."""
        return min(self.found, key=lambda other: self.height(name, other))

    def shown_pairs(self) -> list[tuple[str, str]]:
        """The pairs the summary and the pass map name: every two found points, then each
        local minimum with the found point it joins lowest (every pair without found points)."""
        if not self.found:
            return list(self.heights)
        return [
            *itertools.combinations(self.found, 2),
            *((m, self.lowest_found(m)) for m in self.minima),
        ]

    def joined(self) -> list[tuple[str, str]]:
        """The pairs joined by a grid path that stays below ε (J < ε at every point)."""
        return [pair for pair, height in self.heights.items() if height < self.eps]

    def groups(self) -> list[list[str]]:
        """The points grouped by the ε-component of the grid they lie in (points with
        J ≥ ε alone), in ``points`` order."""
        group_of = {name: index for index, name in enumerate(self.points)}
        for a, b in self.joined():
            old, new = group_of[b], group_of[a]
            group_of = {n: new if g == old else g for n, g in group_of.items()}
        groups: dict[int, list[str]] = {}
        for name, group in group_of.items():
            groups.setdefault(group, []).append(name)
        return list(groups.values())

    def _pair(self, a: str, b: str) -> str:
        height = self.height(a, b)
        if not math.isfinite(height):
            return f"{a}–{b}: not joined by any path of finite J"
        joined = ", joined below ε" if height < self.eps else ""
        return f"{a}–{b} {height:.3g} ({height / self.eps:.3g} ε){joined}"

    def summary(self) -> str:
        """What the passes say: which points one ε-component holds, the pass between every
        two found points and from each local minimum to the nearest-in-J found point."""
        if len(self.points) < 2:
            return "Fewer than two points on the grid: no passes."
        minima = self.minima
        together = [group for group in self.groups() if len(group) > 1]
        parts = [
            f"Lowest passes on the grid between {len(self.found)} found points and "
            f"{len(minima)} local minima without one (minimax J over grid paths, corner "
            "neighbours; J at the pass, and relative to ε = "
            f"{self.eps:.3g})"
            + (
                f"; {self.minima_left_out} higher local minima left out"
                if self.minima_left_out
                else ""
            )
            + ".",
            "Joined below ε (one ε-component of the grid): "
            + ("; ".join("{" + ", ".join(group) + "}" for group in together) or "no two points")
            + ".",
        ]
        pairs = [self._pair(a, b) for a, b in itertools.combinations(self.found, 2)]
        if pairs:
            parts.append("Between found points: " + "; ".join(pairs) + ".")
        if self.found and minima:
            nearest = [self._pair(m, self.lowest_found(m)) for m in minima]
            parts.append(
                "From each local minimum to the found point it joins lowest: "
                + "; ".join(nearest)
                + "."
            )
        parts.append("A pass is a property of the grid: one narrower than a cell can be missed.")
        return " ".join(parts)


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
    return _merge_tree(values, sources)[0]


def _merge_tree(
    values: np.ndarray, sources: Sequence[tuple[int, ...]]
) -> tuple[np.ndarray, np.ndarray]:
    """(heights [k, k], saddles [k, k]): the pass heights of :func:`minimax_heights` and the
    flat grid index of the point whose addition joined each pair (-1 where none did)."""
    field = np.where(np.isnan(values), np.inf, values).astype(np.float64)
    shape = field.shape
    flat = field.ravel()
    count = len(sources)
    heights = np.full((count, count), np.inf)
    saddles = np.full((count, count), -1, dtype=np.int64)
    if count == 0:
        return heights, saddles
    where: dict[int, list[int]] = {int(np.ravel_multi_index(index, shape)): [] for index in sources}
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
            saddles[a, b] = saddles[b, a] = point
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
                    saddles[a, b] = saddles[b, a] = point
                    remaining -= 1
            parent[other] = root
            holds[root] |= holds.pop(other)
    for k in range(count):
        heights[k, k] = flat[int(np.ravel_multi_index(sources[k], shape))]
    return heights, saddles


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
    found = tuple(points)
    left_out = 0
    if minima:
        taken = set(points.values())
        free = sorted(
            (index for index in _local_minima(field) if index not in taken),
            key=lambda index: field[index],
        )
        left_out = max(0, len(free) - MAX_MINIMA)
        for index in free[:MAX_MINIMA]:
            name = "min@" + ",".join(_coordinate(axes[d], i) for d, i in enumerate(index))
            points[name] = index
    names = list(points)
    table, saddle_table = _merge_tree(field, [points[name] for name in names])

    def where(flat_index: int) -> tuple[float, ...]:
        index = np.unravel_index(flat_index, field.shape)
        return tuple(float(axes[d][i]) for d, i in enumerate(index))

    pairs = list(itertools.combinations(enumerate(names), 2))
    return Passes(
        points=points,
        levels={name: float(field[points[name]]) for name in names},
        coords={
            name: where(int(np.ravel_multi_index(points[name], field.shape))) for name in names
        },
        heights={(a, b): float(table[i, j]) for (i, a), (j, b) in pairs},
        saddles={
            (a, b): where(int(saddle_table[i, j])) if saddle_table[i, j] >= 0 else None
            for (i, a), (j, b) in pairs
        },
        found=found,
        eps=float(eps),
        minima_left_out=left_out,
    )


__all__ = ["MAX_MINIMA", "Passes", "lowest_passes", "minimax_heights"]
