"""Grids, sweep_grid and GridResult: C-order values checked against hand-computed points,
markers of exactly equivalent points, ε-sets, metadata, and every bad input."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

import genni_ext
from genni_ext.core.grid import Grid, GridResult, Marker, grid_markers, grid_metadata
from genni_ext.core.models import TwoNeuronNet
from genni_ext.core.problem import Problem
from genni_ext.core.subspace import Subspace
from genni_ext.engine.front_door import decide
from genni_ext.errors import InputError, LoweringError
from genni_ext.run.grid_sweep import sweep_grid

A, B, C, D = 0.8, -1.3, 1.1, 0.7


def _problem(dtype: torch.dtype = torch.float64, num_probes: int = 256) -> Problem:
    """The paper's c·ReLU(a x) + d·ReLU(b x) at θ = (a, b, c, d), standard-normal probes."""
    model = TwoNeuronNet().to(dtype)
    theta = torch.tensor([A, B, C, D], dtype=dtype)
    inputs = torch.randn(num_probes, 1, generator=torch.Generator().manual_seed(5), dtype=dtype)
    return Problem(model, inputs, theta=theta, seed=5)


def _equivalent_subspace(m: int = 2, dtype: torch.dtype = torch.float64) -> Subspace:
    """θ0 = θ and points that compute exactly θ's function: ReLU(2a x) = 2 ReLU(a x), so
    (2a, b, c/2, d) and (a, 2b, c, d/2) are equivalent, as is swapping the neurons."""
    points = [[2 * A, B, C / 2, D], [A, 2 * B, C, D / 2], [B, A, D, C]][:m]
    return Subspace.from_points(
        torch.tensor([A, B, C, D], dtype=dtype), torch.tensor(points, dtype=dtype)
    )


@pytest.fixture(scope="module")
def problem() -> Problem:
    return _problem()


@pytest.fixture(scope="module")
def subspace() -> Subspace:
    return _equivalent_subspace()


@pytest.fixture(scope="module")
def result(problem: Problem, subspace: Subspace) -> GridResult:
    return sweep_grid(problem, subspace, Grid.uniform((-2.0, 2.0), 21, 2))


# --- grids -----------------------------------------------------------------------------------


def test_uniform_is_c_order_like_cartesian_prod() -> None:
    grid = Grid.uniform((-2, 2), 5, 2)
    axis = torch.linspace(-2, 2, 5, dtype=torch.float64)
    assert grid.shape == (5, 5) and grid.size == 25 and grid.dim == 2
    assert grid.coeffs.dtype == torch.float64 and grid.coeffs.shape == (25, 2)
    assert torch.equal(grid.coeffs, torch.cartesian_prod(axis, axis))
    assert grid.axes is not None and all(torch.equal(a, axis) for a in grid.axes)
    i, j = 3, 1
    assert grid.coeffs[i * 5 + j].tolist() == [axis[i].item(), axis[j].item()]
    assert axis[0] == -2 and axis[-1] == 2  # endpoints included


@pytest.mark.parametrize(("n", "dim"), [(2, 1), (4, 1), (3, 3), (2, 4)])
def test_uniform_shapes(n: int, dim: int) -> None:
    grid = Grid.uniform((0.0, 1.0), n, dim)
    assert grid.shape == (n,) * dim and grid.coeffs.shape == (n**dim, dim)
    if dim == 3:
        axis = torch.linspace(0, 1, n, dtype=torch.float64)
        assert torch.equal(grid.coeffs, torch.cartesian_prod(axis, axis, axis))


def test_from_axes_takes_lists_and_tensors_in_the_given_order() -> None:
    grid = Grid.from_axes([[0.5, -1.0, 0.5], torch.tensor([3, 1], dtype=torch.int64)])
    assert grid.shape == (3, 2) and grid.coeffs.shape == (6, 2)
    assert grid.axes is not None and grid.axes[1].dtype == torch.float64
    assert grid.coeffs.tolist() == [
        [0.5, 3.0], [0.5, 1.0], [-1.0, 3.0], [-1.0, 1.0], [0.5, 3.0], [0.5, 1.0],
    ]  # fmt: skip


def test_from_axes_reads_a_matrix_as_one_axis_per_row() -> None:
    rows = torch.tensor([[0.0, 1.0, 2.0], [5.0, 6.0, 7.0]])
    assert Grid.from_axes(rows).equals(Grid.from_axes([[0, 1, 2], [5, 6, 7]]))


def test_from_coeffs_copies_to_float64() -> None:
    coeffs = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=torch.float32)
    grid = Grid.from_coeffs(coeffs)
    assert grid.shape == (2,) and grid.axes is None and grid.dim == 3 and grid.size == 2
    assert grid.coeffs.dtype == torch.float64 and torch.equal(grid.coeffs, coeffs.double())
    coeffs[0, 0] = 9.0
    assert grid.coeffs[0, 0] == 1.0


def test_grid_equals() -> None:
    grid = Grid.uniform((-1, 1), 3, 2)
    assert grid.equals(Grid.from_axes([torch.linspace(-1, 1, 3)] * 2))
    assert not grid.equals(Grid.from_coeffs(grid.coeffs))
    assert not grid.equals(Grid.uniform((-1, 1), 3, 1))
    assert not grid.equals(Grid.uniform((-1, 2), 3, 2))
    assert Grid.from_coeffs(grid.coeffs).equals(Grid.from_coeffs(grid.coeffs.clone()))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Grid.uniform((1, 1), 3, 2), r"empty or reversed; pass \(a, b\) with a < b"),
        (lambda: Grid.uniform((2, -2), 3, 2), "empty or reversed"),
        (lambda: Grid.uniform((float("nan"), 1), 3, 2), r"bound\[0\] must be a finite number"),
        (lambda: Grid.uniform((0, float("inf")), 3, 2), r"bound\[1\] must be a finite number"),
        (lambda: Grid.uniform((0, 1, 2), 3, 2), r"bound must be a pair \(a, b\)"),
        (lambda: Grid.uniform("ab", 3, 2), "bound must be a pair"),
        (lambda: Grid.uniform((0, "1"), 3, 2), r"bound\[1\] must be a finite number"),
        (lambda: Grid.uniform((0, 1), 0, 2), "n must be an int >= 2.*got 0"),
        (lambda: Grid.uniform((-2, 2), 1, 2), r"n must be an int >= 2.*got 1.*Grid\.from_axes"),
        (lambda: Grid.uniform((0, 1), 2.5, 2), "n must be an int >= 2"),
        (lambda: Grid.uniform((0, 1), True, 2), "n must be an int >= 2"),
        (lambda: Grid.uniform((0, 1), 3, 0), "dim must be a positive int, got 0"),
        (lambda: Grid.uniform((0, 1), 10**5, 3), "more than the 1e[+]09 allowed"),
        (lambda: Grid.from_axes([]), "axes must be a non-empty list"),
        (lambda: Grid.from_axes(torch.zeros(3)), r"axes is a tensor of shape \[3\]"),
        (lambda: Grid.from_axes(7), "axes must be a non-empty list"),
        (lambda: Grid.from_axes([[0.0, 1.0], []]), r"axes\[1\] must be a non-empty 1-D list"),
        (lambda: Grid.from_axes([torch.zeros(2, 2)]), r"axes\[0\] must be a non-empty 1-D"),
        (lambda: Grid.from_axes([[0.0, float("nan")]]), r"axes\[0\] contains NaN"),
        (lambda: Grid.from_axes([torch.tensor([1.0, float("-inf")])]), "contains Inf"),
        (lambda: Grid.from_axes([["a", "b"]]), r"axes\[0\]\[0\] must be a number"),
        (lambda: Grid.from_axes([torch.zeros(2, dtype=torch.complex64)]), "pass real numbers"),
        (lambda: Grid.from_axes([torch.zeros(2, dtype=torch.bool)]), "pass real numbers"),
        (lambda: Grid.from_axes(["01"]), r"axes\[0\] must be a tensor or a sequence"),
        (lambda: Grid.from_coeffs(torch.zeros(4)), r"\[G, m\] .* got \[4\]"),
        (lambda: Grid.from_coeffs(torch.zeros(0, 2)), r"G, m >= 1 .* got \[0, 2\]"),
        (lambda: Grid.from_coeffs(torch.zeros(3, 0)), r"G, m >= 1 .* got \[3, 0\]"),
        (lambda: Grid.from_coeffs(torch.tensor([[0.0, float("nan")]])), "coeffs contains NaN"),
        (lambda: Grid.from_coeffs([[0.0, 1.0]]), "coeffs must be a torch.Tensor"),
        (lambda: Grid(torch.zeros(4, 2), (4,), None), "float64 tensor"),
        (lambda: Grid(torch.zeros(4, 2, dtype=torch.float64), (3,), None), "has 3 points"),
    ],
)
def test_grid_bad_input(make, message: str) -> None:
    with pytest.raises(InputError, match=message):
        make()


# --- sweep_grid --------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_values_are_c_order_against_hand_computed_points(
    problem: Problem, subspace: Subspace, backend: str
) -> None:
    axes = ([-1.0, 0.25, 1.5], [-0.5, 0.0, 0.75, 2.0])
    grid = Grid.from_axes(axes)
    got = sweep_grid(problem, subspace, grid, backend=backend)
    assert got.values.shape == (3, 4) and got.values.dtype == torch.float64
    assert got.axes is grid.axes and got.grid is grid
    b0, b1 = subspace.basis
    expected = torch.empty(3, 4, dtype=torch.float64)
    for i, x in enumerate(axes[0]):
        for j, y in enumerate(axes[1]):
            expected[i, j] = problem.loss(subspace.center + x * b0 + y * b1)
    assert float(expected.std()) > 0.01  # J varies, so a transposed grid could not pass
    torch.testing.assert_close(got.values, expected, rtol=1e-10, atol=1e-13)
    assert got.metadata["backend"] == ("torch" if backend == "torch" else "fused-cpu")


def test_three_dimensional_grid_and_coefficient_list(problem: Problem) -> None:
    subspace = _equivalent_subspace(3)
    grid = Grid.from_axes([[-1.0, 0.5], [0.0, 1.0, 2.0], [-2.0, -1.0, 0.0, 1.0]])
    got = sweep_grid(problem, subspace, grid)
    assert got.values.shape == (2, 3, 4)
    point = subspace.center + 0.5 * subspace.basis[0] + 2.0 * subspace.basis[1]
    point = point - 1.0 * subspace.basis[2]
    torch.testing.assert_close(got.values[1, 2, 1], problem.loss(point), rtol=1e-10, atol=1e-13)

    coeffs = torch.tensor([[0.1, -0.2, 0.3], [1.0, 1.0, -1.0]], dtype=torch.float64)
    listed = sweep_grid(problem, subspace, Grid.from_coeffs(coeffs))
    assert listed.values.shape == (2,) and listed.axes is None
    expected = problem.loss(subspace.params(coeffs))
    torch.testing.assert_close(listed.values, expected, rtol=1e-10, atol=1e-13)
    assert listed.metadata["grid_shape"] == [2] and listed.metadata["m"] == 3


def test_markers_of_equivalent_points(problem: Problem, subspace: Subspace, result) -> None:
    names = [marker.name for marker in result.markers]
    assert names == ["θ0", "θ1", "θ2"]
    for marker in result.markers:
        assert marker.coords.dtype == torch.float64 and marker.coords.shape == (2,)
        assert abs(marker.loss) < 1e-24  # exactly equivalent points: J = 0
    assert torch.equal(result.markers[0].coords, torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(result.markers[1].coords, subspace.coordinates(subspace.points[0]))
    torch.testing.assert_close(result.markers[2].coords, subspace.coordinates(subspace.points[1]))
    # θ1 − θ0 is the first direction, so θ1 sits on the first axis.
    norm = float(torch.linalg.vector_norm(subspace.points[0] - subspace.center))
    torch.testing.assert_close(result.markers[1].coords, torch.tensor([norm, 0.0]).double())
    assert grid_markers(problem, subspace) == result.markers


def test_markers_report_the_loss_of_points_that_are_not_equivalent(problem: Problem) -> None:
    center = torch.tensor([A, B, C, D], dtype=torch.float64)
    far = torch.tensor([[A + 0.3, B, C, D - 0.2]], dtype=torch.float64)
    markers = grid_markers(problem, Subspace.from_points(center, far))
    assert markers[1].loss > 1e-3
    assert markers[1].loss == pytest.approx(float(problem.loss(far[0])), rel=1e-12)


def test_eps_set_and_params_agree(problem: Problem, subspace: Subspace, result) -> None:
    eps = 0.0025
    mask = result.eps_mask(eps)
    assert mask.dtype == torch.bool and mask.shape == (21, 21)
    count = int(mask.sum())
    assert 0 < count < mask.numel()
    assert bool(mask[10, 10])  # the centre, J = 0
    coeffs = result.eps_set(eps)
    assert coeffs.shape == (count, 2) and coeffs.dtype == torch.float64
    assert torch.equal(coeffs, result.grid.coeffs[mask.flatten()])
    chunks = list(result.eps_params(eps, subspace, batch_rows=7))
    assert all(0 < chunk.shape[0] <= 7 for chunk in chunks)
    assert len(chunks) == -(-count // 7)
    params = torch.cat(chunks)
    assert params.shape == (count, 4) and params.dtype == torch.float64
    torch.testing.assert_close(params, subspace.params(coeffs))
    losses = problem.loss(params)
    torch.testing.assert_close(losses, result.values[mask], rtol=1e-10, atol=1e-13)
    assert bool((losses < eps).all())
    # An empty ε-set: no coefficients, no chunks.
    above = dataclasses.replace(result, values=result.values + 1.0)
    assert above.eps_set(0.5).shape == (0, 2)
    assert list(above.eps_params(0.5, subspace)) == []


def test_metadata(problem: Problem, result) -> None:
    meta = result.metadata
    json.dumps(meta)  # JSON-able
    assert meta["backend"] == "fused-cpu" and meta["dtype"] == "float64"
    assert meta["seeds"] == {"problem": 5}
    assert meta["theta_hash"] == problem.theta_hash and meta["probes_hash"] == problem.probes_hash
    assert meta["version"] == genni_ext.__version__
    assert meta["problem"] == problem.describe()
    assert meta["grid_shape"] == [21, 21] and meta["m"] == 2
    assert meta["wall_time_s"] > 0
    again = grid_metadata(
        problem, result.grid, backend="fused-cpu", wall_time_s=meta["wall_time_s"]
    )
    assert again == meta


def test_grid_result_equals(result: GridResult) -> None:
    assert result.equals(result)
    through_json = dataclasses.replace(result, metadata=json.loads(json.dumps(result.metadata)))
    assert result.equals(through_json)
    copy = GridResult(
        result.values.clone(),
        Grid.from_axes([axis.clone() for axis in result.grid.axes]),
        [Marker(m.name, m.coords.clone(), m.loss) for m in result.markers],
        dict(result.metadata),
    )
    assert result.equals(copy)
    changed = result.values.clone()
    changed[3, 4] += 1e-12
    assert not result.equals(dataclasses.replace(result, values=changed))
    assert not result.equals(dataclasses.replace(result, markers=result.markers[:2]))
    assert not result.equals(dataclasses.replace(result, metadata={**result.metadata, "m": 3}))
    assert not result.equals(result.values)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"float64 tensor of the grid's shape \[21, 21\]"):
        GridResult(result.values.float(), result.grid, result.markers, result.metadata)


def test_float32_problem() -> None:
    problem32 = _problem(torch.float32)
    subspace32 = _equivalent_subspace(2, torch.float32)
    got = sweep_grid(problem32, subspace32, Grid.uniform((-1, 1), 4, 2))
    assert got.values.dtype == torch.float64 and got.metadata["dtype"] == "float32"
    assert all(abs(marker.loss) < 1e-12 for marker in got.markers)
    with pytest.raises(InputError, match=r"subspace is torch.float64 .* problem is torch.float32"):
        sweep_grid(problem32, _equivalent_subspace(2), Grid.uniform((-1, 1), 4, 2))


def _gelu_problem() -> Problem:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 3, bias=False), nn.GELU(), nn.Linear(3, 1, bias=False))
    return Problem(model.double(), torch.randn(16, 1, dtype=torch.float64))


def test_the_decision_names_the_engine() -> None:
    problem = _problem(num_probes=8)

    def label(problem: object, backend: str) -> str:
        return decide(problem.model, problem.inputs, problem.targets, backend).backend

    assert label(problem, "auto") == "fused-cpu"
    assert label(problem, "fused") == "fused-cpu"
    assert label(problem, "torch") == "torch"
    gelu = _gelu_problem()  # GELU does not lower: auto runs torch
    assert label(gelu, "auto") == "torch"
    with pytest.raises(LoweringError, match="GELU"):
        label(gelu, "fused")
    with pytest.raises(InputError, match="backend='cuda' is not known"):
        label(problem, "cuda")
    subspace = Subspace.from_points(gelu.theta, gelu.theta[None] * 2)
    swept = sweep_grid(gelu, subspace, Grid.uniform((-1, 1), 3, 1))
    assert swept.metadata["backend"] == "torch" and swept.values.shape == (3,)


_GRID = Grid.uniform((-1, 1), 3, 2)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p, s, r: sweep_grid(p, s, Grid.uniform((-1, 1), 3, 3)),
         "grid has 3 coefficients per point but the subspace has m=2"),
        (lambda p, s, r: sweep_grid(_gelu_problem(), s, _GRID),
         "subspace lives in a space of 4 parameters but the problem's model has 6"),
        (lambda p, s, r: sweep_grid(p, s.basis, _GRID), "subspace must be a Subspace"),
        (lambda p, s, r: sweep_grid(p, s, _GRID.coeffs), "grid must be a Grid"),
        (lambda p, s, r: sweep_grid("problem", s, _GRID), "problem must be a genni_ext.Problem"),
        (lambda p, s, r: sweep_grid(p, s, _GRID, backend="gpu"), "backend='gpu'"),
        (lambda p, s, r: sweep_grid(p, s, _GRID, num_threads=0), "num_threads must be"),
        (lambda p, s, r: r.eps_mask(0.0), "eps must be a positive finite number"),
        (lambda p, s, r: r.eps_set(float("nan")), "eps must be a positive finite number"),
        (lambda p, s, r: r.eps_set("0.1"), "eps must be a positive number"),
        (lambda p, s, r: r.eps_params(0.1, s, batch_rows=0), "batch_rows must be a positive"),
        (lambda p, s, r: r.eps_params(0.1, _equivalent_subspace(3)), "subspace has m=3"),
        (lambda p, s, r: r.eps_params(0.1, "subspace"), "subspace must be a Subspace"),
        (lambda p, s, r: grid_markers(p, "subspace"), "subspace must be a Subspace"),
        (lambda p, s, r: grid_metadata(p, "grid", backend="torch", wall_time_s=0.0),
         "grid must be a Grid"),
    ],
)  # fmt: skip
def test_sweep_grid_bad_input(problem: Problem, subspace: Subspace, result, make, message) -> None:
    with pytest.raises(InputError, match=message):
        make(problem, subspace, result)


def test_eps_relative_uses_the_sweeps_constant_function_loss() -> None:
    grid = Grid.uniform((-1.0, 1.0), 5, 2)
    values = grid.coeffs.square().sum(dim=1).reshape(grid.shape)
    result = GridResult(values, grid, [], {"problem": {"constant_loss": 0.8}})
    assert torch.equal(result.eps_mask(eps_relative=0.5), result.eps_mask(0.4))
    assert torch.equal(result.eps_set(eps_relative=0.5), result.eps_set(0.4))
    bare = GridResult(values, grid, [], {})
    with pytest.raises(InputError, match="does not record"):
        bare.eps_mask(eps_relative=0.5)
    with pytest.raises(InputError, match="exactly one"):
        result.eps_mask(0.4, eps_relative=0.5)
