"""Models of the GENNI paper and the flat parameter helpers."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call

from genni_ext.core.models import (
    LeNet5,
    TwoNeuronNet,
    flatten_params,
    load_flat_params,
    mlp,
    num_params,
    unflatten_params,
)
from genni_ext.engine.lowering import lower
from genni_ext.errors import InputError


def _lenet_count(padding: int, num_outputs: int, size: int = 28) -> int:
    """Parameter count of LeNet5 from its layer sizes, written out by hand."""
    side = ((size + 2 * padding - 4) // 2 - 4) // 2
    conv1 = 6 * 1 * 5 * 5 + 6
    conv2 = 16 * 6 * 5 * 5 + 16
    fc1 = 16 * side * side * 120 + 120
    fc2 = 120 * 84 + 84
    fc3 = 84 * num_outputs + num_outputs
    return conv1 + conv2 + fc1 + fc2 + fc3


def test_lenet_default_parameter_count() -> None:
    assert num_params(LeNet5()) == _lenet_count(padding=2, num_outputs=1) == 60_941
    assert num_params(LeNet5(num_outputs=10)) == 61_706


def test_lenet_original_genni_variant() -> None:
    model = LeNet5(padding=0, output_activation="relu")
    assert num_params(model) == _lenet_count(padding=0, num_outputs=1) == 43_661
    assert isinstance(model[-1], nn.ReLU)
    assert isinstance(model[7], nn.Linear) and model[7].in_features == 16 * 4 * 4
    out = model(torch.randn(3, 1, 28, 28))
    assert out.shape == (3, 1)
    assert bool((out >= 0).all())


@pytest.mark.parametrize("pool, cls", [("max", nn.MaxPool2d), ("avg", nn.AvgPool2d)])
def test_lenet_lowers_with_either_pool(pool: str, cls: type[nn.Module]) -> None:
    model = LeNet5(in_channels=3, input_size=32, num_outputs=4, activation="tanh", pool=pool)
    assert isinstance(model[2], cls) and isinstance(model[5], cls)
    program = lower(model, (3, 32, 32))
    assert program.num_params == num_params(model)
    assert program.output_size == 4
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)


@pytest.mark.parametrize("padding, smallest", [(0, 16), (1, 14), (2, 12)])
def test_lenet_smallest_input(padding: int, smallest: int) -> None:
    model = LeNet5(input_size=smallest, padding=padding)
    assert model(torch.randn(2, 1, smallest, smallest)).shape == (2, 1)
    with pytest.raises(InputError, match=f"input_size >= {smallest}"):
        LeNet5(input_size=smallest - 1, padding=padding)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"pool": "median"}, "pool"),
        ({"activation": "gelu"}, "activation"),
        ({"output_activation": "softmax"}, "output_activation"),
        ({"padding": -1}, "padding"),
        ({"in_channels": 0}, "in_channels"),
        ({"num_outputs": 2.0}, "num_outputs"),
        ({"input_size": True}, "input_size"),
    ],
)
def test_lenet_bad_arguments(kwargs: dict[str, object], argument: str) -> None:
    with pytest.raises(InputError, match=argument):
        LeNet5(**kwargs)  # type: ignore[arg-type]


def test_two_neuron_net_order_and_function() -> None:
    net = TwoNeuronNet()
    a, b, c, d = 1.5, -0.5, 2.0, -3.0
    load_flat_params(net, torch.tensor([a, b, c, d]))
    assert (net.a, net.b, net.c, net.d) == (a, b, c, d)
    assert flatten_params(net).tolist() == [a, b, c, d]
    xs = [-2.0, -1.0, 0.0, 0.5, 3.0]
    expected = [c * max(a * x, 0.0) + d * max(b * x, 0.0) for x in xs]
    out = net(torch.tensor(xs).unsqueeze(1))
    assert out.shape == (5, 1)
    assert out.squeeze(1).tolist() == pytest.approx(expected)
    assert lower(net, (1,)).num_params == 4


@pytest.mark.parametrize(
    "activation, cls, fn",
    [
        ("relu", nn.ReLU, torch.relu),
        ("leaky_relu", nn.LeakyReLU, nn.functional.leaky_relu),
        ("tanh", nn.Tanh, torch.tanh),
        ("sigmoid", nn.Sigmoid, torch.sigmoid),
        ("identity", nn.Identity, lambda t: t),
    ],
)
def test_mlp_activations(activation: str, cls: type[nn.Module], fn: object) -> None:
    model = mlp([3, 5, 4, 2], activation=activation)
    assert [type(layer) for layer in model] == [nn.Linear, cls, nn.Linear, cls, nn.Linear]
    x = torch.randn(6, 3)
    hidden = x
    for index in (0, 2):
        hidden = fn(model[index](hidden))  # type: ignore[operator]
    torch.testing.assert_close(model(x), model[4](hidden))


def test_mlp_without_bias_and_single_layer() -> None:
    model = mlp([4, 3], bias=False)
    assert len(model) == 1 and model[0].bias is None
    assert num_params(model) == 12


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=2, max_size=5), st.booleans())
def test_mlp_parameter_count(sizes: list[int], bias: bool) -> None:
    expected = sum((fan_in + bias) * fan_out for fan_in, fan_out in itertools.pairwise(sizes))
    assert num_params(mlp(sizes, bias=bias)) == expected


@pytest.mark.parametrize(
    "sizes, activation, argument",
    [
        ([], "relu", "sizes"),
        ([3], "relu", "sizes"),
        ("34", "relu", "sizes"),
        ([3, 0], "relu", "sizes[1]"),
        ([3, -2, 1], "relu", "sizes[1]"),
        ([3, 2.5], "relu", "sizes[1]"),
        ([True, 2], "relu", "sizes[0]"),
        ([3, 2], "gelu", "activation"),
    ],
)
def test_mlp_bad_arguments(sizes: object, activation: str, argument: str) -> None:
    with pytest.raises(InputError) as error:
        mlp(sizes, activation=activation)  # type: ignore[arg-type]
    assert argument in str(error.value)


def test_flat_round_trip_and_copies() -> None:
    model = LeNet5(input_size=12)
    flat = flatten_params(model)
    assert flat.shape == (num_params(model),) and not flat.requires_grad
    flat += 1.0  # a copy: the model is untouched
    assert not torch.equal(flatten_params(model), flat)
    load_flat_params(model, flat)
    torch.testing.assert_close(flatten_params(model), flat)
    flat.zero_()  # loaded by value: the model is untouched
    assert bool((flatten_params(model) != 0).any())


def test_load_flat_params_shape_error() -> None:
    model = mlp([2, 3, 1])
    with pytest.raises(InputError) as error:
        load_flat_params(model, torch.zeros(num_params(model) + 1))
    assert "13" in str(error.value) and "14" in str(error.value)
    with pytest.raises(InputError, match=r"torch\.Tensor"):
        load_flat_params(model, [0.0] * 13)  # type: ignore[arg-type]
    with pytest.raises(InputError):
        load_flat_params(model, torch.zeros(2, 13))


def test_unflatten_params_views_and_functional_call() -> None:
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2))
    flat = flatten_params(model)
    views = unflatten_params(model, flat)
    assert list(views) == [name for name, _ in model.named_parameters()]
    for name, parameter in model.named_parameters():
        assert views[name].shape == parameter.shape
        torch.testing.assert_close(views[name], parameter.detach())
    flat[0] = 42.0
    assert float(views["0.weight"].flatten()[0]) == 42.0
    load_flat_params(model, flat)
    x = torch.randn(5, 2, 4, 4)
    torch.testing.assert_close(functional_call(model, views, (x,)), model(x))


def test_unflatten_params_batched() -> None:
    model = mlp([3, 4, 2])
    batch = torch.randn(7, num_params(model))
    views = unflatten_params(model, batch)
    assert views["0.weight"].shape == (7, 4, 3)
    assert views["2.bias"].shape == (7, 2)
    for row in (0, 6):
        single = unflatten_params(model, batch[row])
        for name in views:
            assert torch.equal(views[name][row], single[name])
    assert math.prod(views["0.weight"].shape[1:]) == 12
    with pytest.raises(InputError, match=str(num_params(model))):
        unflatten_params(model, torch.randn(7, num_params(model) - 1))


def test_flatten_params_needs_parameters() -> None:
    with pytest.raises(InputError, match="no parameters"):
        flatten_params(nn.ReLU())


def test_flatten_params_and_mlp_refuse_what_is_not_theirs() -> None:
    with pytest.raises(InputError, match=r"torch\.nn\.Module, got list"):
        flatten_params([1])  # type: ignore[arg-type]
    with pytest.raises(InputError, match="bias must be True or False"):
        mlp([2, 3], bias="no")  # type: ignore[arg-type]
