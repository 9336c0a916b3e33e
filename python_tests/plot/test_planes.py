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

from genni_ext.core.grid import Grid, GridResult, Marker
from genni_ext.core.models import TwoNeuronNet
from genni_ext.core.problem import Problem
from genni_ext.core.sgd_search import SearchResult
from genni_ext.core.subspace import Subspace
from genni_ext.errors import InputError
from genni_ext.plot import _style, figure_checks, planes
from genni_ext.run.grid_sweep import sweep_grid

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
    """Scatter markers by name: their (x, y) offset and face colour (empty when hollow)."""
    found = {}
    for collection in ax.collections:
        gid = collection.get_gid() or ""
        if isinstance(collection, PathCollection) and gid.startswith("marker:"):
            face = collection.get_facecolor()
            found[gid.removeprefix("marker:")] = (
                np.asarray(collection.get_offsets()[0], dtype=float),
                tuple(face[0]) if len(face) else (),
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_surface_markers_at_their_loss_and_colorbar_range() -> None:
    result = _hyperbola(nan_at=[(5, 5)])
    fig = planes.surface(result, eps=0.01)
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_zlabel()) == ("c1", "c2", "J")
    dots = {
        c.get_gid().removeprefix("marker:"): c
        for c in ax.collections
        if (c.get_gid() or "").startswith("marker:")
    }
    assert sorted(dots) == ["θ0", "θ1", "θ2"]
    for index, marker in enumerate(result.markers):
        x, y, z = (np.asarray(part, dtype=float) for part in dots[marker.name]._offsets3d)
        np.testing.assert_allclose([x[0], y[0]], marker.coords.numpy())
        assert z[0] == pytest.approx(marker.loss)
        assert tuple(dots[marker.name].get_facecolor()[0]) == to_rgba(_style.marker_colour(index))
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
        "c2 = 0.5\n(hollow, off this plane: θ0 at 0, θ1 at 1)",  # 0.4, 0.6 → 0.5
    ]
    # θ0 (c2 = 0) and θ1 (c2 = 1) are nearest 0.5 but a grid step off it: drawn hollow;
    # θ2 (c2 = 0.5) is on it: filled
    assert _marker_points(panels[0]) == {}
    drawn = _marker_points(panels[1])
    assert sorted(drawn) == ["θ0", "θ1", "θ2"]
    for marker in result.markers:
        c = marker.coords.numpy()
        np.testing.assert_allclose(drawn[marker.name][0], [c[0], c[2]])
    assert drawn["θ0"][1] == () and drawn["θ1"][1] == ()
    assert drawn["θ2"][1] == to_rgba(_style.marker_colour(2))
    assert any("θ0 (hollow" in text for text in figure_checks.legend_texts(fig))
    assert (panels[0].get_xlabel(), panels[0].get_ylabel()) == ("c1", "c3")


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


# --- what a reader sees: numbers on the colour bars, markers on top, keys, titles -----------


def _assert_numeric_colorbar(fig: Figure, eps: float | None = None) -> None:
    """One colour bar whose ticks are all labelled with the number they stand for, and
    ε (when in range) a line on it marked "ε"."""
    (ticks,) = figure_checks.colorbar_ticks(fig)
    assert len(ticks) >= 2, ticks
    for value, label in ticks:
        assert label, f"tick at {value} has no label"
        assert figure_checks.tick_number(label) == pytest.approx(value, rel=0.02), label
    if eps is not None:
        (bar,) = figure_checks.colorbars(fig)
        assert [line.get_ydata()[0] for line in bar.get_lines()] == [pytest.approx(eps)]
        assert "ε" in [text.get_text() for text in bar.texts]


@pytest.mark.slow
@pytest.mark.parametrize("floor", [1e-13, 1e-4, 0.3])
def test_colorbars_show_numbers_on_log_and_linear_scales(floor: float) -> None:
    """The demo's plane spans 14 decades (the search reaches J ≈ 1e-12): its log colour
    bar showed no number, only "ε". Now every tick has one, over any span."""
    result = _hyperbola()
    result.values.add_(floor - 1e-4)  # J from `floor` up
    eps = float(np.quantile(result.values.numpy(), 0.05))
    contour = planes.contour(result, eps=eps)
    (bar,) = figure_checks.colorbars(contour)
    assert bar.get_yscale() == "log"
    _assert_numeric_colorbar(contour, eps)
    _assert_numeric_colorbar(planes.surface(result, eps=eps), eps)
    three = _hyperbola(n=9, dim=3)
    three.values.add_(floor - 1e-4)
    _assert_numeric_colorbar(planes.slices(three, 2, eps=0.5), 0.5)


def test_log_ticks_within_one_decade_are_still_numbers() -> None:
    ticks = _style.log_ticks(0.0011, 0.0019)
    assert len(ticks) >= 2 and ((ticks >= 0.0011) & (ticks <= 0.0019)).all()
    assert list(_style.log_ticks(1e-13, 30.0)) == [10.0**k for k in range(-13, 2, 2)]
    assert list(_style.log_ticks(0.01, 0.5)) == [0.01, 0.02, 0.05, 0.1, 0.2, 0.5]
    for value in (1e-12, 2e-5, 1.25e-3, 0.05, 20.0, 5e4):
        assert figure_checks.tick_number(_style.tick_label(value)) == pytest.approx(value)


def _crowded_plane(apart: float) -> GridResult:
    """θ1 and θ2 ``apart`` from each other along (1, −1) (the demo's are 0.13 apart on a
    plane of width 5), θ1 at the valley floor."""
    result = _hyperbola()
    result.values.sub_(1e-4 - 1e-13)
    result.markers[1] = Marker("θ1", torch.tensor([1.0, 1.0], dtype=torch.float64), 1e-13)
    shifted = torch.tensor([1.0 + apart, 1.0 - apart], dtype=torch.float64)
    result.markers[2] = Marker("θ2", shifted, 1e-4)
    return result


@pytest.mark.slow
@pytest.mark.parametrize("apart", [0.0, 0.03, 0.1])
@pytest.mark.parametrize("picture", ["contour", "surface"])
def test_every_marker_is_on_top_outlined_and_visible(picture: str, apart: float) -> None:
    """Markers are drawn last (zorder above everything, no depth sorting on the surface)
    with a black edge; θ1, under θ2 on the canvas, shows as a ring or a crescent around
    it: at least 25 pixels of its colour at 100 dpi (a marker alone shows about 60)."""
    fig = getattr(planes, picture)(_crowded_plane(apart), eps=0.01)
    assert figure_checks.markers_not_on_top(fig) == []
    pixels = figure_checks.marker_pixels(fig)
    assert sorted(pixels) == ["θ0", "θ1", "θ2"]
    assert min(pixels.values()) >= 25, pixels


def test_the_surface_does_not_hide_a_marker_in_a_valley() -> None:
    """A marker at the bottom of a valley behind a ridge: with depth sorting the surface
    covered it; drawn on top it stays visible."""
    grid = Grid.uniform((-2.0, 2.0), 31, 2)
    x, y = grid.coeffs[:, 0], grid.coeffs[:, 1]
    values = (x - 1.0) ** 2 + (y - 1.0) ** 2 + 30.0 * torch.exp(-4 * (x + y) ** 2) + 1e-6
    markers = [Marker("θ0", torch.tensor([1.0, 1.0], dtype=torch.float64), 1e-6)]
    fig = planes.surface(GridResult(values.reshape(grid.shape), grid, markers, {}))
    assert figure_checks.markers_not_on_top(fig) == []
    assert figure_checks.marker_pixels(fig)["θ0"] >= 25


@pytest.mark.slow
@pytest.mark.parametrize("picture", ["contour", "surface", "slices", "convergence"])
def test_titles_and_keys_fit_in_the_figure(picture: str) -> None:
    if picture == "slices":
        fig = planes.slices(_hyperbola(n=9, dim=3), 1, at=[-1.9, 0.4], eps=0.05)
    elif picture == "convergence":
        history = torch.tensor([[1.0, 1e-2, 1e-4], [1.0, 0.5, 0.2]])
        fig = planes.search_convergence(_search(history, [0, 10, 20]), 1e-3)
    else:
        result = _hyperbola()
        result.metadata["problem"] = {"zero_loss": 2.0, "constant_loss": 1.5}
        fig = getattr(planes, picture)(result, eps=5.0)  # the longest title: the warning
    assert figure_checks.texts_outside(fig) == []
    if picture != "convergence":
        keys = figure_checks.legend_texts(fig)
        assert "θ0" in " ".join(keys) and any(text.startswith("J = ε") for text in keys)


@pytest.mark.slow
def test_slices_draw_a_marker_filled_only_on_its_own_plane() -> None:
    """Filled: within half a grid step of the panel's plane; else hollow, and the panel
    says so. Checked on every panel for every marker."""
    result = _hyperbola(n=9, dim=3)  # step 0.5
    for at in (None, [-1.9, 0.4, 0.6], [1.0]):
        fig = planes.slices(result, 2, at=at)
        for ax in fig.axes:
            title = ax.get_title()
            if not title.startswith("c3 = "):
                continue
            plane = float(title.split("\n")[0].removeprefix("c3 = "))
            for name, (_, face) in _marker_points(ax).items():
                marker = next(m for m in result.markers if m.name == name)
                on = abs(float(marker.coords[2]) - plane) <= 0.25 + 1e-12
                assert bool(face) == on, (at, name, plane)
                if not on:
                    assert "hollow, off this plane" in title and name in title


@pytest.mark.slow
def test_search_convergence_draws_the_constant_function_it_names() -> None:
    """The README's caption speaks of the constant function's J: the figure draws it
    (both panels, in the key) when the search recorded it, and only then."""
    history = torch.tensor([[1.0, 1e-2, 1e-4], [1.0, 0.5, 0.05]])
    result = _search(history, [0, 10, 20])
    result.config["constant_loss"] = 0.047
    fig = planes.search_convergence(result, 1e-3)
    for ax in fig.axes[:2]:
        constant = [line for line in ax.get_lines() if "constant" in line.get_label()]
        assert len(constant) == 1 and constant[0].get_ydata()[0] == pytest.approx(0.047)
        legend = [text.get_text() for text in ax.get_legend().get_texts()]
        assert "best constant function: J = 0.047" in legend
    bare = planes.search_convergence(_search(history, [0, 10, 20]), 1e-3)
    assert not [line for line in bare.axes[0].get_lines() if "constant" in line.get_label()]
