"""Passes on a grid against a brute-force minimax path search and an analytic double well."""

from __future__ import annotations

import heapq
import itertools

import numpy as np
import pytest
import torch

from genni_ext.analysis.passes import MAX_MINIMA, lowest_passes, minimax_heights
from genni_ext.core.grid import Grid, GridResult, Marker
from genni_ext.errors import InputError


def _brute_force(field: np.ndarray, source: tuple[int, ...]) -> np.ndarray:
    """The minimax path value from ``source`` to every grid point (a bottleneck Dijkstra
    over corner neighbours), written independently of the merge tree."""
    best = np.full(field.shape, np.inf)
    best[source] = field[source]
    queue = [(field[source], source)]
    steps = [s for s in itertools.product((-1, 0, 1), repeat=field.ndim) if any(s)]
    while queue:
        value, here = heapq.heappop(queue)
        if value > best[here]:
            continue
        for step in steps:
            there = tuple(h + s for h, s in zip(here, step, strict=True))
            if all(0 <= t < n for t, n in zip(there, field.shape, strict=True)):
                candidate = max(value, field[there])
                if candidate < best[there]:
                    best[there] = candidate
                    heapq.heappush(queue, (candidate, there))
    return best


@pytest.mark.parametrize("shape", [(9, 11), (13, 13), (5, 6, 7)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_merge_tree_equals_brute_force(shape: tuple[int, ...], seed: int) -> None:
    rng = np.random.default_rng(seed)
    field = rng.normal(size=shape)
    sources = [tuple(int(rng.integers(n)) for n in shape) for _ in range(6)]
    heights = minimax_heights(field, sources)
    for i, source in enumerate(sources):
        expected = _brute_force(field, source)
        for j, target in enumerate(sources):
            assert heights[i, j] == expected[target]


def _double_well(n: int) -> GridResult:
    grid = Grid.uniform((-2.0, 2.0), n, 2)
    axis = grid.axes[0].double()
    x, y = torch.meshgrid(axis, axis, indexing="ij")
    values = 2 - torch.exp(-((x - 1) ** 2 + y**2)) - torch.exp(-((x + 1) ** 2 + y**2))
    markers = [
        Marker("θ0", torch.tensor([1.0, 0.0], dtype=torch.float64), float("nan")),
        Marker("θ1", torch.tensor([-1.0, 0.0], dtype=torch.float64), float("nan")),
    ]
    return GridResult(values=values, grid=grid, markers=markers, metadata={})


def test_double_well_pass_is_the_saddle() -> None:
    """Two wells at (±1, 0): the lowest pass is the saddle J(0, 0) = 2 − 2/e, on the grid."""
    found = lowest_passes(_double_well(41), eps=1.5, minima=False)
    assert found.points == {"θ0": (30, 20), "θ1": (10, 20)}
    assert found.height("θ0", "θ1") == pytest.approx(2 - 2 / np.e, abs=1e-12)
    assert found.height("θ1", "θ0") == found.height("θ0", "θ1")
    assert found.joined() == [("θ0", "θ1")]  # the saddle, 1.264, is below 1.5
    assert lowest_passes(_double_well(41), eps=1.2, minima=False).joined() == []
    assert "θ0–θ1 1.26 (0.843 ε), joined below ε" in found.summary()
    assert "Joined below ε (one ε-component of the grid): {θ0, θ1}." in found.summary()
    assert found.saddles[("θ0", "θ1")] == pytest.approx((0.0, 0.0), abs=1e-12)
    assert found.levels["θ0"] == pytest.approx(2 - 1 - np.exp(-4), abs=1e-12)
    assert found.coords["θ1"] == pytest.approx((-1.0, 0.0), abs=1e-12)
    apart = lowest_passes(_double_well(41), eps=1.2, minima=False)
    assert apart.groups() == [["θ0"], ["θ1"]]
    assert "Joined below ε (one ε-component of the grid): no two points." in apart.summary()


def test_local_minima_are_found_and_named() -> None:
    result = _double_well(41)
    result = GridResult(values=result.values, grid=result.grid, markers=[], metadata={})
    found = lowest_passes(result, eps=1.5)
    assert sorted(found.points.values()) == [(10, 20), (30, 20)]
    assert set(found.points) == {"min@-1,0", "min@1,0"}


def test_bad_input() -> None:
    result = _double_well(5)
    with pytest.raises(InputError, match="eps must be a positive number"):
        lowest_passes(result, eps=0)
    flat = GridResult(
        values=torch.zeros(3, dtype=torch.float64),
        grid=Grid.from_coeffs(torch.zeros(3, 2)),
        markers=[],
        metadata={},
    )
    with pytest.raises(InputError, match="2-D or 3-D grid with axes"):
        lowest_passes(flat, eps=1.0)


def test_only_the_lowest_minima_are_kept() -> None:
    """A field with more local minima than MAX_MINIMA keeps the lowest ones and counts the
    rest; every kept minimum is one of the lowest."""
    rng = np.random.default_rng(3)
    grid = Grid.uniform((-1.0, 1.0), 25, 2)
    values = torch.from_numpy(rng.random((25, 25)))
    result = GridResult(values=values, grid=grid, markers=[], metadata={})
    found = lowest_passes(result, eps=0.5)
    field = values.numpy()
    all_minima = sorted(
        field[i, j]
        for i in range(25)
        for j in range(25)
        if all(
            field[i, j] < field[i + a, j + b]
            for a in (-1, 0, 1)
            for b in (-1, 0, 1)
            if (a or b) and 0 <= i + a < 25 and 0 <= j + b < 25
        )
    )
    assert len(all_minima) > MAX_MINIMA
    assert len(found.points) == MAX_MINIMA
    assert found.minima_left_out == len(all_minima) - MAX_MINIMA
    assert sorted(found.levels.values()) == all_minima[:MAX_MINIMA]
    assert f"{found.minima_left_out} higher local minima left out" in found.summary()
