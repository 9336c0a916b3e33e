"""ε-set pictures: 3-D scatter from several angles and UMAP (genni_ext.plot.sets)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from genni_ext.core.grid import Grid, GridResult, Marker
from genni_ext.core.subspace import Subspace
from genni_ext.errors import InputError
from genni_ext.plot import _style, figure_checks
from genni_ext.plot.sets import scatter3d, umap

MARKER_COORDS = [[0.0, 0.0, 0.0, 0.0], [0.5, 0.0, 0.0, 0.0], [0.0, 0.5, 0.0, 0.0]]
MARKER_COORDS += [[0.0, 0.0, 0.5, 0.0], [0.0, 0.0, 0.0, 0.5]]


def make_result(m: int = 3, n: int = 8) -> GridResult:
    """J = |c|² on [-1, 1]^m with markers θ0..θm at the origin and 0.5 on each axis."""
    grid = Grid.uniform((-1, 1), n, m)
    values = (grid.coeffs**2).sum(1).reshape(grid.shape)
    markers = [
        Marker(f"θ{i}", torch.tensor(MARKER_COORDS[i][:m], dtype=torch.float64), 0.0)
        for i in range(m + 1)
    ]
    return GridResult(values, grid, markers, {})


def as_set(points: np.ndarray) -> set[tuple[float, ...]]:
    return {tuple(round(float(v), 9) for v in row) for row in points}


def collection(ax, gid: str):
    found = [c for c in ax.collections if c.get_gid() == gid]
    assert len(found) == 1, gid
    return found[0]


def decode(fig) -> np.ndarray:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=50)
    buffer.seek(0)
    image = imread(buffer)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
    assert float(image[..., :3].std()) > 0.02  # not a blank canvas
    return image


def colour_bar(fig):
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1
    return bars[0]


# ---------------------------------------------------------------- scatter3d


@pytest.mark.slow
def test_scatter3d_holds_exactly_the_eps_set_with_markers() -> None:
    result = make_result()
    eps = 0.6
    views = ((30, 45), (30, 135), (60, 225), (0, 0))
    fig = scatter3d(result, eps, views=views)
    expected = as_set(result.eps_set(eps).numpy())
    values = result.values.reshape(-1)[result.eps_mask(eps).reshape(-1)].numpy()
    panels = [ax for ax in fig.axes if ax.name == "3d"]
    assert len(panels) == len(views)
    for ax, (elev, azim) in zip(panels, views, strict=True):
        assert (ax.elev, ax.azim) == (elev, azim)
        assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_zlabel()) == ("c1", "c2", "c3")
        points = np.column_stack(collection(ax, "eps_set")._offsets3d)
        assert len(points) == len(expected) and as_set(points) == expected
        colours = collection(ax, "eps_set").get_array()
        assert sorted(np.asarray(colours).tolist()) == pytest.approx(sorted(values.tolist()))
        for index, marker in enumerate(result.markers):
            dot = collection(ax, f"marker:{marker.name}")
            np.testing.assert_allclose(
                np.column_stack(dot._offsets3d)[0], marker.coords.numpy(), atol=0
            )
            assert tuple(dot.get_facecolor()[0][:3]) == pytest.approx(
                to_rgb(_style.marker_colour(index))
            )
    bar = colour_bar(fig)
    low, high = bar.get_ylim()
    assert high == pytest.approx(eps) and low <= values.min()
    assert "0.6" in fig._suptitle.get_text()
    decode(fig)


def test_scatter3d_empty_and_nan() -> None:
    result = make_result()
    result.values.reshape(-1)[:5] = float("nan")
    fig = scatter3d(result, 1e-6, views=((20, 30),))
    ax = fig.axes[0]
    assert len(collection(ax, "eps_set")._offsets3d[0]) == 0
    texts = " ".join(t.get_text() for t in ax.texts)
    assert "empty ε-set" in texts and "smallest J" in texts
    assert "5 NaN excluded" in fig._suptitle.get_text()
    decode(fig)
    # NaN values are never in the set even with a generous ε
    fig = scatter3d(result, 10.0, views=((20, 30),))
    points = collection(fig.axes[0], "eps_set")._offsets3d[0]
    assert len(points) == result.grid.size - 5


@pytest.mark.parametrize("m", [2, 4])
def test_scatter3d_needs_m3(m: int) -> None:
    with pytest.raises(InputError, match="m = 3"):
        scatter3d(make_result(m, 4), 0.5)


def test_scatter3d_bad_arguments() -> None:
    with pytest.raises(InputError, match="eps"):
        scatter3d(make_result(), -1.0)
    with pytest.raises(InputError, match="views"):
        scatter3d(make_result(), 0.5, views=())
    with pytest.raises(InputError, match="GridResult"):
        scatter3d("grid", 0.5)  # type: ignore[arg-type]


# ---------------------------------------------------------------- umap


def embedded(fig) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    ax = fig.axes[0]
    points = collection(ax, "eps_set").get_offsets()
    markers = {
        c.get_gid().removeprefix("marker:"): c.get_offsets()[0]
        for c in ax.collections
        if (c.get_gid() or "").startswith("marker:")
    }
    return np.asarray(points), markers


@pytest.mark.slow
def test_umap_coefficients_points_markers_and_determinism() -> None:
    result = make_result(4, 6)
    eps = 0.9
    fig = umap(result, eps, seed=3)
    points, markers = embedded(fig)
    assert points.shape == (int(result.eps_mask(eps).sum()), 2)
    assert list(markers) == ["θ0", "θ1", "θ2", "θ3", "θ4"]
    for index, name in enumerate(markers):
        dot = collection(fig.axes[0], f"marker:{name}")
        assert tuple(dot.get_facecolor()[0][:3]) == pytest.approx(
            to_rgb(_style.marker_colour(index))
        )
    assert np.isfinite(points).all()
    assert colour_bar(fig).get_ylim()[1] == pytest.approx(eps)
    decode(fig)
    again, again_markers = embedded(umap(result, eps, seed=3))
    np.testing.assert_array_equal(points, again)
    for name in markers:
        np.testing.assert_array_equal(markers[name], again_markers[name])


@pytest.mark.slow
def test_umap_parameters_respects_memory_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    result = make_result(3, 8)
    eps = 0.6
    generator = torch.Generator().manual_seed(0)
    num_params = 40
    center = torch.randn(num_params, generator=generator, dtype=torch.float64)
    points = center + torch.randn(3, num_params, generator=generator, dtype=torch.float64)
    subspace = Subspace.from_points(center, points)
    row_bytes = num_params * 8
    budget = 60 * row_bytes
    seen: list[int] = []
    original = GridResult.eps_params

    def spy(self, *args, **kwargs):
        for chunk in original(self, *args, **kwargs):
            seen.append(chunk.shape[0])
            yield chunk

    monkeypatch.setattr(GridResult, "eps_params", spy)
    size = int(result.eps_mask(eps).sum())
    assert size > 60
    fig = umap(result, eps, space="parameters", subspace=subspace, seed=1, memory_budget=budget)
    points_2d, markers = embedded(fig)
    kept = points_2d.shape[0]
    chunk = max(seen)
    assert kept == sum(seen) and kept < size
    assert (kept + 2 * chunk + len(result.markers)) * row_bytes <= budget
    assert "subsampled" in fig.axes[0].get_title() and f"of {size}" in fig.axes[0].get_title()
    assert len(markers) == 4
    decode(fig)
    # within budget: every point of the ε-set, no subsampling
    seen.clear()
    fig = umap(result, eps, space="parameters", subspace=subspace, seed=1)
    assert embedded(fig)[0].shape[0] == size == sum(seen)
    assert "subsampled" not in fig.axes[0].get_title()


def test_umap_parameters_needs_subspace_and_room() -> None:
    result = make_result(3, 5)
    with pytest.raises(InputError, match="subspace"):
        umap(result, 0.6, space="parameters")
    center = torch.zeros(10, dtype=torch.float64)
    subspace = Subspace.from_points(center, torch.eye(10, dtype=torch.float64)[:3])
    with pytest.raises(InputError, match="memory_budget"):
        umap(result, 0.6, space="parameters", subspace=subspace, memory_budget=100)
    with pytest.raises(InputError, match="space"):
        umap(result, 0.6, space="pixels")


@pytest.mark.parametrize("m", [1, 2])
def test_umap_needs_m3(m: int) -> None:
    with pytest.raises(InputError, match="m >= 3"):
        umap(make_result(m, 4), 0.5)


@pytest.mark.slow
@pytest.mark.parametrize(("eps", "count"), [(0.2, 0), (0.2, 1), (0.2, 2)])
def test_umap_too_few_points_is_an_honest_figure(eps: float, count: int) -> None:
    result = make_result(3, 5)  # axis -1, -0.5, 0, 0.5, 1: only the origin has J < 0.2
    if count == 0:
        result.values.add_(0.5)  # smallest J is 0.5 > ε
    if count == 2:
        result.values.reshape(-1)[0] = 0.1
    fig = umap(result, eps)
    text = " ".join(t.get_text() for t in fig.axes[0].texts)
    if count == 0:
        assert "empty ε-set" in text
    else:
        assert f"{count} point" in text and "at least 3" in text
    assert not [c for c in fig.axes[0].collections if c.get_gid() == "eps_set"]
    decode(fig)


@pytest.mark.slow
def test_umap_few_points_and_nan() -> None:
    result = make_result(3, 5)
    flat = result.values.reshape(-1)
    flat[:4] = 0.01  # four more points in the set: 5 points, fewer than n_neighbors
    flat[10:13] = float("nan")
    fig = umap(result, 0.2, n_neighbors=15)
    points, markers = embedded(fig)
    assert points.shape == (5, 2) and len(markers) == 4
    title = fig.axes[0].get_title()
    assert "n_neighbors reduced to 4" in title and "3 NaN excluded" in title


# ---------------------------------------------------------------- what a reader sees


def crowded(m: int = 3) -> GridResult:
    """Markers in a cluster (as θ1 and θ2 of the demo, a few hundredths apart) and one
    alone: their names would overlap where written at a fixed offset."""
    result = make_result(m, 8)
    coords = [[0.0] * m, [0.5] + [0.0] * (m - 1), [0.52, 0.01] + [0.0] * (m - 2)]
    coords.append([0.5, 0.0, 0.02] + [0.0] * (m - 3))
    result.markers = [
        Marker(f"θ{i}", torch.tensor(c, dtype=torch.float64), 0.0) for i, c in enumerate(coords)
    ]
    return result


def check_reader_view(fig, panels: int) -> None:
    """Every marker named once per panel, no two names overlapping, markers on top and
    visible, numbers on the colour bar, a key, and every title inside the figure."""
    boxes = figure_checks.label_boxes(fig)
    assert sorted(boxes) == ["θ0", "θ1", "θ2", "θ3"]
    assert all(len(found) == panels for found in boxes.values())
    assert figure_checks.overlapping_labels(fig) == []
    assert figure_checks.markers_not_on_top(fig) == []
    pixels = figure_checks.marker_pixels(fig)
    assert min(pixels.values()) >= 25, pixels
    (ticks,) = figure_checks.colorbar_ticks(fig)
    assert len(ticks) >= 2
    for value, label in ticks:
        assert figure_checks.tick_number(label) == pytest.approx(value, rel=1e-2, abs=1e-12)
    assert {"ε-set", "θ0", "θ3"} <= set(figure_checks.legend_texts(fig))
    assert figure_checks.texts_outside(fig) == []


@pytest.mark.slow
def test_scatter3d_names_do_not_overlap_and_markers_stay_on_top() -> None:
    fig = scatter3d(crowded(), 0.6)
    check_reader_view(fig, panels=4)
    for ax in fig.axes:
        if ax.name == "3d":
            assert not ax.computed_zorder  # the ε-set cannot be sorted in front of a marker


@pytest.mark.slow
def test_umap_names_do_not_overlap() -> None:
    check_reader_view(umap(crowded(4), 0.9, seed=3), panels=1)


@pytest.mark.slow
def test_scatter3d_hides_the_tick_labels_of_an_axis_seen_end_on() -> None:
    """At elevation 0, azimuth 0 the c1 axis points at the viewer: its numbers would
    pile up on one spot, so they are left out (the other axes keep theirs)."""
    fig = scatter3d(make_result(), 0.6, views=((0, 0), (30, 45)))
    figure_checks.render(fig)
    end_on, oblique = (ax for ax in fig.axes if ax.name == "3d")
    assert not [t.get_text() for t in end_on.xaxis.get_ticklabels() if t.get_text()]
    for axis in (end_on.yaxis, end_on.zaxis, oblique.xaxis):
        assert [t.get_text() for t in axis.get_ticklabels() if t.get_text()]
