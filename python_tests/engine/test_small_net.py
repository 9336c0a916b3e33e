"""The CPU engine's small-net path (csrc/cpu/small_net.h) against torch and itself.

Dense nets whose hidden layers are at most ``build_info()["small_net_max_width"]`` wide,
with ReLU, LeakyReLU or no activation between them, run with every activation in
registers: blocks of SIMD vectors of samples (24 float32 samples per block for a hidden
width of 2 on AVX2, 8 for widths 8 and 16), summed per lane over segments of 64 blocks.
The probe counts below straddle a block and a segment; the sum order depends on the
program and the probe count alone, so J is bitwise the same for any thread count, any
chunking of the grid and any subset of it.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

import genni_ext
from genni_ext import _C
from genni_ext.core.models import LeNet5, TwoNeuronNet, mlp
from genni_ext.engine.lowering import lower

Case = tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
MakeCase = Callable[..., Case]
CheckJ = Callable[[torch.Tensor, torch.Tensor, Case], None]
ThreeWay = Callable[..., torch.Tensor]
FusedFirstLayer = Callable[..., torch.Tensor]

DTYPES = [pytest.param(torch.float32, id="f32"), pytest.param(torch.float64, id="f64")]
LEAKY_SLOPE = 0.37
MAX_WIDTH = int(genni_ext.build_info()["small_net_max_width"])


def _uses_small_net(model: nn.Module, features: int) -> bool:
    return bool(_C.uses_small_net(lower(model, (features,)).native))


def _leaky(model: nn.Sequential) -> nn.Sequential:
    for index, layer in enumerate(model):
        if isinstance(layer, nn.LeakyReLU):
            model[index] = nn.LeakyReLU(LEAKY_SLOPE)
    return model


def _fused(case: Case, **options: object) -> torch.Tensor:
    return genni_ext.sweep(*case, backend="fused", **options)


@pytest.mark.parametrize(
    ("model", "features", "expected"),
    [
        pytest.param(TwoNeuronNet(), 1, True, id="two-neuron"),
        pytest.param(mlp([3, MAX_WIDTH, MAX_WIDTH, 2]), 3, True, id="widest"),
        pytest.param(mlp([3, MAX_WIDTH + 1, 2]), 3, False, id="too-wide"),
        pytest.param(mlp([12, 64, 64, 1]), 12, False, id="benchmark-c"),
        pytest.param(mlp([3, 5, 4, 1], activation="leaky_relu"), 3, True, id="leaky"),
        pytest.param(mlp([3, 5, 1], activation="identity"), 3, True, id="identity"),
        pytest.param(mlp([3, 5, 1], activation="tanh"), 3, False, id="tanh"),
        pytest.param(mlp([3, 5, 1], activation="sigmoid"), 3, False, id="sigmoid"),
        pytest.param(nn.Linear(3, 2), 3, False, id="one-layer"),
        pytest.param(
            nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1), nn.ReLU()),
            3,
            False,
            id="output-activation",
        ),
    ],
)
def test_which_programs_take_the_path(model: nn.Module, features: int, expected: bool) -> None:
    """Decided in C++ from the program's shapes: dense layers, hidden widths up to the
    limit, ReLU/LeakyReLU/none between them, a linear output."""
    assert _uses_small_net(model, features) is expected


def test_lenet_takes_the_general_driver() -> None:
    assert not _C.uses_small_net(lower(LeNet5(), (1, 28, 28)).native)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_samples", [1, 33, 600, 2100])
@pytest.mark.parametrize(
    ("sizes", "activation", "bias"),
    [
        ([1, 2, 1], "relu", False),  # the two-neuron net's shapes, one hidden unit padded
        ([2, 1, 3], "relu", True),  # hidden width 1, padded to 2
        ([3, 3, 2, 2], "leaky_relu", True),  # widths 3 and 2 padded to 4
        ([4, 8, 8, 1], "relu", True),
        ([5, 16, 7, 3], "identity", False),
        ([2, 11, 16, 1], "leaky_relu", True),
    ],
)
def test_small_nets_against_torch(
    sizes: list[int],
    activation: str,
    bias: bool,
    num_samples: int,
    dtype: torch.dtype,
    make_case: MakeCase,
    three_way: ThreeWay,
) -> None:
    torch.manual_seed(sum(sizes) + num_samples)
    model = _leaky(mlp(sizes, activation=activation, bias=bias))
    assert _uses_small_net(model, sizes[0])
    case = make_case(model, (sizes[0],), dtype=dtype, num_samples=num_samples, num_points=7)
    three_way(case, loop_points=2)


def test_mixed_activations(make_case: MakeCase, three_way: ThreeWay) -> None:
    """ReLU, LeakyReLU and no activation in one net: the per-layer kind is read at run time."""
    torch.manual_seed(4)
    model = nn.Sequential(
        nn.Linear(3, 6),
        nn.LeakyReLU(LEAKY_SLOPE),
        nn.Linear(6, 5),
        nn.ReLU(),
        nn.Linear(5, 4),
        nn.Linear(4, 2),
    )
    assert _uses_small_net(model, 3)
    three_way(make_case(model, (3,), num_samples=300, num_points=6), loop_points=2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bitwise_across_threads_chunks_and_subsets(dtype: torch.dtype, make_case: MakeCase) -> None:
    """70 points run one item per point; 3 points one item per (point, segment): both add
    the same segment sums in the same order."""
    torch.manual_seed(5)
    case = make_case(TwoNeuronNet(), (1,), dtype=dtype, num_samples=2100, num_points=70)
    whole = _fused(case, num_threads=2)
    for threads in (1, 3):
        assert torch.equal(_fused(case, num_threads=threads), whole)
    assert torch.equal(_fused(case, batch_points=4), whole)
    model, center, directions, coeffs, inputs, targets = case
    few = (model, center, directions, coeffs[10:13], inputs, targets)
    assert torch.equal(_fused(few, num_threads=2), whole[10:13])


def test_forced_affine_first_layer_takes_the_general_driver(
    make_case: MakeCase, check_j: CheckJ, fused_first_layer: FusedFirstLayer
) -> None:
    torch.manual_seed(6)
    case = make_case(mlp([4, 8, 1]), (4,), num_samples=100, num_points=5)
    direct = fused_first_layer(case, "direct")
    affine = fused_first_layer(case, "affine")
    check_j(affine, direct, case)
    assert not torch.equal(affine, direct)


def _with_zero_first_bias(model: nn.Sequential) -> nn.Sequential:
    """A copy of ``model`` whose first Linear has a bias, set to zero."""
    first = model[0]
    biased = nn.Linear(first.in_features, first.out_features, dtype=first.weight.dtype)
    with torch.no_grad():
        biased.weight.copy_(first.weight)
        biased.bias.zero_()
    return nn.Sequential(biased, *list(model)[1:])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", [[2], [5, 3]], ids=["two-neuron", "two-hidden"])
def test_scalar_input_relu_shortcut_is_exact(
    hidden: list[int], dtype: torch.dtype, make_case: MakeCase
) -> None:
    """A first layer with one input and no bias, then ReLU, runs as |w| relu(±x) from rows
    computed once per sweep; the same net with a zero first-layer bias (held at zero by the
    directions) runs the layer as w x + 0 then ReLU. J must agree bitwise."""
    torch.manual_seed(7 + len(hidden))
    model = mlp([1, *hidden, 1], bias=False).to(dtype)
    with torch.no_grad():  # units of both signs at the centre: both rows are used
        signs = torch.tensor([(-1.0) ** unit for unit in range(hidden[0])], dtype=dtype)
        model[0].weight.copy_(model[0].weight.abs() * signs[:, None])
    case = make_case(model, (1,), dtype=dtype, num_samples=2100, num_points=9)
    _, center, directions, coeffs, inputs, targets = case
    weights = model[0].out_features  # the first layer's weights come first in θ

    def insert_bias(flat: torch.Tensor) -> torch.Tensor:
        zeros = flat.new_zeros((*flat.shape[:-1], weights))
        return torch.cat([flat[..., :weights], zeros, flat[..., weights:]], dim=-1)

    biased = _with_zero_first_bias(model)
    assert _uses_small_net(model, 1) and _uses_small_net(biased, 1)
    shortcut = _fused(case)
    direct = _fused(
        (biased, insert_bias(center), insert_bias(directions).contiguous(), coeffs, inputs, targets)
    )
    assert torch.equal(shortcut, direct)
    signs = torch.sign(center[:weights] + coeffs @ directions[:, :weights])
    assert bool((signs > 0).any()) and bool((signs < 0).any())  # both rows are used
