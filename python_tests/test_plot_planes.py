"""Plots of J on planes and of a search: what is drawn, not only that a figure exists."""

from __future__ import annotations

import io
import math

import matplotlib.image
import numpy as np
import pytest
import torch
from matplotlib.axes import Axes
from matplotlib.collections import PathCollection
from matplotlib.colors import LogNorm, to_rgba
from matplotlib.contour import ContourSet
from matplotlib.figure import Figure

from genni_ext.errors import InputError
from genni_ext.grid import Grid, GridResult, Marker, sweep_grid
from genni_ext.models import TwoNeuronNet
from genni_ext.plot import _style, planes
from genni_ext.problem import Problem
from genni_ext.search import SearchResult
from genni_ext.subspace import Subspace

# --- helpers ---------------------------------------------------------------------------------


def _hyperbola(
    n: int = 25, dim: int = 2, nan_at: list[tuple[int, ...]] | None = None
) -> GridResult:
    """J = (c1·c2·… − 1)² on [−2, 2]^dim: a low-loss hyperbola, like the paper's net."""
    grid = Grid.uniform((-2.0, 2.0), n, dim)
    values = ((grid.coeffs.prod(dim=1) - 1.0) ** 2 + 1e-4).reshape(grid.shape)
    for index in nan_at or []:
        values[index] = float("nan")
    markers = [Marker("θ0", torch.zeros(dim, dtype=torch.float64), 1.0001)]
    if dim == 2:
        markers += [
            Marker("θ1", torch.tensor([1.0, 1.0], dtype=torch.float64), 1e-4),
            Marker("θ2", torch.tensor([-0.5, -2.0], dtype=torch.float64), 1e-4),
        ]
    else:
        markers += [
            Marker("θ1", torch.tensor([1.0, 1.0, 1.9], dtype=torch.float64), 0.81),
            Marker("θ2", torch.tensor([-1.0, 0.5, -0.2], dtype=torch.float64), 0.81),
        ]
    return GridResult(values=values, grid=grid, markers=markers, metadata={})


def _marker_points(ax: Axes) -> dict[str, tuple[np.ndarray, tuple[float, ...]]]:
    """Scatter markers by label: their (x, y) offset and face colour."""
    found = {}
    for collection in ax.collections:
        if isinstance(collection, PathCollection) and collection.get_label().startswith("θ"):
            found[collection.get_label()] = (
                collection.get_offsets()[0].data.astype(float),
                tuple(collection.get_facecolor()[0]),
            )
    return found


def _colorbar_axes(fig: Figure) -> list[Axes]:
    return [ax for ax in fig.axes if ax.get_ylabel() == _style.J_LABEL]


def _filled(ax: Axes) -> ContourSet:
    sets = [c for c in ax.collections if isinstance(c, ContourSet) and c.filled]
    assert len(sets) == 1
    return sets[0]


def _png(fig: Figure) -> np.ndarray:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=60)
    buffer.seek(0)
    return matplotlib.image.imread(buffer, format="png")


def _assert_nontrivial(image: np.ndarray) -> None:
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
    colours = np.unique(image.reshape(-1, image.shape[2]).round(2), axis=0)
    assert len(colours) > 20, "the image is (nearly) a single colour"


def _search(history: torch.Tensor, steps: list[int]) -> SearchResult:
    k = history.shape[0]
    losses = history[:, -1].clone() if history.shape[1] else torch.full((k,), 0.5)
    return SearchResult(
        params=torch.zeros(k, 4),
        losses=losses.double(),
        history=history.double(),
        history_steps=torch.tensor(steps, dtype=torch.int64),
        starts=torch.zeros(k, 4),
        seeds=list(range(k)),
        config={},
    )


# --- contour ---------------------------------------------------------------------------------


def test_contour_markers_log_norm_and_colorbar_range() -> None:
    result = _hyperbola()
    fig = planes.contour(result, eps=0.01)
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("c1", "c2")
    drawn = _marker_points(ax)
    assert sorted(drawn) == ["θ0", "θ1", "θ2"]
    for index, marker in enumerate(result.markers):
        position, colour = drawn[marker.name]
        np.testing.assert_allclose(position, marker.coords.numpy())
        assert colour == to_rgba(_style.marker_colour(index))
    filled = _filled(ax)
    assert isinstance(filled.norm, LogNorm)
    values = result.values.numpy()
    (cbar,) = _colorbar_axes(fig)
    assert cbar.get_yscale() == "log"
    np.testing.assert_allclose(cbar.get_ylim(), (values.min(), values.max()), rtol=1e-9)
    # the ε line is one unfilled contour at level ε
    lines = [c for c in ax.collections if isinstance(c, ContourSet) and not c.filled]
    assert len(lines) == 1 and list(lines[0].levels) == [0.01]
    inside = int((values < 0.01).sum())
    assert f"ε-set: {inside} of {values.size}" in ax.get_title()


def test_contour_reports_and_masks_nan() -> None:
    result = _hyperbola(nan_at=[(0, 0), (3, 4), (10, 10)])
    fig = planes.contour(result)
    ax = fig.axes[0]
    assert "3 of 625 values NaN" in ax.get_title()
    values = result.values.numpy()
    finite = values[np.isfinite(values)]
    (cbar,) = _colorbar_axes(fig)
    np.testing.assert_allclose(cbar.get_ylim(), (finite.min(), finite.max()), rtol=1e-9)
    _assert_nontrivial(_png(fig))


def test_contour_clips_non_positive_values() -> None:
    result = _hyperbola()
    result.values[0, :3] = 0.0
    result.values[1, 0] = -1.0
    fig = planes.contour(result)
    ax = fig.axes[0]
    norm = _filled(ax).norm
    assert isinstance(norm, LogNorm)
    positive = result.values[result.values > 0]
    assert norm.vmin == pytest.approx(float(positive.min()))
    assert "4 values ≤ 0 clipped" in ax.get_title()


def test_contour_with_no_positive_value_is_linear_and_says_so() -> None:
    result = _hyperbola()
    result.values.zero_()
    fig = planes.contour(result, eps=0.1)
    ax = fig.axes[0]
    assert not isinstance(_filled(ax).norm, LogNorm)
    assert "no positive J" in ax.get_title()
    _png(fig)


def test_contour_eps_below_smallest_value_says_empty() -> None:
    fig = planes.contour(_hyperbola(), eps=1e-6)
    ax = fig.axes[0]
    assert "ε-set empty" in ax.get_title()
    assert not [c for c in ax.collections if isinstance(c, ContourSet) and not c.filled]


def test_contour_linear_scale() -> None:
    fig = planes.contour(_hyperbola(), log=False)
    assert not isinstance(_filled(fig.axes[0]).norm, LogNorm)


def test_contour_png_decodes_and_is_nontrivial() -> None:
    _assert_nontrivial(_png(planes.contour(_hyperbola(), eps=0.01)))


def test_contour_sorts_decreasing_axes() -> None:
    axis = torch.linspace(2.0, -2.0, 9, dtype=torch.float64)
    grid = Grid.from_axes([axis, axis])
    values = ((grid.coeffs[:, 0] - 1.0) ** 2 + 1.0).reshape(grid.shape)
    fig = planes.contour(GridResult(values, grid, [], {}))
    assert fig.axes[0].get_xlim() == (-2.0, 2.0)


# --- surface ---------------------------------------------------------------------------------


def test_surface_markers_at_their_loss_and_colorbar_range() -> None:
    result = _hyperbola(nan_at=[(5, 5)])
    fig = planes.surface(result, eps=0.01)
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_zlabel()) == ("c1", "c2", "J")
    lines = {line.get_label(): line for line in ax.get_lines() if line.get_label().startswith("θ")}
    assert sorted(lines) == ["θ0", "θ1", "θ2"]
    for index, marker in enumerate(result.markers):
        x, y, z = (np.asarray(part, dtype=float) for part in lines[marker.name].get_data_3d())
        np.testing.assert_allclose([x[0], y[0]], marker.coords.numpy())
        assert z[0] == pytest.approx(marker.loss)
        assert to_rgba(lines[marker.name].get_color()) == to_rgba(_style.marker_colour(index))
    values = result.values.numpy()
    finite = values[np.isfinite(values)]
    (cbar,) = _colorbar_axes(fig)
    assert cbar.get_yscale() == "linear"
    np.testing.assert_allclose(cbar.get_ylim(), (finite.min(), finite.max()), rtol=1e-9)
    assert "1 of 625 values NaN" in ax.get_title()
    _assert_nontrivial(_png(fig))


def test_surface_eps_empty() -> None:
    fig = planes.surface(_hyperbola(), eps=1e-9)
    assert "ε-set empty" in fig.axes[0].get_title()


# --- slices ----------------------------------------------------------------------------------


def test_slices_default_panels_share_one_colorbar() -> None:
    """By default a panel on every marker's plane (θ0 at c3 = 0 is on the grid; θ1 at 1.9
    and θ2 at −0.2 are not, and their panels say so), then evenly spaced ones up to 4."""
    result = _hyperbola(n=9, dim=3)  # c3 = -2, -1.5, ..., 2
    fig = planes.slices(result, 2)
    panels = [ax for ax in fig.axes if ax.get_title().startswith("c3 = ")]
    assert [ax.get_title() for ax in panels] == [
        "c3 = -2",
        "c3 = -0.5",
        "c3 = 0\n(nearest grid plane: θ2 at -0.2)",
        "c3 = 2\n(nearest grid plane: θ1 at 1.9)",
    ]
    assert sorted(_marker_points(panels[2])) == ["θ0", "θ2"]
    assert sorted(_marker_points(panels[3])) == ["θ1"]
    for ax in panels:
        assert ax.get_aspect() == 1.0
    (cbar,) = _colorbar_axes(fig)
    values = result.values.numpy()[:, :, [0, 3, 4, 8]]
    np.testing.assert_allclose(cbar.get_ylim(), (values.min(), values.max()), rtol=1e-9)
    for ax in panels:
        assert isinstance(_filled(ax).norm, LogNorm)
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("c1", "c2")


def test_slices_at_nearest_values_and_markers_on_nearest_panel() -> None:
    result = _hyperbola(n=9, dim=3)  # axis values -2, -1.5, ..., 2
    fig = planes.slices(result, 1, at=[-1.9, 0.4, 0.6])
    panels = [ax for ax in fig.axes if ax.get_title().startswith("c2 = ")]
    assert [ax.get_title() for ax in panels] == [
        "c2 = -2",
        "c2 = 0.5\n(nearest grid plane: θ0 at 0, θ1 at 1)",  # 0.4, 0.6 → 0.5
    ]
    # θ0 (c2 = 0) and θ1 (c2 = 1) are nearest 0.5, θ2 (c2 = 0.5) too
    assert _marker_points(panels[0]) == {}
    drawn = _marker_points(panels[1])
    assert sorted(drawn) == ["θ0", "θ1", "θ2"]
    for marker in result.markers:
        c = marker.coords.numpy()
        np.testing.assert_allclose(drawn[marker.name][0], [c[0], c[2]])
    assert (panels[0].get_xlabel(), panels[0].get_ylabel()) == ("c1", "c3")


def test_slices_png_decodes() -> None:
    _assert_nontrivial(_png(planes.slices(_hyperbola(n=7, dim=3), 0, eps=0.05)))


# --- wrong grids -----------------------------------------------------------------------------


def test_wrong_grid_dimension_is_a_clear_error() -> None:
    three = _hyperbola(n=5, dim=3)
    two = _hyperbola(n=5, dim=2)
    listed = GridResult(
        torch.ones(6, dtype=torch.float64), Grid.from_coeffs(torch.randn(6, 2)), [], {}
    )
    with pytest.raises(InputError, match=r"2-D axis grid.*3-D"):
        planes.contour(three)
    with pytest.raises(InputError, match="2-D axis grid"):
        planes.surface(three)
    with pytest.raises(InputError, match="3-D axis grid"):
        planes.slices(two, 0)
    with pytest.raises(InputError, match="coefficient list of 6 points"):
        planes.contour(listed)
    with pytest.raises(InputError, match="axis must be 0, 1 or 2"):
        planes.slices(three, 3)
    with pytest.raises(InputError, match="eps must be a positive"):
        planes.contour(two, eps=-1.0)
    with pytest.raises(InputError, match="GridResult"):
        planes.surface(two.values)  # type: ignore[arg-type]


# --- search convergence ----------------------------------------------------------------------


def test_search_convergence_one_line_per_start_coloured_by_convergence() -> None:
    eps = 1e-3
    history = torch.tensor(
        [
            [1.0, 1e-2, 1e-4],  # converged
            [1.0, 0.5, 0.2],  # not
            [2.0, 1e-3, 0.0],  # converged, exactly 0 at the end (clipped for the log axis)
            [1.0, math.nan, math.nan],  # diverged
        ]
    )
    result = _search(history, [0, 10, 20])
    fig = planes.search_convergence(result, eps)
    left, right = fig.axes[:2]
    starts = [line for line in left.get_lines() if (line.get_gid() or "").startswith("start")]
    assert len(starts) == 4
    colours = [to_rgba(line.get_color()) for line in starts]
    converged = [True, False, True, False]
    assert {c for c, ok in zip(colours, converged, strict=True) if ok} == {
        to_rgba(planes.CONVERGED_COLOUR)
    }
    assert {c for c, ok in zip(colours, converged, strict=True) if not ok} == {
        to_rgba(planes.NOT_CONVERGED_COLOUR)
    }
    np.testing.assert_array_equal(starts[1].get_xdata(), [0, 10, 20])
    assert left.get_yscale() == "log" and right.get_yscale() == "log"
    eps_lines = [
        line for ax in (left, right) for line in ax.get_lines() if "ε =" in line.get_label()
    ]
    assert len(eps_lines) == 2 and all(line.get_ydata()[0] == eps for line in eps_lines)
    legend = [text.get_text() for text in left.get_legend().get_texts()]
    assert "converged (J < ε): 2" in legend and "not converged: 2" in legend
    # the final-J panel: one dot per finite final J, at (start, J); the NaN start is labelled
    dots = {c.get_label(): c.get_offsets().data for c in right.collections}
    np.testing.assert_allclose(dots["converged (J < ε): 2"][:, 0], [0, 2])
    np.testing.assert_allclose(dots["not converged: 2"], [[1, 0.2]])
    assert dots["converged (J < ε): 2"][0, 1] == pytest.approx(1e-4)
    assert "1 NaN" in right.get_title()
    assert "NaN" in [text.get_text() for text in right.texts]
    _assert_nontrivial(_png(fig))


def test_search_convergence_without_history() -> None:
    fig = planes.search_convergence(_search(torch.zeros(3, 0), []), 0.1)
    left = fig.axes[0]
    assert "no loss history recorded" in [text.get_text() for text in left.texts]
    assert not [line for line in left.get_lines() if line.get_gid()]
    fig = planes.search_convergence(_search(torch.tensor([[0.5], [1e-4]]), [0]), 0.1)
    assert len([line for line in fig.axes[0].get_lines() if line.get_gid()]) == 2
    with pytest.raises(InputError, match="history must be"):
        planes.search_convergence(_search(torch.ones(2, 3), [0, 1]), 0.1)
    with pytest.raises(InputError, match="eps"):
        planes.search_convergence(_search(torch.ones(2, 1), [0]), 0.0)


# --- a real sweep ----------------------------------------------------------------------------


def test_real_sweep_contour_and_surface_mark_the_found_points() -> None:
    a, b, c, d = 0.8, -1.3, 1.1, 0.7
    model = TwoNeuronNet().double()
    theta = torch.tensor([a, b, c, d], dtype=torch.float64)
    inputs = torch.randn(128, 1, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    problem = Problem(model, inputs, theta=theta, seed=5)
    points = torch.tensor([[2 * a, b, c / 2, d], [a, 2 * b, c, d / 2]], dtype=torch.float64)
    plane = Subspace.from_points(theta, points)
    result = sweep_grid(problem, plane, Grid.uniform((-2.0, 2.0), 15, 2))
    fig = planes.contour(result, eps=0.0025)
    drawn = _marker_points(fig.axes[0])
    for marker in result.markers:
        np.testing.assert_allclose(drawn[marker.name][0], marker.coords.numpy(), atol=1e-12)
    values = result.values.numpy()
    positive = values[values > 0]
    (cbar,) = _colorbar_axes(fig)
    np.testing.assert_allclose(cbar.get_ylim(), (positive.min(), positive.max()), rtol=1e-9)
    _assert_nontrivial(_png(planes.surface(result, eps=0.0025)))


def test_contour_hatches_the_trivial_part_of_the_eps_set() -> None:
    """With ε at or above J of the best constant function (from the sweep's metadata), the
    band constant_loss ≤ J < ε is hatched and the title warns; below it, neither."""
    result = _hyperbola()  # J from 1e-4 up to ~290 on the plane
    result.metadata["problem"] = {"zero_loss": 2.0, "constant_loss": 1.5}
    fig = planes.contour(result, eps=5.0)
    ax = fig.axes[0]
    assert "ε ≥ J of a trivial function (constant 1.5, zero 2)" in ax.get_title()
    hatched = [c for c in ax.collections if getattr(c, "hatches", None) == ["//"]]
    assert hatched, "no hatched band"
    assert ax.get_aspect() == 1.0
    calm = planes.contour(result, eps=1.0).axes[0]
    assert "trivial" not in calm.get_title()
    assert not [c for c in calm.collections if getattr(c, "hatches", None) == ["//"]]


def test_slices_ignore_round_off_of_the_plane_and_the_markers() -> None:
    """An axis value of -1e-16 is the plane c3 = 0, and markers 1e-9 off it lie on it."""
    result = _hyperbola(n=9, dim=3)
    axes = list(result.grid.axes)
    axes[2] = axes[2] - 1e-16
    grid = Grid.from_axes(axes)
    markers = [Marker("θ0", torch.tensor([0.0, 0.0, 5e-9], dtype=torch.float64), 1.0)]
    shifted = GridResult(result.values, grid, markers, {})
    titles = [ax.get_title() for ax in planes.slices(shifted, 2).axes if ax.get_title()]
    assert "c3 = 0" in titles


def test_plots_take_eps_relative_to_the_constant_function() -> None:
    result = _hyperbola()
    result.metadata["problem"] = {"zero_loss": 20.0, "constant_loss": 10.0}
    relative = planes.contour(result, eps_relative=0.01).axes[0].get_title()
    absolute = planes.contour(result, eps=0.1).axes[0].get_title()
    assert "ε = 0.1" in relative and relative == absolute
