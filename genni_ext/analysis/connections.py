"""Paths between two points in the full parameter space, and how high J rises on them.

:func:`connect` joins a to b by one of four paths and evaluates J along it; the barrier is
the highest J on the path less the higher of J(a) and J(b):

- ``linear``: the segment from a to b.
- ``orbit``: when b is a G_ReLU image of a (:func:`~genni_ext.analysis.alignment.align`
  finds a permutation π and positive scales s with residual ≤ SYMMETRY_TOL), the path
  g_t·a with g_t = (π, s^t), t from 0 to 1, which rescales every unit continuously
  (log-linear in its scale), then the straight piece from g·a to b (as long as the
  residual). Every g_t·a computes a's function, so J along it is J(a) up to round-off.
  A permutation is not continuous: where π is not the identity the path starts at π·a
  (a's units reordered, the same function), not at a.
- ``curve``: a polygonal chain a → bends → b whose bends are trained (Adam, fixed seed) to
  lower a high-power mean of J at points drawn along it (a smooth stand-in for its
  maximum), after Garipov et al. (2018); started from the segment and, where b is a
  G_ReLU image of a with no permutation, also from the orbit path; the lower is kept.
- ``neb``: a nudged elastic band (Henkelman and Jónsson 2000): images between a and b move
  along the component of −∇J across the band plus a spring force along it, with the
  highest image climbing to the band's saddle (climbing image).

``align="weights"`` or ``"activations"`` first moves b along its own G_ReLU orbit to b'
= g·b, matching b's units to a's per hidden layer by the Hungarian method: by the
Euclidean distance of the weights (``closest_image`` of the alignment module, with its
positive scales), or by the correlation of the units' outputs on the probes with a
least-squares positive scale, as the permutation-alignment literature does (Entezari et
al. 2022, Ainsworth et al. 2022). The path then joins a to b', which computes b's
function; the unaligned path (the same method from a to b) is kept in ``before``.

J along a path is evaluated by :func:`genni_ext.engine.sweep` (the fused engine where the
model lowers, torch.func otherwise): the path's points are its vertices combined with
fixed coefficients, so many paths are one sweep. It is evaluated at ``points`` points
along the path and around its highest one, ``REFINE_ROUNDS`` times more finely; between
the points J is not checked. What is certified: a path whose J stays below ε at the
evaluated points joins a and b below ε at that resolution. "No path found below ε" is not
a proof that a and b lie in different components: another path may exist. The highest J
of any path is an upper bound of the lowest pass between its ends; curves and bands are
local searches and can settle on a higher pass (on the demo, a band from θ to a
unit-swapped image of θ crossed at the higher of the two half-line passes).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.func import vmap

from genni_ext._validate import positive_int, resolve_eps, seed_argument, torch_threads
from genni_ext.analysis.alignment import SYMMETRY_TOL, Element, act, closest_image, hungarian
from genni_ext.analysis.representations import layer_outputs
from genni_ext.analysis.structure import HiddenLayer, hidden_layers
from genni_ext.core.models import flat_point
from genni_ext.core.problem import Problem
from genni_ext.engine import sweep
from genni_ext.errors import InputError

METHODS = ("linear", "orbit", "curve", "neb")
"""The paths :func:`connect` builds."""
ALIGNMENTS = ("none", "weights", "activations")
"""How b's units are matched to a's before a path is built."""
DEFAULT_BENDS = {"curve": 4, "neb": 16}
"""Bends of a curve, movable images of a band, when ``bends`` is not given."""
REFINE_ROUNDS = 3
"""Rounds of refinement around the highest evaluated point of a polygonal path."""
REFINE_POINTS = 16
"""Points added per round, spread over the two pieces beside the highest point."""
POWER = 16
"""The power of the mean of J a curve minimises: J at half the maximum weighs 2⁻¹⁵."""
LEARNING_RATE = 0.02
"""Adam's step for curves and bands, as a fraction of ‖b − a‖ / √P (per coordinate)."""
SPRING = 1.0
"""The band's spring constant in units of constant_loss / (‖b − a‖ / (n + 1))²."""
BAND_STEP = 0.01
"""The longest step of a band's image, as a fraction of ‖b − a‖ (cosine decay to 1 %):
steps along the force itself, so that its projections are kept."""
CLIMB_AFTER = 0.25
"""The share of a band's steps after which its highest image climbs."""
BATCH_PROBES = 4096
"""Probes per training step of curves and bands (all of them where there are fewer)."""
TAIL_POINTS = 4
"""Points on the orbit path's straight piece from g·a to b."""
MAX_DIRECTIONS = 512
"""Vertices per sweep call: more paths are split into several calls."""


@dataclass(frozen=True)
class Connection:
    """A path from a to b (or to b' = g·b, where b was aligned) and J along it.

    ``points`` [n, P] (CPU, θ's dtype) in order along the path, ``t`` [n] the fraction of
    the path's length (the sum of the distances between consecutive points) at each, and
    ``losses`` [n] J there. ``peak`` is the highest of them; ``barrier`` = peak − max(J(a),
    J(b)) with ``endpoint_losses`` = (J(a), J(b)); ``below_eps`` = peak < ``eps``.
    ``permutations`` and ``scales`` (one array per hidden layer) are the G_ReLU element
    of ``orbit`` (acting on a) or of the alignment (acting on b), else None;
    ``discontinuous`` says that a permutation stands between a given point and the path's
    end (the path joins the permuted point, which computes the same function).
    ``before`` is the same method between a and the unaligned b (None without
    alignment); ``notes`` says what the numbers rest on.
    """

    method: str
    align: str
    points: torch.Tensor
    t: np.ndarray
    losses: np.ndarray
    peak: float
    barrier: float
    endpoint_losses: tuple[float, float]
    eps: float
    constant_loss: float
    below_eps: bool
    permutations: list[np.ndarray] | None
    scales: list[np.ndarray] | None
    discontinuous: bool
    before: Connection | None
    seconds: float
    notes: tuple[str, ...]

    @property
    def barrier_eps(self) -> float:
        """The barrier in units of ε."""
        return self.barrier / self.eps

    @property
    def barrier_constant(self) -> float:
        """The barrier in units of J of the best constant function."""
        return self.barrier / self.constant_loss

    def summary(self) -> str:
        """What the path is, how high J rises on it, and what that does and does not show."""
        aligned = "" if self.align == "none" else f" after {self.align} alignment of b to a"
        text = (
            f"{self.method} path{aligned} ({len(self.losses)} points): max J = "
            f"{self.peak:.3g} ({self.peak / self.eps:.3g} ε), barrier above the higher "
            f"end {self.barrier:.3g} ({self.barrier_eps:.3g} ε, "
            f"{self.barrier_constant:.3g} × J of the best constant function)."
        )
        if self.below_eps:
            text += (
                " J stays below ε at every evaluated point: the path joins its first and last "
                "points below ε"
                + (
                    "; a permutation stands between one of them and the point given, so this "
                    "path does not join the given points continuously"
                    if self.discontinuous
                    else ""
                )
                + "."
            )
        else:
            text += (
                " J reaches ε on this path; no path was found below ε, which is not a proof "
                "that none exists."
            )
        if self.before is not None:
            text += (
                f" Before alignment the same method's barrier was {self.before.barrier:.3g} "
                f"({self.before.barrier_eps:.3g} ε)."
            )
        return " ".join([text, *self.notes])


@dataclass
class _Path:
    """A path to evaluate: ``vertices`` [m, P]; with ``knots`` (the parameter u ∈ [0, 1]
    of each vertex) it is the polygon through them, evaluated anywhere; without, the
    vertices are its only points."""

    vertices: torch.Tensor
    knots: np.ndarray | None
    u: np.ndarray = field(default_factory=lambda: np.empty(0))
    losses: np.ndarray = field(default_factory=lambda: np.empty(0))

    def weights(self, u: np.ndarray) -> torch.Tensor:
        """[len(u), m] coefficients of the points at ``u``: hat functions on the knots
        (a polygon), or the identity (the vertices themselves)."""
        if self.knots is None:
            return torch.eye(self.vertices.shape[0], dtype=torch.float64)
        return torch.from_numpy(_hats(self.knots, u))


def _hats(knots: np.ndarray, u: np.ndarray) -> np.ndarray:
    """[len(u), len(knots)] weights of the piecewise-linear interpolation at ``u``."""
    piece = np.clip(np.searchsorted(knots, u, side="right") - 1, 0, len(knots) - 2)
    share = (u - knots[piece]) / (knots[piece + 1] - knots[piece])
    weights = np.zeros((len(u), len(knots)))
    rows = np.arange(len(u))
    weights[rows, piece] = 1.0 - share
    weights[rows, piece + 1] = share
    return weights


def _sweep_blocks(
    problem: Problem, blocks: list[tuple[torch.Tensor, torch.Tensor]], options: _Options
) -> list[np.ndarray]:
    """J at ``coefficients @ vertices`` for every (vertices [m, P], coefficients [n, m])
    block: the blocks side by side in one sweep (centre 0, the vertices as directions,
    block-diagonal coefficients), in as few calls as MAX_DIRECTIONS allows."""
    like = {"dtype": problem.theta.dtype, "device": problem.inputs.device}
    results: list[np.ndarray] = []
    start = 0
    while start < len(blocks):
        stop, total = start, 0
        while stop < len(blocks) and (
            stop == start or total + len(blocks[stop][0]) <= MAX_DIRECTIONS
        ):
            total += len(blocks[stop][0])
            stop += 1
        group = blocks[start:stop]
        directions = torch.cat([vertices for vertices, _ in group]).to(**like).contiguous()
        coefficients = torch.block_diag(*[weights for _, weights in group]).to(**like)
        values = (
            sweep(
                problem.model,
                torch.zeros(problem.num_params, **like),
                directions,
                coefficients.contiguous(),
                problem.inputs,
                problem.targets,
                backend=options.backend,
                num_threads=options.num_threads,
            )
            .cpu()
            .numpy()
        )
        first = 0
        for _, weights in group:
            results.append(values[first : first + len(weights)])
            first += len(weights)
        start = stop
    return results


def _evaluate(problem: Problem, paths: list[_Path], options: _Options) -> None:
    """J at ``points`` evenly spaced u and at every knot of each polygon (every vertex of
    the others), then REFINE_ROUNDS rounds of REFINE_POINTS more points beside the
    highest; all paths in one sweep per round."""
    for path in paths:
        if path.knots is None:
            path.u = np.linspace(0.0, 1.0, len(path.vertices))
        else:
            path.u = np.union1d(np.linspace(0.0, 1.0, options.points), path.knots)
    values = _sweep_blocks(problem, [(p.vertices, p.weights(p.u)) for p in paths], options)
    for path, losses in zip(paths, values, strict=True):
        path.losses = losses
    polygons = [path for path in paths if path.knots is not None]
    for _ in range(REFINE_ROUNDS):
        extra = []
        for path in polygons:
            top = int(np.argmax(path.losses))
            low, high = path.u[max(top - 1, 0)], path.u[min(top + 1, len(path.u) - 1)]
            extra.append(np.setdiff1d(np.linspace(low, high, REFINE_POINTS + 2)[1:-1], path.u))
        values = _sweep_blocks(
            problem, [(p.vertices, p.weights(u)) for p, u in zip(polygons, extra, strict=True)],
            options,
        )  # fmt: skip
        for path, u, losses in zip(polygons, extra, values, strict=True):
            order = np.argsort(np.concatenate([path.u, u]), kind="stable")
            path.u = np.concatenate([path.u, u])[order]
            path.losses = np.concatenate([path.losses, losses])[order]


def _batch_losses(problem: Problem) -> object:
    """J of every row of a batch of points on given probes, differentiable."""
    return vmap(problem.minibatch_loss, in_dims=(0, None, None))


def _probe_batch(problem: Problem, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    if problem.num_probes <= BATCH_PROBES:
        return problem.inputs, problem.targets
    chosen = torch.randperm(problem.num_probes, generator=generator)[:BATCH_PROBES]
    chosen = chosen.to(problem.inputs.device)
    return problem.inputs[chosen], problem.targets[chosen]


class _Adam:
    """Adam with one step size per path (``rates`` [K]) and a cosine decay to 1 %."""

    def __init__(self, shape: torch.Size, rates: torch.Tensor, steps: int) -> None:
        self.first = torch.zeros(shape, dtype=torch.float64)
        self.second = torch.zeros(shape, dtype=torch.float64)
        self.rates, self.steps, self.count = rates, steps, 0

    def step(self, gradient: torch.Tensor) -> torch.Tensor:
        """The update for ``gradient`` (to be subtracted)."""
        self.count += 1
        self.first.mul_(0.9).add_(gradient, alpha=0.1)
        self.second.mul_(0.999).addcmul_(gradient, gradient, value=0.001)
        first = self.first / (1 - 0.9**self.count)
        second = self.second / (1 - 0.999**self.count)
        decay = 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (self.count - 1) / self.steps))
        rate = (self.rates * decay).view(-1, *([1] * (gradient.ndim - 1)))
        return rate * first / (second.sqrt() + 1e-12)


def _rates(starts: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    return LEARNING_RATE * (ends - starts).norm(dim=1) / math.sqrt(starts.shape[1])


def _train_curves(
    problem: Problem,
    starts: torch.Tensor,
    ends: torch.Tensor,
    bends: torch.Tensor,
    options: _Options,
) -> torch.Tensor:
    """Bends [K, k, P] (float64) after ``options.steps`` Adam steps on Σ_K of max J · (mean
    (J / max J)^POWER)^(1/POWER) at ``options.points`` stratified random points of each chain."""
    generator = torch.Generator().manual_seed(options.seed)
    steps, samples = options.steps, options.points
    losses = _batch_losses(problem)
    knots = torch.linspace(0.0, 1.0, bends.shape[1] + 2, dtype=torch.float64).numpy()
    free = bends.clone().requires_grad_(True)
    adam = _Adam(free.shape, _rates(starts, ends), steps)
    dtype = problem.theta.dtype
    for _ in range(steps):
        u = (np.arange(samples) + torch.rand(samples, generator=generator).numpy()) / samples
        weights = torch.from_numpy(_hats(knots, u))
        chain = torch.cat([starts[:, None], free, ends[:, None]], dim=1)
        points = torch.einsum("sm,kmp->ksp", weights, chain).reshape(-1, starts.shape[1])
        inputs, targets = _probe_batch(problem, generator)
        values = losses(points.to(dtype), inputs, targets).double().view(len(starts), samples)
        top = values.detach().amax(dim=1, keepdim=True).clamp_min(1e-300)
        objective = (top[:, 0] * ((values / top) ** POWER).mean(dim=1) ** (1 / POWER)).sum()
        (gradient,) = torch.autograd.grad(objective, free)
        with torch.no_grad():
            free -= adam.step(gradient)
    return free.detach()


def _tangents(band: torch.Tensor, energies: torch.Tensor) -> torch.Tensor:
    """Unit tangents [K, n, P] at the interior images of ``band`` [K, n + 2, P]: toward the
    higher neighbour, energy-weighted at extrema (Henkelman and Jónsson 2000)."""
    ahead, behind = band[:, 2:] - band[:, 1:-1], band[:, 1:-1] - band[:, :-2]
    here, up, down = energies[:, 1:-1], energies[:, 2:], energies[:, :-2]
    rising = ((up > here) & (here > down))[..., None]
    falling = ((up < here) & (here < down))[..., None]
    big = torch.maximum((up - here).abs(), (down - here).abs())[..., None]
    small = torch.minimum((up - here).abs(), (down - here).abs())[..., None]
    mixed = torch.where(
        (up > down)[..., None], ahead * big + behind * small, ahead * small + behind * big
    )
    tangent = torch.where(rising, ahead, torch.where(falling, behind, mixed))
    return tangent / tangent.norm(dim=2, keepdim=True).clamp_min(1e-300)


def _train_bands(
    problem: Problem,
    starts: torch.Tensor,
    ends: torch.Tensor,
    images: torch.Tensor,
    options: _Options,
) -> torch.Tensor:
    """Images [K, n, P] (float64) after ``options.steps`` steps along the nudged elastic band force
    (the image with the largest force moving BAND_STEP · ‖b − a‖, decaying): −∇J across
    the band plus springs along it; after CLIMB_AFTER of the steps the highest image of
    each band climbs (−∇J with its component along the band reversed)."""
    generator = torch.Generator().manual_seed(options.seed)
    steps = options.steps
    losses = _batch_losses(problem)
    count, num, size = images.shape
    spacing = (ends - starts).norm(dim=1) / (num + 1)
    spring = (SPRING * problem.constant_loss / spacing.square().clamp_min(1e-300))[:, None, None]
    rates = (BAND_STEP * (ends - starts).norm(dim=1))[:, None, None]
    dtype = problem.theta.dtype
    band = images.clone()
    for step in range(steps):
        inputs, targets = _probe_batch(problem, generator)
        chain = torch.cat([starts[:, None], band, ends[:, None]], dim=1)
        flat = chain.reshape(-1, size).to(dtype)
        flat.requires_grad_(True)
        values = losses(flat, inputs, targets)
        # Each point's J depends on its own row only: the gradient of the sum is per row.
        (slope,) = torch.autograd.grad(values.sum(), flat)
        energies = values.detach().double().view(count, num + 2)
        slope = slope.double().view(count, num + 2, size)[:, 1:-1]
        tangent = _tangents(chain, energies)
        along = (slope * tangent).sum(dim=2, keepdim=True)
        lengths = (chain[:, 1:] - chain[:, :-1]).norm(dim=2)
        stretch = (lengths[:, 1:] - lengths[:, :-1])[..., None]
        force = -(slope - along * tangent) + spring * stretch * tangent
        if step >= CLIMB_AFTER * steps:
            top = energies[:, 1:-1].argmax(dim=1)
            rows = torch.arange(count)
            force[rows, top] = -slope[rows, top] + 2 * along[rows, top] * tangent[rows, top]
        decay = 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * step / steps))
        largest = force.norm(dim=2).amax(dim=1)[:, None, None].clamp_min(1e-300)
        band += rates * decay * force / largest
    return band


def _units_of(representation: torch.Tensor) -> torch.Tensor:
    """[samples, units] from a representation [N, C] or [N, C, H, W]."""
    if representation.ndim == 2:
        return representation.double()
    return representation.transpose(0, 1).reshape(representation.shape[1], -1).T.double()


def _match_activations(
    problem: Problem, layers: list[HiddenLayer], a: torch.Tensor, b: torch.Tensor
) -> Element:
    """Per hidden layer: b's units matched to a's by the Hungarian method on the
    correlation of their outputs on the probes (a unit constant on them correlates 0),
    each scaled by the positive least-squares fit of a's unit's outputs by its own (1
    where the fit is not positive or the layer has no rescaling symmetry). A layer's
    outputs as a function of the input do not change under the earlier layers' symmetries,
    so the layers are matched independently."""
    theirs = layer_outputs(problem.model, a.to(problem.theta.dtype), problem.inputs)
    mine = layer_outputs(problem.model, b.to(problem.theta.dtype), problem.inputs)
    permutations, scales = [], []
    for layer, ours, other in zip(layers, theirs.values(), mine.values(), strict=True):
        x, y = _units_of(ours).cpu(), _units_of(other).cpu()
        centred_x, centred_y = x - x.mean(dim=0), y - y.mean(dim=0)
        norms = centred_x.norm(dim=0)[:, None] * centred_y.norm(dim=0)[None, :]
        correlation = torch.where(norms > 0, centred_x.T @ centred_y / norms.clamp_min(1e-300), 0)
        permutation = hungarian(correlation.numpy())
        matched = y[:, permutation]
        fit = (x * matched).sum(dim=0) / matched.square().sum(dim=0).clamp_min(1e-300)
        scale = torch.where(fit > 0, fit, torch.ones_like(fit)).numpy()
        if layer.continuous_group == "none":
            scale = np.ones(layer.num_units)
        permutations.append(permutation)
        scales.append(scale)
    return permutations, scales


def _aligned(
    problem: Problem, layers: list[HiddenLayer], align: str, a: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, Element]:
    """b' = g·b for the alignment asked for, with g, for float64 CPU points."""
    if align == "weights":
        permutations, scales, moved, _ = closest_image(layers, b, a)
        return moved, (permutations, scales)
    element = _match_activations(problem, layers, a, b)
    return act(layers, b, element), element


def _orbit_path(
    layers: list[HiddenLayer], a: torch.Tensor, b: torch.Tensor, points: int
) -> tuple[torch.Tensor, Element]:
    """The orbit path's points (float64) and its element, or InputError where b is not a
    G_ReLU image of a."""
    permutations, scales, image, residual = closest_image(layers, a, b)
    if residual > SYMMETRY_TOL:
        raise InputError(
            f"method='orbit' needs b to be a G_ReLU image of a (permuted and rescaled units), "
            f"but the closest image of a is {residual:.3g} away relative to ‖b‖ (more than "
            f"the tolerance {SYMMETRY_TOL:.3g}); use method='curve' or 'neb'"
        )
    steps = np.linspace(0.0, 1.0, points - TAIL_POINTS)
    orbit = [act(layers, a, (permutations, [scale**step for scale in scales])) for step in steps]
    tail = torch.linspace(0.0, 1.0, TAIL_POINTS + 1, dtype=torch.float64)[1:, None]
    stacked = torch.cat([torch.stack(orbit), image + tail * (b - image)])
    return stacked, (permutations, scales)


def _segment_bends(a: torch.Tensor, b: torch.Tensor, count: int) -> torch.Tensor:
    share = torch.linspace(0.0, 1.0, count + 2, dtype=torch.float64)[1:-1, None]
    return a + share * (b - a)


def _orbit_bends(
    layers: list[HiddenLayer], a: torch.Tensor, b: torch.Tensor, count: int
) -> torch.Tensor | None:
    """``count`` points of the orbit path from a to b, evenly spaced in t, where b is a
    G_ReLU image of a with no permutation; else None."""
    permutations, scales, _, residual = closest_image(layers, a, b)
    unpermuted = all(np.array_equal(p, np.arange(len(p))) for p in permutations)
    if residual > SYMMETRY_TOL or not unpermuted:
        return None
    steps = np.linspace(0.0, 1.0, count + 2)[1:-1]
    return torch.stack(
        [act(layers, a, (permutations, [s**step for s in scales])) for step in steps]
    )


def _fractions(points: torch.Tensor) -> np.ndarray:
    """The fraction of the path's length at each point (0 .. 1)."""
    lengths = (points[1:] - points[:-1]).double().norm(dim=1)
    total = torch.cat([torch.zeros(1, dtype=torch.float64), lengths.cumsum(0)])
    return (total / total[-1]).numpy() if float(total[-1]) > 0 else np.zeros(len(points))


def _pairs(problem: Problem, pairs: object) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The pairs as float64 CPU points, checked."""
    if isinstance(pairs, torch.Tensor):
        if pairs.ndim != 3 or pairs.shape[1] != 2:
            raise InputError(f"pairs as a tensor must be [K, 2, P], got {list(pairs.shape)}")
        pairs = [(row[0], row[1]) for row in pairs]
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence) or not pairs:
        raise InputError("pairs must be a non-empty sequence of (a, b) flat parameter vectors")
    checked = []
    for index, pair in enumerate(pairs):
        if not isinstance(pair, Sequence) or len(pair) != 2:
            raise InputError(f"pairs[{index}] must be a pair (a, b), got {type(pair).__name__}")
        a = flat_point(problem.model, pair[0], f"pairs[{index}][0]").detach().double().cpu()
        b = flat_point(problem.model, pair[1], f"pairs[{index}][1]").detach().double().cpu()
        checked.append((a, b))
    return checked


def _build(
    problem: Problem,
    layers: list[HiddenLayer],
    pairs: list[tuple[torch.Tensor, torch.Tensor]],
    options: _Options,
) -> list[tuple[list[_Path], Element | None]]:
    """The candidate paths of every pair (float64 CPU points; the best is kept after J is
    evaluated), with the orbit's element."""
    if options.method == "linear":
        return [([_Path(torch.stack([a, b]), np.array([0.0, 1.0]))], None) for a, b in pairs]
    if options.method == "orbit":
        built = []
        for a, b in pairs:
            vertices, element = _orbit_path(layers, a, b, options.points)
            built.append(([_Path(vertices, None)], element))
        return built
    starts = torch.stack([a for a, _ in pairs])
    ends = torch.stack([b for _, b in pairs])
    inits = [torch.stack([_segment_bends(a, b, options.bends) for a, b in pairs])]
    if options.init == "auto":
        orbits = [_orbit_bends(layers, a, b, options.bends) for a, b in pairs]
        if any(orbit is not None for orbit in orbits):
            inits.append(torch.stack([
                segment if orbit is None else orbit
                for orbit, segment in zip(orbits, inits[0], strict=True)
            ]))  # fmt: skip
    knots = np.linspace(0.0, 1.0, options.bends + 2)
    candidates = []
    with torch_threads(options.num_threads, problem.inputs.device):
        for start in inits:
            if options.method == "curve":
                trained = _train_curves(problem, starts, ends, start, options)
            else:
                trained = _train_bands(problem, starts, ends, start, options)
            chains = torch.cat([starts[:, None], trained, ends[:, None]], dim=1)
            candidates.append([_Path(chain, knots) for chain in chains])
    return [(list(paths), None) for paths in zip(*candidates, strict=True)]


@dataclass(frozen=True)
class _Options:
    """The checked settings of one :func:`connect_many` call."""

    method: str
    eps: float
    bends: int
    steps: int
    points: int
    seed: int
    init: str
    backend: str
    num_threads: int | None


def _options(
    problem: object,
    method: str,
    align: str,
    eps: float | None,
    eps_relative: float | None,
    bends: int | None,
    steps: int,
    points: int,
    seed: int,
    init: str,
    backend: str,
    num_threads: int | None,
) -> _Options:
    if not isinstance(problem, Problem):
        raise InputError(f"problem must be a genni_ext.Problem, got {type(problem).__name__}")
    if method not in METHODS:
        raise InputError(f"method={method!r} is not known; use one of {', '.join(METHODS)}")
    if align not in ALIGNMENTS:
        raise InputError(f"align={align!r} is not known; use one of {', '.join(ALIGNMENTS)}")
    if method == "orbit" and align != "none":
        raise InputError(
            "method='orbit' finds its own G_ReLU element (permutation and scales); leave "
            "align='none'"
        )
    if init not in ("auto", "segment"):
        raise InputError(f"init={init!r} is not known; use 'auto' or 'segment'")
    if positive_int(points, "points") < 2 * TAIL_POINTS:
        raise InputError(f"points must be at least {2 * TAIL_POINTS}, got {points}")
    if num_threads is not None:
        positive_int(num_threads, "num_threads")
    return _Options(
        method=method,
        eps=resolve_eps(eps, eps_relative, problem.constant_loss),
        bends=positive_int(bends if bends is not None else DEFAULT_BENDS.get(method, 1), "bends"),
        steps=positive_int(steps, "steps"),
        points=points,
        seed=seed_argument(seed, "seed"),
        init=init,
        backend=backend,
        num_threads=num_threads,
    )


def connect_many(
    problem: Problem,
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]] | torch.Tensor,
    method: str = "linear",
    *,
    eps: float | None = None,
    eps_relative: float | None = None,
    align: str = "none",
    bends: int | None = None,
    steps: int = 400,
    points: int = 65,
    seed: int = 0,
    init: str = "auto",
    backend: str = "auto",
    num_threads: int | None = None,
) -> list[Connection]:
    """:func:`connect` for every pair (a, b) of ``pairs`` ([K, 2, P] or a list of pairs of
    flat vectors [P]): curves and bands of all pairs are trained together (one batched J
    per step) and J along all paths is one :func:`~genni_ext.engine.sweep` per
    refinement round (split where the paths have more than MAX_DIRECTIONS vertices).
    ``seconds`` of each result is the call's time divided by the number of pairs."""
    started = time.perf_counter()
    options = _options(problem, method, align, eps, eps_relative, bends, steps, points, seed,
                       init, backend, num_threads)  # fmt: skip
    checked = _pairs(problem, pairs)
    layers = hidden_layers(problem.model, problem.input_shape)
    before: list[Connection | None] = [None] * len(checked)
    elements: list[Element | None] = [None] * len(checked)
    targets = checked
    if align != "none":
        before = list(connect_many(
            problem, checked, method, eps=options.eps, bends=options.bends, steps=steps,
            points=points, seed=seed, init=init, backend=backend, num_threads=num_threads,
        ))  # fmt: skip
        moved = [_aligned(problem, layers, align, a, b) for a, b in checked]
        targets = [(a, image) for (a, _), (image, _) in zip(checked, moved, strict=True)]
        elements = [element for _, element in moved]
    built = _build(problem, layers, targets, options)
    _evaluate(problem, [path for paths, _ in built for path in paths], options)
    ends = _sweep_blocks(
        problem, [(torch.stack(pair), torch.eye(2, dtype=torch.float64)) for pair in checked],
        options,
    )  # fmt: skip
    seconds = (time.perf_counter() - started) / len(checked)
    results = []
    for index, (paths, orbit) in enumerate(built):
        path = min(paths, key=lambda one: float(one.losses.max()))
        element = orbit if method == "orbit" else elements[index]
        results.append(_connection(problem, options, align, path, ends[index], element,
                                   before[index], seconds))  # fmt: skip
    return results


def _connection(
    problem: Problem,
    options: _Options,
    align: str,
    path: _Path,
    ends: np.ndarray,
    element: Element | None,
    before: Connection | None,
    seconds: float,
) -> Connection:
    """The result for one evaluated path."""
    points = (path.weights(path.u) @ path.vertices).to(problem.theta.dtype)
    peak = float(path.losses.max())
    permuted = element is not None and not all(
        np.array_equal(p, np.arange(len(p))) for p in element[0]
    )
    notes = []
    if options.method == "orbit":
        notes.append(
            "The orbit path rescales every hidden unit continuously (log-linear scales) and "
            "ends with a straight piece as long as the alignment residual."
        )
        if permuted:
            notes.append(
                "It starts at π·a, a with its hidden units permuted: a permutation is not "
                "continuous, so the path joins π·a (which computes a's function) to b, not "
                "a itself."
            )
    if align != "none":
        notes.append(
            f"b was moved along its own G_ReLU orbit ({align} alignment"
            + (", with a permutation, which is not continuous" if permuted else "")
            + "); the path ends at that image of b, which computes b's function."
        )
    if options.method in ("curve", "neb"):
        what = "bends" if options.method == "curve" else "images"
        notes.append(f"{options.bends} {what}, {options.steps} steps.")
    if path.knots is not None:
        notes.append(
            "J was evaluated at the listed points only (finer around the highest); between "
            "them it was not checked."
        )
    return Connection(
        method=options.method,
        align=align,
        points=points.cpu(),
        t=_fractions(points),
        losses=path.losses.copy(),
        peak=peak,
        barrier=peak - float(max(ends)),
        endpoint_losses=(float(ends[0]), float(ends[1])),
        eps=options.eps,
        constant_loss=problem.constant_loss,
        below_eps=peak < options.eps,
        permutations=None if element is None else list(element[0]),
        scales=None if element is None else list(element[1]),
        discontinuous=permuted,
        before=before,
        seconds=seconds,
        notes=tuple(notes),
    )


def connect(
    problem: Problem,
    a: torch.Tensor,
    b: torch.Tensor,
    method: str = "linear",
    *,
    eps: float | None = None,
    eps_relative: float | None = None,
    align: str = "none",
    bends: int | None = None,
    steps: int = 400,
    points: int = 65,
    seed: int = 0,
    init: str = "auto",
    backend: str = "auto",
    num_threads: int | None = None,
) -> Connection:
    """A path from ``a`` to ``b`` (flat parameter vectors [P] of the problem's model) by
    ``method`` (one of :data:`METHODS`, see the module docstring) and J along it.

    ε is ``eps``, or ``eps_relative`` × ``problem.constant_loss`` (give exactly one).
    ``align`` (one of :data:`ALIGNMENTS`) first moves b along its G_ReLU orbit to match
    a's units, and keeps the unaligned path in ``before``. ``bends``: a curve's bends or
    a band's movable images (default :data:`DEFAULT_BENDS`); ``steps``: training steps;
    ``points``: points of J along the path (before refinement), also the points drawn
    per training step of a curve; ``seed`` fixes the draws. ``init="segment"`` starts
    curves and bands only from the segment ("auto": also from the orbit path, where b is
    an unpermuted G_ReLU image of a). ``backend`` and ``num_threads`` are the sweep's;
    ``num_threads`` also caps torch's threads while curves and bands are trained (on a
    busy machine one thread can be many times faster than two). A path below ε certifies
    that a and b are joined below ε (at the evaluated points); a path above it is not a
    proof that they are not.
    """
    return connect_many(
        problem, [(a, b)], method, eps=eps, eps_relative=eps_relative, align=align,
        bends=bends, steps=steps, points=points, seed=seed, init=init, backend=backend,
        num_threads=num_threads,
    )[0]  # fmt: skip


def swapped_orbit_barrier(problem: Problem) -> float:
    """For the two-neuron net φ(x) = c·ReLU(a x) + d·ReLU(b x) at θ with a, b of
    opposite sign: min(M₊s₊², M₋s₋²), the lowest barrier between θ's rescaling orbit and
    its unit-swapped copy (M± the probes' mean of x² 1{±x > 0}, s± θ's slopes on the
    two half-lines). Every path must take one input weight through 0 while the other
    keeps its sign; at that moment one half-line is computed as 0 (J ≥ M s² there), and
    a path that first hands the other half-line's slope to the unit crossing 0 reaches
    no more."""
    a, b, c, d = (float(value) for value in problem.theta.double())
    if a * b >= 0:
        raise InputError(f"θ's input weights must have opposite signs, got a={a}, b={b}")
    x = problem.inputs.double().reshape(-1)
    upper = float((x.square() * (x > 0)).mean())
    lower = float((x.square() * (x < 0)).mean())
    positive, negative = (c * a, d * b) if a > 0 else (d * b, c * a)
    return min(upper * positive**2, lower * negative**2)


__all__ = [
    "ALIGNMENTS",
    "METHODS",
    "Connection",
    "connect",
    "connect_many",
    "swapped_orbit_barrier",
]
