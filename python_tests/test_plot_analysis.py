"""The analysis figures: each draws the numbers of its result and refuses other inputs."""

from __future__ import annotations

import io

import matplotlib.image
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from genni_ext import Problem, search
from genni_ext.analysis import compare, explain, morse_graph, stitch_all, topology
from genni_ext.errors import InputError
from genni_ext.grid import Grid, GridResult, Marker
from genni_ext.models import TwoNeuronNet, mlp
from genni_ext.plot import analysis as figures


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
    legend = [t.get_text() for t in components.axes[0].get_legend().get_texts()]
    assert any(text.startswith("θ0: component") for text in legend)
    for fig in (curve, diagram, components):
        _png(fig)
    with pytest.raises(InputError, match="Topology"):
        figures.betti_curve(result)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="pass the result it was computed from"):
        figures.component_map(topo, _double_well(21))


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
    _png(bar)
    with pytest.raises(InputError, match="Explanation"):
        figures.found_points(object())  # type: ignore[arg-type]
