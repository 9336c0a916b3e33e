"""Which points paths join below ε (analysis.connectivity_graph), on the two-neuron net
whose answer is known: θ's rescaling orbit is one piece, joined at J = 0 by the orbit path,
and its unit-swapped copy lies behind a barrier of exactly min(M₊s₊², M₋s₋²), which no
path found may undercut."""

from __future__ import annotations

import pytest
import torch

from genni_ext.analysis import connectivity_graph
from genni_ext.analysis.connections import swapped_orbit_barrier
from genni_ext.analysis.connectivity import THETA
from genni_ext.core.models import TwoNeuronNet
from genni_ext.core.problem import Problem
from genni_ext.errors import InputError
from genni_ext.plot.connectivity import connection_profiles, connectivity_graph_figure

THETA_VALUES = (0.8, -0.6, 0.9, 0.7)  # a > 0 > b: [θ] is the 2-D rescaling orbit
EPS = 1e-3


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _point(a: float, b: float, c: float, d: float) -> torch.Tensor:
    return torch.tensor([a, b, c, d], dtype=torch.float64)


@pytest.fixture(scope="module")
def graph_and_problem() -> tuple[object, Problem]:
    theta = torch.tensor(THETA_VALUES, dtype=torch.float64)
    problem = Problem(TwoNeuronNet().double(), theta=theta, num_probes=512, seed=1)
    a, b, c, d = THETA_VALUES
    points = {
        "scaled": _point(2 * a, 0.5 * b, c / 2, d / 0.5),
        "scaled again": _point(0.7 * a, 1.5 * b, c / 0.7, d / 1.5),
        "swapped": _point(b, a, d, c),
        "swapped scaled": _point(1.3 * b, 0.8 * a, d / 1.3, c / 0.8),
    }
    graph = connectivity_graph(problem, points, EPS, curve_steps=150)
    return graph, problem


def test_the_orbit_is_one_group_and_its_swapped_copy_another(graph_and_problem) -> None:
    graph, problem = graph_and_problem
    assert graph.components() == [[THETA, "scaled", "scaled again"], ["swapped", "swapped scaled"]]
    for name in ("scaled", "scaled again"):
        path = graph.edges[(THETA, name)]
        assert path.below_eps and path.peak <= 1e-20  # the orbit path: θ's J all along
    # The lowest path found between the groups never undercuts the exact barrier.
    between = graph.lowest_between(graph.components()[0], graph.components()[1])
    assert between is not None and not between.below_eps
    assert between.peak >= swapped_orbit_barrier(problem) * (1 - 1e-9)
    summary = graph.summary()
    assert "2 groups joined by paths whose J stays below ε" in summary
    assert "which is not a proof that none exists" in summary
    assert graph.tried["linear"] >= 4 and graph.tried["orbit"] == 2 and graph.tried["curve"] == 1


def test_figures_draw_the_groups_and_the_profiles(graph_and_problem) -> None:
    graph, _ = graph_and_problem
    figure = connectivity_graph_figure(graph)
    title = figure.axes[0].get_title().replace("\n", " ")
    assert "Groups joined below ε in the full space: 2" in title
    labels = [text.get_text() for text in figure.axes[0].texts]
    between = graph.lowest_between(graph.components()[0], graph.components()[1])
    assert f"{between.peak / graph.eps:.3g} ε ({between.method})" in labels
    profiles = connection_profiles(graph)
    assert "from θ to each of 4 points: 2 stay below ε" in profiles.axes[0].get_title()
    with pytest.raises(InputError, match="ConnectivityGraph"):
        connection_profiles(object())  # type: ignore[arg-type]


def test_bad_input() -> None:
    problem = Problem(TwoNeuronNet().double(), num_probes=64, seed=1)
    with pytest.raises(InputError, match="at least one point"):
        connectivity_graph(problem, {}, EPS)
    with pytest.raises(InputError, match="names θ itself"):
        connectivity_graph(problem, {THETA: problem.theta}, EPS)
    with pytest.raises(InputError, match="trained must be"):
        connectivity_graph(problem, {"p": problem.theta}, EPS, trained="sgd")
