"""Is a found point a known-symmetry image of θ? And what is every found point?

:func:`align` looks for the element g of G_ReLU (per hidden layer, a permutation of the
units and a positive scale per unit) that brings θ closest to another point, layer by
layer from the input: the units are matched by the Hungarian method
(``scipy.optimize.linear_sum_assignment``) on the cosine similarity of their incoming
weights (bias included), then each unit's scale is fitted in closed form. Applying the
layer's permutation and scales to θ also permutes and rescales the next layer's incoming
weights, so the next layer is compared with the previous one's permutation and scaling
already undone. The relative residual ‖other − g·θ‖ / ‖other‖ decides.

What is searched per layer depends on its ``continuous_group`` (see
:class:`~genni_ext.analysis.structure.HiddenLayer`): permutations and positive scales for
ReLU, LeakyReLU and activation-free layers (of GL(n) only that subgroup), permutations
only for Tanh and Sigmoid (sign flips of Tanh units are not searched). ``Alignment.notes``
says where the search was narrower than the layer's symmetry group.

:func:`explain` sorts every point of a search into one kind (see :data:`KINDS`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torch.func import functional_call

from genni_ext._validate import float_tensor, positive_number
from genni_ext.analysis.structure import HiddenLayer, constant_loss, hidden_layers
from genni_ext.core.models import flat_point, unflatten_params
from genni_ext.core.problem import Problem, infer_input_shape
from genni_ext.core.sgd_search import SearchResult
from genni_ext.errors import InputError

KINDS = ("symmetry", "exact", "trivial", "approximate", "not converged")
"""The kinds of :func:`explain`, in the order they are tested (the first that holds wins):
a G_ReLU image of θ; J at most ``EXACT_RELATIVE`` × mean ‖y‖²; J at least the
constant-function loss; J < ε; anything else (J ≥ ε, or not finite)."""
EXACT_RELATIVE = 1e-8
"""J at most this × mean ‖y‖² (the targets' mean squared norm) counts as exact."""
ZERO_WEIGHT_RELATIVE = 1e-6
"""A unit's outgoing weights count as zero when their norm is at most this × the norm of
all its layer's outgoing weights."""
DEGENERACIES = ("dead unit", "zero outgoing weights")
"""The named kinds of exact equivalents, in the order they are tested."""
PROBE_CHUNK = 4096
"""Probes per forward pass when looking for dead units."""


@dataclass(frozen=True)
class Alignment:
    """The G_ReLU element g found by :func:`align` and how well g·θ matches ``other``.

    Per hidden layer: ``permutations[l][i]`` is the unit of θ that becomes unit i of g·θ,
    ``scales[l][i]`` > 0 its scale (incoming weights and bias × s, outgoing ÷ s).
    ``aligned`` is g·θ in θ's dtype; ``residual`` = ‖other − g·θ‖ / ‖other‖ in float64 (0
    or inf when ``other`` is zero); ``explained`` = residual ≤ ``tol``. ``notes`` names
    layers where only part of their symmetry group was searched.
    """

    permutations: list[np.ndarray]
    scales: list[np.ndarray]
    aligned: torch.Tensor
    residual: float
    explained: bool
    tol: float
    notes: tuple[str, ...]


def _units(layer: HiddenLayer, point: torch.Tensor) -> torch.Tensor:
    """Each unit's incoming weights with its bias appended: [units, fan_in (+ 1)]."""
    incoming = point[layer.incoming]
    if layer.bias is None:
        return incoming
    return torch.cat([incoming, point[layer.bias][:, None]], dim=1)


def _match(mine: torch.Tensor, theirs: torch.Tensor) -> np.ndarray:
    """Hungarian matching of the units by cosine similarity of their incoming weights:
    entry i is the unit of ``mine`` that ``theirs``'s unit i is matched with."""
    unit_mine = mine / mine.norm(dim=1, keepdim=True).clamp_min(torch.finfo(mine.dtype).tiny)
    unit_theirs = theirs / theirs.norm(dim=1, keepdim=True).clamp_min(
        torch.finfo(theirs.dtype).tiny
    )
    rows, columns = linear_sum_assignment(-(unit_theirs @ unit_mine.T).numpy())
    permutation = np.empty(len(rows), dtype=np.int64)
    permutation[rows] = columns
    return permutation


def _fit_scale(
    mine_in: torch.Tensor, theirs_in: torch.Tensor, mine_out: torch.Tensor, theirs_out: torch.Tensor
) -> float:
    """Least-squares scale s > 0 with theirs_in ≈ s·mine_in. Where that has no positive
    solution (incoming weights zero or opposed), the ratio of the outgoing weights' norms
    (‖theirs_out‖ ≈ ‖mine_out‖ / s; norms, because the next layer's units are not matched
    yet); else 1."""
    size_in = float(mine_in.square().sum())
    if size_in > 0:
        scale = float(mine_in @ theirs_in) / size_in
        if scale > 0:
            return scale
    size_out, their_size_out = float(mine_out.norm()), float(theirs_out.norm())
    if size_out > 0 and their_size_out > 0:
        return size_out / their_size_out
    return 1.0


def _apply(
    layer: HiddenLayer, point: torch.Tensor, permutation: np.ndarray, scales: np.ndarray
) -> torch.Tensor:
    """g·point for this layer's permutation and scales (unit i of the result is unit
    permutation[i] of ``point`` scaled by scales[i])."""
    order = torch.from_numpy(permutation)
    factor = torch.from_numpy(scales).to(point.dtype)
    result = point.clone()
    result[layer.incoming] = point[layer.incoming[order]] * factor[:, None]
    if layer.bias is not None:
        result[layer.bias] = point[layer.bias[order]] * factor
    result[layer.outgoing] = point[layer.outgoing[order]] / factor[:, None, None]
    return result


def _narrower_search(layer: HiddenLayer) -> str | None:
    """What :func:`align` leaves out of this layer's symmetries, or None."""
    name = f"hidden layer {layer.position} ({layer.activation})"
    if layer.continuous_group == "none":
        return f"{name}: only permutations were searched (no scaling; sign flips not handled)"
    if layer.continuous_group == "general linear":
        return f"{name}: only permutations and positive scales of GL(n) were searched"
    return None


def _align_points(
    layers: list[HiddenLayer], theta: torch.Tensor, other: torch.Tensor
) -> tuple[list[np.ndarray], list[np.ndarray], torch.Tensor, float]:
    """The permutations, scales, g·θ and residual for float64 CPU points."""
    current = theta
    permutations, all_scales = [], []
    for layer in layers:
        mine, theirs = _units(layer, current), _units(layer, other)
        permutation = _match(mine, theirs)
        scales = np.ones(layer.num_units)
        if layer.continuous_group != "none":
            mine_out = current[layer.outgoing].flatten(1)
            theirs_out = other[layer.outgoing].flatten(1)
            for unit, source in enumerate(permutation):
                scales[unit] = _fit_scale(
                    mine[source], theirs[unit], mine_out[source], theirs_out[unit]
                )
        current = _apply(layer, current, permutation, scales)
        permutations.append(permutation)
        all_scales.append(scales)
    size = float(other.norm())
    distance = float((other - current).norm())
    residual = distance / size if size > 0 else (0.0 if distance == 0 else math.inf)
    return permutations, all_scales, current, residual


def _input_shape(model: nn.Module, input_shape: Sequence[int] | None) -> Sequence[int]:
    if input_shape is not None:
        return input_shape
    inferred = infer_input_shape(model)
    if inferred is None:
        raise InputError(
            f"cannot infer the input shape of {type(model).__name__}; pass input_shape= "
            "(one sample's shape, e.g. (1, 28, 28))"
        )
    return inferred


def align(
    model: nn.Module,
    theta: torch.Tensor,
    other: torch.Tensor,
    *,
    input_shape: Sequence[int] | None = None,
    tol: float = 1e-6,
) -> Alignment:
    """The element g of G_ReLU (permutations and positive scales of hidden units) that
    brings ``theta`` closest to ``other`` (flat vectors [P] of ``model``), found layer by
    layer (see the module docstring), and whether g·θ matches within relative ``tol``.

    ``input_shape`` (one sample's shape) defaults to what :class:`~genni_ext.Problem`
    infers. Raises InputError when the model does not lower (the reason is named).
    Computed in float64. Units whose incoming weights point the same way (duplicates, all
    zero) are matched in an arbitrary order among themselves.
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    tol = positive_number(tol, "tol")
    reference = flat_point(model, theta, "theta").double().cpu()
    target = flat_point(model, other, "other").double().cpu()
    layers = hidden_layers(model, _input_shape(model, input_shape))
    permutations, scales, aligned, residual = _align_points(layers, reference, target)
    notes = tuple(note for note in map(_narrower_search, layers) if note is not None)
    return Alignment(
        permutations=permutations,
        scales=scales,
        aligned=aligned.to(dtype=theta.dtype, device=theta.device),
        residual=residual,
        explained=residual <= tol,
        tol=tol,
        notes=notes,
    )


@dataclass(frozen=True)
class Explanation:
    """What each of the K points of a search is (see :data:`KINDS`).

    ``kinds[k]`` is one of KINDS; ``details[k]`` names the degeneracy of an "exact" point
    ("dead unit", "zero outgoing weights") or is "". ``residuals`` are the :func:`align`
    residuals, ``losses`` J recomputed on the problem's probes (NaN for points that are not
    finite) and ``stored_losses`` the search's own. ``counts`` holds every kind (zeros
    included); ``thresholds`` the numbers the kinds were decided by; ``notes`` anything
    the reader must know (stored losses that disagree, an ε above the constant-function
    loss, layers where only part of the symmetry group was searched).
    """

    kinds: list[str]
    details: list[str]
    residuals: np.ndarray
    losses: np.ndarray
    stored_losses: np.ndarray
    counts: dict[str, int]
    thresholds: dict[str, float]
    notes: tuple[str, ...]

    def summary(self) -> str:
        """One sentence of counts per kind, then the notes."""
        exact = Counter(
            detail or "other"
            for kind, detail in zip(self.kinds, self.details, strict=True)
            if kind == "exact"
        )
        named = ", ".join(
            f"{exact[name]} {name}" for name in (*DEGENERACIES, "other") if exact[name]
        )
        counts = self.counts
        eps = self.thresholds["eps"]
        text = (
            f"Of {len(self.kinds)} found points: {counts['symmetry']} symmetry images of θ, "
            f"{counts['exact']} exact equivalents not explained by G_ReLU"
            + (f" ({named})" if named else "")
            + f", {counts['approximate']} approximate (J < ε = {eps:.3g}), "
            f"{counts['trivial']} trivial (J ≥ the constant-function loss "
            f"{self.thresholds['constant_loss']:.3g}), {counts['not converged']} not "
            "converged."
        )
        return " ".join([text, *self.notes])


class _PreActivations:
    """Per-unit maximum over the probes of each parametric op's output (its
    pre-activation), recorded by forward hooks in call order."""

    def __init__(self, model: nn.Module) -> None:
        self.maxima: list[torch.Tensor] = []
        self.calls = 0
        self.handles = [
            module.register_forward_hook(self.record)
            for module in model.modules()
            if isinstance(module, (nn.Linear, nn.Conv2d))
        ]

    def record(self, _module: nn.Module, _args: object, output: torch.Tensor) -> None:
        peak = output.detach().transpose(0, 1).reshape(output.shape[1], -1).amax(dim=1)
        if self.calls < len(self.maxima):
            self.maxima[self.calls] = torch.maximum(self.maxima[self.calls], peak)
        else:
            self.maxima.append(peak)
        self.calls += 1

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _has_dead_unit(problem: Problem, layers: list[HiddenLayer], point: torch.Tensor) -> bool:
    """Whether a ReLU unit's pre-activation is ≤ 0 on every probe at ``point``."""
    relu_layers = [layer for layer in layers if layer.activations[:1] == ("relu",)]
    if not relu_layers:
        return False
    model = problem.model
    flat = point.to(dtype=problem.theta.dtype, device=problem.theta.device)
    # The ops a model lowers to read no buffers: its parameters are all the call needs.
    recorder = _PreActivations(model)
    try:
        with torch.no_grad():
            for first in range(0, problem.num_probes, PROBE_CHUNK):
                recorder.calls = 0
                inputs = problem.inputs[first : first + PROBE_CHUNK]
                functional_call(model, unflatten_params(model, flat), (inputs,))
    finally:
        recorder.remove()
    return any(bool((recorder.maxima[layer.position] <= 0).any()) for layer in relu_layers)


def _has_zero_outgoing(layers: list[HiddenLayer], point: torch.Tensor) -> bool:
    """Whether some unit's outgoing weights are (relatively) zero at ``point``."""
    for layer in layers:
        outgoing = point[layer.outgoing].flatten(1)
        limit = ZERO_WEIGHT_RELATIVE * float(outgoing.norm())
        if bool((outgoing.norm(dim=1) <= limit).any()):
            return True
    return False


def _degeneracy(problem: Problem, layers: list[HiddenLayer], point: torch.Tensor) -> str:
    """The first of DEGENERACIES that ``point`` has, or ""."""
    if _has_dead_unit(problem, layers, point):
        return DEGENERACIES[0]
    if _has_zero_outgoing(layers, point):
        return DEGENERACIES[1]
    return ""


def _check_explain(search_result: object, problem: object, eps: object, tol: object) -> None:
    if not isinstance(search_result, SearchResult):
        raise InputError(
            f"search_result must be a genni_ext.SearchResult, got {type(search_result).__name__}"
        )
    if not isinstance(problem, Problem):
        raise InputError(
            f"problem must be a genni_ext.Problem, got {type(problem).__name__}; pass the "
            "problem the search ran on"
        )
    positive_number(eps, "eps")
    positive_number(tol, "tol")
    params = search_result.params
    if (
        not isinstance(params, torch.Tensor)
        or params.ndim != 2
        or params.shape[0] == 0
        or params.shape[1] != problem.num_params
    ):
        shape = list(params.shape) if isinstance(params, torch.Tensor) else type(params).__name__
        raise InputError(
            f"search_result.params is {shape}; it must be [K, {problem.num_params}] "
            "(K >= 1 points of this problem's model)"
        )
    float_tensor("search_result.params", params)
    losses = search_result.losses
    if not isinstance(losses, torch.Tensor) or tuple(losses.shape) != (params.shape[0],):
        raise InputError(
            f"search_result.losses must be a tensor [{params.shape[0]}] (one J per point), "
            f"got {list(losses.shape) if isinstance(losses, torch.Tensor) else losses!r}"
        )


SYMMETRY_TOL = math.sqrt(EXACT_RELATIVE)
"""Default residual below which :func:`explain` calls a point a G_ReLU image of θ. A point
counts as exact at J ≤ EXACT_RELATIVE × mean ‖y‖², which lets its parameters sit about
√EXACT_RELATIVE (relative) off the orbit: a float32 search stops there (on the demo's θ:
residuals 1e-6 to 1e-5 at J 1e-12 to 3e-11), so a tighter tolerance would call every found
image of θ "exact, not explained"."""


def explain(
    search_result: SearchResult,
    problem: Problem,
    eps: float,
    *,
    tol: float = SYMMETRY_TOL,
) -> Explanation:
    """Sort every point of ``search_result`` into one of :data:`KINDS`.

    J is recomputed with ``problem.loss`` (a note lists points where the stored loss
    differs by more than 1e-6 relative plus 1e-12 × mean ‖y‖²). A point is a "symmetry"
    image of θ when :func:`align`'s residual is at most ``tol``; an "exact" point
    (J ≤ EXACT_RELATIVE × mean ‖y‖²) gets ``details`` "dead unit" (a ReLU unit whose
    pre-activation is ≤ 0 on every probe) or else "zero outgoing weights" (a unit whose
    outgoing weights' norm is at most ZERO_WEIGHT_RELATIVE × its layer's) where one
    applies. "trivial" (J ≥ the
    constant-function loss, :func:`~genni_ext.analysis.structure.constant_loss`) is tested
    before "approximate" (J < ``eps``), so an ε larger than the constant-function loss
    does not count trivial functions as equivalents. Points with NaN or Inf entries are
    "not converged". Raises InputError when the problem's model does not lower.
    """
    _check_explain(search_result, problem, eps, tol)
    layers = hidden_layers(problem.model, problem.input_shape)
    params = search_result.params.detach().to(device=problem.theta.device)
    finite = torch.isfinite(params).all(dim=1)
    losses = torch.full((params.shape[0],), math.nan, dtype=torch.float64)
    if bool(finite.any()):
        losses[finite.cpu()] = problem.loss(params[finite]).cpu()
    stored = search_result.losses.detach().double().cpu().numpy()
    recomputed = losses.numpy()
    targets = problem.targets.double()
    power = float(targets.square().sum(dim=1).mean())
    thresholds = {
        "eps": float(eps),
        "exact": EXACT_RELATIVE * power,
        "constant_loss": constant_loss(problem.targets),
        "tol": float(tol),
        "zero_weight_relative": ZERO_WEIGHT_RELATIVE,
    }
    theta = problem.theta.detach().double().cpu()
    kinds, details, residuals = [], [], []
    for index, row in enumerate(params):
        loss = float(recomputed[index])
        if not bool(finite[index]):
            kinds.append("not converged")
            details.append("")
            residuals.append(math.nan)
            continue
        point = row.double().cpu()
        residual = _align_points(layers, theta, point)[3]
        residuals.append(residual)
        detail = ""
        if residual <= tol:
            kind = "symmetry"
        elif loss <= thresholds["exact"]:
            kind = "exact"
            detail = _degeneracy(problem, layers, point)
        elif loss >= thresholds["constant_loss"]:
            kind = "trivial"
        elif loss < eps:
            kind = "approximate"
        else:
            kind = "not converged"
        kinds.append(kind)
        details.append(detail)
    notes = [note for note in map(_narrower_search, layers) if note is not None]
    if eps > thresholds["constant_loss"]:
        notes.append(
            f"ε = {eps:.3g} exceeds the constant-function loss "
            f"{thresholds['constant_loss']:.3g}: the ε-set contains functions no better than "
            "a constant; points with J between the two are counted as trivial."
        )
    differ = ~np.isclose(stored, recomputed, rtol=1e-6, atol=1e-12 * power, equal_nan=True)
    if differ.any():
        shown = np.flatnonzero(differ).tolist()
        notes.append(
            f"The search's stored J differs from J recomputed on the problem's probes for "
            f"point(s) {shown}; the kinds use the recomputed J (see losses and "
            "stored_losses)."
        )
    return Explanation(
        kinds=kinds,
        details=details,
        residuals=np.array(residuals, dtype=np.float64),
        losses=recomputed,
        stored_losses=stored,
        counts={kind: kinds.count(kind) for kind in KINDS},
        thresholds=thresholds,
        notes=tuple(notes),
    )


__all__ = [
    "DEGENERACIES",
    "EXACT_RELATIVE",
    "KINDS",
    "ZERO_WEIGHT_RELATIVE",
    "Alignment",
    "Explanation",
    "align",
    "explain",
]
