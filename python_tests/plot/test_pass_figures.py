"""The pass pictures: the pass map marks the saddle with its height, the disconnectivity
graph joins the points at their pass heights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genni_ext.analysis import lowest_passes
from genni_ext.core.grid import Grid, GridResult, Marker
from genni_ext.errors import InputError
from genni_ext.plot.passes import disconnectivity_graph, pass_map


def _double_well(n: int = 41, dim: int = 2) -> GridResult:
    """J = (x² − 1)² + y² (+ z²): minima at (±1, 0, ...), the saddle at the origin, J = 1."""
    grid = Grid.uniform((-2.0, 2.0), n, dim)
    c = grid.coeffs.double()
    values = ((c[:, 0] ** 2 - 1) ** 2 + (c[:, 1:] ** 2).sum(dim=1)).reshape(grid.shape)
    markers = [
        Marker("θ0", torch.tensor([-1.0] + [0.0] * (dim - 1), dtype=torch.float64), 0.0),
        Marker("θ1", torch.tensor([1.0] + [0.0] * (dim - 1), dtype=torch.float64), 0.0),
    ]
    return GridResult(values, grid, markers, {})


def test_pass_map_marks_the_saddle_with_its_height() -> None:
    result = _double_well()
    passes = lowest_passes(result, eps=0.5)
    assert passes.height("θ0", "θ1") == pytest.approx(1.0)
    fig = pass_map(passes, result)
    ax = fig.axes[0]
    labels = [text.get_text() for text in ax.texts]
    assert "2" in labels  # the pass at J = 1 is 2 ε
    crosses = [c for c in ax.collections if c.get_label() == "pass (its J / ε beside it)"]
    assert len(crosses) == 1
    np.testing.assert_allclose(crosses[0].get_offsets(), [[0.0, 0.0]], atol=1e-12)
    title = ax.get_title().replace("\n", " ")
    assert "1 pass between 2 found points and 0 local minima; 0 groups of points" in title
    with pytest.raises(InputError, match="2-D grid"):
        three = _double_well(9, 3)
        pass_map(lowest_passes(three, eps=0.5), three)
    with pytest.raises(InputError, match="Passes of lowest_passes"):
        pass_map(result, result)  # type: ignore[arg-type]


def test_disconnectivity_graph_joins_at_the_pass() -> None:
    result = _double_well(21, 3)
    passes = lowest_passes(result, eps=2.0)
    fig = disconnectivity_graph(passes, result)
    ax = fig.axes[0]
    ticks = [label.get_text() for label in ax.get_xticklabels()]
    assert set(ticks) == set(passes.points) and {"θ0", "θ1"} <= set(ticks)
    tops = [max(line.get_ydata()) for line in ax.get_lines() if len(line.get_ydata()) == 4]
    assert max(tops) == pytest.approx(max(passes.heights.values()))
    assert [line.get_ydata()[0] for line in ax.get_lines() if line.get_linestyle() == "--"] == [2.0]
    assert ("θ0", "θ1") in passes.shown_pairs()
    flat = GridResult(result.values, result.grid, result.markers[:1], {})
    lonely = lowest_passes(flat, eps=2.0, minima=False)
    with pytest.raises(InputError, match="at least two points"):
        disconnectivity_graph(lonely, flat)
