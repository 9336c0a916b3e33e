"""Morse graphs checked against the ε-set's components, on a landscape with a known answer.

Three Gaussian wells on a bowl, J = 1 + 0.1·|x|² − Σₖ exp(−|x − cₖ|²/σ²), σ = 0.15: two
wells 0.5 apart (p0 at (−0.25, 0), p1 at (0.25, 0)) and one far away (p2 at (1.25, 1)).
Each well is a strict minimum, and the ε-set {J < 0.3} has one component around each
(the passes between them are far above 0.3). The gradient flow has three attractors. On
a 65×65 grid the default box map (64×64 boxes, padded by a box) merges p0 and p1 into
one attracting set; with boxes half as wide it has three attracting sets, one per well.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genni_ext.analysis import dynamics
from genni_ext.analysis.persistence import topology
from genni_ext.core.grid import Grid, GridResult, Marker
from genni_ext.errors import InputError

CENTRES = ((-0.25, 0.0), (0.25, 0.0), (1.25, 1.0))
SIGMA = 0.15
EPS = 0.3


def three_wells(coeffs: torch.Tensor) -> torch.Tensor:
    value = 1.0 + 0.1 * (coeffs**2).sum(1)
    for x, y in CENTRES:
        value = value - torch.exp(-((coeffs[:, 0] - x) ** 2 + (coeffs[:, 1] - y) ** 2) / SIGMA**2)
    return value


@pytest.fixture(scope="module")
def wells() -> GridResult:
    grid = Grid.uniform((-2.0, 2.0), 65, 2)
    markers = [
        Marker(f"p{i}", torch.tensor(centre, dtype=torch.float64), 0.0)
        for i, centre in enumerate(CENTRES)
    ]
    return GridResult(three_wells(grid.coeffs).reshape(grid.shape), grid, markers, {})


@pytest.fixture(scope="module")
def eps_set(wells: GridResult):
    result = topology(wells, EPS)
    # The known answer the test relies on: one component per well.
    assert len(result.component_sizes) == 3
    assert len({result.marker_components[f"p{i}"] for i in range(3)} - {0}) == 3
    return result


def attracting(graph: dynamics.MorseGraph) -> list[dynamics.MorseSet]:
    return [s for s in graph.morse_sets if s.kind == "attracting"]


def test_the_coarse_box_map_merges_two_wells_and_says_so(wells, eps_set) -> None:
    graph = dynamics.morse_graph(wells, topology=eps_set, refine_seconds=0)
    check = graph.consistency
    assert check is not None and not check.consistent
    assert check.components == 3
    (merged,) = check.merged
    assert {"p0", "p1"} <= set(graph.morse_sets[merged].markers)
    assert set(check.set_components[merged]) == {
        eps_set.marker_components["p0"],
        eps_set.marker_components["p1"],
    }
    assert {"p0", "p1"} <= set(check.merged_markers)
    assert check.refined is None and "refine_seconds=0" in check.refine_note
    text = graph.summary()
    assert "merged them at this resolution" in text
    assert "p0 and p1" in text and "3 components" in text
    assert "subdivisions=14" in text  # how to run the finer box map


def test_the_refined_box_map_separates_the_wells(wells, eps_set) -> None:
    # A budget far above the finer run's estimate (about 16 × 0.1 s), so that the outcome
    # does not depend on how loaded the machine is.
    graph = dynamics.morse_graph(wells, topology=eps_set, refine_seconds=600)
    refined = graph.consistency.refined
    assert refined is not None and refined.box_shape == (128, 128)
    assert refined.consistency.consistent
    held = sorted(s.markers for s in attracting(refined))
    assert held == [("p0",), ("p1",), ("p2",)]
    assert "refined" in graph.timings
    text = graph.summary()
    assert "merged them at this resolution" in text
    assert "3 attracting sets" in text and "consistent with the ε-set's components" in text


def test_finer_boxes_report_three_attractors_and_no_merge(wells, eps_set) -> None:
    graph = dynamics.morse_graph(wells, subdivisions=14, topology=eps_set)
    check = graph.consistency
    assert check.consistent and not check.merged and not check.unattracted
    assert check.attracting == 3 and check.refined is None
    assert sorted(s.markers for s in attracting(graph)) == [("p0",), ("p1",), ("p2",)]
    text = graph.summary()
    assert "consistent at this resolution" in text and "merged" not in text


def test_every_set_states_its_share_of_the_boxes(wells, eps_set) -> None:
    graph = dynamics.morse_graph(wells, subdivisions=14, topology=eps_set)
    text = graph.summary()
    for morse_set in graph.morse_sets:
        count = morse_set.boxes.shape[0]
        assert f"set {morse_set.index} at J = {morse_set.min_loss:.3g}, {count} boxes (" in text
    assert "% of the plane)" in text


def test_without_topology_there_is_no_check(wells) -> None:
    graph = dynamics.morse_graph(wells)
    assert graph.consistency is None
    assert "ε-set" not in graph.summary()


def test_the_three_dimensional_check_says_space() -> None:
    grid = Grid.uniform((-2.0, 2.0), 17, 3)
    values = ((grid.coeffs[:, 0] ** 2 - 1) ** 2 + (grid.coeffs[:, 1:] ** 2).sum(1)).reshape(
        grid.shape
    )
    result = GridResult(values, grid, [], {})
    graph = dynamics.morse_graph(result, topology=topology(result, 0.2), refine_seconds=0)
    assert graph.consistency is not None and graph.consistency.components == 2
    assert "% of the space)" in graph.summary()
    assert np.isclose(
        sum(s.boxes.shape[0] for s in graph.morse_sets) / graph.num_boxes,
        sum(s.volume for s in graph.morse_sets) / 4.0**3,
    )


def test_bad_consistency_arguments_raise_input_error(wells, eps_set) -> None:
    other = GridResult(wells.values[:33, :33], Grid.uniform((-2.0, 2.0), 33, 2), [], {})
    with pytest.raises(InputError, match="same grid"):
        dynamics.morse_graph(wells, topology=topology(other, EPS))
    with pytest.raises(InputError, match="same grid"):
        dynamics.morse_graph(wells, topology="components")
    for bad in (-1.0, float("nan"), True):
        with pytest.raises(InputError, match="refine_seconds"):
            dynamics.morse_graph(wells, topology=eps_set, refine_seconds=bad)
