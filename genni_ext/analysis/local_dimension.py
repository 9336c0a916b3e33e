"""The local dimension of the equivalence class at θ, and how much known symmetry explains.

Near θ, the parameters that compute φ(·, θ) on the probes form a set whose tangent space at
θ is the null space of the Jacobian J = ∂φ(x, θ)/∂θ of all outputs on all probes (N·outputs
rows, P columns). Its dimension P − rank(J) is the local dimension of the class. The known
symmetries give a subspace of that null space: the tangents at θ of their continuous orbits,
spanned by generators (see :func:`symmetry_generators`). What the generators do not span is
a part of the class that known symmetry does not explain.

The known continuous symmetries: the rescaling of each unit of a positively homogeneous
layer (ReLU, LeakyReLU, max pooling), GL(n) of a hidden layer without activation, and,
for such a layer, the shift of its biases that the next layer's bias absorbs
(b₁ → b₁ + δ, b₂ → b₂ − W₂δ). Without the shifts, an affine hidden layer would report n
"unexplained" dimensions that are plainly known: the group of an activation-free layer
between two affine maps is the affine group, of dimension n² + n.

How the rank is computed: per-sample Jacobians with ``torch.func`` (``vmap`` of ``jacrev``
over chunks of probes), then the singular values of J in float64. The stacked Jacobian is
decomposed directly (``svdvals``) when it has at most P rows or at most ``STACKED_ENTRIES``
entries; otherwise its P×P Gram matrix JᵀJ is accumulated over probe chunks in float64 and
eigen-decomposed. The Gram matrix squares J's condition number, so singular values below
about σ_max·sqrt(max(N·outputs, P)·eps₆₄) cannot be told from 0 there and the default
tolerance is raised to that level; the stacked path keeps the usual
σ_max·max(N·outputs, P)·eps of the model's dtype. The decomposition used is ``method``.
Analyse in float64: in float32 that tolerance is about 1e-4·σ_max already at P ≈ 1000,
and small but real singular values fall below it (an mlp (3, 8, 6, 2) with LeakyReLU had
rank 85 in float64 with a gap of 1e9, rank 77 in float32 with a gap of 1.5).

The dimension of the orbit tangent inside the null space N is counted with the same
tolerance as the rank: with Q an orthonormal basis of the generators' span A,
dim(A ∩ N) = rank(A) − rank(J Q), which equals rank(A) + dim N − rank([A, N]) and needs
no second tolerance.

Cost, measured on this project's 2-core CPU machine (shared) in float64: an mlp
(10, 100, 85, 1) of 9,771 parameters on 300 probes (stacked path) takes about 5 s and
0.5 GB; the same with 12,000 probes (Gram path, a 9,771² eigenproblem) about 2 minutes
and 2.3 GB, and there its spectrum had no clear gap (the summary says so). The stacked
path holds N·outputs × P float64 values (0.8 GB for 10,000 × 10,000). LeNet-5 (60,941
parameters, float32, 512 probes) in a plane of 2 or 3 directions takes 3-15 s (load). Above
``max_params`` pass a :class:`~genni_ext.core.subspace.Subspace`: then only the m directions of
the plane are analysed (m + SIZE_PROBES forward-mode passes over the probes), at any P.
The default tolerance there is max(σ_max(J·Bᵀ), ‖J‖_F)·max(N·outputs, m)·eps, with ‖J‖_F
estimated from SIZE_PROBES random directions: a plane that is all tangent has J·Bᵀ ≈ 0,
so its own σ_max would be no scale at all. A plane direction counts as lying in the orbit
tangent when its principal angle to it is at most sqrt(eps) of the model's dtype.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vmap

from genni_ext._validate import contiguous_finite, float_tensor, positive_int
from genni_ext.analysis.structure import HiddenLayer, hidden_layers
from genni_ext.core.models import unflatten_params
from genni_ext.core.problem import Problem
from genni_ext.core.subspace import Subspace
from genni_ext.errors import InputError

STACKED_ENTRIES = 1 << 24
"""Largest stacked Jacobian (rows × P entries) decomposed directly when rows > P."""
JACOBIAN_CHUNK_ENTRIES = 1 << 22
"""Entries of the per-sample Jacobians computed in one ``vmap`` call."""
JVP_CHUNK_PROBES = 256
"""Probes per forward-mode pass when the Jacobian is restricted to a subspace."""
SIZE_PROBES = 4
"""Random directions (fixed seed) that estimate ‖J‖_F when the Jacobian is restricted to a
subspace, the scale of the default tolerance there."""


@dataclass(frozen=True)
class Identifiability:
    """The local dimension of [θ] at θ and the part known symmetry explains.

    ``num_directions`` is P, or m when ``restricted_to == "subspace"`` (then every count is
    about the m directions of the plane at its centre θ₀). ``rank`` is the numerical rank
    of the Jacobian (singular values above ``tol``); ``null_dim`` = ``num_directions`` −
    ``rank`` is the local dimension of the class. ``symmetry_dim`` is the dimension of the
    known-symmetry orbit's tangent (in a subspace: of its intersection with the plane) and
    ``unexplained_dim`` = ``null_dim`` − dim(orbit tangent ∩ null space); both are None,
    with ``symmetry_reason`` saying why, when the model's structure cannot be read.
    ``gap`` is σ_rank / σ_(rank+1), None when one side is empty. ``probe_limited``: fewer
    Jacobian rows than directions, so the rank cannot be full and ``null_dim`` is only an
    upper bound. ``known_symmetries`` names the continuous symmetries found in the model;
    ``method`` is "svd" or "gram" and ``dtype`` the precision J was computed in.
    """

    num_params: int
    num_directions: int
    num_rows: int
    rank: int
    null_dim: int
    symmetry_dim: int | None
    unexplained_dim: int | None
    singular_values: np.ndarray
    tol: float
    gap: float | None
    method: str
    dtype: str
    probe_limited: bool
    restricted_to: str | None
    known_symmetries: tuple[str, ...]
    symmetry_reason: str | None
    seconds: float

    def summary(self) -> str:
        """Plain sentences: the class dimension, the rank evidence, what symmetry explains."""
        gap = "no gap to measure" if self.gap is None else f"gap {self.gap:.2g}"
        if self.restricted_to == "subspace":
            text = (
                f"At θ₀ {self.null_dim} of the plane's {self.num_directions} directions are "
                f"tangent to the class (Jacobian rank {self.rank} of {self.num_directions} "
                f"directions, {gap})."
            )
        else:
            text = (
                f"At θ the class is locally {self.null_dim}-dimensional (Jacobian rank "
                f"{self.rank} of {self.num_params} parameters, {gap})."
            )
        if self.gap is not None and self.gap < 1e3:
            text += (
                f" The gap is small, so the rank depends on the tolerance ({self.tol:.2g}); "
                "treat it with care"
            )
            text += (
                " (in float32 the default tolerance hides small singular values that float64 "
                "resolves: pass a float64 problem)."
                if self.dtype == "float32"
                else "."
            )
        if self.probe_limited:
            text += (
                f" Only {self.num_rows} Jacobian rows (probes × outputs) for "
                f"{self.num_directions} directions: the probes cannot reveal a larger rank, "
                "so the dimension is an upper bound; use more probes."
            )
        if self.symmetry_dim is None or self.unexplained_dim is None:
            return text + f" Known symmetries were not evaluated: {self.symmetry_reason}."
        if self.restricted_to == "subspace":
            verb = "lies" if self.symmetry_dim == 1 else "lie"
            text += (
                f" {self.symmetry_dim} of the plane's directions {verb} in the tangent of the "
                "known-symmetry orbit."
            )
        if not self.known_symmetries:
            text += " No continuous symmetry is known for this model's layers."
        if self.null_dim == 0:
            return text + " No direction is left for symmetry to explain."
        names = ", ".join(self.known_symmetries) or "none"
        explained = self.null_dim - self.unexplained_dim
        verb = "is" if self.unexplained_dim == 1 else "are"
        return text + (
            f" The known symmetries ({names}) explain {explained} of those {self.null_dim} "
            f"dimensions; {self.unexplained_dim} {verb} not explained by known symmetry."
        )


def symmetry_generators(layers: list[HiddenLayer], theta: torch.Tensor) -> torch.Tensor:
    """Tangent vectors at ``theta`` ([P]) of the known continuous symmetries, as rows of a
    float64 [k, P] tensor (k may be 0).

    Per unit of a "rescaling" layer (ReLU, LeakyReLU, max pooling): incoming weights and
    bias scaled up, outgoing weights down (+θ on the first, −θ on the second). Per pair
    (i, j) of units of a "general linear" layer (no activation): W₁ → (I + tE_ij)W₁,
    b₁ → (I + tE_ij)b₁, W₂ → W₂(I − tE_ij). Per unit of a ``shiftable`` layer: its bias
    shifted by 1 and the next bias by minus the sum of its outgoing weights. None for
    Tanh or Sigmoid layers. ``layers`` come from
    :func:`~genni_ext.analysis.structure.hidden_layers` of the model ``theta`` belongs to.
    """
    if not isinstance(layers, list) or not all(isinstance(x, HiddenLayer) for x in layers):
        raise InputError(
            "layers must be the list that genni_ext.analysis.structure.hidden_layers returns"
        )
    theta = contiguous_finite("theta", float_tensor("theta", theta)).double()
    largest = max((int(layer.outgoing.max()) for layer in layers), default=-1)
    if theta.ndim != 1 or theta.shape[0] <= largest:
        raise InputError(
            f"theta has shape {list(theta.shape)}, but the layers index parameter {largest}; "
            "pass the flat parameter vector [P] of the model the layers were read from"
        )
    rows: list[torch.Tensor] = []

    def mix(layer: HiddenLayer, into: int, source: int) -> torch.Tensor:
        row = torch.zeros_like(theta)
        row[layer.incoming[into]] += theta[layer.incoming[source]]
        if layer.bias is not None:
            row[layer.bias[into]] += theta[layer.bias[source]]
        row[layer.outgoing[source]] -= theta[layer.outgoing[into]]
        return row

    for layer in layers:
        units = range(layer.num_units)
        if layer.continuous_group == "rescaling":
            rows.extend(mix(layer, unit, unit) for unit in units)
        elif layer.continuous_group == "general linear":
            rows.extend(mix(layer, i, j) for i in units for j in units)
        if layer.shiftable and layer.bias is not None and layer.next_bias is not None:
            for unit in units:
                row = torch.zeros_like(theta)
                row[layer.bias[unit]] = 1.0
                row[layer.next_bias] = -theta[layer.outgoing[unit]].sum(dim=1)
                rows.append(row)
    if not rows:
        return torch.zeros(0, theta.shape[0], dtype=torch.float64, device=theta.device)
    return torch.stack(rows)


def _known_symmetries(layers: list[HiddenLayer]) -> tuple[str, ...]:
    names = []
    if any(layer.continuous_group == "rescaling" for layer in layers):
        names.append("rescaling of positively homogeneous units")
    if any(layer.continuous_group == "general linear" for layer in layers):
        names.append("GL(n) of hidden layers without activation")
    if any(layer.shiftable and layer.next_bias is not None for layer in layers):
        names.append("bias shifts absorbed by the next layer")
    return tuple(names)


def _orthonormal_span(rows: torch.Tensor, eps: float) -> torch.Tensor:
    """Orthonormal rows spanning ``rows`` ([k, P] float64), with the usual rank tolerance."""
    if rows.shape[0] == 0:
        return rows
    _, values, vh = torch.linalg.svd(rows, full_matrices=False)
    tol = float(values.max()) * max(rows.shape) * eps
    return vh[: int((values > tol).sum())]


def _rank(values: torch.Tensor, tol: float) -> int:
    return int((values > tol).sum())


def _gap(values: np.ndarray, rank: int) -> float | None:
    if rank == 0 or rank >= values.shape[0]:
        return None
    below = float(values[rank])
    return math.inf if below == 0.0 else float(values[rank - 1]) / below


def _buffers(model: nn.Module, like: torch.Tensor) -> dict[str, torch.Tensor]:
    """The model's buffers on θ's device, floating ones in θ's dtype (as Problem runs it)."""
    return {
        name: buffer.to(
            device=like.device, dtype=like.dtype if buffer.is_floating_point() else buffer.dtype
        )
        for name, buffer in model.named_buffers()
    }


def _jacobian_chunks(problem: Problem, theta: torch.Tensor) -> Iterator[torch.Tensor]:
    """Yield the stacked Jacobian of the outputs w.r.t. θ for consecutive probe chunks, as
    float64 [chunk·outputs, P]."""
    model = problem.model
    buffers = _buffers(model, theta)
    outputs = problem.targets.shape[1]

    def sample_outputs(flat: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        params = unflatten_params(model, flat)
        return functional_call(model, (params, buffers), (sample[None],)).reshape(-1)

    per_sample = vmap(jacrev(sample_outputs), in_dims=(None, 0))
    chunk = max(1, JACOBIAN_CHUNK_ENTRIES // (outputs * theta.shape[0]))
    for first in range(0, problem.num_probes, chunk):
        block = per_sample(theta, problem.inputs[first : first + chunk])
        yield block.reshape(-1, theta.shape[0]).double()


def _restricted_jacobian(
    problem: Problem, center: torch.Tensor, basis: torch.Tensor
) -> torch.Tensor:
    """J·Bᵀ at ``center``: float64 [N·outputs, m], by forward mode along each basis row."""
    model = problem.model
    buffers = _buffers(model, center)

    def outputs_of(flat: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        params = unflatten_params(model, flat)
        return functional_call(model, (params, buffers), (inputs,)).reshape(-1)

    parts = []
    for first in range(0, problem.num_probes, JVP_CHUNK_PROBES):
        inputs = problem.inputs[first : first + JVP_CHUNK_PROBES]

        def tangent(direction: torch.Tensor, inputs: torch.Tensor = inputs) -> torch.Tensor:
            return jvp(lambda flat: outputs_of(flat, inputs), (center,), (direction,))[1]

        parts.append(vmap(tangent)(basis).T.double())
    return torch.cat(parts)


def _check_arguments(
    problem: object,
    theta: object,
    tol: object,
    subspace: object,
    max_params: object,
) -> torch.Tensor:
    """Validate the arguments of :func:`identifiability`; return the point to analyse."""
    if not isinstance(problem, Problem):
        raise InputError(
            f"problem must be a genni_ext.Problem, got {type(problem).__name__}; build one "
            "with Problem(model, ...)"
        )
    positive_int(max_params, "max_params")
    if tol is not None and (
        isinstance(tol, bool)
        or not isinstance(tol, (int, float))
        or not math.isfinite(tol)
        or tol <= 0
    ):
        raise InputError(
            f"tol must be a positive finite number (a singular-value threshold) or None for "
            f"the default, got {tol!r}"
        )
    size = problem.num_params
    if subspace is not None:
        if not isinstance(subspace, Subspace):
            raise InputError(
                f"subspace must be a genni_ext.Subspace or None, got {type(subspace).__name__}"
            )
        if theta is not None:
            raise InputError(
                "pass either theta or subspace, not both: with a subspace the Jacobian is "
                "taken at its centre θ₀ (subspace.center)"
            )
        if subspace.num_params != size:
            raise InputError(
                f"subspace has {subspace.num_params} parameters per point but the problem's "
                f"model has {size}; build the subspace from this problem's points"
            )
        return subspace.center.to(dtype=problem.theta.dtype, device=problem.theta.device)
    if size > max_params:
        raise InputError(
            f"the model has {size} parameters, more than max_params={max_params}: the full "
            f"Jacobian analysis needs a {size}×{size} decomposition; pass subspace= (a "
            "genni_ext.Subspace, to analyse the directions of a plane) or raise max_params"
        )
    if theta is None:
        return problem.theta
    point = float_tensor("theta", theta)
    if point.ndim != 1 or point.shape[0] != size:
        raise InputError(
            f"theta has shape {list(point.shape)} but the problem's model has {size} "
            f"parameters; pass a flat vector of shape [{size}] or None for problem.theta"
        )
    point = point.to(dtype=problem.theta.dtype, device=problem.theta.device)
    return contiguous_finite("theta", point)


def _read_structure(problem: Problem) -> tuple[list[HiddenLayer] | None, str | None]:
    try:
        return hidden_layers(problem.model, problem.input_shape), None
    except InputError as error:
        return None, str(error)


def identifiability(
    problem: Problem,
    theta: torch.Tensor | None = None,
    *,
    tol: float | None = None,
    subspace: Subspace | None = None,
    max_params: int = 10_000,
) -> Identifiability:
    """The local dimension of the equivalence class at ``theta`` (default problem.theta)
    from the rank of the Jacobian of all outputs on all probes, and the part of it that
    the known continuous symmetries (see :func:`symmetry_generators`) explain.

    ``tol`` is the singular-value threshold of the rank (default: see the module
    docstring). A model with more than ``max_params`` parameters needs ``subspace``: then
    the Jacobian is J·Bᵀ at θ₀ = ``subspace.center`` (which plane directions are tangent
    to the class at θ₀?), the orbit is intersected with the plane, and ``theta`` must be
    None. A model ``lower`` cannot read gets ``symmetry_dim=None`` and the reason; its
    rank is still computed.
    """
    started = time.perf_counter()
    point = _check_arguments(problem, theta, tol, subspace, max_params)
    eps = torch.finfo(point.dtype).eps
    layers, reason = _read_structure(problem)
    orbit = None if layers is None else _orthonormal_span(symmetry_generators(layers, point), eps)
    if subspace is None:
        spectrum = _full_spectrum(problem, point, orbit, tol, eps)
    else:
        basis = subspace.basis.to(dtype=point.dtype, device=point.device)
        spectrum = _plane_spectrum(problem, point, basis, orbit, tol, eps)
    null_dim = spectrum.directions - spectrum.rank
    explained = spectrum.explained
    return Identifiability(
        num_params=problem.num_params,
        num_directions=spectrum.directions,
        num_rows=spectrum.rows,
        rank=spectrum.rank,
        null_dim=null_dim,
        symmetry_dim=spectrum.symmetry_dim,
        unexplained_dim=None if explained is None else null_dim - explained,
        singular_values=spectrum.values,
        tol=spectrum.threshold,
        gap=_gap(spectrum.values, spectrum.rank),
        method=spectrum.method,
        dtype=str(point.dtype).removeprefix("torch."),
        probe_limited=spectrum.rows < spectrum.directions,
        restricted_to=None if subspace is None else "subspace",
        known_symmetries=() if layers is None else _known_symmetries(layers),
        symmetry_reason=reason,
        seconds=time.perf_counter() - started,
    )


@dataclass(frozen=True)
class _Spectrum:
    """What one decomposition found: singular values (descending), threshold, rank, the
    orbit's dimension and the part of it inside the null space (None without a structure)."""

    values: np.ndarray
    threshold: float
    rank: int
    method: str
    rows: int
    directions: int
    symmetry_dim: int | None
    explained: int | None


def _full_spectrum(
    problem: Problem,
    point: torch.Tensor,
    orbit: torch.Tensor | None,
    tol: float | None,
    eps: float,
) -> _Spectrum:
    """The Jacobian's spectrum at ``point`` and dim(orbit ∩ null space) = rank(A) − rank(J·Qᵀ)
    for the orbit's orthonormal basis Q, both with one threshold."""
    size = point.shape[0]
    rows = problem.num_probes * problem.targets.shape[1]
    largest = max(rows, size)
    if rows <= size or rows * size <= STACKED_ENTRIES:
        stacked = torch.cat(list(_jacobian_chunks(problem, point)))
        values = torch.linalg.svdvals(stacked)
        threshold = tol if tol is not None else float(values.max()) * largest * eps
        projected = None if orbit is None else torch.linalg.svdvals(stacked @ orbit.T)
        method = "svd"
    else:
        gram = torch.zeros(size, size, dtype=torch.float64, device=point.device)
        for block in _jacobian_chunks(problem, point):
            gram.addmm_(block.T, block)
        values = torch.linalg.eigvalsh(gram).clamp_min(0.0).sqrt().flip(0)
        top = float(values.max())
        floor = top * math.sqrt(largest * torch.finfo(torch.float64).eps)
        threshold = tol if tol is not None else max(top * largest * eps, floor)
        projected = None
        if orbit is not None:
            projected = torch.linalg.eigvalsh(orbit @ gram @ orbit.T).clamp_min(0.0).sqrt()
        method = "gram"
    symmetry_dim = explained = None
    if orbit is not None and projected is not None:
        symmetry_dim = int(orbit.shape[0])
        explained = symmetry_dim - _rank(projected, threshold)
    return _Spectrum(
        values=values.cpu().numpy(),
        threshold=float(threshold),
        rank=_rank(values, threshold),
        method=method,
        rows=rows,
        directions=size,
        symmetry_dim=symmetry_dim,
        explained=explained,
    )


def _plane_spectrum(
    problem: Problem,
    center: torch.Tensor,
    basis: torch.Tensor,
    orbit: torch.Tensor | None,
    tol: float | None,
    eps: float,
) -> _Spectrum:
    """The spectrum of J·Bᵀ at ``center`` and the plane's (and its null directions')
    intersections with the orbit tangent, by principal angles of at most sqrt(eps)."""
    rows = problem.num_probes * problem.targets.shape[1]
    directions = basis.shape[0]
    probes = torch.randn(
        SIZE_PROBES,
        center.shape[0],
        generator=torch.Generator().manual_seed(0),
        dtype=torch.float64,
    ).to(dtype=center.dtype, device=center.device)
    both = _restricted_jacobian(problem, center, torch.cat([basis, probes]))
    restricted = both[:, :directions]
    # Hutchinson: E‖J r‖² = ‖J‖_F² for r ~ N(0, I); ‖J‖_F bounds σ_max(J) from above.
    frobenius = float(both[:, directions:].square().sum(dim=0).mean().sqrt())
    if rows >= directions:
        _, values, vh = torch.linalg.svd(torch.linalg.qr(restricted, mode="r").R)
    else:
        _, values, vh = torch.linalg.svd(restricted)
    scale = max(float(values.max()), frobenius)
    threshold = tol if tol is not None else scale * max(rows, directions) * eps
    rank = _rank(values, threshold)
    symmetry_dim = explained = None
    if orbit is not None:
        plane = basis.double()
        angle = math.sqrt(eps)
        symmetry_dim = _shared_dimension(plane, orbit, angle)
        explained = _shared_dimension(vh[rank:] @ plane, orbit, angle)
    return _Spectrum(
        values=values.cpu().numpy(),
        threshold=float(threshold),
        rank=rank,
        method="svd",
        rows=rows,
        directions=directions,
        symmetry_dim=symmetry_dim,
        explained=explained,
    )


def _shared_dimension(rows: torch.Tensor, span: torch.Tensor, angle: float) -> int:
    """dim(span(rows) ∩ span(span)) for orthonormal rows of both: the principal angles
    (sines of the remainders of ``rows`` off ``span``) at most ``angle``."""
    if rows.shape[0] == 0:
        return 0
    remainder = rows if span.shape[0] == 0 else rows - (rows @ span.T) @ span
    return int((torch.linalg.svdvals(remainder) <= angle).sum())


__all__ = ["Identifiability", "identifiability", "symmetry_generators"]
