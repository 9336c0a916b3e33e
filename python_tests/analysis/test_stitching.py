"""Stitching layers on planted G_ReLU images, whose exact stitch is known: W = D·P, b = 0.

Images are planted in the modules' weight tensors (unit i of a layer becomes s_i × unit
p(i), and the next layer reads it), independently of the code under test. A unit that is
dead on every probe (its representation is 0) leaves its column of W undetermined, so
matrices are compared on the live units.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from genni_ext.analysis.representations import layer_outputs
from genni_ext.analysis.stitching import stitch, stitch_all
from genni_ext.core.models import LeNet5, flatten_params, mlp
from genni_ext.errors import InputError
from genni_ext.testing import plant_relu_symmetry

F64 = torch.float64


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def live_units(model: nn.Module, theta: torch.Tensor, inputs: torch.Tensor) -> list[np.ndarray]:
    """Per hidden layer, whether each unit of θ's representation is nonzero somewhere."""
    return [
        (value.reshape(value.shape[0], value.shape[1], -1).abs().amax(dim=(0, 2)) > 0).numpy()
        for value in layer_outputs(model, theta, inputs).values()
    ]


@pytest.fixture(scope="module")
def planted_mlp():
    torch.manual_seed(1)
    model = mlp([5, 12, 17, 3]).double()
    image, matrices = plant_relu_symmetry(model, ((0, 2, 1), (2, 4, 1)), seed=3)
    inputs = torch.randn(512, 5, generator=generator(2), dtype=F64)
    return model, flatten_params(model), image, matrices, inputs


@pytest.fixture(scope="module")
def planted_lenet():
    torch.manual_seed(5)
    model = LeNet5().double()
    image, matrices = plant_relu_symmetry(
        model, ((0, 3, 1), (3, 7, 25), (7, 9, 1), (9, 11, 1)), seed=7
    )
    inputs = torch.randn(512, 1, 28, 28, generator=generator(6), dtype=F64)
    return model, flatten_params(model), image, matrices, inputs


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["planted_mlp", "planted_lenet"])
def test_ps_inv_recovers_the_planted_stitch(fixture: str, request) -> None:
    model, theta, image, matrices, inputs = request.getfixturevalue(fixture)
    stitches = stitch_all(model, theta, image, inputs, init="ps_inv", steps=2)
    with torch.no_grad():
        power = float(model(inputs).square().sum(dim=1).mean())
    for found, planted, live in zip(
        stitches, matrices, live_units(model, theta, inputs), strict=True
    ):
        assert live.mean() > 0.7, "too few live units for the test to say much"
        # Least squares in float64 on full-rank live units: round-off only.
        np.testing.assert_allclose(found.matrix[:, live], planted[:, live], rtol=0, atol=1e-8)
        np.testing.assert_allclose(found.bias, 0.0, atol=1e-8)
        assert found.penalty <= 1e-20 * power
        assert found.exact
        assert found.permutation is None and found.rounded_penalty is None
        assert found.layer in found.summary()


def test_a_point_that_is_not_an_image_does_not_stitch_exactly(planted_mlp) -> None:
    model, theta, _, _, inputs = planted_mlp
    torch.manual_seed(11)
    unrelated = flatten_params(mlp([5, 12, 17, 3]).double())
    result = stitch(model, theta, unrelated, 0, inputs, steps=0)
    assert not result.exact
    assert result.penalty > 1e-3 * result.constant_loss


def test_birkhoff_started_at_ps_inv_rounds_to_the_planted_permutation(planted_mlp) -> None:
    model, theta, image, matrices, inputs = planted_mlp
    result = stitch(model, theta, image, "linear_0", inputs, kind="birkhoff", steps=20)
    assert np.array_equal(result.permutation, matrices[0].argmax(axis=1))
    assert result.rounded_penalty <= 1e-20 * result.constant_loss
    assert "Hungarian" in result.summary()


@pytest.mark.slow
def test_birkhoff_from_a_random_start_finds_the_planted_permutation() -> None:
    torch.manual_seed(0)
    model = mlp([10, 6, 6, 2]).double()
    image, matrices = plant_relu_symmetry(model, ((0, 2, 1), (2, 4, 1)), seed=1)
    inputs = torch.randn(512, 10, generator=generator(3), dtype=F64)
    result = stitch(
        model, flatten_params(model), image, 0, inputs, kind="birkhoff", init="random",
        steps=500, lr=0.03, seed=2,
    )  # fmt: skip
    assert np.array_equal(result.permutation, matrices[0].argmax(axis=1))
    assert result.rounded_penalty < 0.05 * result.constant_loss
    # Doubly stochastic times nonnegative scales: every entry >= 0.
    assert (result.matrix >= 0).all()


def test_perm_init_is_the_alignment_permutation(planted_mlp) -> None:
    model, theta, image, matrices, inputs = planted_mlp
    result = stitch(model, theta, image, 1, inputs, init="perm", steps=0)
    np.testing.assert_array_equal(result.matrix, (matrices[1] > 0).astype(float))
    assert result.notes == ()


class Custom(nn.Module):
    """Does not lower (a forward() of its own), so there is no alignment."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(3, 4)
        self.second = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(torch.relu(self.first(x)))


def test_perm_init_falls_back_to_the_identity_with_a_note() -> None:
    torch.manual_seed(0)
    model = Custom().double()
    theta = flatten_params(model)
    inputs = torch.randn(64, 3, generator=generator(1), dtype=F64)
    result = stitch(model, theta, theta, "first", inputs, init="perm", steps=0)
    np.testing.assert_array_equal(result.matrix, np.eye(4))
    assert result.penalty == 0.0 and result.ratio == 1.0
    assert any("identity" in note for note in result.notes)


def test_training_is_deterministic_for_a_seed_and_l1_shrinks_the_matrix(planted_mlp) -> None:
    model, theta, image, _, inputs = planted_mlp
    options = {"init": "random", "steps": 30, "lr": 0.02}
    first = stitch(model, theta, image, 0, inputs[:128], seed=4, **options)
    again = stitch(model, theta, image, 0, inputs[:128], seed=4, **options)
    other = stitch(model, theta, image, 0, inputs[:128], seed=5, **options)
    assert np.array_equal(first.matrix, again.matrix) and first.penalty == again.penalty
    assert not np.array_equal(first.matrix, other.matrix)
    sparse = stitch(model, theta, image, 0, inputs[:128], seed=4, l1=1e-3, **options)
    assert np.abs(sparse.matrix).sum() < np.abs(first.matrix).sum()


def test_cross_entropy_on_labels(planted_mlp) -> None:
    model, theta, image, _, inputs = planted_mlp
    with torch.no_grad():
        labels = model(inputs).argmax(dim=1)
    options = {"loss": "cross_entropy", "targets": labels}
    exact = stitch(model, theta, image, 0, inputs, steps=0, **options)
    assert exact.accuracy == 1.0 and exact.other_accuracy == 1.0
    assert "Accuracy" in exact.summary()
    trained = stitch(model, theta, image, 0, inputs, steps=20, **options)
    assert trained.objective < exact.objective  # larger margins lower the cross-entropy


def test_the_callers_model_is_left_alone(planted_mlp) -> None:
    model, theta, image, _, inputs = planted_mlp
    before = copy.deepcopy(model.state_dict())
    stitch(model, theta, image, 0, inputs[:64], init="random", steps=3)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name])
    assert all(not layer._forward_pre_hooks for layer in model.modules())


def test_bad_arguments_are_refused(planted_mlp) -> None:
    model, theta, image, _, inputs = planted_mlp
    cases = [
        ({"layer": 2}, "0 to 1"),
        ({"layer": -1}, "0 to 1"),
        ({"layer": True}, "0 to 1"),
        ({"layer": "linear_7"}, "no hidden layer"),
        ({"inputs": inputs[:, :4]}, "cannot run"),
        ({"other": image[:-1]}, "other has shape"),
        ({"init": "orthogonal"}, "init"),
        ({"kind": "wreath"}, "kind"),
        ({"loss": "hinge"}, "loss"),
        ({"l1": -1.0}, "l1"),
        ({"lr": 0.0}, "lr"),
        ({"steps": -1}, "steps"),
        ({"loss": "cross_entropy"}, "targets"),
        ({"targets": torch.zeros(512, dtype=torch.int64)}, "leave targets out"),
        (
            {"loss": "cross_entropy", "targets": torch.full((512,), 3, dtype=torch.int64)},
            "0..2",
        ),
    ]
    for change, message in cases:
        arguments = {"layer": 0, "inputs": inputs, "other": image, "steps": 1, **change}
        with pytest.raises(InputError, match=message):
            stitch(model, theta, **arguments)
    broken = inputs.clone()
    broken[3, 1] = math.nan
    with pytest.raises(InputError, match="NaN"):
        stitch_all(model, theta, image, broken, steps=1)
