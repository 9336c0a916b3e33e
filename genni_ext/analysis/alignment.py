"""Is a found point a known-symmetry image of θ? And what is every found point?

:func:`align` looks for the element g of G_ReLU (per hidden layer, a permutation of the
units and a positive scale per unit) that brings θ closest to another point in the
Euclidean norm: block coordinate descent over the layers, each layer's permutation and
scales set to their exact optimum given the others'. With the other layers fixed,
‖other − g·θ‖² is a constant plus a sum over the layer's units of
‖s·w_in − w̃_in‖² + ‖w_out/s − w̃_out‖² (incoming weights and bias, outgoing weights), whose
minimum over s > 0 is a root of a quartic (solved exactly per pair of units), and the
units are assigned by the Hungarian method (``scipy.optimize.linear_sum_assignment``) on
those minima. The descent starts from the identity and from a cosine matching of incoming
weights layer by layer; the better result is kept, and the identity itself where it is
closer, so g·θ is never further from the point than θ is. On a single hidden layer one
sweep is the exact optimum over G_ReLU. The relative residual ‖other − g·θ‖ / ‖other‖
decides, against :data:`SYMMETRY_TOL`.

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
from genni_ext.analysis.structure import HiddenLayer, hidden_layers
from genni_ext.core.models import flat_point, unflatten_params
from genni_ext.core.problem import Problem, infer_input_shape
from genni_ext.core.sgd_search import SearchResult
from genni_ext.errors import InputError

FLOAT32_EPS = float(torch.finfo(torch.float32).eps)
"""u, float32's machine epsilon (2⁻²³ ≈ 1.19e-7): searches run in float32."""
SYMMETRY_TOL = math.sqrt(FLOAT32_EPS)
"""√u ≈ 3.45e-4, the one tolerance of this module (and of the README and the report): the
relative residual ‖other − g·θ‖ / ‖other‖ up to which :func:`align` and :func:`explain`
call a point a G_ReLU image of θ, and the relative output error up to which a point's
function counts as θ's. Why √u: J is flat to second order at a minimum, so a minimiser
working in precision u locates a minimiser only to about √u (relative); the demo's
genuine images of θ sit at residuals 1e-6 to 4e-6 and its other points above 0.6."""
EXACT_RELATIVE = FLOAT32_EPS
"""J ≤ this × mean ‖y‖² counts as exact, i.e. J ≤ c·u²·mean ‖y‖² with c = 1/u: the
relative RMS output error √(J / mean ‖y‖²) is at most √u = SYMMETRY_TOL, the resolution a
float32 minimiser has (a float32 search stalls there; on the demo the images of θ reach
J / mean ‖y‖² of 6e-12 to 4e-11, the collapsed points 0.45 to 0.55)."""
KINDS = (
    "G_ReLU image",
    "other exact",
    "near-constant",
    "collapsed",
    "approximate",
    "not converged",
)
"""The kinds of :func:`explain`, in the order they are tested (the first that holds wins):
align's residual ≤ tol; J ≤ EXACT_RELATIVE × mean ‖y‖² (``details`` names the degeneracy
where one is found); within NEAR_CONSTANT_RELATIVE of the best function that ignores the
input; more hidden units dead on every probe or merged with another than θ has; J < ε;
anything else (J ≥ ε, or not finite)."""
EXACT_KINDS = ("G_ReLU image", "other exact")
"""The kinds that compute θ's function to float32 resolution."""
NEAR_CONSTANT_RELATIVE = 0.01
"""A point is near-constant when mean ‖f(x) − c‖² ≤ this × mean ‖y − c‖², c the best
input-ignoring output the architecture can express: 0 for a net without biases, the mean
target ȳ otherwise (J of c is then ``Problem.zero_loss`` or ``Problem.constant_loss``)."""
ZERO_WEIGHT_RELATIVE = 1e-6
"""A unit's outgoing weights count as zero when their norm is at most this × the norm of
all its layer's outgoing weights."""
DEGENERACIES = (
    "dead unit",
    "zero outgoing weights",
    "merged units",
    "always-active unit trading bias",
)
"""The named kinds of other exact equivalents, in the order they are tested: a ReLU unit
inactive on every probe; a unit whose outgoing weights are zero; ReLU units with the same
activation pattern on every probe (on the probes they act as one unit, so their outgoing
weights can trade); a ReLU unit active on every probe (linear there) whose bias the next
layer's bias can absorb."""
PROBE_CHUNK = 4096
"""Probes per forward pass when looking at the units."""
MAX_SWEEPS = 50
"""At most this many sweeps over the layers in :func:`align`'s coordinate descent."""
DESCENT_RELATIVE = 1e-12
""":func:`align`'s descent stops when a sweep lowers the squared distance by less than
this fraction of it."""


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


def hungarian(similarity: np.ndarray) -> np.ndarray:
    """The permutation that maximises the total similarity of a square matrix
    (``scipy.optimize.linear_sum_assignment``): entry i is the column matched with row i."""
    rows, columns = linear_sum_assignment(-np.asarray(similarity, dtype=np.float64))
    permutation = np.empty(len(rows), dtype=np.int64)
    permutation[rows] = columns
    return permutation


def _match(mine: torch.Tensor, theirs: torch.Tensor) -> np.ndarray:
    """Hungarian matching of the units by cosine similarity of their incoming weights:
    entry i is the unit of ``mine`` that ``theirs``'s unit i is matched with."""
    unit_mine = mine / mine.norm(dim=1, keepdim=True).clamp_min(torch.finfo(mine.dtype).tiny)
    unit_theirs = theirs / theirs.norm(dim=1, keepdim=True).clamp_min(
        torch.finfo(theirs.dtype).tiny
    )
    return hungarian((unit_theirs @ unit_mine.T).numpy())


def _objective(
    scale: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray
) -> np.ndarray:
    """s²A − 2sB + C/s² − 2D/s: ‖s·x − y‖² + ‖u/s − v‖² less ‖y‖² + ‖v‖², where A = ‖x‖²,
    B = x·y, C = ‖u‖², D = u·v."""
    return scale * (scale * a - 2.0 * b) + (c / scale - 2.0 * d) / scale


def _best_scales(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Elementwise the s > 0 minimising :func:`_objective`, exactly: its stationary points
    are the positive roots of A s⁴ − B s³ + D s − C (eigenvalues of the companion
    matrix, then two Newton steps), compared with s = 1 and with C/D where A = 0. Where
    the infimum is not attained (A or C zero and the other term pulls s to 0 or ∞), s = 1
    or the best root is kept, so the result is never worse than s = 1."""
    shape = a.shape
    a, b, c, d = (np.ascontiguousarray(x, dtype=np.float64).ravel() for x in (a, b, c, d))
    candidates = [np.ones_like(a)]
    quartic = a > 0
    if quartic.any():
        lead = a[quartic]
        # Monic s⁴ + p3 s³ + p2 s² + p1 s + p0 with p3 = −B/A, p2 = 0, p1 = D/A, p0 = −C/A.
        companion = np.zeros((lead.size, 4, 4))
        companion[:, 1, 0] = companion[:, 2, 1] = companion[:, 3, 2] = 1.0
        companion[:, 0, 3] = c[quartic] / lead
        companion[:, 1, 3] = -d[quartic] / lead
        companion[:, 3, 3] = b[quartic] / lead
        roots = np.linalg.eigvals(companion).real
        for k in range(4):
            root = np.full_like(a, np.nan)
            root[quartic] = roots[:, k]
            candidates.append(root)
    linear = (a == 0) & (d > 0)
    if linear.any():
        candidates.append(np.where(linear, c / np.where(linear, d, 1.0), np.nan))
    best, best_value = np.ones_like(a), _objective(np.ones_like(a), a, b, c, d)
    with np.errstate(all="ignore"):
        for root in candidates:
            for _ in range(2):
                slope = root * root * (4.0 * a * root - 3.0 * b) + d
                step = (root**3 * (a * root - b) + d * root - c) / slope
                polished = root - step
                root = np.where(np.isfinite(polished) & (polished > 0), polished, root)
            value = _objective(root, a, b, c, d)
            better = (root > 0) & np.isfinite(value) & (value < best_value)
            best = np.where(better, root, best)
            best_value = np.where(better, value, best_value)
    return best.reshape(shape)


def _layer_step(
    layer: HiddenLayer, base: torch.Tensor, other: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """The permutation and scales of ``layer`` that bring ``base`` closest to ``other``,
    every other layer held fixed: exact, since ‖other − g·base‖² is then a constant plus
    Σ_i cost(unit i of other, unit π(i) of base, s_i); the per-pair minimum over s has a
    closed form (:func:`_best_scales`) and the assignment is solved by the Hungarian
    method."""
    mine, theirs = _units(layer, base), _units(layer, other)
    mine_out = base[layer.outgoing].flatten(1)
    theirs_out = other[layer.outgoing].flatten(1)
    b = (theirs @ mine.T).numpy()
    d = (theirs_out @ mine_out.T).numpy()
    a = np.broadcast_to(mine.square().sum(dim=1).numpy(), b.shape)
    c = np.broadcast_to(mine_out.square().sum(dim=1).numpy(), b.shape)
    scaled = layer.continuous_group != "none"
    scales = _best_scales(a, b, c, d) if scaled else np.ones_like(b)
    rows, columns = linear_sum_assignment(_objective(scales, a, b, c, d))
    permutation = np.empty(len(rows), dtype=np.int64)
    permutation[rows] = columns
    return permutation, scales[rows, columns]


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


Element = tuple[list[np.ndarray], list[np.ndarray]]
"""One permutation and one array of positive scales per hidden layer: an element of G_ReLU."""


def act(
    layers: list[HiddenLayer], theta: torch.Tensor, element: Element, skip: int = -1
) -> torch.Tensor:
    """g·θ for g = ``element`` (one permutation and scales per layer), leaving out layer
    ``skip``. The layers' actions commute (each touches its own rows and the next
    layer's columns), so the order does not matter."""
    point = theta
    for index, (layer, permutation, scales) in enumerate(zip(layers, *element, strict=True)):
        if index != skip:
            point = _apply(layer, point, permutation, scales)
    return point


def _cosine_start(layers: list[HiddenLayer], theta: torch.Tensor, other: torch.Tensor) -> Element:
    """Layer by layer from the input: units matched by the cosine of their incoming
    weights, scaled by the positive least-squares fit of the incoming weights (1 where
    there is none)."""
    current = theta
    permutations, all_scales = [], []
    for layer in layers:
        mine, theirs = _units(layer, current), _units(layer, other)
        permutation = _match(mine, theirs)
        fit = (mine[permutation] * theirs).sum(dim=1) / mine[permutation].square().sum(dim=1)
        scales = torch.where(fit > 0, fit, torch.ones_like(fit)).numpy()
        if layer.continuous_group == "none":
            scales = np.ones(layer.num_units)
        current = _apply(layer, current, permutation, scales)
        permutations.append(permutation)
        all_scales.append(scales)
    return permutations, all_scales


def _descend(
    layers: list[HiddenLayer], theta: torch.Tensor, other: torch.Tensor, element: Element
) -> tuple[Element, float]:
    """Block coordinate descent on ‖other − g·θ‖² from ``element``: each layer's
    permutation and scales in turn set to their exact optimum given the others (a step
    that would not lower the distance is not taken), until a sweep lowers it by less than
    DESCENT_RELATIVE of itself or after MAX_SWEEPS sweeps."""
    permutations, scales = list(element[0]), list(element[1])
    distance = float((other - act(layers, theta, (permutations, scales))).square().sum())
    for _ in range(MAX_SWEEPS):
        start = distance
        for index, layer in enumerate(layers):
            base = act(layers, theta, (permutations, scales), skip=index)
            permutation, scale = _layer_step(layer, base, other)
            trial = float((other - _apply(layer, base, permutation, scale)).square().sum())
            if trial < distance:
                permutations[index], scales[index], distance = permutation, scale, trial
        if start - distance <= DESCENT_RELATIVE * start:
            break
    return (permutations, scales), distance


def closest_image(
    layers: list[HiddenLayer], theta: torch.Tensor, other: torch.Tensor
) -> tuple[list[np.ndarray], list[np.ndarray], torch.Tensor, float]:
    """The permutations, scales, g·θ and residual for float64 CPU points: the better of
    the descents from the identity and from the cosine matching, and never worse than
    the identity itself."""
    identity: Element = (
        [np.arange(layer.num_units) for layer in layers],
        [np.ones(layer.num_units) for layer in layers],
    )
    best, best_distance = identity, float((other - theta).square().sum())
    for start in (identity, _cosine_start(layers, theta, other)):
        element, distance = _descend(layers, theta, other, start)
        if distance < best_distance:
            best, best_distance = element, distance
    current = act(layers, theta, best)
    size = float(other.norm())
    distance = float((other - current).norm())
    residual = distance / size if size > 0 else (0.0 if distance == 0 else math.inf)
    return best[0], best[1], current, residual


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
    tol: float = SYMMETRY_TOL,
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
    permutations, scales, aligned, residual = closest_image(layers, reference, target)
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

    ``kinds[k]`` is one of KINDS; ``details[k]`` names the degeneracy of an "other exact"
    point (one of DEGENERACIES) or is "". ``residuals`` are the :func:`align` residuals,
    ``losses`` J recomputed on the problem's probes (NaN for points that are not finite)
    and ``stored_losses`` the search's own. ``dead[k]`` and ``merged[k]`` count the ReLU
    units inactive on every probe and those whose activation pattern on the probes
    repeats another unit's (θ's own counts are ``thresholds["theta_dead"]`` and
    ``["theta_merged"]``); ``differing[k]`` is the share of probes on which the point's
    output differs from θ's by more than ``tol`` × RMS ‖y‖ (NaN for points that are not
    finite). ``counts`` holds every kind (zeros included); ``thresholds`` the numbers the
    kinds were decided by; ``notes`` anything the reader must know (stored losses that
    disagree, an ε above the input-ignoring function's loss, layers where only part of
    the symmetry group was searched).
    """

    kinds: list[str]
    details: list[str]
    residuals: np.ndarray
    losses: np.ndarray
    stored_losses: np.ndarray
    dead: list[int]
    merged: list[int]
    differing: np.ndarray
    counts: dict[str, int]
    thresholds: dict[str, float]
    notes: tuple[str, ...]

    def summary(self) -> str:
        """One sentence of counts per kind with what decided each, then the notes."""
        limits = self.thresholds
        other = Counter(
            detail or "unnamed"
            for kind, detail in zip(self.kinds, self.details, strict=True)
            if kind == "other exact"
        )
        named = ", ".join(f"{count} {name}" for name, count in other.items())
        counts = self.counts
        parts = [
            f"{counts['G_ReLU image']} G_ReLU images of θ (align residual ≤ {limits['tol']:.3g})",
            f"{counts['other exact']} other exact equivalents (J ≤ "
            f"{limits['exact_relative']:.3g} × mean ‖y‖² = {limits['exact']:.3g})"
            + (f": {named}" if named else ""),
            f"{counts['near-constant']} near-constant (within "
            f"{limits['near_constant_relative']:.0%} of {self._constant_name()})",
            f"{counts['collapsed']} collapsed{self._collapsed_text()}",
            f"{counts['approximate']} approximate (J < ε = {limits['eps']:.3g})",
            f"{counts['not converged']} not converged",
        ]
        text = f"Of {len(self.kinds)} found points: " + "; ".join(parts) + "."
        return " ".join([text, *self.notes])

    def _constant_name(self) -> str:
        if self.thresholds["bias_free"]:
            return "the zero function, the only input-ignoring function a bias-free net computes"
        return "the best constant function"

    def _collapsed_text(self) -> str:
        """How many units collapsed, and the share of probes on which they differ from θ."""
        chosen = [k for k, kind in enumerate(self.kinds) if kind == "collapsed"]
        if not chosen:
            return ""
        units = Counter(self.dead[k] + self.merged[k] for k in chosen)
        how = ", ".join(
            f"{count} with {number} unit{'s' if number != 1 else ''}"
            for number, count in sorted(units.items())
        )
        shares = np.array([self.differing[k] for k in chosen])
        low, high = f"{shares.min():.0%}", f"{shares.max():.0%}"
        return (
            f" (more hidden units dead on every probe or merged with another than θ's "
            f"{int(self.thresholds['theta_dead'] + self.thresholds['theta_merged'])}: {how}; "
            f"output off θ's by more than {self.thresholds['tol']:.3g} × RMS ‖y‖ on "
            f"{low if low == high else f'{low} to {high}'} of the probes)"
        )


@dataclass(frozen=True)
class _Units:
    """What the ReLU units of one point do on the probes, and its outputs' distance from
    θ's: per hidden layer, units inactive on every probe, units active on every probe,
    and units whose activation pattern repeats a lower-numbered unit's."""

    dead: list[np.ndarray]
    always_active: list[np.ndarray]
    repeats: list[np.ndarray]
    differing: float

    @property
    def collapsed(self) -> int:
        """Units dead on every probe or merged with another (counted once each)."""
        return sum(
            int((dead | repeat).sum()) for dead, repeat in zip(self.dead, self.repeats, strict=True)
        )


class _Recorder:
    """Forward hooks on every Linear and Conv2d that record, per unit of the hidden
    layers given, whether it was ever active, ever inactive, and which units share its
    activation pattern so far (over every probe and position)."""

    def __init__(self, model: nn.Module, positions: list[int], units: list[int]) -> None:
        self.positions = positions
        self.ever_active = [torch.zeros(n, dtype=torch.bool) for n in units]
        self.ever_inactive = [torch.zeros(n, dtype=torch.bool) for n in units]
        self.same = [torch.ones(n, n, dtype=torch.bool) for n in units]
        self.calls = 0
        self.handles = [
            module.register_forward_hook(self.record)
            for module in model.modules()
            if isinstance(module, (nn.Linear, nn.Conv2d))
        ]

    def record(self, _module: nn.Module, _args: object, output: torch.Tensor) -> None:
        if self.calls in self.positions:
            slot = self.positions.index(self.calls)
            active = (output.detach().transpose(0, 1).reshape(output.shape[1], -1) > 0).double()
            self.ever_active[slot] |= active.amax(dim=1).cpu() > 0
            self.ever_inactive[slot] |= active.amin(dim=1).cpu() < 1
            disagree = active @ (1 - active).T
            self.same[slot] &= ((disagree + disagree.T) == 0).cpu()
        self.calls += 1

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _relu_layers(layers: list[HiddenLayer]) -> list[HiddenLayer]:
    return [layer for layer in layers if layer.activations[:1] == ("relu",)]


def _units_on_probes(
    problem: Problem, layers: list[HiddenLayer], point: torch.Tensor, tol: float
) -> _Units:
    """The :class:`_Units` of ``point`` on the problem's probes."""
    relu = _relu_layers(layers)
    model = problem.model
    flat = point.to(dtype=problem.theta.dtype, device=problem.theta.device)
    recorder = _Recorder(model, [layer.position for layer in relu], [one.num_units for one in relu])
    power = float(problem.targets.double().square().sum(dim=1).mean())
    limit = (tol * math.sqrt(power)) ** 2
    off = 0
    # The ops a model lowers to read no buffers: its parameters are all the call needs.
    try:
        with torch.no_grad():
            for first in range(0, problem.num_probes, PROBE_CHUNK):
                recorder.calls = 0
                inputs = problem.inputs[first : first + PROBE_CHUNK]
                outputs = functional_call(model, unflatten_params(model, flat), (inputs,))
                targets = problem.targets[first : first + PROBE_CHUNK]
                error = (outputs.reshape(targets.shape).double() - targets.double()).square()
                off += int((error.sum(dim=1) > limit).sum())
    finally:
        recorder.remove()
    repeats = []
    for same, alive in zip(recorder.same, recorder.ever_active, strict=True):
        earlier = torch.tril(same & alive[:, None] & alive[None, :], diagonal=-1)
        repeats.append(earlier.any(dim=1).numpy())
    return _Units(
        dead=[(~alive).numpy() for alive in recorder.ever_active],
        always_active=[(~inactive).numpy() for inactive in recorder.ever_inactive],
        repeats=repeats,
        differing=off / problem.num_probes,
    )


def _has_zero_outgoing(layers: list[HiddenLayer], point: torch.Tensor) -> bool:
    """Whether some unit's outgoing weights are (relatively) zero at ``point``."""
    for layer in layers:
        outgoing = point[layer.outgoing].flatten(1)
        limit = ZERO_WEIGHT_RELATIVE * float(outgoing.norm())
        if bool((outgoing.norm(dim=1) <= limit).any()):
            return True
    return False


def _trades_bias(layers: list[HiddenLayer], units: _Units) -> bool:
    """Whether a ReLU unit active on every probe has a bias the next layer's can absorb
    (the next op reads it through a Linear, so a shift of its bias is a shift of each
    next unit's input)."""
    return any(
        bool(always.any()) and layer.bias is not None and layer.next_bias is not None
        and layer.next_kind == "linear"
        for layer, always in zip(_relu_layers(layers), units.always_active, strict=True)
    )  # fmt: skip


def _degeneracy(layers: list[HiddenLayer], point: torch.Tensor, units: _Units) -> str:
    """The first of DEGENERACIES that ``point`` has, or ""."""
    if any(bool(dead.any()) for dead in units.dead):
        return DEGENERACIES[0]
    if _has_zero_outgoing(layers, point):
        return DEGENERACIES[1]
    if any(bool(repeat.any()) for repeat in units.repeats):
        return DEGENERACIES[2]
    if _trades_bias(layers, units):
        return DEGENERACIES[3]
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


def _bias_free(problem: Problem, layers: list[HiddenLayer]) -> bool:
    """Whether no op of the model has a bias (then 0 is the only constant it computes)."""
    if not layers:
        return not any(name.endswith("bias") for name, _ in problem.model.named_parameters())
    return all(layer.bias is None for layer in layers) and layers[-1].next_bias is None


def _near_constant(problem: Problem, point: torch.Tensor, bias_free: bool, limit: float) -> bool:
    """Whether mean ‖f(x) − c‖² ≤ ``limit`` at ``point`` (c = 0 or ȳ)."""
    flat = point.to(dtype=problem.theta.dtype, device=problem.theta.device)
    centre = 0.0 if bias_free else problem.targets.double().mean(dim=0)
    total = 0.0
    with torch.no_grad():
        for first in range(0, problem.num_probes, PROBE_CHUNK):
            inputs = problem.inputs[first : first + PROBE_CHUNK]
            outputs = functional_call(problem.model, unflatten_params(problem.model, flat),
                                      (inputs,))  # fmt: skip
            rows = outputs.reshape(outputs.shape[0], -1).double() - centre
            total += float(rows.square().sum())
    return total / problem.num_probes <= limit


def explain(
    search_result: SearchResult,
    problem: Problem,
    eps: float,
    *,
    tol: float = SYMMETRY_TOL,
) -> Explanation:
    """Sort every point of ``search_result`` into one of :data:`KINDS`.

    J is recomputed with ``problem.loss`` (a note lists points where the stored loss
    differs by more than 1e-6 relative plus 1e-12 × mean ‖y‖²). In order: a "G_ReLU
    image" of θ has :func:`align` residual ≤ ``tol`` (default :data:`SYMMETRY_TOL`);
    "other exact" has J ≤ EXACT_RELATIVE × mean ‖y‖², ``details`` naming the first of
    DEGENERACIES it has ("dead unit": a ReLU unit with pre-activation ≤ 0 on every probe;
    "zero outgoing weights": norm at most ZERO_WEIGHT_RELATIVE × its layer's; "merged
    units": two ReLU units active on exactly the same probes; "always-active unit trading
    bias": a ReLU unit with pre-activation > 0 on every probe, with a
    bias the next Linear's bias absorbs); "near-constant" computes within
    NEAR_CONSTANT_RELATIVE of the best input-ignoring function the architecture has (0
    without biases, else ȳ); "collapsed" has more ReLU units dead on every probe or with
    another unit's activation pattern than θ has; "approximate" has J < ``eps``; the
    rest (and points with NaN or Inf entries) are "not converged". Raises InputError when
    the problem's model does not lower.
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
    power = float(problem.targets.double().square().sum(dim=1).mean())
    bias_free = _bias_free(problem, layers)
    baseline = problem.zero_loss if bias_free else problem.constant_loss
    theta = problem.theta.detach().double().cpu()
    own = _units_on_probes(problem, layers, theta, tol)
    thresholds = {
        "eps": float(eps),
        "tol": float(tol),
        "exact_relative": EXACT_RELATIVE,
        "exact": EXACT_RELATIVE * power,
        "near_constant_relative": NEAR_CONSTANT_RELATIVE,
        "input_ignoring_loss": float(baseline),
        "bias_free": bias_free,
        "zero_weight_relative": ZERO_WEIGHT_RELATIVE,
        "theta_dead": sum(int(dead.sum()) for dead in own.dead),
        "theta_merged": sum(int(repeat.sum()) for repeat in own.repeats),
    }
    kinds, details, residuals, dead, merged, differing = [], [], [], [], [], []
    for index, row in enumerate(params):
        if not bool(finite[index]):
            kinds.append("not converged")
            details.append("")
            residuals.append(math.nan)
            dead.append(0)
            merged.append(0)
            differing.append(math.nan)
            continue
        loss = float(recomputed[index])
        point = row.double().cpu()
        residual = closest_image(layers, theta, point)[3]
        units = _units_on_probes(problem, layers, point, tol)
        detail = ""
        if residual <= tol:
            kind = "G_ReLU image"
        elif loss <= thresholds["exact"]:
            kind = "other exact"
            detail = _degeneracy(layers, point, units)
        elif _near_constant(problem, point, bias_free, NEAR_CONSTANT_RELATIVE * baseline):
            kind = "near-constant"
        elif units.collapsed > own.collapsed:
            kind = "collapsed"
        elif loss < eps:
            kind = "approximate"
        else:
            kind = "not converged"
        kinds.append(kind)
        details.append(detail)
        residuals.append(residual)
        dead.append(sum(int(mask.sum()) for mask in units.dead))
        merged.append(sum(int(mask.sum()) for mask in units.repeats))
        differing.append(units.differing)
    notes = [note for note in map(_narrower_search, layers) if note is not None]
    if eps > baseline:
        notes.append(
            f"ε = {eps:.3g} exceeds J of the best input-ignoring function ({baseline:.3g}): "
            "the ε-set contains functions that ignore their input."
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
        dead=dead,
        merged=merged,
        differing=np.array(differing, dtype=np.float64),
        counts={kind: kinds.count(kind) for kind in KINDS},
        thresholds=thresholds,
        notes=tuple(notes),
    )


__all__ = [
    "DEGENERACIES",
    "EXACT_KINDS",
    "EXACT_RELATIVE",
    "FLOAT32_EPS",
    "KINDS",
    "NEAR_CONSTANT_RELATIVE",
    "SYMMETRY_TOL",
    "ZERO_WEIGHT_RELATIVE",
    "Alignment",
    "Explanation",
    "align",
    "explain",
]
