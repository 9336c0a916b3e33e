"""What a stitching summary may claim: the representation fit and the control.

Known answers: a planted G_ReLU image (unit i of a layer becomes s_i × unit p(i)) is an
affine image of θ's representation; an unrelated network is not; and θ with one hidden
unit that the next layer does not read (outgoing weights 0) given other incoming weights
computes θ's function exactly (stitch J at round-off) while that unit is no affine
function of θ's layer.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from genni_ext.analysis.stitching import AFFINE_FIT_TOL, stitch
from genni_ext.core.models import flatten_params, mlp
from genni_ext.errors import InputError
from genni_ext.testing import plant_relu_symmetry

F64 = torch.float64
CLAIM = "representation is an affine image of θ's"


@pytest.fixture(scope="module")
def planted():
    torch.manual_seed(1)
    model = mlp([5, 12, 17, 3]).double()
    image, _ = plant_relu_symmetry(model, ((0, 2, 1), (2, 4, 1)), seed=3)
    inputs = torch.randn(512, 5, generator=torch.Generator().manual_seed(2), dtype=F64)
    return model, flatten_params(model), image, inputs


def test_a_planted_image_is_claimed_an_affine_image_and_beats_the_control(planted) -> None:
    model, theta, image, inputs = planted
    result = stitch(model, theta, image, 0, inputs, steps=5)
    assert result.exact and result.represents
    assert result.fit_residuals.shape == (12,)
    assert float(result.fit_residuals.max()) < 1e-10
    assert result.fit_tol == AFFINE_FIT_TOL
    # Random weights of the same architecture cannot be stitched to θ's function.
    assert result.control_penalty is not None
    assert result.control_penalty > 1e-3 * result.constant_loss
    assert result.penalty < 1e-12 * result.control_penalty
    text = result.summary()
    assert CLAIM in text and "every one" in text.lower()
    assert f"J = {result.control_penalty:.3g}" in text and "Control" in text


def test_an_unrelated_network_gets_no_representation_claim(planted) -> None:
    model, theta, _, inputs = planted
    torch.manual_seed(11)
    unrelated = flatten_params(mlp([5, 12, 17, 3]).double())
    result = stitch(model, theta, unrelated, 0, inputs, steps=5)
    assert not result.represents and not result.exact
    assert np.count_nonzero(result.fit_residuals > AFFINE_FIT_TOL) >= 6
    text = result.summary()
    assert CLAIM not in text and "not an affine image" in text
    assert result.control_penalty is not None and "Control" in text


def test_an_exact_stitch_through_an_unread_unit_names_the_unit(planted) -> None:
    model, _, _, inputs = planted
    mine = copy.deepcopy(model)
    with torch.no_grad():
        mine[2].weight[:, 3] = 0.0  # the next layer does not read unit 3
    theta = flatten_params(mine)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(4)
        mine[0].weight[3] = torch.randn(5, generator=generator, dtype=F64)
        mine[0].bias[3] = 1.0  # live on most inputs, and not a function of θ's units
    other = flatten_params(mine)
    result = stitch(model, theta, other, 0, inputs, steps=0)
    assert result.exact, "the unit is unread: the stitched network is θ's function"
    assert not result.represents
    assert np.flatnonzero(result.fit_residuals > AFFINE_FIT_TOL).tolist() == [3]
    text = result.summary()
    assert CLAIM not in text
    assert "1 unit of 12 (3 (" in text and "absorb" in text


def test_control_can_be_left_out_and_must_be_a_flag(planted) -> None:
    model, theta, image, inputs = planted
    result = stitch(model, theta, image, 0, inputs, steps=0, control=False)
    assert result.control_penalty is None and "Control" not in result.summary()
    assert result.represents  # the representation fit does not depend on the control
    with pytest.raises(InputError, match="control"):
        stitch(model, theta, image, 0, inputs, steps=0, control="yes")
