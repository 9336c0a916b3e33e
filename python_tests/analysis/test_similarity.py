"""Representations and their similarity, on answers known in closed form.

Symmetry images are planted in the modules' weight tensors (permute and scale the rows of
one layer, the columns of the next), independently of the code under test; reference
values come from the definitions (Gram matrices, the U-statistic written out) or from
geometry (two unit vectors at a known angle).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from genni_ext.analysis.representations import hidden_layer_names, layer_outputs
from genni_ext.analysis.similarity import cka, compare, procrustes, relu_cka
from genni_ext.core.models import LeNet5, flatten_params, mlp
from genni_ext.errors import InputError
from genni_ext.testing import plant_relu_symmetry

F64 = torch.float64
METRICS = ("cka", "debiased_cka", "procrustes", "relu_procrustes", "relu_cka")


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def orthogonal(size: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(size, size, generator=generator(seed), dtype=F64))
    return q


def permuted_scaled(x: torch.Tensor, seed: int) -> torch.Tensor:
    """x with its units (dimension 1) permuted and scaled by factors in [0.3, 3]."""
    units = x.shape[1]
    order = torch.randperm(units, generator=generator(seed))
    scales = 0.3 + 2.7 * torch.rand(units, generator=generator(seed + 1), dtype=F64)
    return x[:, order] * scales.view(1, -1, *(1,) * (x.ndim - 2))


MLP_PAIRS = ((0, 2, 1), (2, 4, 1))
LENET_PAIRS = ((0, 3, 1), (3, 7, 25), (7, 9, 1), (9, 11, 1))


@pytest.fixture(scope="module")
def planted_mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    model = mlp([5, 12, 17, 3]).double()
    inputs = torch.randn(512, 5, generator=generator(2), dtype=F64)
    return model, flatten_params(model), plant_relu_symmetry(model, MLP_PAIRS, seed=3)[0], inputs


@pytest.fixture(scope="module")
def planted_lenet() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(5)
    model = LeNet5().double()
    inputs = torch.randn(512, 1, 28, 28, generator=generator(6), dtype=F64)
    return model, flatten_params(model), plant_relu_symmetry(model, LENET_PAIRS, seed=7)[0], inputs


# --- representations -------------------------------------------------------------------------


def test_lenet_representations_are_the_pooled_activations(planted_lenet) -> None:
    model, theta, _, inputs = planted_lenet
    assert hidden_layer_names(model, (1, 28, 28)) == [
        "conv2d_0",
        "conv2d_1",
        "linear_2",
        "linear_3",
    ]
    outputs = layer_outputs(model, theta, inputs)
    layers = list(model)
    with torch.no_grad():
        for name, end in (("conv2d_0", 3), ("conv2d_1", 6), ("linear_2", 9), ("linear_3", 11)):
            expected = nn.Sequential(*layers[:end])(inputs)
            torch.testing.assert_close(outputs[name], expected, rtol=0, atol=0)
    assert list(outputs) == ["conv2d_0", "conv2d_1", "linear_2", "linear_3"]
    assert outputs["conv2d_1"].shape == (512, 16, 5, 5)  # before the Flatten


def test_layer_outputs_use_theta_and_leave_the_model_alone(planted_mlp) -> None:
    model, _, image, inputs = planted_mlp
    before = flatten_params(model)
    outputs = layer_outputs(model, image, inputs, layers=["linear_1"])
    assert list(outputs) == ["linear_1"]
    with torch.no_grad():
        reference = copy.deepcopy(model)
        torch.nn.utils.vector_to_parameters(image, reference.parameters())
        expected = reference[:4](inputs)
    torch.testing.assert_close(outputs["linear_1"], expected, rtol=0, atol=0)
    assert torch.equal(flatten_params(model), before)
    assert all(not layer._forward_pre_hooks for layer in model.modules())


class Custom(nn.Module):
    """A forward() of its own, with functional activations and one layer used twice."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(4, 6)
        self.shared = nn.Linear(6, 6)
        self.head = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.inner(x))
        x = torch.tanh(self.shared(x))
        return self.head(torch.relu(self.shared(x)))


def test_custom_models_are_named_by_module_path() -> None:
    torch.manual_seed(0)
    model = Custom().double()
    inputs = torch.randn(7, 4, generator=generator(1), dtype=F64)
    outputs = layer_outputs(model, flatten_params(model), inputs)
    assert list(outputs) == ["inner", "shared@0", "shared@1"]
    with torch.no_grad():
        first = torch.relu(model.inner(inputs))
        second = torch.tanh(model.shared(first))
        third = torch.relu(model.shared(second))
    for name, expected in zip(outputs, (first, second, third), strict=True):
        torch.testing.assert_close(outputs[name], expected, rtol=0, atol=0)


# --- CKA ------------------------------------------------------------------------------------


def gram_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA from its definition: centred Gram matrices, HSIC = ⟨K, L⟩."""
    centring = torch.eye(x.shape[0], dtype=F64) - 1.0 / x.shape[0]
    k = centring @ x.flatten(1) @ x.flatten(1).T @ centring
    l_ = centring @ y.flatten(1) @ y.flatten(1).T @ centring
    return float((k * l_).sum() / (k.norm() * l_.norm()))


def unbiased_hsic(k: torch.Tensor, l_: torch.Tensor) -> torch.Tensor:
    """Song et al. (2012), eq. 5, written out with N×N matrices."""
    n = k.shape[0]
    k, l_ = k.clone().fill_diagonal_(0), l_.clone().fill_diagonal_(0)
    ones = torch.ones(n, dtype=F64)
    value = (k * l_).sum() + k.sum() * l_.sum() / ((n - 1) * (n - 2))
    return (value - 2 / (n - 2) * (k @ ones) @ (l_ @ ones)) / (n * (n - 3))


def gram_debiased_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    k, l_ = x.flatten(1) @ x.flatten(1).T, y.flatten(1) @ y.flatten(1).T
    return float(unbiased_hsic(k, l_) / (unbiased_hsic(k, k) * unbiased_hsic(l_, l_)).sqrt())


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_is_one_under_orthogonal_maps_and_scaling(debiased: bool) -> None:
    x = torch.randn(200, 12, generator=generator(0), dtype=F64).relu() + 0.5
    assert cka(x, 3.7 * x @ orthogonal(12, 1), debiased=debiased) == pytest.approx(1, abs=1e-12)
    conv = torch.randn(50, 3, 4, 4, generator=generator(2), dtype=F64)
    rotated = (conv.flatten(1) @ orthogonal(48, 3)).reshape(conv.shape)
    assert cka(conv, 0.2 * rotated, debiased=debiased) == pytest.approx(1, abs=1e-12)


def test_cka_matches_the_gram_matrix_definitions() -> None:
    x = torch.randn(40, 7, generator=generator(4), dtype=F64) + 3
    y = x[:, :3].square() + torch.randn(40, 3, generator=generator(5), dtype=F64)
    wide = torch.randn(30, 2, 9, 9, generator=generator(6), dtype=F64)  # 162 features > N
    wide_y = wide[:, :1] + 0.5 * torch.randn(30, 1, 9, 9, generator=generator(7), dtype=F64)
    for first, second in ((x, y), (wide, wide_y)):
        assert cka(first, second) == pytest.approx(gram_cka(first, second), rel=1e-10)
        assert cka(first, second, debiased=True) == pytest.approx(
            gram_debiased_cka(first, second), rel=1e-10
        )


def test_debiased_cka_of_independent_features_is_near_zero() -> None:
    # Independent N(0, I) features, N = 2000, p = 30, q = 40: the biased CKA has the floor
    # √(pq)/N ≈ 0.0173; the debiased one is 0 in expectation with a standard deviation of
    # about √2/N ≈ 7e-4, so 5e-3 is 7 standard deviations.
    n, p, q = 2000, 30, 40
    x = torch.randn(n, p, generator=generator(8), dtype=F64)
    y = torch.randn(n, q, generator=generator(9), dtype=F64)
    assert abs(cka(x, y, debiased=True)) < 5e-3
    assert cka(x, y) == pytest.approx(math.sqrt(p * q) / n, rel=0.2)


def test_cka_of_a_constant_layer_is_nan() -> None:
    x = torch.randn(20, 4, generator=generator(10), dtype=F64)
    assert math.isnan(cka(x, torch.ones(20, 3, dtype=F64)))
    assert math.isnan(cka(x, torch.zeros(20, 3, dtype=F64), debiased=True))


# --- Procrustes and G_ReLU-invariant metrics -------------------------------------------------


@pytest.mark.parametrize("shape", [(300, 10), (60, 6, 5, 5)])
def test_relu_procrustes_is_one_for_permuted_scaled_units(shape: tuple[int, ...]) -> None:
    x = torch.randn(*shape, generator=generator(11), dtype=F64).relu()
    image = permuted_scaled(x, seed=12)
    assert procrustes(x, image, group="relu") == pytest.approx(1, abs=1e-12)
    assert relu_cka(x, image) == pytest.approx(1, abs=1e-12)
    # Scales that are not all equal are no orthogonal map: the orthogonal metric sees them.
    assert procrustes(x, image, group="orthogonal") < 0.99
    assert procrustes(x, 2.5 * x, group="orthogonal") == pytest.approx(1, abs=1e-12)


def test_orthogonal_procrustes_is_one_under_rotation_and_relu_procrustes_is_not() -> None:
    x = torch.randn(300, 10, generator=generator(13), dtype=F64).relu()
    rotated = 4.0 * x @ orthogonal(10, 14)
    assert procrustes(x, rotated) == pytest.approx(1, abs=1e-12)
    assert procrustes(x, rotated, group="relu") < 0.9
    assert relu_cka(x, rotated) < 0.999


def test_procrustes_of_two_vectors_at_a_right_angle() -> None:
    # One unit each, orthogonal: C = 0, d² = (1 + 1 − 0) / 4, similarity 1 − √(1/2).
    first = torch.tensor([[1.0], [0.0], [0.0]], dtype=F64)
    second = torch.tensor([[0.0], [2.0], [0.0]], dtype=F64)
    expected = 1 - math.sqrt(0.5)
    assert procrustes(first, second, group="relu") == pytest.approx(expected, abs=1e-15)
    assert procrustes(first, second) == pytest.approx(expected, abs=1e-15)


def test_relu_procrustes_pads_the_narrower_side() -> None:
    # y keeps 2 of x's 3 units: two matches of 1, d² = (3 + 2 − 2·2) / (4·3) = 1/12.
    x = torch.randn(100, 3, generator=generator(15), dtype=F64)
    assert procrustes(x, x[:, [2, 0]], group="relu") == pytest.approx(
        1 - math.sqrt(1 / 12), abs=1e-12
    )


# --- compare on planted symmetries -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["planted_mlp", "planted_lenet"])
def test_g_relu_images_have_the_same_representations(fixture: str, request) -> None:
    model, theta, image, inputs = request.getfixturevalue(fixture)
    relu = compare(model, theta, image, inputs, metric="relu_procrustes")
    np.testing.assert_allclose(relu.diagonal, 1.0, atol=1e-6)
    standardised = compare(model, theta, image, inputs, metric="relu_cka")
    np.testing.assert_allclose(standardised.diagonal, 1.0, atol=1e-9)
    plain = compare(model, theta, image, inputs, metric="cka")
    assert (plain.diagonal < 0.999).all()  # CKA is not invariant to per-unit scaling
    itself = compare(model, theta, theta, inputs, metric="procrustes")
    np.testing.assert_allclose(itself.diagonal, 1.0, atol=1e-6)
    assert relu.layers == tuple(hidden_layer_names(model, inputs.shape[1:]))
    assert "relu_procrustes" in relu.summary()


def test_compare_leaves_unpaired_relu_procrustes_entries_nan(planted_lenet) -> None:
    model, theta, image, inputs = planted_lenet
    result = compare(model, theta, image, inputs[:64], metric="relu_procrustes")
    assert result.shapes == ((6, 14, 14), (16, 5, 5), (120,), (84,))
    assert np.isnan(result.matrix[0, 1]) and np.isnan(result.matrix[1, 2])
    assert not np.isnan(result.matrix[2, 3])  # two dense layers pair (84 padded to 120)
    assert result.notes


# --- bad input -------------------------------------------------------------------------------


def test_bad_features_are_refused() -> None:
    x = torch.randn(10, 3, dtype=F64)
    with pytest.raises(InputError, match="same inputs"):
        cka(x, torch.randn(9, 3, dtype=F64))
    with pytest.raises(InputError, match=r"\[N, C"):
        procrustes(torch.randn(10, dtype=F64), x)
    with pytest.raises(InputError, match="NaN"):
        relu_cka(x, torch.full((10, 3), math.nan, dtype=F64))
    with pytest.raises(InputError, match="at least 4"):
        cka(x[:3], x[:3], debiased=True)
    with pytest.raises(InputError, match="group"):
        procrustes(x, x, group="affine")
    with pytest.raises(InputError, match="per input"):
        procrustes(torch.randn(10, 3, 2, 2, dtype=F64), x, group="relu")
    with pytest.raises(InputError, match=r"torch\.Tensor"):
        cka(x.numpy(), x)


def test_bad_compare_arguments_are_refused(planted_mlp) -> None:
    model, theta, image, inputs = planted_mlp
    with pytest.raises(InputError, match="metric"):
        compare(model, theta, image, inputs, metric="svcca")
    with pytest.raises(InputError, match="other has shape"):
        compare(model, theta, image[:-1], inputs)
    with pytest.raises(InputError, match="dtype"):
        compare(model, theta, image, inputs.float())
    with pytest.raises(InputError, match="hidden layer"):
        layer_outputs(model, theta, inputs, layers=[2])
    with pytest.raises(InputError, match="no hidden layer"):
        lone = nn.Linear(5, 2).double()
        compare(lone, flatten_params(lone), flatten_params(lone), inputs)


def test_layer_outputs_cover_every_probe_beyond_one_chunk() -> None:
    """More probes than one forward chunk: every probe's representation is returned (the
    layer calls are counted per forward pass, not across chunks)."""
    from genni_ext.analysis.representations import PROBE_CHUNK, layer_outputs
    from genni_ext.core.models import flatten_params, mlp

    torch.manual_seed(3)
    model = mlp([3, 5, 2])
    inputs = torch.randn(PROBE_CHUNK + 17, 3)
    (features,) = layer_outputs(model, flatten_params(model), inputs).values()
    assert features.shape == (PROBE_CHUNK + 17, 5)
    torch.testing.assert_close(features, torch.relu(model[0](inputs)).detach())
