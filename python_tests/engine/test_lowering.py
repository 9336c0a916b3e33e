"""Lowering of models to the fused engine's op program (genni_ext.engine.lowering).

The expected programs are written out by hand from the layer sizes, not computed with the
code under test: op rows (kind, shapes, kernel/stride/padding, parameter offsets), the
largest activation, output size, parameter count and flops per sample.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations, parametrize
from torch.utils.hooks import RemovableHandle

import genni_ext
from genni_ext import _C
from genni_ext.core.models import LeNet5, flatten_params, mlp, num_params
from genni_ext.engine import lowering
from genni_ext.engine.fused import fused_sweep
from genni_ext.engine.lowering import (
    AVGPOOL2D,
    CONV2D,
    F_BIAS,
    F_KIND,
    F_WEIGHT,
    LEAKY_RELU,
    LINEAR,
    MAX_OPS,
    MAXPOOL2D,
    OP_FIELDS,
    RELU,
    SIGMOID,
    TANH,
    check_lowerable,
    lower,
)
from genni_ext.errors import LoweringError

Case = tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
MakeCase = Callable[..., Case]
CheckJ = Callable[[torch.Tensor, torch.Tensor, Case], None]

NA = -1  # "no parameter" in the weight and bias columns

# kind, in (c, h, w), out (c, h, w), kernel (h, w), stride (h, w), padding (h, w),
# weight offset, bias offset, flag
LENET5_28_ROWS = [
    [CONV2D, 1, 28, 28, 6, 28, 28, 5, 5, 1, 1, 2, 2, 0, 150, 0],
    [RELU, 6, 28, 28, 6, 28, 28, 0, 0, 0, 0, 0, 0, NA, NA, 0],
    [MAXPOOL2D, 6, 28, 28, 6, 14, 14, 2, 2, 2, 2, 0, 0, NA, NA, 0],
    [CONV2D, 6, 14, 14, 16, 10, 10, 5, 5, 1, 1, 0, 0, 156, 2556, 0],
    [RELU, 16, 10, 10, 16, 10, 10, 0, 0, 0, 0, 0, 0, NA, NA, 0],
    [MAXPOOL2D, 16, 10, 10, 16, 5, 5, 2, 2, 2, 2, 0, 0, NA, NA, 0],
    [LINEAR, 400, 1, 1, 120, 1, 1, 0, 0, 0, 0, 0, 0, 2572, 50572, 0],
    [RELU, 120, 1, 1, 120, 1, 1, 0, 0, 0, 0, 0, 0, NA, NA, 0],
    [LINEAR, 120, 1, 1, 84, 1, 1, 0, 0, 0, 0, 0, 0, 50692, 60772, 0],
    [RELU, 84, 1, 1, 84, 1, 1, 0, 0, 0, 0, 0, 0, NA, NA, 0],
    [LINEAR, 84, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 60856, 60940, 0],
]

# 3 channels at 32x32, no padding, average pooling (count_include_pad -> flag 1), ten
# outputs and a ReLU after them.
LENET5_32_RGB_ROWS = [
    [CONV2D, 3, 32, 32, 6, 28, 28, 5, 5, 1, 1, 0, 0, 0, 450, 0],
    [RELU, 6, 28, 28, 6, 28, 28, 0, 0, 0, 0, 0, 0, NA, NA, 0],
    [AVGPOOL2D, 6, 28, 28, 6, 14, 14, 2, 2, 2, 2, 0, 0, NA, NA, 1],
    [CONV2D, 6, 14, 14, 16, 10, 10, 5, 5, 1, 1, 0, 0, 456, 2856, 0],
    [RELU, 16, 10, 10, 16, 10, 10, 0, 0, 0, 0, 0, 0, NA, NA, 0],
    [AVGPOOL2D, 16, 10, 10, 16, 5, 5, 2, 2, 2, 2, 0, 0, NA, NA, 1],
    [LINEAR, 400, 1, 1, 120, 1, 1, 0, 0, 0, 0, 0, 0, 2872, 50872, 0],
    [RELU, 120, 1, 1, 120, 1, 1, 0, 0, 0, 0, 0, 0, NA, NA, 0],
    [LINEAR, 120, 1, 1, 84, 1, 1, 0, 0, 0, 0, 0, 0, 50992, 61072, 0],
    [RELU, 84, 1, 1, 84, 1, 1, 0, 0, 0, 0, 0, 0, NA, NA, 0],
    [LINEAR, 84, 1, 1, 10, 1, 1, 0, 0, 0, 0, 0, 0, 61156, 61996, 0],
    [RELU, 10, 1, 1, 10, 1, 1, 0, 0, 0, 0, 0, 0, NA, NA, 0],
]


def test_lenet5_program() -> None:
    program = lower(LeNet5(), (1, 28, 28))
    assert program.ops.dtype == torch.int64 and program.ops.shape == (11, OP_FIELDS)
    assert program.ops.tolist() == LENET5_28_ROWS
    assert program.slopes.dtype == torch.float64 and program.slopes.tolist() == [0.0] * 11
    assert program.input_shape == (1, 28, 28) and program.input_size == 784
    assert program.output_size == 1
    assert program.max_activation == 6 * 28 * 28  # the first conv's output
    assert program.num_params == 60_941
    # 2 · fan-in · outputs for each conv and Linear (pooling and activations count 0)
    flops = 2 * (25 * 6 * 28 * 28 + 150 * 16 * 10 * 10 + 400 * 120 + 120 * 84 + 84 * 1)
    assert program.flops_per_sample == flops == 831_528
    assert program.first_fan_in == 25 and program.first_is_parametric
    lines = program.describe().splitlines()
    assert len(lines) == 11
    assert lines[0] == "conv2d: (1, 28, 28) -> (6, 28, 28)"
    assert lines[2] == "maxpool2d: (6, 28, 28) -> (6, 14, 14)"
    assert lines[6] == "linear: (400, 1, 1) -> (120, 1, 1)"


def test_lenet5_rgb_avg_program() -> None:
    model = LeNet5(
        in_channels=3,
        input_size=32,
        num_outputs=10,
        pool="avg",
        padding=0,
        output_activation="relu",
    )
    program = lower(model, (3, 32, 32))
    assert program.ops.tolist() == LENET5_32_RGB_ROWS
    assert program.output_size == 10
    assert program.max_activation == 6 * 28 * 28
    assert program.num_params == num_params(model) == 62_006
    flops = 2 * (75 * 6 * 28 * 28 + 150 * 16 * 10 * 10 + 400 * 120 + 120 * 84 + 84 * 10)
    assert program.flops_per_sample == flops == 1_303_440
    assert program.first_fan_in == 75
    assert program.describe().splitlines()[2] == "avgpool2d: (6, 28, 28) -> (6, 14, 14)"


@pytest.mark.parametrize("size", [28, 32])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("padding", [0, 2])
@pytest.mark.parametrize("outputs", [1, 10])
def test_lenet5_offsets_point_at_the_parameters(
    size: int, channels: int, padding: int, outputs: int
) -> None:
    """Each weight/bias offset addresses that layer's values in the flat vector."""
    model = LeNet5(in_channels=channels, input_size=size, num_outputs=outputs, padding=padding)
    program = lower(model, (channels, size, size))
    flat = flatten_params(model)
    layers = [layer for layer in model if isinstance(layer, (nn.Conv2d, nn.Linear))]
    rows = [row for row in program.ops.tolist() if row[F_KIND] in (CONV2D, LINEAR)]
    assert len(rows) == len(layers) == 5
    for row, layer in zip(rows, layers, strict=True):
        weight, bias = layer.weight.detach(), layer.bias
        assert bias is not None
        start = row[F_WEIGHT]
        assert torch.equal(flat[start : start + weight.numel()].view_as(weight), weight)
        start = row[F_BIAS]
        assert torch.equal(flat[start : start + bias.numel()], bias.detach())
    side = ((size + 2 * padding - 4) // 2 - 4) // 2
    assert program.ops[6].tolist()[1] == 16 * side * side
    assert program.output_size == outputs
    assert program.max_activation == max(channels * size * size, 6 * (size + 2 * padding - 4) ** 2)


def test_mlp_program_with_leaky_slope_and_no_bias() -> None:
    model = mlp([5, 7, 3], activation="leaky_relu", bias=False)
    model[1] = nn.LeakyReLU(0.25)
    program = lower(model, (5,))
    assert program.ops.tolist() == [
        [LINEAR, 5, 1, 1, 7, 1, 1, 0, 0, 0, 0, 0, 0, 0, NA, 0],
        [LEAKY_RELU, 7, 1, 1, 7, 1, 1, 0, 0, 0, 0, 0, 0, NA, NA, 0],
        [LINEAR, 7, 1, 1, 3, 1, 1, 0, 0, 0, 0, 0, 0, 35, NA, 0],
    ]
    assert program.slopes.tolist() == [0.0, 0.25, 0.0]
    assert program.max_activation == 7 and program.output_size == 3
    assert program.num_params == 56 and program.flops_per_sample == 2 * (5 * 7 + 7 * 3)
    assert program.first_fan_in == 5


@pytest.mark.parametrize(
    "activation, kind",
    [(nn.ReLU(), RELU), (nn.Tanh(), TANH), (nn.Sigmoid(), SIGMOID), (nn.LeakyReLU(), LEAKY_RELU)],
)
def test_activation_kinds(activation: nn.Module, kind: int) -> None:
    program = lower(nn.Sequential(nn.Linear(3, 4), activation), (3,))
    assert program.ops[:, F_KIND].tolist() == [LINEAR, kind]
    assert program.slopes.tolist() == [0.0, 0.01 if kind == LEAKY_RELU else 0.0]


def test_identity_and_flatten_lower_to_nothing() -> None:
    """Nested Sequentials, Identity and Flatten give the program of the plain stack."""
    conv, first, second = nn.Conv2d(1, 2, 3), nn.Linear(32, 5), nn.Linear(5, 2)
    nested = nn.Sequential(
        nn.Sequential(conv, nn.Identity(), nn.Sequential(nn.ReLU(), nn.Identity())),
        nn.Identity(),
        nn.Flatten(),
        nn.Sequential(nn.Identity(), first, nn.Flatten(), nn.Sigmoid()),
        nn.Sequential(nn.Sequential(second)),
    )
    plain = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), first, nn.Sigmoid(), second)
    got, expected = lower(nested, (1, 6, 6)), lower(plain, (1, 6, 6))
    assert got.ops.tolist() == expected.ops.tolist()
    assert got.ops[:, F_KIND].tolist() == [CONV2D, RELU, LINEAR, SIGMOID, LINEAR]
    assert (got.max_activation, got.output_size, got.num_params) == (
        expected.max_activation,
        expected.output_size,
        expected.num_params,
    )


def test_conv_and_pool_fields() -> None:
    model = nn.Sequential(
        nn.Conv2d(2, 4, (3, 2), stride=(2, 3), padding=(1, 2), bias=False),  # (4, 5, 4)
        nn.MaxPool2d(3, stride=1, padding=1),  # (4, 5, 4)
        nn.AvgPool2d((2, 3), stride=(1, 2), padding=(1, 1), count_include_pad=False),  # (4, 6, 2)
        nn.AvgPool2d(2),  # stride defaults to the kernel: (4, 3, 1)
        nn.Conv2d(4, 1, 1, padding="valid"),  # (1, 3, 1)
    )
    program = lower(model, (2, 9, 9))
    assert program.ops.tolist() == [
        [CONV2D, 2, 9, 9, 4, 5, 4, 3, 2, 2, 3, 1, 2, 0, NA, 0],
        [MAXPOOL2D, 4, 5, 4, 4, 5, 4, 3, 3, 1, 1, 1, 1, NA, NA, 0],
        [AVGPOOL2D, 4, 5, 4, 4, 6, 2, 2, 3, 1, 2, 1, 1, NA, NA, 0],
        [AVGPOOL2D, 4, 6, 2, 4, 3, 1, 2, 2, 2, 2, 0, 0, NA, NA, 1],
        [CONV2D, 4, 3, 1, 1, 3, 1, 1, 1, 1, 1, 0, 0, 48, 52, 0],
    ]
    assert program.output_size == 3 and program.max_activation == 2 * 9 * 9
    assert program.first_fan_in == 2 * 3 * 2
    assert program.flops_per_sample == 2 * (12 * 80 + 4 * 3)
    assert model(torch.randn(1, 2, 9, 9)).shape == (1, 1, 3, 1)


def test_first_op_not_parametric() -> None:
    program = lower(nn.Sequential(nn.Tanh(), nn.Linear(3, 2)), (3,))
    assert not program.first_is_parametric
    assert program.ops[0, F_KIND] == TANH


def test_offsets_follow_parameters_order() -> None:
    """A parameter of the root comes first in parameters(); tied weights share an offset."""
    first, second = nn.Linear(4, 4), nn.Linear(4, 4)
    second.weight = first.weight
    model = nn.Sequential(first, nn.Tanh(), second)
    model.register_parameter("scale", nn.Parameter(torch.ones(3)))
    program = lower(model, (4,))
    assert program.num_params == num_params(model) == 3 + 16 + 4 + 4
    assert [row[F_WEIGHT] for row in program.ops.tolist()] == [3, NA, 3]
    assert [row[F_BIAS] for row in program.ops.tolist()] == [19, NA, 23]


# --- what does not lower, and the layer named --------------------------------------------


class _MyReLU(nn.ReLU):
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return super().forward(input) + 1.0


class _MySequential(nn.Sequential):
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return super().forward(input) * 2.0


def _buffer_weight() -> nn.Module:
    linear = nn.Linear(4, 2)
    weight = linear.weight.detach().clone()
    del linear.weight
    linear.register_buffer("weight", weight)
    return nn.Sequential(nn.Linear(3, 4), linear)


class _Symmetric(nn.Module):
    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return (weight + weight.T) / 2


def _parametrized(name: str) -> nn.Module:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4))
    if name == "symmetric":
        parametrize.register_parametrization(model[2], "weight", _Symmetric())
    elif name == "weight_norm":
        parametrizations.weight_norm(model[2])
    else:
        parametrize.register_parametrization(model[2], "bias", nn.Tanh())
    return model


# name: (model, per-sample input shape, layer path, words in the message, found by type)
UNLOWERABLE: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], str, list[str], bool]] = {
    "linear after conv": (
        lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Linear(8, 2)),
        (1, 4, 4),
        "2",
        ["Linear receives a (2, 2, 2) activation", "add nn.Flatten() before it"],
        False,
    ),
    "conv groups 2": (
        lambda: nn.Sequential(nn.Conv2d(2, 2, 3, groups=2)),
        (2, 5, 5),
        "0",
        ["groups=1"],
        False,
    ),
    "conv dilation 2": (
        lambda: nn.Sequential(nn.ReLU(), nn.Sequential(nn.Conv2d(2, 2, 3, dilation=2))),
        (2, 6, 6),
        "1.0",
        ["dilation=1"],
        False,
    ),
    "conv reflect padding": (
        lambda: nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect")),
        (2, 5, 5),
        "0",
        ["padding_mode='reflect'"],
        False,
    ),
    "conv same padding": (
        lambda: nn.Sequential(nn.Conv2d(2, 2, 3, padding="same")),
        (2, 5, 5),
        "0",
        ["padding='same'"],
        False,
    ),
    "flatten start_dim 2": (
        lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(start_dim=2), nn.Linear(4, 1)),
        (1, 4, 4),
        "1",
        ["Flatten(start_dim=1, end_dim=-1)"],
        False,
    ),
    "flatten end_dim 2": (
        lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(1, 2)),
        (1, 4, 4),
        "1",
        ["Flatten(start_dim=1, end_dim=-1)"],
        False,
    ),
    "maxpool ceil_mode": (
        lambda: nn.Sequential(nn.Conv2d(1, 2, 2), nn.MaxPool2d(2, ceil_mode=True)),
        (1, 6, 6),
        "1",
        ["ceil_mode=True"],
        False,
    ),
    "avgpool ceil_mode": (
        lambda: nn.Sequential(nn.Conv2d(1, 2, 2), nn.AvgPool2d(2, ceil_mode=True)),
        (1, 6, 6),
        "1",
        ["ceil_mode=True"],
        False,
    ),
    "maxpool dilation": (
        lambda: nn.Sequential(nn.MaxPool2d(2, dilation=2)),
        (1, 6, 6),
        "0",
        ["dilation=1"],
        False,
    ),
    "maxpool return_indices": (
        lambda: nn.Sequential(nn.MaxPool2d(2, return_indices=True)),
        (1, 6, 6),
        "0",
        ["return_indices"],
        False,
    ),
    "avgpool divisor_override": (
        lambda: nn.Sequential(nn.AvgPool2d(2, divisor_override=3)),
        (1, 6, 6),
        "0",
        ["divisor_override"],
        False,
    ),
    "conv on a flat activation": (
        lambda: nn.Sequential(nn.Flatten(), nn.Conv2d(1, 1, 1)),
        (1, 4, 4),
        "1",
        ["Conv2d receives a flat"],
        False,
    ),
    "pool on a flat activation": (
        lambda: nn.Sequential(nn.Linear(4, 4), nn.MaxPool2d(2)),
        (4,),
        "1",
        ["MaxPool2d receives a flat activation"],
        False,
    ),
    "kernel larger than the input": (
        lambda: nn.Sequential(nn.Conv2d(1, 1, 5)),
        (1, 3, 3),
        "0",
        ["smaller than the kernel"],
        False,
    ),
    "window larger than the input": (
        lambda: nn.Sequential(nn.Conv2d(1, 1, 2), nn.AvgPool2d(3)),
        (1, 3, 3),
        "1",
        ["smaller than the window"],
        False,
    ),
    "channel mismatch": (
        lambda: nn.Sequential(nn.Conv2d(3, 1, 1)),
        (1, 4, 4),
        "0",
        ["expects 3 input channels but receives 1"],
        False,
    ),
    "feature mismatch": (
        lambda: nn.Sequential(nn.Linear(4, 5), nn.Linear(6, 1)),
        (4,),
        "1",
        ["expects 6 input features but receives 5"],
        False,
    ),
    "2-D samples": (
        lambda: nn.Sequential(nn.Flatten(), nn.Linear(12, 2)),
        (3, 4),
        "",
        ["(3, 4)", "neither (features,) nor (channels, height, width)"],
        False,
    ),
    "nothing computed": (
        lambda: nn.Sequential(nn.Identity(), nn.Flatten()),
        (3,),
        "",
        ["no layer"],
        False,
    ),
    "weight is a buffer": (_buffer_weight, (3,), "1", ["not a plain parameter"], False),
    "parametrized weight": (
        lambda: _parametrized("symmetric"),
        (3,),
        "2",
        ["not a plain parameter"],
        False,
    ),
    "weight_norm": (
        lambda: _parametrized("weight_norm"),
        (3,),
        "2",
        ["not a plain parameter"],
        False,
    ),
    "parametrized bias": (
        lambda: _parametrized("bias"),
        (3,),
        "2",
        ["not a plain parameter"],
        False,
    ),
    "batchnorm": (
        lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sequential(nn.BatchNorm2d(2)).eval()),
        (1, 5, 5),
        "1.0",
        ["BatchNorm2d is not supported"],
        True,
    ),
    "dropout": (
        lambda: nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5), nn.Linear(3, 1)).eval(),
        (3,),
        "1",
        ["Dropout is not supported"],
        True,
    ),
    "relu6": (lambda: nn.Sequential(nn.ReLU6()), (3,), "0", ["ReLU6 is not supported"], True),
    "gelu": (lambda: nn.Sequential(nn.Linear(3, 3), nn.GELU()), (3,), "1", ["GELU"], True),
    "conv1d": (lambda: nn.Sequential(nn.Conv1d(3, 2, 1)), (3,), "0", ["Conv1d"], True),
    "layer overrides forward": (
        lambda: nn.Sequential(nn.Linear(3, 3), nn.Sequential(_MyReLU())),
        (3,),
        "1.0",
        ["_MyReLU overrides forward()"],
        True,
    ),
    "sequential overrides forward": (
        lambda: nn.Sequential(nn.Linear(3, 3), _MySequential(nn.ReLU(), nn.Linear(3, 1))),
        (3,),
        "1",
        ["_MySequential overrides forward()"],
        True,
    ),
    "root overrides forward": (
        lambda: _MySequential(nn.Linear(3, 1)),
        (3,),
        "",
        ["_MySequential overrides forward()"],
        True,
    ),
}


@pytest.mark.parametrize("name", list(UNLOWERABLE))
def test_lowering_error_names_the_layer(name: str) -> None:
    build, shape, path, words, by_type = UNLOWERABLE[name]
    model = build()
    with pytest.raises(LoweringError) as error:
        lower(model, shape)
    assert error.value.layer == path
    message = str(error.value)
    assert message.startswith(f"layer '{path}'" if path else "the model")
    assert "backend='torch'" in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
        assert word in error.value.reason
    if by_type:
        with pytest.raises(LoweringError) as early:
            check_lowerable(model)
        assert early.value.layer == path
    inputs = torch.randn(2, *shape)
    explanation = genni_ext.explain_backend(model, inputs)
    if not list(model.parameters()):  # sweep refuses a model without parameters, and so this
        assert explanation.startswith("refused: ") and "has no parameters" in explanation
        return
    try:
        model(inputs)
    except RuntimeError:  # torch cannot run it either: refused, as sweep refuses it
        assert explanation.startswith("refused: ") and f"layer '{path}'" in explanation
        return
    assert explanation.startswith(f"torch: layer '{path}'" if path else "torch: the model")


def _hooked(where: str, kind: str) -> tuple[nn.Module, str, RemovableHandle]:
    """An MLP with a hook that doubles a module's output (or its input, for a pre-hook)."""
    inner = nn.Sequential(nn.Linear(3, 4), nn.Tanh())
    model = nn.Sequential(inner, nn.Linear(4, 2))
    target, path = {"leaf": (inner[1], "0.1"), "nested": (inner, "0"), "root": (model, "")}[where]
    if kind == "forward":
        handle = target.register_forward_hook(lambda _module, _args, output: 2.0 * output)
    elif kind == "forward_pre":
        handle = target.register_forward_pre_hook(lambda _module, args: (2.0 * args[0],))
    else:
        handle = target.register_forward_hook(
            lambda _module, _args, _kwargs, output: 2.0 * output, with_kwargs=True
        )
    return model, path, handle


@pytest.mark.parametrize("kind", ["forward", "forward_pre", "forward_with_kwargs"])
@pytest.mark.parametrize("where", ["leaf", "nested", "root"])
def test_hooks_do_not_lower(
    where: str, kind: str, make_case: MakeCase, check_j: CheckJ, caplog: pytest.LogCaptureFixture
) -> None:
    """Only the torch path runs hooks: lowering refuses, and "auto" gives torch's J."""
    torch.manual_seed(0)
    model, path, handle = _hooked(where, kind)
    for attempt in (lambda: lower(model, (3,)), lambda: check_lowerable(model)):
        with pytest.raises(LoweringError, match="forward hooks") as error:
            attempt()
        assert error.value.layer == path
    case = make_case(model, (3,), num_points=4)
    with caplog.at_level(logging.INFO, logger="genni_ext"):
        got = genni_ext.sweep(*case)
    assert "forward hooks" in caplog.text
    with pytest.raises(LoweringError):
        genni_ext.sweep(*case, backend="fused")
    expected = genni_ext.sweep(*case, backend="torch")
    check_j(got, expected, case)
    handle.remove()
    assert not torch.allclose(expected, genni_ext.sweep(*case, backend="torch"))


# --- bugs: models that lower to a program that computes something else --------------------


def test_reused_module_instances_lower_once_per_use() -> None:
    """nn.Sequential runs a module object as often as it is listed (a shared activation is
    a common idiom); named_children() lists it once, so the program must not use it."""
    act = nn.ReLU()
    model = nn.Sequential(nn.Linear(4, 8), act, nn.Linear(8, 8), act, nn.Linear(8, 3))
    program = lower(model, (4,))
    assert program.ops[:, F_KIND].tolist() == [LINEAR, RELU, LINEAR, RELU, LINEAR]


def test_global_forward_hooks_do_not_lower(make_case: MakeCase, check_j: CheckJ) -> None:
    """A hook registered for all modules (register_module_forward_hook) changes what the
    model computes just as a per-module hook does; "auto" must give torch's J."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    case = make_case(model, (3,), num_points=4)

    def doubled(module: nn.Module, _args: object, output: torch.Tensor) -> torch.Tensor | None:
        return 2.0 * output if isinstance(module, nn.Linear) else None

    # torch annotates global hooks as returning None, but a returned tensor replaces the
    # output exactly as for a per-module hook.
    handle = nn.modules.module.register_module_forward_hook(doubled)  # type: ignore[arg-type]
    try:
        explanation = genni_ext.explain_backend(model, case[4])
        got = genni_ext.sweep(*case)
        expected = genni_ext.sweep(*case, backend="torch")
    finally:
        handle.remove()
    assert not torch.allclose(expected, genni_ext.sweep(*case, backend="torch"))
    check_j(got, expected, case)
    assert not explanation.startswith("fused"), explanation


class _ScaledConv(nn.Conv2d):
    """Keeps Conv2d.forward but changes the convolution it calls."""

    def _conv_forward(
        self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        return super()._conv_forward(input, 2.0 * weight, bias)


def test_conv_subclass_overriding_conv_forward(make_case: MakeCase, check_j: CheckJ) -> None:
    torch.manual_seed(2)
    model = nn.Sequential(_ScaledConv(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 1))
    case = make_case(model, (1, 6, 6), num_points=4)
    check_j(genni_ext.sweep(*case), genni_ext.sweep(*case, backend="torch"), case)


# --- the program's layout is the compiled engine's ----------------------------------------


def test_layout_constants_are_the_engines() -> None:
    """Every op kind, op-row column and the op limit that lowering uses is the value the
    compiled engine exports (csrc/genni/program.h through genni_ext._C)."""
    kinds, fields = _C.OP_KINDS, _C.OP_FIELD_INDEX
    assert list(kinds.values()) == list(range(len(kinds)))
    assert tuple(kinds) == lowering.OP_NAMES
    assert {name: getattr(lowering, name.upper()) for name in kinds} == kinds
    assert sorted(fields.values()) == list(range(_C.OP_FIELDS)) and lowering.OP_FIELDS == 16
    columns = {name: getattr(lowering, name) for name in dir(lowering) if name.startswith("F_")}
    assert {"F_KIND", "F_IN_C", "F_OUT_C", "F_WEIGHT", "F_BIAS", "F_FLAG"} <= set(columns)
    assert columns == {name: fields[name[2:].lower()] for name in columns}
    assert lowering.MAX_OPS == _C.MAX_OPS == genni_ext.build_info()["max_ops"]


def _linear_then_relus(num_ops: int) -> nn.Sequential:
    """A model that lowers to ``num_ops`` ops: a Linear, then ReLUs."""
    return nn.Sequential(nn.Linear(3, 2), *[nn.ReLU() for _ in range(num_ops - 1)])


def test_op_limit_is_the_engines(make_case: MakeCase, check_j: CheckJ) -> None:
    """MAX_OPS ops lower and run on the engine; one more is refused by lower() and, given
    to the engine directly, by the engine, both naming the same limit."""
    torch.manual_seed(3)
    case = make_case(_linear_then_relus(MAX_OPS), (3,), num_points=3)
    program = lower(case[0], (3,))
    assert program.ops.shape == (MAX_OPS, OP_FIELDS)
    run = functools.partial(fused_sweep, num_threads=1, batch_points=None, progress=False)
    check_j(run(program, *case[1:]), genni_ext.sweep(*case, backend="torch"), case)

    with pytest.raises(LoweringError, match=rf"lowers to {MAX_OPS + 1} ops .* at most {MAX_OPS}\."):
        lower(_linear_then_relus(MAX_OPS + 1), (3,))
    longer = dataclasses.replace(
        program,
        ops=torch.cat([program.ops, program.ops[-1:]]),
        slopes=torch.cat([program.slopes, program.slopes[-1:]]),
    )
    with pytest.raises(ValueError, match=rf"has {MAX_OPS + 1} ops; .* at most {MAX_OPS}$"):
        run(longer, *case[1:])
