"""Local identifiability against closed forms.

The two-neuron net φ(x) = c·ReLU(a x) + d·ReLU(b x) on x ∈ ℝ: with a > 0 > b it is
x ↦ ca·x on x > 0 and db·x on x < 0, so the function fixes (ca, db): a 2-dimensional class,
exactly the two rescalings. With a, b < 0 it is (ca + db)·x on x < 0 and 0 on x > 0: one
constraint, a 3-dimensional class of which rescaling explains 2.

A linear net x ↦ W₂W₁x (W₁ ∈ ℝ^{2×3}, W₂ ∈ ℝ^{4×2}) computes a rank-2 4×3 matrix; those
form a manifold of dimension 2·(3 + 4 − 2) = 10, so of P = 14 parameters the class is
14 − 10 = 4 = 2² dimensional, all GL(2). With biases (P = 20) the function adds
W₂b₁ + b₂, any vector of ℝ⁴: image dimension 14, class 6 = GL(2) (4) + the 2 bias shifts
b₁ → b₁ + δ, b₂ → b₂ − W₂δ.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from genni_ext import Problem, Subspace
from genni_ext.analysis import local_dimension as identifiability_module
from genni_ext.analysis.local_dimension import identifiability, symmetry_generators
from genni_ext.analysis.structure import constant_loss, hidden_layers
from genni_ext.core.models import LeNet5, TwoNeuronNet, flatten_params, mlp
from genni_ext.errors import InputError

DEMO_THETA = (-0.084, -0.034, -0.265, 0.163)
OPPOSITE_THETA = (0.7, -1.3, 0.9, -0.4)


def two_neuron_problem(theta: tuple[float, ...], probes: int = 512) -> Problem:
    return Problem(
        TwoNeuronNet().double(),
        theta=torch.tensor(theta, dtype=torch.float64),
        num_probes=probes,
        seed=3,
    )


def seeded_mlp(sizes: list[int], activation: str = "relu", bias: bool = True) -> nn.Module:
    torch.manual_seed(11)
    return mlp(sizes, activation, bias).double()


@pytest.fixture(params=["svd", "gram"])
def method(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test on both decompositions: the Gram path is forced by allowing no stacked
    Jacobian with more rows than parameters."""
    if request.param == "gram":
        monkeypatch.setattr(identifiability_module, "STACKED_ENTRIES", 0)
    return request.param


def test_two_neuron_opposite_signs_is_all_rescaling(method: str) -> None:
    result = identifiability(two_neuron_problem(OPPOSITE_THETA))
    assert result.method == method
    assert (result.rank, result.null_dim) == (2, 2)
    assert (result.symmetry_dim, result.unexplained_dim) == (2, 0)
    assert result.gap is not None and result.gap > 1e6
    assert not result.probe_limited
    assert result.singular_values.shape == (4,)
    assert list(result.singular_values) == sorted(result.singular_values, reverse=True)


def test_two_neuron_equal_signs_has_one_unexplained_dimension(method: str) -> None:
    result = identifiability(two_neuron_problem(DEMO_THETA))
    assert result.method == method
    assert (result.rank, result.null_dim) == (1, 3)
    assert (result.symmetry_dim, result.unexplained_dim) == (2, 1)
    text = result.summary()
    assert "locally 3-dimensional" in text
    assert "explain 2 of those 3" in text
    assert "1 is not explained" in text


def test_generators_of_two_neuron_net_are_the_rescalings() -> None:
    theta = torch.tensor(DEMO_THETA, dtype=torch.float64)
    layers = hidden_layers(TwoNeuronNet(), (1,))
    a, b, c, d = DEMO_THETA
    expected = torch.tensor([[a, 0, -c, 0], [0, b, 0, -d]], dtype=torch.float64)
    torch.testing.assert_close(symmetry_generators(layers, theta), expected)


def test_generators_leave_the_function_unchanged_to_first_order() -> None:
    model = seeded_mlp([3, 4, 2], "identity")
    problem = Problem(model, num_probes=64)
    generators = symmetry_generators(hidden_layers(model, (3,)), problem.theta)
    assert generators.shape == (4 * 4 + 4, problem.num_params)  # GL(4) and 4 bias shifts
    step = 1e-4
    for generator in generators:
        moved = problem.theta + step * generator / generator.norm()
        # J is quadratic in the step off the class and quartic along a tangent.
        assert float(problem.loss(moved)) < 1e-12


@pytest.mark.parametrize(
    ("bias", "rank", "null_dim", "symmetry_dim"),
    [(False, 10, 4, 4), (True, 14, 6, 6)],
)
def test_linear_hidden_layer_has_general_linear_symmetry(
    bias: bool, rank: int, null_dim: int, symmetry_dim: int
) -> None:
    problem = Problem(seeded_mlp([3, 2, 4], "identity", bias), num_probes=64)
    result = identifiability(problem)
    assert (result.rank, result.null_dim) == (rank, null_dim)
    assert (result.symmetry_dim, result.unexplained_dim) == (symmetry_dim, 0)


def test_tanh_net_has_no_continuous_symmetry() -> None:
    # Generic tanh nets are identifiable up to permutations and sign flips (Sussmann 1992):
    # the class is locally a point.
    result = identifiability(Problem(seeded_mlp([2, 3, 1], "tanh"), num_probes=64))
    assert result.symmetry_dim == 0
    assert result.known_symmetries == ()
    assert (result.null_dim, result.unexplained_dim) == (0, 0)


def test_conv_channels_rescale() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 1)
    ).double()
    result = identifiability(Problem(model, input_shape=(1, 6, 6), num_probes=200, seed=2))
    # Two channels, each rescalable; their tangents lie in the null space.
    assert result.symmetry_dim == 2
    assert result.null_dim - result.unexplained_dim == 2


def test_probe_limited_is_flagged() -> None:
    model = seeded_mlp([3, 10, 1])  # 51 parameters
    few = identifiability(Problem(model, num_probes=20))
    assert few.probe_limited
    assert few.rank <= 20
    assert "upper bound" in few.summary()
    assert not identifiability(Problem(model, num_probes=200)).probe_limited


def unit_plane(center: torch.Tensor, directions: list[torch.Tensor]) -> Subspace:
    basis = torch.linalg.qr(torch.stack(directions).T).Q.T.contiguous()
    return Subspace(center, basis, center + basis)


def rescaling(theta: tuple[float, ...], unit: int) -> torch.Tensor:
    row = torch.zeros(4, dtype=torch.float64)
    row[unit], row[2 + unit] = theta[unit], -theta[2 + unit]
    return row


def test_plane_of_two_rescalings_is_all_tangent() -> None:
    problem = two_neuron_problem(OPPOSITE_THETA)
    plane = unit_plane(problem.theta, [rescaling(OPPOSITE_THETA, 0), rescaling(OPPOSITE_THETA, 1)])
    result = identifiability(problem, subspace=plane)
    assert result.restricted_to == "subspace"
    assert (result.num_directions, result.null_dim) == (2, 2)
    assert (result.symmetry_dim, result.unexplained_dim) == (2, 0)


def test_plane_with_a_non_tangent_direction() -> None:
    problem = two_neuron_problem(OPPOSITE_THETA)
    moves_a = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    plane = unit_plane(problem.theta, [rescaling(OPPOSITE_THETA, 0), moves_a])
    result = identifiability(problem, subspace=plane)
    assert (result.rank, result.null_dim) == (1, 1)
    assert (result.symmetry_dim, result.unexplained_dim) == (1, 0)


def test_plane_with_the_transfer_direction() -> None:
    # With a, b < 0, c → c + t/a, d → d − t/b keeps ca + db: tangent, but not a symmetry.
    a, b, _, _ = DEMO_THETA
    problem = two_neuron_problem(DEMO_THETA)
    transfer = torch.tensor([0.0, 0.0, 1 / a, -1 / b], dtype=torch.float64)
    plane = unit_plane(problem.theta, [rescaling(DEMO_THETA, 0), transfer])
    result = identifiability(problem, subspace=plane)
    assert result.null_dim == 2
    assert (result.symmetry_dim, result.unexplained_dim) == (1, 1)


def test_subspace_analysis_above_max_params() -> None:
    problem = two_neuron_problem(OPPOSITE_THETA)
    with pytest.raises(InputError, match="max_params"):
        identifiability(problem, max_params=3)
    plane = unit_plane(problem.theta, [rescaling(OPPOSITE_THETA, 1)])
    result = identifiability(problem, subspace=plane, max_params=3)
    assert (result.null_dim, result.symmetry_dim, result.unexplained_dim) == (1, 1, 0)


def test_model_that_does_not_lower_still_gets_a_rank() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.GELU(), nn.Linear(3, 1)).double()
    result = identifiability(Problem(model, num_probes=100))
    assert result.rank == result.num_params  # GELU nets are generically identifiable
    assert result.symmetry_dim is None and result.unexplained_dim is None
    assert result.symmetry_reason is not None and "GELU" in result.symmetry_reason
    assert "not evaluated" in result.summary()


def test_theta_argument_is_where_the_jacobian_is_taken() -> None:
    problem = two_neuron_problem(DEMO_THETA)
    result = identifiability(problem, theta=torch.tensor(OPPOSITE_THETA, dtype=torch.float64))
    assert (result.null_dim, result.unexplained_dim) == (2, 0)


def test_hidden_layers_index_the_module_weights() -> None:
    model = LeNet5()
    theta = flatten_params(model)
    layers = hidden_layers(model, model.input_shape)
    assert [layer.num_units for layer in layers] == [6, 16, 120, 84]
    assert [(layer.kind, layer.next_kind) for layer in layers] == [
        ("conv2d", "conv2d"),
        ("conv2d", "linear"),
        ("linear", "linear"),
        ("linear", "linear"),
    ]
    assert layers[0].pools == ("maxpool2d",) and layers[2].pools == ()
    first, second, third, fourth = layers
    torch.testing.assert_close(theta[first.incoming], model[0].weight.detach().flatten(1))
    torch.testing.assert_close(theta[first.bias], model[0].bias.detach())
    # Channel c of conv1 is read by conv2's filters [:, c]; channel c of conv2 by the 25
    # columns of fc1 that Flatten gives it.
    torch.testing.assert_close(
        theta[first.outgoing], model[3].weight.detach().transpose(0, 1).flatten(2)
    )
    torch.testing.assert_close(
        theta[second.outgoing],
        model[7].weight.detach().view(120, 16, 25).transpose(0, 1),
    )
    torch.testing.assert_close(theta[third.outgoing][:, :, 0], model[9].weight.detach().T)
    torch.testing.assert_close(theta[fourth.next_bias], model[11].bias.detach())


@pytest.mark.parametrize(
    ("between", "group", "shiftable"),
    [
        ([nn.ReLU()], "rescaling", False),
        ([nn.LeakyReLU(0.1), nn.MaxPool2d(2)], "rescaling", False),
        ([nn.MaxPool2d(2)], "rescaling", True),
        ([nn.AvgPool2d(2)], "general linear", True),
        ([nn.AvgPool2d(3, 1, padding=1)], "general linear", False),
        ([nn.AvgPool2d(3, 1, padding=1, count_include_pad=False)], "general linear", True),
        ([nn.Tanh()], "none", False),
        ([nn.ReLU(), nn.Sigmoid()], "none", False),
    ],
)
def test_continuous_group_of_conv_layers(
    between: list[nn.Module], group: str, shiftable: bool
) -> None:
    torch.manual_seed(1)
    body = nn.Sequential(nn.Conv2d(1, 3, 3), *between, nn.Conv2d(3, 2, 1), nn.Flatten())
    features = body(torch.zeros(1, 1, 6, 6)).shape[1]
    model = nn.Sequential(*body, nn.Linear(features, 1)).double()
    (layer, _) = layers = hidden_layers(model, (1, 6, 6))
    assert (layer.continuous_group, layer.shiftable) == (group, shiftable)
    problem = Problem(model, input_shape=(1, 6, 6), num_probes=32)
    for generator in symmetry_generators(layers, problem.theta):
        moved = problem.theta + 1e-4 * generator / generator.norm()
        assert float(problem.loss(moved)) < 1e-12


def test_padding_of_the_next_layer_blocks_bias_shifts() -> None:
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Conv2d(3, 2, 3, padding=1))
    (layer,) = hidden_layers(model, (1, 6, 6))
    assert layer.continuous_group == "general linear" and not layer.shiftable


def test_bad_structure_arguments() -> None:
    with pytest.raises(InputError, match="Module"):
        hidden_layers("model", (1,))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="input_shape"):
        hidden_layers(TwoNeuronNet(), "1")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="cannot read"):
        hidden_layers(TwoNeuronNet(), (1, 2))
    layers = hidden_layers(TwoNeuronNet(), (1,))
    with pytest.raises(InputError, match="layers"):
        symmetry_generators("layers", torch.zeros(4))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="flat parameter vector"):
        symmetry_generators(layers, torch.zeros(3))
    with pytest.raises(InputError, match="NaN"):
        symmetry_generators(layers, torch.full((4,), math.nan))


def test_constant_loss_closed_form() -> None:
    assert constant_loss(torch.tensor([[1.0], [3.0]])) == pytest.approx(1.0)
    assert constant_loss(torch.tensor([[0.0, 0.0], [2.0, 4.0]])) == pytest.approx(5.0)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"theta": torch.zeros(3, dtype=torch.float64)}, "shape"),
        ({"theta": torch.tensor([math.nan, 0.0, 0.0, 0.0])}, "NaN"),
        ({"tol": 0.0}, "tol"),
        ({"tol": math.nan}, "tol"),
        ({"max_params": 0}, "max_params"),
        ({"subspace": "plane"}, "subspace"),
    ],
)
def test_bad_arguments(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        identifiability(two_neuron_problem(DEMO_THETA, probes=16), **arguments)


def test_bad_problem_and_subspace() -> None:
    with pytest.raises(InputError, match="Problem"):
        identifiability("problem")  # type: ignore[arg-type]
    problem = two_neuron_problem(DEMO_THETA, probes=16)
    plane = unit_plane(problem.theta, [rescaling(DEMO_THETA, 0)])
    with pytest.raises(InputError, match="not both"):
        identifiability(problem, problem.theta, subspace=plane)
    other = seeded_mlp([1, 2, 1])
    wrong = unit_plane(flatten_params(other), [torch.ones(7, dtype=torch.float64)])
    with pytest.raises(InputError, match="parameters"):
        identifiability(problem, subspace=wrong)


def test_bad_constant_loss_input() -> None:
    with pytest.raises(InputError, match="NaN"):
        constant_loss(torch.tensor([[math.nan]]))
    with pytest.raises(InputError, match="N >= 1"):
        constant_loss(torch.zeros(0, 1))
    with pytest.raises(InputError, match="Tensor"):
        constant_loss([[1.0]])  # type: ignore[arg-type]
