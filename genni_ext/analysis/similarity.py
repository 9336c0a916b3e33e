"""How similar two representations are, up to which symmetry: CKA and Procrustes.

Features are [N, C, ...]: N inputs (the same inputs, in the same order, on both sides), C
units in dimension 1 (neurons of a dense layer, channels of a conv layer) and any further
dimensions belonging to the unit (a channel's H×W positions). Everything is computed in
float64. Each metric is a similarity, 1 for representations that are the same up to its
symmetry group:

- :func:`cka`: linear CKA (Kornblith et al., ICML 2019), ⟨K, L⟩ / (‖K‖ ‖L‖) for the
  centred Gram matrices K = X̄X̄ᵀ, L = ȲȲᵀ of the features flattened per input: invariant
  to orthogonal maps and scaling of the whole representation. ``debiased=True`` replaces
  ⟨K, L⟩ by the unbiased HSIC estimator (Song et al., JMLR 2012), whose expectation is 0
  for independent features (N >= 4), so unrelated layers score about 0 instead of the
  biased version's positive floor; it can be slightly negative.
- :func:`procrustes` with ``group="orthogonal"``: the Procrustes distance of the features
  scaled to unit Frobenius norm (not centred, as in Godfrey et al., NeurIPS 2022, "On the
  symmetries of deep learning models and their internal representations", and their code
  modelsym), d² = (‖X̂‖² + ‖Ŷ‖² − 2‖X̂ᵀŶ‖_*) / 4, similarity 1 − d.
- :func:`procrustes` with ``group="relu"``: G_ReLU-Procrustes (Godfrey et al. 2022): each
  unit is scaled to unit norm (over inputs and positions; a unit that is 0 everywhere stays
  0), the units are matched by one Hungarian matching π that maximises Σ C[i, π(i)] on
  the cross-correlation C of the normalised units, and
  d² = (‖Ĥ₁‖² + ‖Ĥ₂‖² − 2 Σ C[i, π(i)]) / 4n with n the larger width (the narrower side
  counts as padded with zero units); similarity 1 − d. It is 1 exactly when one
  representation is the other with its units permuted and positively scaled (X·P·D), the
  symmetry a ReLU layer has, and is not fooled by a rotation that mixes units. Features
  are not centred: G_ReLU has no per-unit shifts.
- :func:`relu_cka`: CKA of standardised units. Every unit is centred and scaled to unit
  norm (over inputs and positions), which removes per-unit scaling (the normalisation of
  Godfrey et al.'s G_ReLU metrics), then linear CKA. Matching the units first (Hungarian,
  as for G_ReLU-Procrustes) would change nothing: linear CKA is already invariant to any
  orthogonal map, permutations included. So it is invariant to X·P·D (any nonzero
  diagonal D) and, unlike G_ReLU-Procrustes, also to rotations of the standardised
  units. (modelsym's own G_ReLU-CKA uses the kernel max over units of per-unit inner
  products; that kernel is not positive semi-definite and its estimate can leave [0, 1],
  hence this definition.)

CKA is undefined (NaN) for features that are constant over the inputs; the debiased one
also where its self-HSIC estimate is not positive (tiny N or almost constant features).

:func:`compare` takes every hidden layer of φ(·, θ) and φ(·, θ̃) on the same inputs
(:func:`~genni_ext.analysis.representations.layer_outputs`) and fills the matrix of one
metric between layer i of θ and layer j of θ̃; the diagonal answers whether θ̃ computes
through θ's representations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from genni_ext._validate import contiguous_finite, float_tensor, module_argument
from genni_ext.analysis.representations import layer_outputs, probe_inputs
from genni_ext.core.models import flat_point
from genni_ext.errors import InputError

METRICS = ("cka", "debiased_cka", "procrustes", "relu_procrustes", "relu_cka")
"""The metrics :func:`compare` computes."""
PROCRUSTES_GROUPS = ("orthogonal", "relu")
"""The groups :func:`procrustes` compares representations up to."""
MEANINGS = {
    "cka": "linear CKA (1: the same up to an orthogonal map and scale, after centring)",
    "debiased_cka": "debiased linear CKA (1: the same up to an orthogonal map and scale; "
    "about 0 for unrelated layers)",
    "procrustes": "orthogonal Procrustes similarity (1: the same up to an orthogonal map and "
    "scale)",
    "relu_procrustes": "G_ReLU-Procrustes similarity (1: the same up to a permutation and "
    "positive scaling of units, the symmetry of a ReLU layer)",
    "relu_cka": "CKA of standardised units (1: the same up to a permutation and scaling of "
    "units, or a rotation of the standardised units)",
}
"""What 1 means for each metric, for summaries."""


def _features(value: object, argument: str) -> torch.Tensor:
    """Finite float features [N, C, ...] with N >= 1, as float64."""
    features = float_tensor(argument, value)
    if features.ndim < 2 or features.shape[0] == 0 or features.shape[1] == 0:
        raise InputError(
            f"{argument} must be features [N, C, ...] (N inputs by C units, N and C >= 1), "
            f"got shape {list(features.shape)}; a 1-D tensor of one unit is x[:, None]"
        )
    return contiguous_finite(argument, features).double()


def _pair(x: object, y: object, minimum: int, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Both features checked, on one device, with the same N >= ``minimum``."""
    first, second = _features(x, "x"), _features(y, "y")
    if first.shape[0] != second.shape[0]:
        raise InputError(
            f"x has {first.shape[0]} inputs (rows) and y has {second.shape[0]}; pass the "
            "features of the same inputs, in the same order"
        )
    if first.shape[0] < minimum:
        raise InputError(
            f"{what} needs at least {minimum} inputs, got {first.shape[0]}; use more inputs"
        )
    return first, second.to(first.device)


def _reduced(rows: torch.Tensor) -> torch.Tensor:
    """[N, p] rows as [N, min(N, p)] rows R with R Rᵀ = rows rowsᵀ: every metric here
    depends on the rows through their Gram matrix, and wide layers get cheaper."""
    if rows.shape[1] <= rows.shape[0]:
        return rows
    left, values, _ = torch.linalg.svd(rows, full_matrices=False)
    return left * values


def _centred(rows: torch.Tensor) -> torch.Tensor:
    return rows - rows.mean(dim=0, keepdim=True)


def _by_unit(features: torch.Tensor) -> torch.Tensor:
    """[N, C, ...] as [N, C, m]: m values per unit and input."""
    return features.reshape(features.shape[0], features.shape[1], -1)


def _unit_scaled(units: torch.Tensor) -> torch.Tensor:
    """[N, C, m] with each unit scaled to unit norm over inputs and positions (a unit that
    is 0 everywhere stays 0)."""
    norms = units.square().sum(dim=(0, 2), keepdim=True).sqrt()
    return units / torch.where(norms > 0, norms, torch.ones_like(norms))


def _prepare_cka(features: torch.Tensor) -> torch.Tensor:
    return _reduced(_centred(features.flatten(1)))


def _prepare_orthogonal(features: torch.Tensor) -> torch.Tensor:
    rows = features.flatten(1)
    size = rows.norm()
    return _reduced(rows / size if size > 0 else rows)


def _prepare_relu(features: torch.Tensor) -> torch.Tensor:
    return _unit_scaled(_by_unit(features))


def _prepare_relu_cka(features: torch.Tensor) -> torch.Tensor:
    units = _by_unit(features)
    standard = _unit_scaled(units - units.mean(dim=(0, 2), keepdim=True))
    return _prepare_cka(standard)


def _linear_cka(first: torch.Tensor, second: torch.Tensor) -> float:
    """Linear CKA of centred rows: ‖XᵀY‖² / (‖XᵀX‖ ‖YᵀY‖), NaN when one side is constant."""
    scale = float((first.T @ first).norm() * (second.T @ second).norm())
    if scale == 0:
        return math.nan
    return float((first.T @ second).square().sum()) / scale


def _hsic_unbiased(first: torch.Tensor, second: torch.Tensor) -> float:
    """The unbiased HSIC estimator of Song et al. (2012) for linear kernels K = XXᵀ,
    L = YYᵀ, computed from the rows without forming the N×N matrices:
    [tr(K̃L̃) + 1ᵀK̃1·1ᵀL̃1 / ((n−1)(n−2)) − 2/(n−2)·1ᵀK̃L̃1] / (n(n−3)), K̃ and L̃ with
    zero diagonals."""
    n = first.shape[0]
    own_first, own_second = first.square().sum(dim=1), second.square().sum(dim=1)
    sum_first, sum_second = first.sum(dim=0), second.sum(dim=0)
    trace = float((first.T @ second).square().sum() - own_first @ own_second)
    total_first = float(sum_first @ sum_first - own_first.sum())
    total_second = float(sum_second @ sum_second - own_second.sum())
    rows_first = first @ sum_first - own_first
    rows_second = second @ sum_second - own_second
    cross = float(rows_first @ rows_second)
    value = trace + total_first * total_second / ((n - 1) * (n - 2)) - 2 * cross / (n - 2)
    return value / (n * (n - 3))


def _debiased_cka(first: torch.Tensor, second: torch.Tensor) -> float:
    own = _hsic_unbiased(first, first) * _hsic_unbiased(second, second)
    if not own > 0:
        return math.nan
    return _hsic_unbiased(first, second) / math.sqrt(own)


def _similarity(squared_distance: float) -> float:
    """1 − d for a squared distance d² that is in [0, 1] up to round-off."""
    return 1.0 - math.sqrt(min(max(squared_distance, 0.0), 1.0))


def _orthogonal_procrustes(first: torch.Tensor, second: torch.Tensor) -> float:
    nuclear = float(torch.linalg.svdvals(first.T @ second).sum())
    sizes = float(first.square().sum() + second.square().sum())
    return _similarity((sizes - 2 * nuclear) / 4)


def _relu_procrustes(first: torch.Tensor, second: torch.Tensor) -> float:
    """G_ReLU-Procrustes of unit-scaled [N, C, m] features with the same m."""
    width_first, width_second = first.shape[1], second.shape[1]
    cross = first.transpose(0, 1).reshape(width_first, -1) @ (
        second.transpose(0, 1).reshape(width_second, -1).T
    )
    rows, columns = linear_sum_assignment(cross.cpu().numpy(), maximize=True)
    matched = float(cross[torch.from_numpy(rows), torch.from_numpy(columns)].sum())
    sizes = float(first.square().sum() + second.square().sum())
    return _similarity((sizes - 2 * matched) / (4 * max(width_first, width_second)))


@dataclass(frozen=True)
class _Metric:
    prepare: Callable[[torch.Tensor], torch.Tensor]
    pair: Callable[[torch.Tensor, torch.Tensor], float]
    minimum_inputs: int
    per_unit_shape: bool  # whether both sides' units must hold the same number of values


_METRICS = {
    "cka": _Metric(_prepare_cka, _linear_cka, 2, False),
    "debiased_cka": _Metric(_prepare_cka, _debiased_cka, 4, False),
    "procrustes": _Metric(_prepare_orthogonal, _orthogonal_procrustes, 1, False),
    "relu_procrustes": _Metric(_prepare_relu, _relu_procrustes, 1, True),
    "relu_cka": _Metric(_prepare_relu_cka, _linear_cka, 2, False),
}


def _measure(name: str, x: object, y: object) -> float:
    metric = _METRICS[name]
    first, second = _pair(x, y, metric.minimum_inputs, name)
    if metric.per_unit_shape and first.shape[2:] != second.shape[2:]:
        raise InputError(
            f"G_ReLU-Procrustes matches units one to one, so each unit must hold the same "
            f"values on both sides: x's units are {list(first.shape[2:])} per input and y's "
            f"{list(second.shape[2:])}; compare features of the same kind of layer (or use "
            "cka, which flattens each input)"
        )
    return metric.pair(metric.prepare(first), metric.prepare(second))


def cka(x: torch.Tensor, y: torch.Tensor, *, debiased: bool = False) -> float:
    """Linear CKA of features ``x`` [N, ...] and ``y`` [N, ...] flattened per input (see the
    module docstring); ``debiased`` uses the unbiased HSIC estimator (N >= 4). In [0, 1]
    (the debiased value can be slightly negative); NaN when one side is constant."""
    if not isinstance(debiased, bool):
        raise InputError(f"debiased must be True or False, got {debiased!r}")
    return _measure("debiased_cka" if debiased else "cka", x, y)


def procrustes(x: torch.Tensor, y: torch.Tensor, *, group: str = "orthogonal") -> float:
    """Procrustes similarity 1 − d in [0, 1] of features ``x`` and ``y`` ([N, C, ...]) up
    to ``group``: "orthogonal" (any orthogonal map, features flattened per input) or
    "relu" (G_ReLU: a permutation and positive scaling of the C units; conv channels are
    units, so x and y must have the same per-unit shape). See the module docstring."""
    if group not in PROCRUSTES_GROUPS:
        raise InputError(f"group must be one of {PROCRUSTES_GROUPS}, got {group!r}")
    return _measure("procrustes" if group == "orthogonal" else "relu_procrustes", x, y)


def relu_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of standardised units (each unit of ``x`` and ``y``, [N, C, ...], centred
    and scaled to unit norm over inputs and positions): invariant to permuting and
    positively scaling units. NaN when one side is constant. See the module docstring."""
    return _measure("relu_cka", x, y)


@dataclass(frozen=True)
class Comparison:
    """One metric between every hidden layer of θ (rows) and of ``other`` (columns).

    ``layers`` names the hidden layers (both points share the model), ``shapes`` their
    per-input representation shapes, ``matrix[i, j]`` the ``metric`` between layer i of θ
    and layer j of ``other`` (NaN where undefined: see ``notes``), on ``num_probes``
    inputs. The diagonal says whether ``other`` computes through θ's representations.
    """

    layers: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    matrix: np.ndarray
    metric: str
    num_probes: int
    notes: tuple[str, ...]

    @property
    def diagonal(self) -> np.ndarray:
        """The metric between each layer of θ and the same layer of ``other``."""
        return np.diagonal(self.matrix).copy()

    def summary(self) -> str:
        """The diagonal, layer by layer, what 1 means, and the notes."""
        values = ", ".join(
            f"{name} {value:.4f}" for name, value in zip(self.layers, self.diagonal, strict=True)
        )
        text = (
            f"{self.metric} between θ's and the other point's hidden layers on "
            f"{self.num_probes} inputs, layer by layer: {values} ({MEANINGS[self.metric]})."
        )
        return " ".join([text, *self.notes])


def compare(
    model: nn.Module,
    theta: torch.Tensor,
    other: torch.Tensor,
    inputs: torch.Tensor,
    *,
    metric: str = "cka",
) -> Comparison:
    """``metric`` (one of :data:`METRICS`) between every hidden layer of φ(·, θ) and every
    hidden layer of φ(·, other) on ``inputs``.

    ``theta`` and ``other`` are flat parameter vectors of ``model`` ([P]; ``other`` is cast
    to θ's dtype and device); ``inputs`` [N, ...] are finite, in θ's dtype, on its device.
    Representations are those of
    :func:`~genni_ext.analysis.representations.layer_outputs`. Entries that are undefined
    are NaN and explained in ``notes``: relu_procrustes between layers whose units hold
    different numbers of values (a conv layer and a dense one, or conv layers of different
    spatial size), CKA of a layer that is constant on the inputs.
    """
    module_argument(model)
    if metric not in METRICS:
        raise InputError(f"metric must be one of {METRICS}, got {metric!r}")
    theta = flat_point(model, theta, "theta")
    other = flat_point(model, other, "other").to(dtype=theta.dtype, device=theta.device)
    inputs = probe_inputs(inputs, theta)
    chosen = _METRICS[metric]
    if inputs.shape[0] < chosen.minimum_inputs:
        raise InputError(
            f"{metric} needs at least {chosen.minimum_inputs} inputs, got {inputs.shape[0]}"
        )
    mine = layer_outputs(model, theta, inputs)
    theirs = layer_outputs(model, other, inputs)
    if not mine:
        raise InputError(
            f"{type(model).__name__} has no hidden layer to compare (it needs two Linear or "
            "Conv layers, the first feeding the second)"
        )
    names = tuple(mine)
    prepared_mine = [chosen.prepare(mine[name].double()) for name in names]
    prepared_theirs = [chosen.prepare(theirs[name].double()) for name in names]
    shapes = tuple(tuple(mine[name].shape[1:]) for name in names)
    matrix = np.full((len(names), len(names)), np.nan)
    unpaired = False
    for row, first in enumerate(prepared_mine):
        for column, second in enumerate(prepared_theirs):
            if chosen.per_unit_shape and shapes[row][1:] != shapes[column][1:]:
                unpaired = True
                continue
            matrix[row, column] = chosen.pair(first, second)
    notes = []
    if unpaired:
        notes.append(
            "Entries between layers whose units hold different numbers of values (a conv "
            "layer and a dense one, or different spatial sizes) are NaN: G_ReLU-Procrustes "
            "matches units one to one."
        )
    undefined = [
        f"({names[i]}, {names[j]})"
        for i, j in zip(*np.nonzero(np.isnan(matrix)), strict=True)
        if not (chosen.per_unit_shape and shapes[i][1:] != shapes[j][1:])
    ]
    if undefined:
        notes.append(
            f"{metric} is undefined (NaN) for {', '.join(undefined)}: a layer constant on "
            "the inputs (dead), or too few inputs for the estimate."
        )
    return Comparison(
        layers=names,
        shapes=shapes,
        matrix=matrix,
        metric=metric,
        num_probes=int(inputs.shape[0]),
        notes=tuple(notes),
    )


__all__ = [
    "MEANINGS",
    "METRICS",
    "PROCRUSTES_GROUPS",
    "Comparison",
    "cka",
    "compare",
    "procrustes",
    "relu_cka",
]
