"""Topology of the ε-set: Betti numbers of analytic fields with known answers (ring, double
well, shell, tube), the corner-adjacency convention checked against an independent count
(Euler characteristic and complement components), persistence, components, markers, the
resolution check with an analytic "sweep", and every bad input."""

from __future__ import annotations

import itertools
import math
import sys
import time
from collections.abc import Callable

import numpy as np
import pytest
import torch
from scipy import ndimage

from genni_ext.analysis import persistence as topo
from genni_ext.core.grid import Grid, GridResult, Marker
from genni_ext.errors import BackendUnavailableError, InputError

Field = Callable[[torch.Tensor], torch.Tensor]


def ring(coeffs: torch.Tensor) -> torch.Tensor:
    return ((coeffs**2).sum(1) - 1) ** 2


def thin_ring(coeffs: torch.Tensor) -> torch.Tensor:
    """(r − 1)²: J < w² is the annulus 1 − w < r < 1 + w."""
    return ((coeffs**2).sum(1).sqrt() - 1) ** 2


def double_well(coeffs: torch.Tensor) -> torch.Tensor:
    """Minima 0 at (±1, 0, ...), saddle value 1 at the origin."""
    return (coeffs[:, 0] ** 2 - 1) ** 2 + (coeffs[:, 1:] ** 2).sum(1)


def raised_well(coeffs: torch.Tensor) -> torch.Tensor:
    """The double well lifted by 0.25: nothing is below 0.25."""
    return double_well(coeffs) + 0.25


def tube(coeffs: torch.Tensor) -> torch.Tensor:
    """Squared distance to the unit circle in the (x, y) plane: J < ρ² is a solid torus."""
    return ((coeffs[:, :2] ** 2).sum(1).sqrt() - 1) ** 2 + coeffs[:, 2] ** 2


def sample(field: Field, grid: Grid, markers: list[Marker] | None = None) -> GridResult:
    """An analytic stand-in for a sweep: ``field`` at every point of ``grid``."""
    return GridResult(field(grid.coeffs).reshape(grid.shape), grid, markers or [], {})


def analytic_sweep(field: Field, asked: list[Grid]) -> Callable[[Grid], GridResult]:
    """A ``sweep_refined`` that samples ``field`` and records the grids it was asked for."""

    def sweep_refined(grid: Grid) -> GridResult:
        asked.append(grid)
        return sample(field, grid)

    return sweep_refined


def uniform(field: Field, n: int, dim: int, bound: float = 2.0) -> GridResult:
    return sample(field, Grid.uniform((-bound, bound), n, dim))


def euler_characteristic(mask: np.ndarray) -> int:
    """χ of the union of the closed cells where ``mask`` is True, counting its cells of
    every dimension: a cell belongs to the union when any grid cell around it does."""
    padded = np.pad(mask, 1)
    total = 0
    for thin_axes in itertools.product((False, True), repeat=mask.ndim):
        cells = padded
        for axis, is_thin in enumerate(thin_axes):
            lower = [slice(None)] * mask.ndim
            upper = [slice(None)] * mask.ndim
            if is_thin:  # a vertex coordinate, between grid cells i - 1 and i
                lower[axis], upper[axis] = slice(0, -1), slice(1, None)
                cells = cells[tuple(lower)] | cells[tuple(upper)]
            else:
                lower[axis] = slice(1, -1)
                cells = cells[tuple(lower)]
        total += (-1) ** (mask.ndim - sum(thin_axes)) * int(cells.sum())
    return total


def independent_betti(mask: np.ndarray) -> tuple[int, ...]:
    """Betti numbers without gudhi: β0 from corner-connected components, β_{d-1} from the
    bounded face-connected components of the complement (Alexander duality), and β1 in
    3-D from the Euler characteristic."""
    dims = mask.ndim
    beta0 = ndimage.label(mask, structure=np.ones((3,) * dims))[1]
    outside = ~np.pad(mask, 1)
    enclosed = ndimage.label(outside, structure=ndimage.generate_binary_structure(dims, 1))[1] - 1
    if dims == 2:
        return (beta0, enclosed)
    return (beta0, beta0 + enclosed - euler_characteristic(mask), enclosed)


# --- betti: known answers -----------------------------------------------------------------


def test_ring_has_one_component_and_one_hole() -> None:
    values = uniform(ring, 41, 2).values
    assert topo.betti(values, 0.1) == (1, 1)
    assert topo.betti(values.numpy(), 0.1) == (1, 1)


def test_double_well_splits_below_the_saddle_value() -> None:
    values = uniform(double_well, 41, 2).values
    assert topo.betti(values, 0.5) == (2, 0)
    assert topo.betti(values, 0.99) == (2, 0)
    assert topo.betti(values, 1.5) == (1, 0)


def test_spherical_shell_encloses_one_cavity() -> None:
    assert topo.betti(uniform(ring, 31, 3).values, 0.1) == (1, 0, 1)


def test_solid_torus_has_one_tunnel() -> None:
    assert topo.betti(uniform(tube, 31, 3).values, 0.3**2) == (1, 1, 0)


@pytest.mark.parametrize("dim", [2, 3])
def test_eps_below_the_minimum_gives_the_empty_set(dim: int) -> None:
    values = uniform(raised_well, 15, dim).values
    assert topo.betti(values, 0.25) == (0,) * dim
    assert topo.betti(values, 0.2) == (0,) * dim


def test_cells_sharing_only_a_corner_are_connected() -> None:
    diagonal = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert topo.betti(diagonal, 0.5) == (1, 0)
    # Four cells touching at corners enclose the centre cell.
    diamond = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    assert topo.betti(diamond, 0.5) == (1, 1)
    corners_3d = np.ones((2, 2, 2))
    corners_3d[0, 0, 0] = corners_3d[1, 1, 1] = 0.0
    assert topo.betti(corners_3d, 0.5) == (1, 0, 0)


def test_a_point_at_exactly_eps_is_outside() -> None:
    # Two wells joined only through a cell whose value is exactly eps.
    values = np.array([[0.0, 0.5, 0.0], [1.0, 1.0, 1.0]])
    assert topo.betti(values, 0.5) == (2, 0)
    assert topo.betti(values, np.nextafter(0.5, 1.0)) == (1, 0)


@pytest.mark.parametrize(
    ("shape", "sigma"), [((40, 40), 2.0), ((12, 12), 0.0), ((16, 16, 16), 1.5), ((8, 8, 8), 0.0)]
)
def test_betti_matches_an_independent_count(shape: tuple[int, ...], sigma: float) -> None:
    noise = np.random.default_rng(len(shape) * 10 + int(sigma)).standard_normal(shape)
    values = ndimage.gaussian_filter(noise, sigma) if sigma else noise
    values = values - values.min() + 1.0
    for quantile in (0.2, 0.4, 0.5, 0.6, 0.8):
        eps = float(np.quantile(values, quantile))
        assert topo.betti(values, eps) == independent_betti(values < eps), quantile


# --- topology: persistence, Betti curve, components, markers ------------------------------


def test_betti_curve_agrees_with_betti_at_every_eps() -> None:
    noise = np.random.default_rng(3).standard_normal((30, 30))
    field = ndimage.gaussian_filter(noise, 1.5)
    field = torch.from_numpy(field - field.min() + 0.5)
    grid = Grid.from_axes([torch.arange(30.0), torch.arange(30.0)])
    result = GridResult(field, grid, [], {})
    # Grid values themselves, where "<" and "<=" differ, and values between them.
    taken = np.sort(field.numpy().ravel())[::37]
    eps_range = np.concatenate([taken, (taken[:-1] + taken[1:]) / 2])
    found = topo.topology(result, float(taken[5]), eps_range=eps_range)
    eps_values, curve = found.betti_curve
    assert np.isin(taken, eps_values).all()
    for eps, row in zip(eps_values, curve, strict=True):
        assert tuple(row) == topo.betti(field, float(eps)), eps


def test_betti_curve_counts_like_betti_at_every_birth_and_death() -> None:
    # At ε equal to a birth the feature is not there yet; at ε equal to its death it is.
    noise = np.random.default_rng(4).standard_normal((12, 12))
    result = GridResult(
        torch.from_numpy(noise - noise.min() + 1.0), Grid.uniform((0, 1), 12, 2), [], {}
    )
    intervals = topo.topology(result, 1.5).persistence
    ends = [value for _, birth, death in intervals for value in (birth, death) if value < math.inf]
    eps_values, curve = topo.topology(result, 1.5, eps_range=ends).betti_curve
    assert np.isin(ends, eps_values).all()
    for eps, row in zip(eps_values, curve, strict=True):
        assert tuple(row) == topo.betti(result.values, float(eps)), eps


def test_labels_connect_corner_neighbours_as_betti_does() -> None:
    diagonal = np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    result = GridResult(torch.from_numpy(diagonal), Grid.uniform((0, 1), 3, 2), [], {})
    found = topo.topology(result, 0.5)
    assert found.betti == (1, 0) and found.component_sizes == [3]
    np.testing.assert_array_equal(found.labels, np.eye(3, dtype=int))
    for shape in [(12, 12), (8, 8, 8)]:
        noise = np.random.default_rng(5).standard_normal(shape) + 5.0
        grid = Grid.from_axes([torch.arange(float(n)) for n in shape])
        found = topo.topology(GridResult(torch.from_numpy(noise), grid, [], {}), 5.0)
        assert len(found.component_sizes) == found.labels.max() == found.betti[0]
        assert sum(found.component_sizes) == int((noise < 5.0).sum())


def test_betti_curve_agrees_with_betti_in_3d() -> None:
    result = uniform(tube, 15, 3)
    found = topo.topology(result, 0.09)
    eps_values, curve = found.betti_curve
    assert curve.shape == (eps_values.size, 3)
    for eps, row in zip(eps_values, curve, strict=True):
        assert tuple(row) == topo.betti(result.values, float(eps)), eps


def test_default_betti_curve_spans_the_positive_values_and_includes_eps() -> None:
    result = uniform(double_well, 21, 2)
    found = topo.topology(result, 0.123)
    eps_values, curve = found.betti_curve
    values = result.values.numpy()
    assert eps_values.size == topo.DEFAULT_CURVE_POINTS + 1
    assert 0.123 in eps_values
    assert eps_values[0] == pytest.approx(values[values > 0].min())
    assert eps_values[-1] == pytest.approx(values.max())
    assert np.all(np.diff(eps_values) > 0)
    assert curve.dtype.kind == "i"
    assert tuple(curve[list(eps_values).index(0.123)]) == found.betti == (2, 0)


def test_double_well_persistence_two_components_one_dies_at_the_saddle() -> None:
    found = topo.topology(uniform(double_well, 41, 2), 0.5)
    components = [(birth, death) for dim, birth, death in found.persistence if dim == 0]
    assert len(components) == 2
    assert [birth for birth, _ in components] == pytest.approx([0.0, 0.0], abs=1e-12)
    deaths = sorted(death for _, death in components)
    assert deaths[0] == pytest.approx(1.0, abs=1e-12)
    assert deaths[1] == math.inf
    assert all(birth < death for _, birth, death in found.persistence)


def test_components_sizes_and_markers_of_an_uneven_double_well() -> None:
    # The right well is cut by the grid's edge at x = 1, so it is the smaller component.
    x_axis = torch.linspace(-2.0, 1.0, 31)
    y_axis = torch.linspace(-1.5, 1.5, 31)
    markers = [
        Marker("θ0", torch.tensor([1.0, 0.0], dtype=torch.float64), 0.0),
        Marker("θ1", torch.tensor([-1.0, 0.0], dtype=torch.float64), 0.0),
        Marker("θ2", torch.tensor([0.0, 1.4], dtype=torch.float64), 2.96),
        Marker("θ3", torch.tensor([-1.0, 5.0], dtype=torch.float64), 25.0),
    ]
    result = sample(double_well, Grid.from_axes([x_axis, y_axis]), markers)
    found = topo.topology(result, 0.5)
    mask = result.values.numpy() < 0.5
    left = (x_axis < 0).numpy()[:, None]
    assert found.betti == (2, 0)
    assert found.component_sizes == [int((mask & left).sum()), int((mask & ~left).sum())]
    assert found.component_sizes[0] > found.component_sizes[1]
    np.testing.assert_array_equal(found.labels, np.where(mask, np.where(left, 1, 2), 0))
    assert found.labels.shape == found.shape == (31, 31)
    assert found.marker_components == {"θ0": 2, "θ1": 1, "θ2": 0, "θ3": 0}


# --- the resolution check -----------------------------------------------------------------

PINHOLE = (0.0123, 0.0371)  # off every grid point below


def pinhole_disc(coeffs: torch.Tensor) -> torch.Tensor:
    """0 on the unit disc less a pinhole of radius 0.003 at PINHOLE, 1 elsewhere: the
    exact ε-set (any ε in (0, 1]) has Betti numbers (1, 1)."""
    inside = (coeffs**2).sum(1) < 1
    centre = torch.tensor(PINHOLE, dtype=coeffs.dtype)
    hole = ((coeffs - centre) ** 2).sum(1) < 0.003**2
    return torch.where(inside & ~hole, 0.0, 1.0).to(coeffs.dtype)


@pytest.mark.parametrize("n", [41, 101])
def test_a_pinhole_is_unchanged_at_twice_the_resolution_not_called_correct(n: int) -> None:
    found = topo.topology(
        uniform(pinhole_disc, n, 2, bound=1.5), 0.5, sweep_refined=analytic_sweep(pinhole_disc, [])
    )
    check = found.resolution
    # Neither grid has a point inside the pinhole: both miss the hole of the exact (1, 1).
    assert found.betti == check.betti_refined == (1, 0)
    assert check.unchanged is True
    summary = found.summary()
    assert "unchanged at 2× resolution" in summary
    assert "smaller than a cell of the finer grid" in summary
    assert "correct" not in summary and "stable" not in summary


def test_without_sweep_refined_the_resolution_is_not_checked() -> None:
    found = topo.topology(uniform(ring, 21, 2), 0.1)
    assert not found.resolution.checked
    assert found.resolution.unchanged is None
    assert "pass sweep_refined" in found.resolution.reason
    assert "not checked" in found.summary()


def test_refined_grid_is_the_old_points_and_the_midpoints() -> None:
    asked: list[Grid] = []
    result = sample(ring, Grid.from_axes([torch.linspace(-2, 2, 9), torch.tensor([-2.0, 0, 2])]))
    found = topo.topology(result, 0.5, sweep_refined=analytic_sweep(ring, asked))
    (grid,) = asked
    assert grid.shape == found.resolution.shape == (17, 5)
    for old, new in zip(result.grid.axes, grid.axes, strict=True):
        torch.testing.assert_close(new[::2], old, rtol=0, atol=0)
        torch.testing.assert_close(new[1::2], (old[:-1] + old[1:]) / 2, rtol=0, atol=0)


def test_ring_thinner_than_the_grid_step_is_flagged_as_changed() -> None:
    # Annulus of width 0.3 on a grid of step 0.4: broken into pieces; at step 0.2 a ring.
    found = topo.topology(
        uniform(thin_ring, 11, 2), 0.15**2, sweep_refined=analytic_sweep(thin_ring, [])
    )
    check = found.resolution
    assert found.betti != (1, 1)
    assert check.checked and check.unchanged is False
    assert check.betti_coarse == found.betti
    assert check.betti_refined == (1, 1)
    assert check.box is None
    summary = found.summary()
    assert "changed at 2× resolution" in summary and "grid artefacts, not facts" in summary
    assert "unchanged" not in summary and "stable" not in summary
    assert "1 hole" in summary and "0 holes at 11×11, 1 at 21×21" in summary


@pytest.mark.parametrize(("field", "dim", "n", "eps", "expected"), [
    (ring, 2, 41, 0.1, (1, 1)),
    (ring, 3, 17, 0.3, (1, 0, 1)),
])  # fmt: skip
def test_well_resolved_set_is_unchanged_at_twice_the_resolution(
    field: Field, dim: int, n: int, eps: float, expected: tuple[int, ...]
) -> None:
    found = topo.topology(uniform(field, n, dim), eps, sweep_refined=analytic_sweep(field, []))
    check = found.resolution
    assert found.betti == check.betti_coarse == check.betti_refined == expected
    assert check.checked and check.unchanged is True
    assert check.shape == (2 * n - 1,) * dim
    assert found.summary().endswith(f"unchanged at 2× resolution ({topo.UNSEEN}).")


def test_large_refinement_checks_the_box_of_the_largest_component() -> None:
    asked: list[Grid] = []
    result = uniform(ring, 41, 2)
    found = topo.topology(
        result, 0.1, sweep_refined=analytic_sweep(ring, asked), max_refined_points=3000
    )
    where = np.nonzero(result.values.numpy() < 0.1)
    box = tuple((max(int(i.min()) - 1, 0), min(int(i.max()) + 1, 40)) for i in where)
    check = found.resolution
    assert check.checked and check.unchanged is True
    assert check.box == box
    assert check.shape == asked[0].shape == tuple(2 * (last - first) + 1 for first, last in box)
    torch.testing.assert_close(asked[0].axes[0][0], result.grid.axes[0][box[0][0]])
    torch.testing.assert_close(asked[0].axes[0][-1], result.grid.axes[0][box[0][1]])
    assert check.betti_coarse == check.betti_refined == (1, 1)
    assert "max_refined_points=3,000" in check.reason and "box" in check.reason
    assert "box around the largest component" in found.summary()


def test_box_path_compares_the_box_alone_in_3d() -> None:
    # Below the saddle: two balls; the box holds only the larger one.
    result = sample(double_well, Grid.from_axes([torch.linspace(-2, 1.2, 17)] * 3))
    found = topo.topology(
        result, 0.5, sweep_refined=analytic_sweep(double_well, []), max_refined_points=10_000
    )
    assert found.betti == (2, 0, 0)
    assert found.resolution.betti_coarse == found.resolution.betti_refined == (1, 0, 0)


def test_refinement_too_large_even_for_the_box_is_not_checked() -> None:
    asked: list[Grid] = []
    found = topo.topology(
        uniform(ring, 41, 2), 0.1, sweep_refined=analytic_sweep(ring, asked), max_refined_points=50
    )
    assert not found.resolution.checked and asked == []
    assert "even the box" in found.resolution.reason
    empty = topo.topology(
        uniform(raised_well, 41, 2),
        0.1,
        sweep_refined=analytic_sweep(raised_well, asked),
        max_refined_points=50,
    )
    assert empty.betti == (0, 0) and not empty.resolution.checked and asked == []
    assert "empty" in empty.resolution.reason


# --- speed --------------------------------------------------------------------------------


def test_a_100_by_100_grid_takes_well_under_a_second() -> None:
    result = uniform(double_well, 100, 2)
    topo.betti(np.zeros((2, 2)), 1.0)  # gudhi's first import is not the analysis's time
    start = time.perf_counter()
    topo.topology(result, 0.5)
    assert time.perf_counter() - start < 1.0


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [0, -0.1, math.nan, math.inf, True, "0.1", None])
def test_bad_eps(eps: object) -> None:
    values = uniform(ring, 5, 2).values
    with pytest.raises(InputError, match="eps must be a positive"):
        topo.betti(values, eps)
    with pytest.raises(InputError, match="eps must be a positive"):
        topo.topology(uniform(ring, 5, 2), eps)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.zeros(5), "1-D.*no interesting topology"),
        (np.zeros((2, 2, 2, 2)), "4 dimensions.*2-D or 3-D"),
        (np.zeros((1, 5)), "at least 2 points"),
        ([[0.0, 1.0], [1.0, 0.0]], "torch tensor or numpy array"),
        (np.zeros((3, 3), dtype=complex), "real values"),
        (torch.zeros(3, 3, dtype=torch.bool), "real values"),
    ],
)
def test_bad_values(values: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        topo.betti(values, 0.1)


def test_nan_values_are_counted() -> None:
    values = torch.zeros(4, 4, dtype=torch.float64)
    values[0, 1] = values[2, 2] = values[3, 0] = math.nan
    values[1, 1] = math.inf
    with pytest.raises(InputError, match=r"3 NaN and 1 infinite.*must be finite"):
        topo.betti(values, 0.1)
    grid = Grid.uniform((-1.0, 1.0), 4, 2)
    with pytest.raises(InputError, match=r"result\.values has 3 NaN"):
        topo.topology(GridResult(values, grid, [], {}), 0.1)


def test_bad_results() -> None:
    with pytest.raises(InputError, match="must be a GridResult"):
        topo.topology(uniform(ring, 5, 2).values, 0.1)
    coeff_list = Grid.from_coeffs(torch.zeros(4, 2))
    with pytest.raises(InputError, match="without axes"):
        topo.topology(GridResult(torch.zeros(4, dtype=torch.float64), coeff_list, [], {}), 0.1)
    for dim in (1, 4):
        with pytest.raises(InputError, match=f"has {dim} axes; .*2-D or 3-D"):
            topo.topology(uniform(ring, 3, dim), 0.1)
    shuffled = Grid.from_axes([torch.tensor([0.0, 2.0, 1.0]), torch.tensor([0.0, 1.0])])
    with pytest.raises(InputError, match=r"axis 0 .* not strictly increasing"):
        topo.topology(sample(ring, shuffled), 0.1)
    marker = Marker("θ0", torch.zeros(3, dtype=torch.float64), 0.0)
    with pytest.raises(InputError, match=r"marker 'θ0'.*2 finite coordinates"):
        topo.topology(sample(ring, Grid.uniform((-1.0, 1.0), 3, 2), [marker]), 0.1)


@pytest.mark.parametrize(
    ("eps_range", "message"),
    [
        ([0.1, -0.2], "positive finite"),
        ([0.1, math.nan], "positive finite"),
        ([], "non-empty 1-D"),
        (np.ones((2, 2)), "non-empty 1-D"),
        (["0.1"], "numbers only"),
        (0.1, "sequence of positive numbers"),
    ],
)
def test_bad_eps_range(eps_range: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        topo.topology(uniform(ring, 5, 2), 0.1, eps_range=eps_range)


def test_bad_refinement_arguments() -> None:
    result = uniform(ring, 5, 2)
    with pytest.raises(InputError, match="sweep_refined must be a callable"):
        topo.topology(result, 0.1, sweep_refined="sweep")
    for bad in (0, True, 2.5):
        with pytest.raises(InputError, match="max_refined_points must be a positive int"):
            topo.topology(result, 0.1, max_refined_points=bad)
    with pytest.raises(InputError, match="sweep_refined returned Tensor"):
        topo.topology(result, 0.1, sweep_refined=lambda grid: ring(grid.coeffs))
    with pytest.raises(InputError, match="shape \\[5, 5\\], not of the grid it was given"):
        topo.topology(result, 0.1, sweep_refined=lambda grid: result)

    def nan_sweep(grid: Grid) -> GridResult:
        return GridResult(torch.full(grid.shape, math.nan, dtype=torch.float64), grid, [], {})

    with pytest.raises(InputError, match="refined sweep's values has 81 NaN"):
        topo.topology(result, 0.1, sweep_refined=nan_sweep)


def test_missing_gudhi_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gudhi", None)
    with pytest.raises(BackendUnavailableError, match='pip install "genni_ext\\[topology\\]"'):
        topo.betti(uniform(ring, 5, 2).values, 0.1)
