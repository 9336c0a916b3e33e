"""Model stitching: can the other point's network run on θ's representation of a layer?

Stitching (Csiszárik et al., NeurIPS 2021, "Similarity and Matching of Neural Network
Representations"; Godfrey et al., NeurIPS 2022) feeds the representation of hidden layer
k of φ(·, θ) (:mod:`~genni_ext.analysis.representations`) through a stitching layer into
the layers of φ(·, other) after layer k, and trains only the stitching layer:

    x ↦ tail_other_k(W · h_θ,k(x) + b).

W is a C×C matrix on the units with a bias b: a Linear layer on dense features, a 1×1
convolution on conv features (the same W at every position). If θ and ``other`` compute
through the same representations, each hidden layer of one is an image of the other's
under the layer's symmetry, and the stitch that undoes it makes the stitched network
compute φ(·, θ) exactly: for G_ReLU images W = D·P (unit i of other is D_ii × unit P(i)
of θ) and b = 0.

Training: Adam, full batch, on the probe inputs, ``steps`` steps of learning rate ``lr``,
minimising the package's J of the stitched network (the mean over inputs of the squared
output difference to φ(x, θ)), or with ``loss="cross_entropy"`` the cross-entropy to
labels ``targets``, plus ``l1`` × Σ|W| (Csiszárik et al.'s L1 regulariser). The stitch
returned is the iterate with the lowest training objective, the initialisation included
(Adam's normalised steps would otherwise walk away from an exact ps_inv solution on
round-off gradients); ``best_step`` says which. Everything is deterministic for ``seed``.

Initialisations (Csiszárik et al.): "ps_inv", least squares of θ's representation (with a
bias column) onto the other's, by the pseudo-inverse, so exact for affine-related
representations; "random", PyTorch's default Linear init, U(−1/√C, 1/√C) for W and b;
"perm", the permutation matrix of :func:`genni_ext.analysis.alignment.align` for this layer
(models that lower; the identity otherwise, with a note); "eye", the identity.

``kind="birkhoff"`` (Godfrey et al.): W = P·diag(s) with P doubly stochastic and s >= 0;
after every step P is put back on the Birkhoff polytope by clipping at 0 and Sinkhorn
normalisation (alternating row and column normalisation, :data:`SINKHORN_ITERATIONS`
rounds) and s is clipped at 0; the regulariser −``alpha`` ‖P‖_F pushes P towards a vertex
(a permutation). For loss "mse" the push is −``alpha`` × constant_loss × ‖P‖_F, so that
``alpha`` means the same for any output scale (J is in output units squared; the
cross-entropy needs no such scale). ``permutation`` is P rounded by a Hungarian matching
(maximising the matched entries), and ``rounded_penalty`` J with P replaced by it. Its
start: "random" is Sinkhorn of uniform [0, 1) entries with s = 1; the others start from
their matrix W₀ with s the column sums of max(W₀, 0) and P Sinkhorn of
max(W₀, 0)·diag(s)⁻¹ (a scaled permutation starts exactly). The search is not convex: from
a random start (500 steps, lr 0.03) it found the planted permutation of the 6-unit first
layer of an mlp 10-6-6-2 in 12 of 12 tries (4 networks × 3 seeds), but that of the 12-unit
first layer of an mlp 5-12-17-3 (12 ReLU units of 5 inputs) in 1 of 6 tries with 1000 steps.

**What a stitch J says, and what it does not.** A stitched J at round-off says that the
layers of ``other`` after layer k can compute φ(·, θ) from an affine map of θ's layer k:
the readout may absorb a difference (a unit it does not use, a direction it projects away),
so it does not by itself say that the two representations agree. Two computations
separate the two claims:

- the **representation fit**: every unit of the other point's layer, fitted by least
  squares from θ's layer (with a bias column; over inputs and positions, float64), with
  its relative residual ‖h'ᵢ − (W h + b)ᵢ‖ / ‖h'ᵢ − mean(h'ᵢ)‖ (0 for a constant unit,
  which the bias fits exactly). The representation is called an affine image of θ's only
  when every unit's residual is at most :data:`AFFINE_FIT_TOL`.
- a **control**: the same stitch (same options) into a point that is not equivalent to θ:
  random weights of the same architecture, every parameter tensor drawn from a normal
  distribution with the root mean square of θ's tensor (``seed``). Its J is the scale of a
  stitch that fails; the pair's J means something only well below it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn
from torch.func import functional_call

from genni_ext._validate import non_negative_int, positive_number, seed_argument
from genni_ext.analysis.alignment import EXACT_RELATIVE, align
from genni_ext.analysis.representations import (
    LayerSite,
    forward_replacing,
    layer_outputs,
    select_layer,
    sites_at,
)
from genni_ext.core.functional import every_path
from genni_ext.core.models import flat_point
from genni_ext.core.problem import Problem
from genni_ext.errors import InputError

INITS = ("ps_inv", "random", "perm", "eye")
"""Initialisations of the stitching matrix."""
KINDS = ("linear", "birkhoff")
"""Stitching layers: a free matrix, or a doubly stochastic one times positive scales."""
LOSSES = ("mse", "cross_entropy")
"""Training losses: J against φ(x, θ), or cross-entropy against labels."""
SINKHORN_ITERATIONS = 30
"""Rounds of row and column normalisation per projection onto the Birkhoff polytope."""
BIRKHOFF_FLOOR = 1e-6
"""Added to a starting Birkhoff matrix so that no row or column is zero."""
AFFINE_FIT_TOL = 1e-3
"""Largest relative residual of a unit's affine fit still read as an affine image: a G_ReLU
image fits to round-off (about 1e-7 in float32, 1e-15 in float64), a unit that is not an
affine function of θ's layer leaves tens of percent."""


@dataclass(frozen=True)
class Stitch:
    """One trained stitching layer from θ's hidden layer ``layer`` into ``other``.

    ``penalty`` is J of the stitched network (against φ(x, θ) on the inputs, float64),
    ``other_loss`` J of ``other`` itself, ``ratio`` = penalty / other_loss (1.0 when both
    are 0, inf when only other_loss is), ``constant_loss`` J of the best constant function
    (the scale of "bad"); ``exact`` says penalty <= EXACT_RELATIVE × mean ‖φ(x, θ)‖² (the
    stitched network computes θ's function to round-off). ``matrix`` ([C, C], out × in) and
    ``bias`` ([C]) are the stitching layer (for birkhoff P·diag(s) before rounding),
    ``objective`` its training objective (loss plus regulariser) and ``best_step`` the step
    it comes from. For kind "birkhoff", ``permutation[i]`` is the unit of θ's layer that the
    rounded matrix sends to unit i (the convention of ``Alignment.permutations``) and
    ``rounded_penalty`` J after rounding; both None otherwise. ``accuracy`` and
    ``other_accuracy`` (argmax against the labels) are set for loss "cross_entropy".

    ``fit_residuals`` [C]: per unit of the other point's layer, the relative residual of
    its least-squares affine fit from θ's layer (module docstring); ``represents``: every
    one is at most ``fit_tol`` (:data:`AFFINE_FIT_TOL`). ``control_penalty``: J of the same
    stitch into the control point (random weights of the same architecture, ``seed``), or
    None when no control was run.
    """

    layer: str
    kind: str
    init: str
    loss: str
    steps: int
    lr: float
    l1: float
    alpha: float
    seed: int
    penalty: float
    other_loss: float
    ratio: float
    constant_loss: float
    exact: bool
    objective: float
    best_step: int
    matrix: np.ndarray
    bias: np.ndarray
    permutation: np.ndarray | None
    rounded_penalty: float | None
    accuracy: float | None
    other_accuracy: float | None
    notes: tuple[str, ...]
    fit_residuals: np.ndarray
    fit_tol: float
    represents: bool
    control_penalty: float | None

    def summary(self) -> str:
        """Plain sentences: the stitched network's J against the other point's and the
        control's, what it means given the representation fit, the rounding of a Birkhoff
        stitch, accuracies, notes."""
        text = (
            f"Stitching θ's hidden layer '{self.layer}' into the other point's network after "
            f"it ({self.kind} stitch, {self.init} init, {self.steps} Adam steps on {self.loss}, "
            f"lr {self.lr:g}): J = {self.penalty:.3g} (the other point alone: "
            f"{self.other_loss:.3g}, ratio {self.ratio:.3g}; the best constant function: "
            f"{self.constant_loss:.3g})."
        )
        parts = [text]
        if self.control_penalty is not None:
            parts.append(
                f"Control, the same stitch into random weights of the same architecture (seed "
                f"{self.seed}): J = {self.control_penalty:.3g}."
            )
        parts.append(self._fit_text())
        if self.exact and not self.represents:
            parts.append(
                "So the near-zero stitch J means that the other point's layers after this one "
                "absorb the difference, not that the representations agree."
            )
        if self.permutation is not None:
            shown = ", ".join(str(int(unit)) for unit in self.permutation[:16])
            more = ", ..." if len(self.permutation) > 16 else ""
            parts.append(
                f"Rounded to a permutation by Hungarian matching ([{shown}{more}]), J = "
                f"{self.rounded_penalty:.3g}."
            )
        if self.accuracy is not None:
            parts.append(
                f"Accuracy on the labels: stitched {self.accuracy:.3f}, the other point "
                f"{self.other_accuracy:.3f}."
            )
        if self.best_step != self.steps:
            parts.append(
                f"The stitch returned is the one of step {self.best_step} (the lowest "
                "training objective), not the last."
            )
        return " ".join([*parts, *self.notes])

    def _fit_text(self) -> str:
        """The representation fit in words, and the claim it supports."""
        units = self.fit_residuals.shape[0]
        worst = int(np.argmax(self.fit_residuals)) if units else 0
        largest = float(self.fit_residuals[worst]) if units else 0.0
        if self.represents:
            claim = "so at this layer the other point's representation is an affine image of θ's"
            if self.exact:
                claim += ", and the stitched network computes θ's function to round-off"
            return (
                f"Every one of the other point's {units} units at this layer is an affine "
                f"function of θ's layer (largest relative fit residual {largest:.2g}, at most "
                f"{self.fit_tol:g}), {claim}."
            )
        misfit = np.flatnonzero(self.fit_residuals > self.fit_tol)
        listed = ", ".join(
            f"{int(unit)} ({self.fit_residuals[unit]:.0%})" for unit in misfit[:8]
        ) + (", ..." if misfit.shape[0] > 8 else "")
        opening = (
            "The stitched network computes θ's function to round-off, but the other point's "
            "representation is not an affine image of θ's"
            if self.exact
            else "The other point's representation is not an affine image of θ's"
        )
        return (
            f"{opening}: {_counted(misfit.shape[0], 'unit')} of {units} "
            f"({listed}) {'has' if misfit.shape[0] == 1 else 'have'} a relative affine-fit "
            f"residual from θ's layer above {self.fit_tol:g}."
        )


def _counted(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


@dataclass(frozen=True)
class _Options:
    init: str
    kind: str
    loss: str
    l1: float
    alpha: float
    steps: int
    lr: float
    seed: int


@dataclass(frozen=True)
class _Setting:
    """What every layer's stitch of one (θ, other, inputs) shares."""

    problem: Problem
    other: torch.Tensor
    other_params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    sites: list[LayerSite]
    mine: dict[str, torch.Tensor]
    theirs: dict[str, torch.Tensor]
    labels: torch.Tensor | None
    permutations: list[np.ndarray] | None
    perm_note: str | None


def _non_negative(value: object, argument: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{argument} must be a number >= 0, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise InputError(f"{argument} must be a finite number >= 0, got {value!r}")
    return float(value)


def _options(
    init: object,
    kind: object,
    loss: object,
    l1: object,
    alpha: object,
    steps: object,
    lr: object,
    seed: object,
) -> _Options:
    for value, allowed, argument in ((init, INITS, "init"), (kind, KINDS, "kind")):
        if value not in allowed:
            raise InputError(f"{argument} must be one of {allowed}, got {value!r}")
    if loss not in LOSSES:
        raise InputError(f"loss must be one of {LOSSES}, got {loss!r}")
    return _Options(
        init=str(init),
        kind=str(kind),
        loss=str(loss),
        l1=_non_negative(l1, "l1"),
        alpha=_non_negative(alpha, "alpha"),
        steps=non_negative_int(steps, "steps"),
        lr=positive_number(lr, "lr"),
        seed=seed_argument(seed, "seed"),
    )


def _labels(targets: object, loss: str, problem: Problem) -> torch.Tensor | None:
    """Class labels [N] in [0, outputs) for loss "cross_entropy", None for "mse"."""
    if loss == "mse":
        if targets is not None:
            raise InputError(
                "targets are class labels for loss='cross_entropy'; with loss='mse' the stitch "
                "is trained against φ(x, θ), so leave targets out"
            )
        return None
    outputs = problem.targets.shape[1]
    if targets is None:
        raise InputError("loss='cross_entropy' needs targets= (class labels [N], int64)")
    if not isinstance(targets, torch.Tensor) or targets.dtype not in (torch.int64, torch.int32):
        raise InputError(
            f"targets must be an int64 tensor of class labels [N], got "
            f"{targets.dtype if isinstance(targets, torch.Tensor) else type(targets).__name__}"
        )
    if outputs < 2:
        raise InputError(
            f"the model has {outputs} output; cross-entropy needs one logit per class (>= 2)"
        )
    if tuple(targets.shape) != (problem.num_probes,):
        raise InputError(
            f"targets has shape {list(targets.shape)}; pass one label per input, "
            f"[{problem.num_probes}]"
        )
    if bool((targets < 0).any()) or bool((targets >= outputs).any()):
        raise InputError(f"targets must be class labels in 0..{outputs - 1} (one per output)")
    return targets.to(device=problem.theta.device, dtype=torch.int64)


def _setting(
    model: nn.Module,
    theta: object,
    other: object,
    inputs: object,
    targets: object,
    options: _Options,
) -> _Setting:
    problem = Problem(model, inputs, theta=theta)  # checks the model, θ and the inputs
    point = flat_point(model, other, "other").to(
        dtype=problem.theta.dtype, device=problem.theta.device
    )
    labels = _labels(targets, options.loss, problem)
    sites, _, buffers = sites_at(model, problem.theta, problem.inputs)
    if not sites:
        raise InputError(
            f"{type(model).__name__} has no hidden layer to stitch (it needs two Linear or "
            "Conv layers, the first feeding the second)"
        )
    permutations, note = None, None
    if options.init == "perm":
        try:
            permutations = align(
                model, problem.theta, point, input_shape=problem.input_shape
            ).permutations
        except InputError as error:
            note = f"perm init started from the identity: no alignment ({error})."
    return _Setting(
        problem=problem,
        other=point,
        other_params=every_path(model, point),
        buffers=buffers,
        sites=sites,
        mine=layer_outputs(model, problem.theta, problem.inputs),
        theirs=layer_outputs(model, point, problem.inputs),
        labels=labels,
        permutations=permutations,
        perm_note=note,
    )


def _rows(features: torch.Tensor) -> torch.Tensor:
    """[N, C, ...] as [N·positions, C]: one row per input and position."""
    return features.movedim(1, -1).reshape(-1, features.shape[1])


def _least_squares(
    mine: torch.Tensor, theirs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """W, b minimising ‖W h + b − h'‖² over inputs and positions (pseudo-inverse, float64),
    and per unit of h' the relative residual of that fit (see the module docstring)."""
    rows = _rows(mine.double())
    design = torch.cat([rows, torch.ones_like(rows[:, :1])], dim=1)
    target = _rows(theirs.double())
    solution = torch.linalg.pinv(design) @ target
    residual = (target - design @ solution).norm(dim=0)
    spread = (target - target.mean(dim=0)).norm(dim=0)
    relative = torch.where(spread > 0, residual / torch.where(spread > 0, spread, 1.0), 0.0)
    return (
        solution[:-1].T.to(mine.dtype),
        solution[-1].to(mine.dtype),
        relative.cpu().numpy(),
    )


def _control_point(model: nn.Module, theta: torch.Tensor, seed: int) -> torch.Tensor:
    """Random weights of ``model``'s architecture: each parameter tensor normal with the
    root mean square of θ's (float64 draws, seeded), in θ's dtype and on its device."""
    generator = torch.Generator().manual_seed(seed)
    parts, start = [], 0
    for parameter in model.parameters():
        segment = theta[start : start + parameter.numel()].double().cpu()
        start += parameter.numel()
        scale = segment.square().mean().sqrt()
        parts.append(
            torch.randn(segment.shape[0], generator=generator, dtype=torch.float64) * scale
        )
    return torch.cat(parts).to(dtype=theta.dtype, device=theta.device)


def _sinkhorn(matrix: torch.Tensor) -> torch.Tensor:
    """Alternating row and column normalisation; rows or columns summing to 0 stay 0."""
    for _ in range(SINKHORN_ITERATIONS):
        for dim in (1, 0):
            sums = matrix.sum(dim=dim, keepdim=True)
            matrix = matrix / torch.where(sums > 0, sums, torch.ones_like(sums))
    return matrix


def _start(
    setting: _Setting, position: int, site: LayerSite, options: _Options
) -> tuple[torch.Tensor, torch.Tensor]:
    """The starting matrix W₀ [C, C] and bias b₀ [C] of the linear stitch."""
    theta = setting.problem.theta
    units = site.shape[0]
    like = {"dtype": theta.dtype, "device": theta.device}
    if options.init == "ps_inv":
        weight, bias, _ = _least_squares(setting.mine[site.name], setting.theirs[site.name])
        return weight, bias
    if options.init == "random":
        generator = torch.Generator().manual_seed(options.seed)
        bound = 1 / math.sqrt(units)
        weight = (2 * torch.rand(units, units, generator=generator, dtype=theta.dtype) - 1) * bound
        bias = (2 * torch.rand(units, generator=generator, dtype=theta.dtype) - 1) * bound
        return weight.to(theta.device), bias.to(theta.device)
    weight = torch.eye(units, **like)
    if options.init == "perm" and setting.permutations is not None:
        permutation = torch.from_numpy(setting.permutations[position]).to(theta.device)
        weight = weight[permutation]
    return weight, torch.zeros(units, **like)


def _birkhoff_start(
    weight: torch.Tensor, options: _Options, units: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The starting P (doubly stochastic) and scales s of a Birkhoff stitch."""
    if options.init == "random":
        generator = torch.Generator().manual_seed(options.seed)
        uniform = torch.rand(units, units, generator=generator, dtype=weight.dtype)
        return _sinkhorn(uniform.to(weight.device)), torch.ones_like(weight[0])
    positive = weight.clamp_min(0)
    sums = positive.sum(dim=0)
    scales = torch.where(sums > 0, sums, torch.ones_like(sums))
    return _sinkhorn(positive / scales + BIRKHOFF_FLOOR), scales


def _task_loss(setting: _Setting, output: torch.Tensor, loss: str) -> torch.Tensor:
    if loss == "cross_entropy":
        return F.cross_entropy(output, setting.labels)
    return (output - setting.problem.targets).square().sum(dim=-1).mean()


def _j(setting: _Setting, output: torch.Tensor) -> float:
    """J of an output [N, outputs] against φ(x, θ), errors summed in float64."""
    errors = (output - setting.problem.targets).square().sum(dim=-1)
    return float(errors.double().mean())


def _accuracy(setting: _Setting, output: torch.Tensor) -> float | None:
    if setting.labels is None:
        return None
    return float((output.argmax(dim=1) == setting.labels).double().mean())


def _ratio(penalty: float, other_loss: float) -> float:
    """penalty / other_loss; 1.0 when both are 0, inf when only other_loss is."""
    if other_loss > 0:
        return penalty / other_loss
    return 1.0 if penalty == 0 else math.inf


def _apply(weight: torch.Tensor, bias: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """W·h + b on the units (dimension 1) of ``features``: Linear or 1×1 convolution."""
    mixed = torch.einsum("ij,nj...->ni...", weight, features)
    return mixed + bias.view(1, -1, *(1,) * (features.ndim - 2))


def _output(
    model: nn.Module,
    setting: _Setting,
    site: LayerSite,
    weight: torch.Tensor,
    bias: torch.Tensor,
) -> torch.Tensor:
    value = _apply(weight, bias, setting.mine[site.name])
    output = forward_replacing(
        model, setting.other_params, setting.buffers, setting.problem.inputs, site, value
    )
    return output.reshape(setting.problem.num_probes, -1)


def _stitch_layer(
    model: nn.Module,
    setting: _Setting,
    position: int,
    options: _Options,
    control: _Setting | None,
) -> Stitch:
    """Train the stitch at hidden layer ``position``; fit the representation; and train the
    same stitch into the ``control`` setting's point (None: no control)."""
    site = setting.sites[position]
    weight, bias = _start(setting, position, site, options)
    birkhoff = options.kind == "birkhoff"
    if birkhoff:
        doubly, scales = _birkhoff_start(weight, options, site.shape[0])
        variables = [doubly, scales, bias]
    else:
        variables = [weight, bias]
    variables = [value.detach().clone().requires_grad_(True) for value in variables]
    optimizer = torch.optim.Adam(variables, lr=options.lr)
    best = (math.inf, 0, [value.detach().clone() for value in variables])
    # J has the units of the outputs squared; the push is relative to the constant loss.
    push_scale = setting.problem.constant_loss if options.loss == "mse" else 1.0

    def effective(values: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if birkhoff:
            return values[0] * values[1], values[2]
        return values[0], values[1]

    for step in range(options.steps + 1):
        matrix, shift = effective(variables)
        objective = _task_loss(setting, _output(model, setting, site, matrix, shift), options.loss)
        if options.l1 > 0:
            objective = objective + options.l1 * matrix.abs().sum()
        if birkhoff and options.alpha > 0:
            objective = objective - options.alpha * push_scale * variables[0].norm()
        value = float(objective.detach())
        if value < best[0]:
            best = (value, step, [value.detach().clone() for value in variables])
        if step == options.steps:
            break
        optimizer.zero_grad()
        objective.backward()
        optimizer.step()
        if birkhoff:
            with torch.no_grad():
                variables[0].copy_(_sinkhorn(variables[0].clamp_min(0)))
                variables[1].clamp_(min=0)

    objective_value, best_step, values = best
    problem = setting.problem
    with torch.no_grad():
        matrix, shift = effective(values)
        output = _output(model, setting, site, matrix, shift)
        other_output = functional_call(
            model, (setting.other_params, setting.buffers), (problem.inputs,), tie_weights=False
        ).reshape(problem.num_probes, -1)
        permutation, rounded_penalty = None, None
        if birkhoff:
            rows, columns = linear_sum_assignment(values[0].cpu().numpy(), maximize=True)
            permutation = np.empty(len(rows), dtype=np.int64)
            permutation[rows] = columns
            rounded = torch.zeros_like(values[0])
            rounded[torch.from_numpy(rows), torch.from_numpy(columns)] = 1
            rounded_penalty = _j(
                setting, _output(model, setting, site, rounded * values[1], values[2])
            )
    penalty = _j(setting, output)
    other_loss = float(problem.loss(setting.other))
    notes = (setting.perm_note,) if options.init == "perm" and setting.perm_note else ()
    _, _, residuals = _least_squares(setting.mine[site.name], setting.theirs[site.name])
    control_penalty = (
        None if control is None else _stitch_layer(model, control, position, options, None).penalty
    )
    return Stitch(
        layer=site.name,
        kind=options.kind,
        init=options.init,
        loss=options.loss,
        steps=options.steps,
        lr=options.lr,
        l1=options.l1,
        alpha=options.alpha if birkhoff else 0.0,
        seed=options.seed,
        penalty=penalty,
        other_loss=other_loss,
        ratio=_ratio(penalty, other_loss),
        constant_loss=problem.constant_loss,
        exact=penalty <= EXACT_RELATIVE * problem.zero_loss,
        objective=objective_value,
        best_step=best_step,
        matrix=matrix.detach().cpu().numpy().copy(),
        bias=shift.detach().cpu().numpy().copy(),
        permutation=permutation,
        rounded_penalty=rounded_penalty,
        accuracy=_accuracy(setting, output),
        other_accuracy=_accuracy(setting, other_output),
        notes=notes,
        fit_residuals=residuals,
        fit_tol=AFFINE_FIT_TOL,
        represents=bool(np.all(residuals <= AFFINE_FIT_TOL)),
        control_penalty=control_penalty,
    )


def stitch(
    model: nn.Module,
    theta: torch.Tensor,
    other: torch.Tensor,
    layer: int | str,
    inputs: torch.Tensor,
    *,
    init: str = "ps_inv",
    kind: str = "linear",
    l1: float = 0.0,
    alpha: float = 1e-3,
    steps: int = 200,
    lr: float = 1e-2,
    seed: int = 0,
    targets: torch.Tensor | None = None,
    loss: str = "mse",
    control: bool = True,
) -> Stitch:
    """Train a stitching layer from θ's hidden layer ``layer`` (index or name, see
    :func:`~genni_ext.analysis.representations.hidden_layer_names`) into the layers of
    ``other`` after it, on ``inputs``, and report how well the stitched network computes
    φ(·, θ). See the module docstring for the layer, its initialisations and training.

    ``theta`` and ``other`` are flat parameter vectors of ``model`` ([P]); ``inputs``
    [N, ...] are finite, in θ's dtype and on its device (as :class:`~genni_ext.Problem`
    takes them). ``init`` is one of :data:`INITS`, ``kind`` one of :data:`KINDS`, ``loss``
    one of :data:`LOSSES` ("cross_entropy" needs ``targets``, int64 labels [N]); ``l1``
    (>= 0) weighs Σ|W|, ``alpha`` (>= 0) the Birkhoff push −α‖P‖_F; ``steps`` (>= 0, 0
    keeps the initialisation) Adam steps of learning rate ``lr``; ``seed`` drives the random
    initialisation and the control's weights. ``control=False`` skips the control stitch
    (half the time); the representation fit is always computed.
    """
    options = _options(init, kind, loss, l1, alpha, steps, lr, seed)
    setting = _setting(model, theta, other, inputs, targets, options)
    site = select_layer(setting.sites, layer)
    return _stitch_layer(
        model,
        setting,
        setting.sites.index(site),
        options,
        _control_setting(model, setting, inputs, targets, options, control),
    )


def stitch_all(
    model: nn.Module,
    theta: torch.Tensor,
    other: torch.Tensor,
    inputs: torch.Tensor,
    *,
    init: str = "ps_inv",
    kind: str = "linear",
    l1: float = 0.0,
    alpha: float = 1e-3,
    steps: int = 200,
    lr: float = 1e-2,
    seed: int = 0,
    targets: torch.Tensor | None = None,
    loss: str = "mse",
    control: bool = True,
) -> list[Stitch]:
    """:func:`stitch` at every hidden layer, in execution order, with the same options
    (the checks, φ(x, θ) and the representations are computed once)."""
    options = _options(init, kind, loss, l1, alpha, steps, lr, seed)
    setting = _setting(model, theta, other, inputs, targets, options)
    controlled = _control_setting(model, setting, inputs, targets, options, control)
    return [
        _stitch_layer(model, setting, position, options, controlled)
        for position in range(len(setting.sites))
    ]


def _control_setting(
    model: nn.Module,
    setting: _Setting,
    inputs: torch.Tensor,
    targets: torch.Tensor | None,
    options: _Options,
    control: object,
) -> _Setting | None:
    """The setting of the control stitch (random weights, ``options.seed``), or None."""
    if not isinstance(control, bool):
        raise InputError(f"control must be True or False, got {control!r}")
    if not control:
        return None
    point = _control_point(model, setting.problem.theta, options.seed)
    return _setting(model, setting.problem.theta, point, inputs, targets, options)


__all__ = [
    "AFFINE_FIT_TOL",
    "INITS",
    "KINDS",
    "LOSSES",
    "SINKHORN_ITERATIONS",
    "Stitch",
    "stitch",
    "stitch_all",
]
