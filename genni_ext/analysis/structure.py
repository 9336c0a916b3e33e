"""Which entries of the flat parameter vector belong to which hidden unit.

The known symmetries of a network act unit by unit: a ReLU neuron (or conv channel) can be
rescaled (incoming weights and bias × α, outgoing weights ÷ α) and the units of a layer
permuted. :func:`hidden_layers` reads that structure off the op program of
:func:`genni_ext.engine.lowering.lower`: every Linear or Conv2d op that feeds another one is a
hidden layer, and for each of its units it lists the flat indices of the incoming weights,
the bias and the outgoing weights in the next parametric op. Identifiability and alignment
both work from these index arrays, so neither needs to know the model's modules.

:func:`constant_loss` is the baseline J of the best constant function, which tells a
found point that computes (nearly) nothing from one that computes θ's function.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from genni_ext._validate import contiguous_finite, float_tensor
from genni_ext.engine.lowering import (
    AVGPOOL2D,
    CONV2D,
    F_BIAS,
    F_FLAG,
    F_IN_C,
    F_KERNEL_H,
    F_KERNEL_W,
    F_KIND,
    F_OUT_C,
    F_PAD_H,
    F_PAD_W,
    F_WEIGHT,
    LINEAR,
    MAXPOOL2D,
    OP_NAMES,
    lower,
)
from genni_ext.errors import InputError, LoweringError

POSITIVELY_HOMOGENEOUS = ("relu", "leaky_relu")
"""Activations σ with σ(αz) = ασ(z) for α > 0: their units can be rescaled."""


@dataclass(frozen=True, eq=False)
class HiddenLayer:
    """One hidden layer: a Linear or Conv2d op whose output feeds another one.

    Index arrays are int64 tensors of positions in the flat parameter vector. Unit i (a
    neuron, or a conv channel) has incoming weights ``incoming[i]`` ([fan_in]: its weight
    row, or its [in_channels·kh·kw] filter), bias ``bias[i]`` (None when the op has no
    bias) and outgoing weights ``outgoing[i]`` ([next_units, block]: for each unit of the
    next op, the weights that read unit i; ``block`` is 1 between Linear layers, kh·kw into
    a Conv2d, and the H·W features of channel i into a Linear after Flatten).
    ``next_bias`` indexes the next op's bias (None without one).

    ``activations`` and ``pools`` name the ops between the two, in order (``OP_NAMES``
    spelling). ``shiftable`` says whether adding a constant to one unit's bias can be undone
    by the next op's bias: both ops have biases, no activation lies between (pooling may:
    max pooling, or average pooling whose padding is left out of the count), and the next
    op has no padding (zeros there would not be shifted).
    """

    position: int
    kind: str
    next_kind: str
    activations: tuple[str, ...]
    pools: tuple[str, ...]
    incoming: torch.Tensor
    bias: torch.Tensor | None
    outgoing: torch.Tensor
    next_bias: torch.Tensor | None
    shiftable: bool

    @property
    def num_units(self) -> int:
        """Neurons (Linear) or channels (Conv2d) of the layer."""
        return int(self.incoming.shape[0])

    @property
    def activation(self) -> str:
        """The activation between: its name when there is one kind, "none" or "mixed"."""
        kinds = set(self.activations)
        if not kinds:
            return "none"
        return kinds.pop() if len(kinds) == 1 else "mixed"

    @property
    def continuous_group(self) -> str:
        """The continuous symmetry of the layer's units.

        "general linear": no activation and only average pooling in between, so any
        invertible mixing of the units is undone by the next op (GL(n)). "rescaling":
        positively homogeneous activations (ReLU, LeakyReLU) or max pooling, so each unit
        can be scaled by α > 0. "none": Tanh, Sigmoid or a mix, which have only discrete
        symmetries (permutations, and sign flips for Tanh).
        """
        if not self.activations:
            return "general linear" if "maxpool2d" not in self.pools else "rescaling"
        if all(name in POSITIVELY_HOMOGENEOUS for name in self.activations):
            return "rescaling"
        return "none"


def _indices(start: int, count: int) -> torch.Tensor:
    return torch.arange(start, start + count, dtype=torch.int64)


def _incoming(row: list[int]) -> torch.Tensor:
    """[units, fan_in] flat indices of a Linear's weight rows or a Conv2d's filters."""
    units = row[F_OUT_C]
    fan_in = row[F_IN_C] * (row[F_KERNEL_H] * row[F_KERNEL_W] if row[F_KIND] == CONV2D else 1)
    return _indices(row[F_WEIGHT], units * fan_in).view(units, fan_in)


def _outgoing(units: int, next_row: list[int]) -> torch.Tensor:
    """[units, next_units, block] flat indices of the next op's weights that read each unit."""
    next_units = next_row[F_OUT_C]
    fan_in = next_row[F_IN_C]
    if next_row[F_KIND] == CONV2D:
        block = next_row[F_KERNEL_H] * next_row[F_KERNEL_W]
        weight = _indices(next_row[F_WEIGHT], next_units * fan_in * block)
        return weight.view(next_units, units, block).permute(1, 0, 2).contiguous()
    # A Linear reads the units' values flattened channel-major: unit i owns `block`
    # consecutive features (block = H·W after Flatten, 1 after another Linear).
    block = fan_in // units
    weight = _indices(next_row[F_WEIGHT], next_units * fan_in)
    return weight.view(next_units, units, block).permute(1, 0, 2).contiguous()


def _bias(row: list[int]) -> torch.Tensor | None:
    return None if row[F_BIAS] < 0 else _indices(row[F_BIAS], row[F_OUT_C])


def _is_shiftable(between: list[list[int]], next_row: list[int]) -> bool:
    """Whether a per-unit constant added before ``next_row`` stays a per-unit constant at
    its input, so the next bias can absorb it: no activation, max pooling (its padding is
    -inf), average pooling without padding or with padding left out of the count, and a
    next op with a bias and without padding."""
    for row in between:
        if row[F_KIND] == MAXPOOL2D:
            continue
        if row[F_KIND] != AVGPOOL2D:
            return False
        padded = row[F_PAD_H] > 0 or row[F_PAD_W] > 0
        if padded and row[F_FLAG] == 1:
            return False
    if next_row[F_BIAS] < 0:
        return False
    return next_row[F_KIND] == LINEAR or (next_row[F_PAD_H] == 0 and next_row[F_PAD_W] == 0)


def _check_unshared(rows: list[list[int]]) -> None:
    """Reject programs where one parameter is used by two ops (a layer applied twice, tied
    weights): a per-unit change of one use would change the other too."""
    seen: list[tuple[int, int]] = []
    for row_index, row in enumerate(rows):
        if row[F_KIND] not in (LINEAR, CONV2D):
            continue
        ranges = [(row[F_WEIGHT], row[F_WEIGHT] + _incoming(row).numel())]
        if row[F_BIAS] >= 0:
            ranges.append((row[F_BIAS], row[F_BIAS] + row[F_OUT_C]))
        for start, stop in ranges:
            if any(start < other_stop and other_start < stop for other_start, other_stop in seen):
                raise InputError(
                    f"op {row_index} ({OP_NAMES[row[F_KIND]]}) shares parameters with an "
                    "earlier op (a layer applied twice or tied weights); the per-unit "
                    "symmetries of genni_ext.analysis assume every layer has its own parameters"
                )
        seen.extend(ranges)


def hidden_layers(model: nn.Module, input_shape: Sequence[int]) -> list[HiddenLayer]:
    """The hidden layers of ``model`` for per-sample inputs of shape ``input_shape``, in
    execution order, from its lowered op program.

    Raises InputError when the model does not lower (the message says which layer and
    why) or when two ops share parameters.
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
        raise InputError(
            f"input_shape must be one sample's shape, e.g. (1,) or (1, 28, 28), got {input_shape!r}"
        )
    try:
        program = lower(model, input_shape)
    except LoweringError as error:
        raise InputError(
            f"cannot read the hidden units of {type(model).__name__}: {error.reason}"
            + (f" (layer '{error.layer}')" if error.layer else "")
            + "; the symmetry analysis supports what genni_ext.engine.lowering.lower supports"
        ) from error
    rows: list[list[int]] = program.ops.tolist()
    _check_unshared(rows)
    parametric = [i for i, row in enumerate(rows) if row[F_KIND] in (LINEAR, CONV2D)]
    layers = []
    for position, (here, there) in enumerate(itertools.pairwise(parametric)):
        row, next_row = rows[here], rows[there]
        between = rows[here + 1 : there]
        units = row[F_OUT_C]
        layers.append(
            HiddenLayer(
                position=position,
                kind=OP_NAMES[row[F_KIND]],
                next_kind=OP_NAMES[next_row[F_KIND]],
                activations=tuple(
                    OP_NAMES[r[F_KIND]] for r in between if r[F_KIND] not in (MAXPOOL2D, AVGPOOL2D)
                ),
                pools=tuple(
                    OP_NAMES[r[F_KIND]] for r in between if r[F_KIND] in (MAXPOOL2D, AVGPOOL2D)
                ),
                incoming=_incoming(row),
                bias=_bias(row),
                outgoing=_outgoing(units, next_row),
                next_bias=_bias(next_row),
                shiftable=_is_shiftable(between, next_row) and row[F_BIAS] >= 0,
            )
        )
    return layers


def constant_loss(targets: torch.Tensor) -> float:
    """J of the best constant function: the mean over probes of ‖y − ȳ‖², ȳ the mean
    target, in float64. ``targets`` is [N, ...] with N >= 1 (one row per probe)."""
    targets = float_tensor("targets", targets)
    if targets.ndim < 1 or targets.shape[0] == 0:
        raise InputError(
            f"targets must have shape [N, ...] with N >= 1 (one row per probe), got "
            f"{list(targets.shape)}"
        )
    rows = contiguous_finite("targets", targets).double().reshape(targets.shape[0], -1)
    return float((rows - rows.mean(dim=0)).square().sum(dim=1).mean())


__all__ = ["POSITIVELY_HOMOGENEOUS", "HiddenLayer", "constant_loss", "hidden_layers"]
