"""Morse graphs of descent: analytic fields with known dynamics (double well: two attractors
and a saddle above both; ring: an attracting circle around a repelling centre; a single
well; the 3-D double well), their Conley indices, CMGDB's own Leslie-map example run
through this package's box map, the figure helpers, and every bad input."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable

import networkx as nx
import numpy as np
import pytest
import torch

from genni_ext.analysis import dynamics
from genni_ext.core.grid import Grid, GridResult, Marker
from genni_ext.errors import BackendUnavailableError, InputError

Field = Callable[[torch.Tensor], torch.Tensor]


def double_well(coeffs: torch.Tensor) -> torch.Tensor:
    """Minima 0 at (±1, 0, ...), a saddle of value 1 at the origin."""
    return (coeffs[:, 0] ** 2 - 1) ** 2 + (coeffs[:, 1:] ** 2).sum(1)


def ring(coeffs: torch.Tensor) -> torch.Tensor:
    """Minimum 0 on the unit circle, a maximum of value 1 at the centre."""
    return ((coeffs**2).sum(1) - 1) ** 2


def single_well(coeffs: torch.Tensor) -> torch.Tensor:
    """One minimum, at (0.3, -0.2), between grid points."""
    return (coeffs[:, 0] - 0.3) ** 2 + 2 * (coeffs[:, 1] + 0.2) ** 2


def marker(name: str, *coords: float) -> Marker:
    return Marker(name, torch.tensor(coords, dtype=torch.float64), 0.0)


def sample(field: Field, grid: Grid, markers: list[Marker] | None = None) -> GridResult:
    """An analytic stand-in for a sweep: ``field`` at every point of ``grid``."""
    return GridResult(field(grid.coeffs).reshape(grid.shape), grid, markers or [], {})


def holds(morse_set: dynamics.MorseSet, point: tuple[float, ...]) -> bool:
    """Whether ``point`` lies in one of the set's (closed) boxes."""
    dim = len(point)
    low, high = morse_set.boxes[:, :dim], morse_set.boxes[:, dim:]
    return bool(np.any(np.all((low <= point) & (point <= high), axis=1)))


def of_kind(result: dynamics.MorseGraph, kind: str) -> list[dynamics.MorseSet]:
    return [morse_set for morse_set in result.morse_sets if morse_set.kind == kind]


@pytest.fixture(scope="module")
def plane() -> Grid:
    return Grid.uniform((-2.0, 2.0), 101, 2)


@pytest.mark.parametrize("log", [True, False])
def test_double_well_has_an_attractor_per_well_and_a_saddle_above_both(
    plane: Grid, log: bool
) -> None:
    result = dynamics.morse_graph(
        sample(double_well, plane, [marker("θ0", 1.0, 0.0), marker("θ1", -1.0, 0.0)]), log=log
    )
    assert len(result.morse_sets) == 3
    (saddle,) = of_kind(result, "saddle")
    attracting = of_kind(result, "attracting")
    right, left = sorted(attracting, key=lambda s: -s.boxes[:, 0].mean())
    assert right.markers == ("θ0",) and left.markers == ("θ1",)
    assert holds(right, (1.0, 0.0)) and holds(left, (-1.0, 0.0))
    assert holds(saddle, (0.0, 0.0)) and not holds(saddle, (1.0, 0.0))
    assert set(result.graph.edges) == {(saddle.index, right.index), (saddle.index, left.index)}
    # J is 0 at both minima (grid points) and 1 at the saddle, lower just beside it.
    assert right.min_loss < 1e-12 and left.min_loss < 1e-12
    assert 0.8 < saddle.min_loss <= 1.0
    # Gradient flow sends each open half plane x > 0, x < 0 to its own well.
    x = plane.coeffs[:, 0].reshape(plane.shape).numpy()
    assert np.all(result.grid_retraction[x >= 0.5] == right.index)
    assert np.all(result.grid_retraction[x <= -0.5] == left.index)
    assert result.marker_basins == {"θ0": right.index, "θ1": left.index}
    assert right.share > 0.3 and left.share > 0.3
    assert result.log is log and result.conley_indices is None


def test_conley_indices_of_the_double_well_and_the_ring(plane: Grid) -> None:
    """A hyperbolic fixed point with k descending directions has the Conley index of a
    pointed k-sphere: one generator, fixed by the map, in dimension k. An attracting
    circle has the homology of the circle; a repelling point in the plane, of S²."""
    well = dynamics.morse_graph(sample(double_well, plane), conley=True)
    for morse_set in well.morse_sets:
        expected = ("x-1", "0", "0") if morse_set.kind == "attracting" else ("0", "x-1", "0")
        assert morse_set.conley_index == expected
        assert well.graph.nodes[morse_set.index]["conley_index"] == expected
    assert well.conley_indices == tuple(s.conley_index for s in well.morse_sets)
    circle = dynamics.morse_graph(sample(ring, plane), conley=True)
    (annulus,) = of_kind(circle, "attracting")
    (centre,) = of_kind(circle, "repelling")
    assert annulus.conley_index == ("x-1", "x-1", "0")
    assert centre.conley_index == ("0", "0", "x-1")


@pytest.mark.parametrize("log", [True, False])
def test_ring_attracts_to_the_circle_from_a_repelling_centre(plane: Grid, log: bool) -> None:
    result = dynamics.morse_graph(sample(ring, plane, [marker("θ0", 0.6, 0.8)]), log=log)
    assert len(result.morse_sets) == 2
    (annulus,) = of_kind(result, "attracting")
    (centre,) = of_kind(result, "repelling")
    assert list(result.graph.edges) == [(centre.index, annulus.index)]
    assert holds(centre, (0.0, 0.0))
    angles = np.linspace(0, 2 * math.pi, 720, endpoint=False)
    assert all(holds(annulus, (math.cos(a), math.sin(a))) for a in angles)
    assert annulus.markers == ("θ0",)
    assert annulus.min_loss < 1e-12 and centre.min_loss > 0.5
    # Everything outside the repelling centre descends to the circle.
    assert set(np.unique(result.grid_retraction)) == {annulus.index, centre.index}
    assert annulus.share + centre.share == pytest.approx(1.0)


def test_single_well_is_one_attracting_set_holding_the_whole_plane(plane: Grid) -> None:
    result = dynamics.morse_graph(sample(single_well, plane, [marker("θ0", 0.3, -0.2)]))
    (only,) = result.morse_sets
    assert only.kind == "attracting" and only.index == 0 and only.markers == ("θ0",)
    assert list(result.graph.nodes) == [0] and result.graph.number_of_edges() == 0
    assert only.share == 1.0
    assert np.all(result.grid_retraction == 0) and np.all(result.retraction == 0)
    assert "1 Morse set" in result.summary() and "θ0" in result.summary()


def test_three_dimensional_double_well() -> None:
    grid = Grid.uniform((-2.0, 2.0), 25, 3)
    markers = [marker("θ0", 1.0, 0.0, 0.0), marker("θ1", -1.0, 0.0, 0.0)]
    result = dynamics.morse_graph(sample(double_well, grid, markers))
    assert result.box_shape == (32, 32, 32) and result.num_boxes == 32**3
    (saddle,) = of_kind(result, "saddle")
    attracting = of_kind(result, "attracting")
    assert len(result.morse_sets) == 3 and len(attracting) == 2
    assert {s.markers for s in attracting} == {("θ0",), ("θ1",)}
    assert holds(saddle, (0.0, 0.0, 0.0))
    assert set(result.graph.edges) == {(saddle.index, s.index) for s in attracting}
    x = grid.coeffs[:, 0].reshape(grid.shape).numpy()
    right = next(s.index for s in attracting if s.markers == ("θ0",))
    left = next(s.index for s in attracting if s.markers == ("θ1",))
    assert np.all(result.grid_retraction[x >= 0.6] == right)
    assert np.all(result.grid_retraction[x <= -0.6] == left)
    assert "3 Morse sets" in result.summary() and "space" in result.summary()
    assert result.grid_retraction.shape == (25, 25, 25)
    side = 4.0 / 32
    for morse_set, drawn in zip(result.morse_sets, result.rectangles((0, 2)), strict=True):
        np.testing.assert_allclose(drawn[:, 2:], side)
        assert len(np.unique(morse_set.boxes[:, [0, 2]], axis=0)) == len(drawn)


def test_figure_helpers_give_boxes_as_rectangles_and_the_retraction_on_the_grid(
    plane: Grid,
) -> None:
    result = dynamics.morse_graph(sample(double_well, plane), subdivisions=12)
    assert result.box_shape == (64, 64) and result.subdivisions == 12
    assert result.retraction.shape == (64, 64) and result.grid_retraction.shape == (101, 101)
    rectangles = result.rectangles()
    assert len(rectangles) == len(result.morse_sets)
    for morse_set, drawn in zip(result.morse_sets, rectangles, strict=True):
        assert drawn.shape == (len(morse_set.boxes), 4)
        np.testing.assert_allclose(drawn[:, 2:], 4.0 / 64)
        assert morse_set.volume == pytest.approx(len(morse_set.boxes) * (4.0 / 64) ** 2)
        # Every box of a Morse set retracts to that set.
        low = np.floor((drawn[:, :2] + 2.0) / (4.0 / 64) + 0.5).astype(int)
        assert np.all(result.retraction[low[:, 0], low[:, 1]] == morse_set.index)
    with pytest.raises(InputError, match="dims"):
        result.rectangles((0, 0))


def test_default_boxes_are_no_larger_than_grid_cells_and_an_explicit_step_is_used(
    plane: Grid,
) -> None:
    result = dynamics.morse_graph(sample(double_well, plane), step=0.05, log=False)
    widths = (np.array(result.upper_bounds) - np.array(result.lower_bounds)) / result.box_shape
    assert np.all(widths <= 0.04)  # the grid's spacing
    assert result.step == 0.05 and result.max_move > 0
    assert len(of_kind(result, "attracting")) == 2 and len(of_kind(result, "saddle")) == 1


def test_markers_outside_the_domain_have_no_basin(plane: Grid) -> None:
    result = dynamics.morse_graph(sample(single_well, plane, [marker("far", 5.0, 0.0)]))
    assert result.marker_basins == {"far": -1}
    assert result.morse_sets[0].markers == ()


def leslie(points: np.ndarray) -> np.ndarray:
    """The Leslie population map of CMGDB's examples (θ1 = 19.6, θ2 = 23.68)."""
    x, y = points[:, 0], points[:, 1]
    return np.stack([(19.6 * x + 23.68 * y) * np.exp(-0.1 * (x + y)), 0.7 * x], axis=1)


@pytest.mark.slow
def test_leslie_map_reproduces_cmgdb_documented_morse_graph() -> None:
    """CMGDB's Examples notebook: the Leslie map on [-0.001, 90] × [-0.001, 70], 20
    subdivisions, box images padded by a box: 6 Morse sets with the (transitively reduced)
    edges (2,1), (2,0), (3,2), (4,0), (5,3), (5,4)."""
    result = dynamics.morse_decomposition(leslie, [-0.001, -0.001], [90.0, 70.0], 20)
    documented = nx.DiGraph([(2, 1), (2, 0), (3, 2), (4, 0), (5, 3), (5, 4)])
    assert len(result.morse_sets) == 6
    assert nx.is_isomorphic(result.graph, documented)
    sinks = {node for node in result.graph if result.graph.out_degree(node) == 0}
    assert {i for i, kind in enumerate(result.kinds) if kind == "attracting"} == sinks
    assert result.box_shape == (1024, 1024) and result.retraction.shape == (1024, 1024)
    assert result.conley_indices is None


@pytest.fixture(scope="module")
def well() -> GridResult:
    return sample(double_well, Grid.uniform((-2.0, 2.0), 21, 2))


def with_values(result: GridResult, values: torch.Tensor) -> GridResult:
    return GridResult(values, result.grid, [], {})


@pytest.mark.parametrize(
    ("make", "kwargs", "match"),
    [
        (lambda w: "grid", {}, "GridResult"),
        (lambda w: sample(double_well, Grid.uniform((-2.0, 2.0), 9, 1)), {}, "1 axes"),
        (lambda w: sample(double_well, Grid.uniform((-2.0, 2.0), 5, 4)), {}, "4 axes"),
        (lambda w: sample(double_well, Grid.from_coeffs(torch.rand(30, 2))), {}, "without axes"),
        (lambda w: sample(double_well, Grid.uniform((-1.0, 1.0), 2, 2)), {}, "at least 3"),
        (
            lambda w: sample(double_well, Grid.from_axes([[0.0, 0.1, 0.5, 1.0], [0.0, 1.0, 2.0]])),
            {},
            "evenly spaced",
        ),
        (lambda w: with_values(w, w.values.clone().fill_(math.nan)), {}, "NaN"),
        (lambda w: with_values(w, w.values.clone().fill_(math.inf)), {}, "infinite"),
        (lambda w: with_values(w, w.values - 2.0), {}, "log=False"),
        (lambda w: w, {"subdivisions": 0}, "subdivisions"),
        (lambda w: w, {"subdivisions": 1}, "subdivisions"),
        (lambda w: w, {"subdivisions": 21}, "subdivisions"),
        (lambda w: w, {"subdivisions": 8.0}, "subdivisions"),
        (lambda w: w, {"subdivisions": True}, "subdivisions"),
        (lambda w: w, {"step": 0.0}, "step"),
        (lambda w: w, {"step": -1.0}, "step"),
        (lambda w: w, {"step": math.nan}, "step"),
        (lambda w: w, {"step": "big"}, "step"),
        (lambda w: w, {"log": 1}, "log"),
        (lambda w: w, {"conley": "yes"}, "conley"),
    ],
)
def test_bad_inputs_raise_input_error(
    well: GridResult, make: Callable[[GridResult], object], kwargs: dict, match: str
) -> None:
    with pytest.raises(InputError, match=match):
        dynamics.morse_graph(make(well), **kwargs)


def test_bad_markers_raise_input_error(well: GridResult) -> None:
    bad = GridResult(well.values, well.grid, [marker("θ0", 1.0, 0.0, 0.0)], {})
    with pytest.raises(InputError, match="2 finite coordinates"):
        dynamics.morse_graph(bad)


@pytest.mark.parametrize(
    ("point_map", "lower", "upper", "subdivisions", "match"),
    [
        ("leslie", [0.0, 0.0], [1.0, 1.0], 8, "callable"),
        (leslie, [0.0], [1.0], 8, "2 or 3"),
        (leslie, [0.0, 0.0], [1.0, 1.0, 1.0], 8, "same length"),
        (leslie, [0.0, 1.0], [1.0, 1.0], 8, "lower < upper"),
        (leslie, [0.0, math.inf], [1.0, 1.0], 8, "finite"),
        (leslie, [0.0, 0.0], [1.0, 1.0], 30, "subdivisions"),
        (lambda p: p[:, :1], [0.0, 0.0], [1.0, 1.0], 8, "one image per point"),
        (lambda p: p * math.nan, [0.0, 0.0], [1.0, 1.0], 8, "NaN"),
    ],
)
def test_bad_maps_raise_input_error(
    point_map: object, lower: list, upper: list, subdivisions: int, match: str
) -> None:
    with pytest.raises(InputError, match=match):
        dynamics.morse_decomposition(point_map, lower, upper, subdivisions)


@pytest.mark.parametrize("missing", ["CMGDB", "networkx"])
def test_missing_backend_says_how_to_install_it(
    well: GridResult, monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)
    with pytest.raises(BackendUnavailableError, match=r'pip install "genni_ext\[dynamics\]"'):
        dynamics.morse_graph(well)
    with pytest.raises(BackendUnavailableError, match=missing):
        dynamics.morse_decomposition(leslie, [0.0, 0.0], [1.0, 1.0], 8)
