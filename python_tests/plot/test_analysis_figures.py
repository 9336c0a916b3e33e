"""The analysis figures: each draws the numbers of its result and refuses other inputs."""

from __future__ import annotations

import io

import matplotlib.image
import numpy as np
import pytest
import torch
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from genni_ext import Problem, SearchResult, search
from genni_ext.analysis import compare, explain, morse_graph, stitch_all, topology
from genni_ext.core.grid import Grid, GridResult, Marker
from genni_ext.core.models import TwoNeuronNet, mlp
from genni_ext.errors import InputError
from genni_ext.plot import analysis as figures
from genni_ext.plot import figure_checks


def _double_well(n: int = 41) -> GridResult:
    """J = (x² − 1)² + y² on [−2, 2]²: minima at (±1, 0), a saddle at the origin."""
    grid = Grid.uniform((-2.0, 2.0), n, 2)
    x, y = grid.coeffs[:, 0], grid.coeffs[:, 1]
    values = ((x**2 - 1) ** 2 + y**2).reshape(grid.shape)
    markers = [
        Marker("θ0", torch.tensor([-1.0, 0.0], dtype=torch.float64), 0.0),
        Marker("θ1", torch.tensor([1.0, 0.0], dtype=torch.float64), 0.0),
    ]
    return GridResult(values, grid, markers, {})


def _png(fig: Figure) -> np.ndarray:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    buffer.seek(0)
    image = matplotlib.image.imread(buffer)
    assert float(image.std()) > 0.0
    return image


@pytest.mark.slow
def test_topology_figures_state_the_numbers() -> None:
    result = _double_well()
    topo = topology(result, 0.5)
    assert topo.betti == (2, 0)
    curve = figures.betti_curve(topo)
    assert "β = (2, 0)" in curve.axes[0].get_title()
    assert "resolution not checked" in curve.axes[0].get_title()
    diagram = figures.persistence_diagram(topo)
    assert "dim 0" in " ".join(t.get_text() for t in diagram.axes[0].get_legend().get_texts())
    components = figures.component_map(topo, result)
    title = components.axes[0].get_title()
    assert title.startswith("Components of the ε-set (J < 0.5): 2 (")
    legend = figure_checks.legend_texts(components)
    assert any(text.startswith("θ0: component") for text in legend)
    assert "component 1: 84 points" in legend and "component 2: 84 points" in legend
    for fig in (curve, diagram, components):
        _png(fig)
    with pytest.raises(InputError, match="Topology"):
        figures.betti_curve(result)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="pass the result it was computed from"):
        figures.component_map(topo, _double_well(21))


@pytest.mark.slow
def test_morse_figures_of_the_double_well() -> None:
    result = _double_well()
    graph = morse_graph(result)
    kinds = sorted(s.kind for s in graph.morse_sets)
    assert kinds == ["attracting", "attracting", "saddle"]
    sets = figures.morse_sets(graph, result)
    assert "Morse sets of descent on log J: 3" in sets.axes[0].get_title()
    drawn = figures.morse_graph_figure(graph)
    assert "3 sets (2 attracting, 1 saddle, 0 repelling)" in drawn.axes[0].get_title()
    flow = figures.retraction(graph, result)
    assert "order retraction" in flow.axes[0].get_title()
    for fig in (sets, drawn, flow):
        _png(fig)
    with pytest.raises(InputError, match="MorseGraph"):
        figures.morse_graph_figure(result)  # type: ignore[arg-type]


@pytest.mark.slow
def test_representation_figures() -> None:
    torch.manual_seed(4)
    model = mlp([3, 6, 5, 2])
    problem = Problem(model, num_probes=256, seed=4, input_shape=(3,))
    theta = problem.theta
    other = theta.clone()
    other[:18] *= 2.0  # the first layer's weights up, its outputs' consumers not: not an image
    comparison = compare(model, theta, other, problem.inputs, metric="relu_procrustes")
    heat = figures.similarity_heatmap(comparison)
    texts = [t.get_text() for t in heat.axes[0].texts]
    assert f"{comparison.matrix[0][0]:.3f}" in texts
    stitches = stitch_all(model, theta, other, problem.inputs, steps=20)
    penalties = figures.stitching_penalties(stitches)
    line = penalties.axes[0].get_lines()[0]
    np.testing.assert_allclose(line.get_ydata(), [max(s.penalty, 1e-300) for s in stitches])
    for fig in (heat, penalties):
        _png(fig)
    with pytest.raises(InputError, match="Stitch"):
        figures.stitching_penalties([])


@pytest.mark.slow
def test_found_points_bar_counts_every_kind() -> None:
    torch.manual_seed(5)
    problem = Problem(TwoNeuronNet(), num_probes=1024, seed=5)
    found = search(problem, 8, steps=400, lr=0.05, seed=40, progress=False)
    explanation = explain(found, problem, 0.05 * problem.constant_loss)
    bar = figures.found_points(explanation)
    title = bar.axes[0].get_title()
    assert title.startswith("What the 8 found points are: ")
    for kind, count in explanation.counts.items():
        if count:
            assert f"{count} {kind}" in title
    legend = figure_checks.legend_texts(bar)
    assert len(legend) == len(figures.KIND_COLOURS)
    for kind, count in explanation.counts.items():
        assert any(text.startswith(f"{kind}: {count} (") for text in legend)
    _png(bar)
    with pytest.raises(InputError, match="Explanation"):
        figures.found_points(object())  # type: ignore[arg-type]


def test_found_points_key_says_what_each_kind_is() -> None:
    theta = torch.tensor([0.66, -0.75, 0.58, 0.45], dtype=torch.float64)
    problem = Problem(TwoNeuronNet().double(), theta=theta, num_probes=512)
    points = torch.stack([theta, torch.tensor([0.66, 0.66, 0.29, 0.29], dtype=torch.float64)])
    losses = problem.loss(points)
    found = SearchResult(
        params=points, losses=losses, history=losses[:, None],
        history_steps=torch.zeros(1, dtype=torch.int64), starts=points, seeds=[0, 1], config={},
    )  # fmt: skip
    bar = figures.found_points(explain(found, problem, 0.05 * problem.constant_loss))
    legend = figure_checks.legend_texts(bar)
    assert "G_ReLU image: 1 (θ permuted and rescaled (align residual ≤ 0.00035))" in legend
    assert "collapsed: 1 (hidden units dead on every probe or merged)" in legend
    assert "trivial" not in " ".join(legend)
    assert bar.axes[0].get_title() == "What the 2 found points are: 1 G_ReLU image, 1 collapsed"
    _png(bar)


def test_resolution_notes_never_say_stable() -> None:
    field = _double_well(21)
    refined = topology(field, 0.5, sweep_refined=lambda grid: _sampled(grid))
    note = refined.resolution
    assert note.unchanged is True
    title = figures.betti_curve(refined).axes[0].get_title()
    assert "unchanged at 2× resolution (41×41); features smaller than a cell unseen" in title
    assert "stable" not in title and "correct" not in title


def _sampled(grid: Grid) -> GridResult:
    x, y = grid.coeffs[:, 0], grid.coeffs[:, 1]
    return GridResult(((x**2 - 1) ** 2 + y**2).reshape(grid.shape), grid, [], {})


# --- what a reader sees: keys for colours, markers on the slices they are on, titles ------


def _well_3d(n: int = 21) -> GridResult:
    """The double well with a third coefficient: J = (x² − 1)² + y² + z²; θ1 at c3 = 0.6,
    off the c3 = 0 slice that the pictures show."""
    grid = Grid.uniform((-2.0, 2.0), n, 3)
    x, y, z = grid.coeffs.T
    values = ((x**2 - 1) ** 2 + y**2 + z**2).reshape(grid.shape)
    markers = [
        Marker("θ0", torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64), 0.0),
        Marker("θ1", torch.tensor([1.0, 0.0, 0.6], dtype=torch.float64), 0.36),
        Marker("θ2", torch.tensor([1.0, 0.0, 0.1], dtype=torch.float64), 0.01),  # 1/2 step off
    ]
    return GridResult(values, grid, markers, {})


def _drawn(fig: Figure) -> dict[str, bool]:
    """Markers drawn, by name: True filled, False hollow."""
    return {
        str(c.get_gid()).removeprefix("marker:"): bool(len(c.get_facecolor()))
        for _, c in figure_checks.marker_collections(fig)
    }


@pytest.mark.slow
def test_3d_component_map_draws_only_the_points_on_its_slice() -> None:
    """The slice is c3 = 0 (grid step 0.2): θ0 lies on it and θ2 within half a step,
    both filled; θ1 (c3 = 0.6) is not, so it is drawn hollow and the title and the key
    say so. Before, every θ was drawn on the slice as if it lay there."""
    result = _well_3d()
    fig = figures.component_map(topology(result, 0.5), result)
    title = fig.axes[0].get_title()
    assert "slice c3 = 0" in title
    assert _drawn(fig) == {"θ0": True, "θ1": False, "θ2": True}
    assert "hollow: θ1" in title
    legend = figure_checks.legend_texts(fig)
    assert any(text.startswith("θ1: component") and "off this slice" in text for text in legend)
    assert [text for text in legend if text.startswith("component ")] == [
        f"component {k}: {size:,} points"
        for k, size in enumerate(topology(result, 0.5).component_sizes, start=1)
    ]
    assert figure_checks.markers_not_on_top(fig) == []
    assert figure_checks.texts_outside(fig) == []
    # the slice is the plane holding the most found points: θ0 and θ1 at c3 = 0.6
    result.markers[0] = Marker("θ0", torch.tensor([-1.0, 0.0, 0.6], dtype=torch.float64), 0.36)
    moved = figures.component_map(topology(result, 0.5), result)
    assert "slice c3 = 0.6" in moved.axes[0].get_title()
    assert _drawn(moved) == {"θ0": True, "θ1": True, "θ2": False}


def test_retraction_has_a_key_for_every_colour() -> None:
    """Every Morse set's colour and white ("undecided") are named in the key, with the
    share of the plane descent takes to the set; on a 3-D grid's middle slice the points
    off it are hollow."""
    result = _double_well()
    graph = morse_graph(result)
    fig = figures.retraction(graph, result)
    legend = figure_checks.legend_texts(fig)
    for morse_set in graph.morse_sets:
        assert f"to set {morse_set.index} ({morse_set.kind}): {100 * morse_set.share:.0f} %" in (
            legend
        )
    assert "undecided" in legend
    # the key's patches carry exactly the colours the map is painted with
    (mesh,) = [c for c in fig.axes[0].collections if c.get_gid() is None]
    painted = {to_hex(colour) for colour in mesh.get_cmap().colors}
    keyed = {
        to_hex(handle.get_facecolor())
        for legend_ in fig.legends
        for handle in legend_.legend_handles
        if isinstance(handle, Patch)
    }
    assert keyed == painted and len(painted) == len(graph.morse_sets) + 1
    assert figure_checks.markers_not_on_top(fig) == []
    assert figure_checks.texts_outside(fig) == []
    three = _well_3d(11)
    slice_fig = figures.retraction(morse_graph(three), three)
    assert _drawn(slice_fig) == {"θ0": True, "θ1": False, "θ2": True}
    assert "hollow: θ1" in slice_fig.axes[0].get_title()


@pytest.mark.slow
def test_morse_figures_have_keys_and_numeric_colour_bars() -> None:
    result = _double_well()
    graph = morse_graph(result)
    names = [f"set {s.index}: {s.kind}" for s in graph.morse_sets]
    sets = figures.morse_sets(graph, result)
    assert set(names) <= set(figure_checks.legend_texts(sets))
    (ticks,) = figure_checks.colorbar_ticks(sets)
    assert len(ticks) >= 2 and all(label for _, label in ticks)
    for value, label in ticks:
        assert figure_checks.tick_number(label) == pytest.approx(value, rel=0.02)
    assert figure_checks.markers_not_on_top(sets) == []
    assert min(figure_checks.marker_pixels(sets).values()) >= 25
    drawn = figures.morse_graph_figure(graph)
    assert set(names) <= set(figure_checks.legend_texts(drawn))
    for fig in (sets, drawn):
        assert figure_checks.texts_outside(fig) == []


def test_similarity_title_fits_with_one_layer() -> None:
    """The demo's net has one hidden layer: its heat map was too narrow for its title."""
    torch.manual_seed(3)
    model = TwoNeuronNet()
    problem = Problem(model, num_probes=16384, seed=3)
    comparison = compare(
        model, problem.theta, problem.theta * 1.0, problem.inputs, metric="relu_procrustes"
    )
    assert len(comparison.layers) == 1
    fig = figures.similarity_heatmap(comparison)
    assert figure_checks.texts_outside(fig) == []
    (bar,) = figure_checks.colorbars(fig)
    assert bar.get_ylabel() == comparison.metric
    (ticks,) = figure_checks.colorbar_ticks(fig)
    assert [figure_checks.tick_number(label) for _, label in ticks] == pytest.approx(
        [value for value, _ in ticks]
    )
