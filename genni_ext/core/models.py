"""Models from the GENNI paper and helpers for flat parameter vectors.

The models are plain ``nn.Sequential`` subclasses that do not override ``forward``, so
they lower to the fused engine (see :mod:`genni_ext.engine.lowering`). A flat parameter vector
is always in the order of ``torch.nn.utils.parameters_to_vector(model.parameters())``,
the order the sweep, the search and the fused engine share.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from genni_ext._validate import contiguous_finite, float_tensor, positive_int
from genni_ext.errors import InputError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}
"""The activations :func:`mlp` and :class:`LeNet5` take, by name."""

POOLS: dict[str, type[nn.Module]] = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}
"""The pooling layers :class:`LeNet5` takes, by name."""


def _activation(name: object, argument: str) -> nn.Module:
    """Build the activation called ``name``; ``argument`` names the parameter in errors."""
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise InputError(
            f"{argument}={name!r} is not a known activation; use one of "
            f"{', '.join(repr(key) for key in ACTIVATIONS)}"
        )
    return ACTIVATIONS[name]()


class TwoNeuronNet(nn.Sequential):
    """The GENNI paper's φ(x) = c·ReLU(a·x) + d·ReLU(b·x) for x real (inputs and outputs [N, 1]).

    Layers: ``Linear(1, 2, bias=False)``, ``ReLU``, ``Linear(2, 1, bias=False)``. The first
    weight ([2, 1]) holds (a, b) and the second ([1, 2]) holds (c, d), so the flat
    parameter vector is exactly (a, b, c, d). ``input_shape`` is one sample's shape, (1,).
    """

    input_shape: tuple[int, ...] = (1,)

    def __init__(self) -> None:
        super().__init__(nn.Linear(1, 2, bias=False), nn.ReLU(), nn.Linear(2, 1, bias=False))

    @property
    def a(self) -> float:
        """Input weight of the first neuron."""
        return self[0].weight[0, 0].item()

    @property
    def b(self) -> float:
        """Input weight of the second neuron."""
        return self[0].weight[1, 0].item()

    @property
    def c(self) -> float:
        """Output weight of the first neuron."""
        return self[2].weight[0, 0].item()

    @property
    def d(self) -> float:
        """Output weight of the second neuron."""
        return self[2].weight[0, 1].item()


def mlp(sizes: Sequence[int], activation: str = "relu", bias: bool = True) -> nn.Sequential:
    """A multilayer perceptron: ``Linear`` between consecutive ``sizes``, ``activation`` between.

    No activation follows the last layer. ``activation`` is one of "relu", "leaky_relu",
    "tanh", "sigmoid" or "identity".
    """
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or len(sizes) < 2:
        raise InputError(
            f"sizes must be a sequence of at least two layer widths (input, ..., output), "
            f"got {sizes!r}"
        )
    for index, size in enumerate(sizes):
        positive_int(size, f"sizes[{index}]")
    if not isinstance(bias, bool):
        raise InputError(f"bias must be True or False, got {bias!r}")
    _activation(activation, "activation")
    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        if index > 0:
            layers.append(_activation(activation, "activation"))
        layers.append(nn.Linear(fan_in, fan_out, bias=bias))
    return nn.Sequential(*layers)


class LeNet5(nn.Sequential):
    """LeNet-5 for square ``input_size`` x ``input_size`` images with ``in_channels`` channels.

    conv(in, 6, 5, padding) · act · pool(2) · conv(6, 16, 5) · act · pool(2) · Flatten ·
    Linear(16·s·s, 120) · act · Linear(120, 84) · act · Linear(84, num_outputs)
    [· output_activation]. ``pool`` is "max" or "avg". With the defaults at 28x28 it has
    60,941 parameters (61,706 with ``num_outputs=10``, the classic digit classifier). The
    original GENNI code's LeNet is ``padding=0, output_activation="relu"``: 43,661
    parameters at 28x28. ``input_shape`` is one sample's shape, (in_channels, input_size,
    input_size).
    """

    input_shape: tuple[int, ...]

    def __init__(
        self,
        in_channels: int = 1,
        input_size: int = 28,
        num_outputs: int = 1,
        activation: str = "relu",
        pool: str = "max",
        padding: int = 2,
        output_activation: str | None = None,
    ) -> None:
        positive_int(in_channels, "in_channels")
        positive_int(input_size, "input_size")
        positive_int(num_outputs, "num_outputs")
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise InputError(f"padding must be a non-negative int, got {padding!r}")
        if pool not in POOLS:
            raise InputError(f"pool={pool!r} is not supported; use 'max' or 'avg'")
        side = ((input_size + 2 * padding - 4) // 2 - 4) // 2
        if side < 1:
            raise InputError(
                f"input_size={input_size} is too small for LeNet5 with padding={padding}: "
                f"the second pooling would get an empty map; use input_size >= "
                f"{16 - 2 * padding} or more padding"
            )
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, 6, 5, padding=padding),
            _activation(activation, "activation"),
            POOLS[pool](2),
            nn.Conv2d(6, 16, 5),
            _activation(activation, "activation"),
            POOLS[pool](2),
            nn.Flatten(),
            nn.Linear(16 * side * side, 120),
            _activation(activation, "activation"),
            nn.Linear(120, 84),
            _activation(activation, "activation"),
            nn.Linear(84, num_outputs),
        ]
        if output_activation is not None:
            layers.append(_activation(output_activation, "output_activation"))
        super().__init__(*layers)
        self.input_shape = (in_channels, input_size, input_size)


def num_params(model: nn.Module) -> int:
    """Number of scalars in ``model.parameters()`` (the length of a flat parameter vector)."""
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return sum(parameter.numel() for parameter in model.parameters())


def flatten_params(model: nn.Module) -> torch.Tensor:
    """The model's parameters as one detached 1-D tensor (a copy, safe to modify)."""
    if num_params(model) == 0:
        raise InputError(f"{type(model).__name__} has no parameters to flatten")
    return nn.utils.parameters_to_vector(model.parameters()).detach().clone()


def _check_flat(model: nn.Module, flat: object, argument: str, *, batched: bool) -> torch.Tensor:
    if not isinstance(flat, torch.Tensor):
        raise InputError(f"{argument} must be a torch.Tensor, got {type(flat).__name__}")
    expected = num_params(model)
    allowed = (1, 2) if batched else (1,)
    if flat.ndim not in allowed or flat.shape[-1] != expected:
        shapes = f"[{expected}]" + (f" or [B, {expected}]" if batched else "")
        raise InputError(
            f"{argument} has shape {list(flat.shape)} but {type(model).__name__} has "
            f"{expected} parameters; pass a tensor of shape {shapes}"
        )
    return flat


def flat_point(model: nn.Module, value: object, argument: str) -> torch.Tensor:
    """``value`` if it is a finite float32/float64 flat parameter vector of ``model`` ([P]),
    made contiguous; else InputError naming ``argument``. The one check of a point in
    parameter space that the analyses share."""
    point = float_tensor(argument, value)
    size = num_params(model)
    if point.ndim != 1 or point.shape[0] != size:
        raise InputError(
            f"{argument} has shape {list(point.shape)} but {type(model).__name__} has {size} "
            f"parameters; pass a flat vector of shape [{size}] "
            "(genni_ext.core.models.flatten_params)"
        )
    return contiguous_finite(argument, point)


def load_flat_params(model: nn.Module, flat: torch.Tensor) -> None:
    """Copy the flat vector ``flat`` into the model's parameters, in place.

    Values are copied (cast to each parameter's dtype and device), so ``flat`` and the
    model share no memory afterwards.
    """
    flat = _check_flat(model, flat, "flat", batched=False)
    offset = 0
    with torch.no_grad():
        for parameter in model.parameters():
            size = parameter.numel()
            parameter.copy_(flat[offset : offset + size].view_as(parameter))
            offset += size


def unflatten_params(model: nn.Module, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split ``flat`` into views keyed by ``model.named_parameters()`` names.

    ``flat`` is [P] or a batch [B, P]; each value then has the parameter's shape or
    [B, *shape]. The dict is what ``torch.func.functional_call`` takes, and a batched one
    can be mapped over with ``torch.func.vmap``.
    """
    flat = _check_flat(model, flat, "flat", batched=True)
    lead = tuple(flat.shape[:-1])
    views: dict[str, torch.Tensor] = {}
    offset = 0
    for name, parameter in model.named_parameters():
        size = math.prod(parameter.shape)
        views[name] = flat.narrow(-1, offset, size).view(*lead, *parameter.shape)
        offset += size
    return views
