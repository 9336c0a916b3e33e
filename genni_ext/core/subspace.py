"""The plane through found points: a centre θ₀ and an orthonormal basis θ̃₁..θ̃ₘ.

:meth:`Subspace.from_points` runs Gram–Schmidt on the differences θᵢ − θ₀. It accumulates
in float64 and orthogonalises every difference twice against the rows found so far
(classical Gram–Schmidt, reapplied: "twice is enough", Giraud et al. 2005), so the rows
stay orthonormal to float64 round-off for any P; the basis is then cast to the centre's
dtype, which leaves |B Bᵀ − I| at float32 round-off (about 1e-7) even for P = 10⁶. A
point whose difference is (numerically) in the span of the earlier ones, or that equals
the centre, is rejected by index: a plane through dependent points has fewer dimensions
than asked for, and a grid on it would sweep some directions twice.

:meth:`Subspace.from_search` picks the centre and the points from a search result: the
converged point with the lowest final loss as θ₀ (or one the caller names), then the
other converged points in the order of the result, skipping those dependent on the ones
already picked.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from genni_ext._validate import (
    INT_DTYPES,
    check_finite,
    float_tensor,
    positive_int,
    resolve_eps,
)
from genni_ext.errors import InputError

if TYPE_CHECKING:
    from genni_ext.core.sgd_search import SearchResult

# Largest max |B Bᵀ − I| accepted for a basis given directly to Subspace(...), per dtype.
_ORTHONORMAL_TOL = {torch.float32: 1e-4, torch.float64: 1e-8}
_DEFAULT_TOL = 1e-6


def _check_tol(tol: object) -> float:
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0.0 < tol < 1.0:
        raise InputError(f"tol must be a number in (0, 1), got {tol!r}")
    return float(tol)


def _span_name(count: int) -> str:
    return "points[0]" if count == 1 else f"points[0..{count - 1}]"


class _GramSchmidt:
    """Incremental Gram–Schmidt in float64 on the differences θᵢ − θ₀ (reorthogonalised)."""

    def __init__(self, center: torch.Tensor, tol: float) -> None:
        self.center = center.double()
        self.tol = tol
        self.rows: list[torch.Tensor] = []

    def remainder(self, point: torch.Tensor) -> tuple[torch.Tensor, float, float]:
        """(the unit remainder or the raw one, ‖remainder‖, ‖θ − θ₀‖) of one point."""
        difference = point.double() - self.center
        norm = float(torch.linalg.vector_norm(difference))
        vector = difference
        if self.rows:
            basis = torch.stack(self.rows)
            for _ in range(2):  # classical Gram–Schmidt, applied twice
                vector = vector - (basis @ vector) @ basis
        return vector, float(torch.linalg.vector_norm(vector)), norm

    def is_independent(self, remainder_norm: float, norm: float) -> bool:
        return norm > 0.0 and remainder_norm > self.tol * norm

    def add(self, vector: torch.Tensor, remainder_norm: float) -> None:
        self.rows.append(vector / remainder_norm)

    def basis(self, dtype: torch.dtype) -> torch.Tensor:
        return torch.stack(self.rows).to(dtype).contiguous()


@dataclass(frozen=True, eq=False)
class Subspace:
    """An affine plane θ₀ + span(θ̃₁..θ̃ₘ) in parameter space.

    ``center`` [P] is θ₀, ``basis`` [m, P] holds orthonormal directions as rows and
    ``points`` [m, P] the points θ₁..θₘ the basis was built from (the markers of a sweep).
    All three share one dtype (float32 or float64) and device. Constructing one directly
    (a basis of your own) checks shapes, finiteness and that the rows are orthonormal.

    ``theta_hash`` and ``probes_hash`` say which problem (θ and probe set, as
    ``Problem.theta_hash`` and ``Problem.probes_hash``) the points solve, where that is
    known: :meth:`from_search` takes them from the search result. :func:`genni_ext.sweep_grid`
    refuses a subspace whose hashes differ from its problem's; a subspace with None (from
    :meth:`from_points`, a saved one, or a search saved before the hashes were recorded) is
    taken on trust. ``dataclasses.replace(subspace, theta_hash=None, probes_hash=None)``
    forgets them, to sweep the plane on purpose on another problem (fresh probes, say).
    :meth:`equals` compares the geometry only.
    """

    center: torch.Tensor
    basis: torch.Tensor
    points: torch.Tensor
    theta_hash: str | None = None
    probes_hash: str | None = None

    def __post_init__(self) -> None:
        for name in ("theta_hash", "probes_hash"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise InputError(
                    f"{name} must be None or a non-empty str (Problem.{name}), got {value!r}"
                )
        center = float_tensor("center", self.center)
        basis = float_tensor("basis", self.basis)
        points = float_tensor("points", self.points)
        if center.ndim != 1 or center.shape[0] == 0:
            raise InputError(
                f"center must be a flat parameter vector [P], got shape {list(center.shape)}"
            )
        size = center.shape[0]
        for name, tensor in (("basis", basis), ("points", points)):
            if tensor.ndim != 2 or tensor.shape[0] == 0 or tensor.shape[1] != size:
                raise InputError(
                    f"{name} must have shape [m, {size}] (m >= 1 rows, one value per "
                    f"parameter of center), got {list(tensor.shape)}"
                )
            if tensor.dtype != center.dtype or tensor.device != center.device:
                raise InputError(
                    f"{name} is {tensor.dtype} on {tensor.device} but center is "
                    f"{center.dtype} on {center.device}; give all three one dtype and device"
                )
        if points.shape[0] != basis.shape[0]:
            raise InputError(
                f"points has {points.shape[0]} rows but basis has {basis.shape[0]}; "
                "pass the m points the m basis rows were built from"
            )
        for name, tensor in (("center", center), ("basis", basis), ("points", points)):
            check_finite(name, tensor)
        gram = basis.double() @ basis.double().T
        identity = torch.eye(basis.shape[0], dtype=torch.float64, device=basis.device)
        error = float((gram - identity).abs().max())
        if error > _ORTHONORMAL_TOL[basis.dtype]:
            raise InputError(
                f"basis rows are not orthonormal (max |B Bᵀ − I| = {error:.3g}); build the "
                "subspace with Subspace.from_points, or orthonormalise the rows first "
                "(torch.linalg.qr(basis.T).Q.T)"
            )
        object.__setattr__(self, "center", center.contiguous())
        object.__setattr__(self, "basis", basis.contiguous())
        object.__setattr__(self, "points", points.contiguous())

    @property
    def dim(self) -> int:
        """m, the number of directions."""
        return int(self.basis.shape[0])

    @property
    def num_params(self) -> int:
        """P, the length of a flat parameter vector."""
        return int(self.center.shape[0])

    @classmethod
    def from_points(
        cls,
        center: torch.Tensor,
        points: torch.Tensor | Sequence[torch.Tensor],
        *,
        tol: float = _DEFAULT_TOL,
    ) -> Subspace:
        """The plane through ``center`` and ``points`` ([m, P], or m tensors [P]).

        The basis is Gram–Schmidt of (θᵢ − θ₀) in order, in float64 with
        reorthogonalisation, returned in ``center``'s dtype. A point equal to the centre,
        or whose remainder after removing the earlier directions has a norm at most
        ``tol`` × ‖θᵢ − θ₀‖, raises InputError naming it by index. ``points`` are stored
        cast to ``center``'s dtype.
        """
        tol = _check_tol(tol)
        center = float_tensor("center", center)
        if center.ndim != 1 or center.shape[0] == 0:
            raise InputError(
                f"center must be a flat parameter vector [P], got shape {list(center.shape)}"
            )
        check_finite("center", center)
        stacked = _stack_points(points, center)
        solver = _GramSchmidt(center, tol)
        for index, point in enumerate(stacked):
            vector, remainder_norm, norm = solver.remainder(point)
            if norm == 0.0:
                raise InputError(
                    f"points[{index}] equals the centre, so it gives no direction; "
                    "pass points that differ from center"
                )
            if not solver.is_independent(remainder_norm, norm):
                raise InputError(
                    f"points[{index}] lies in the span of {_span_name(index)} (relative to "
                    f"the centre): after removing their directions, ‖remainder‖ = "
                    f"{remainder_norm:.3g} <= tol × ‖points[{index}] − center‖ = "
                    f"{tol * norm:.3g}; drop it or pass another point"
                )
            solver.add(vector, remainder_norm)
        return cls(center, solver.basis(center.dtype), stacked.to(center.dtype))

    @classmethod
    def from_search(
        cls,
        result: SearchResult,
        eps: float | None,
        m: int,
        *,
        center: int | torch.Tensor | None = None,
        eps_relative: float | None = None,
    ) -> Subspace:
        """A plane through m + 1 of the points a search found below ε.

        ε is ``eps``, or (with ``eps=None``) ``eps_relative`` × the problem's constant-function
        loss that the search recorded.

        θ₀ is ``center``: None picks the converged point with the lowest final loss, an
        int is an index into ``result.params`` (used even if that start did not converge),
        a tensor [P] is used as given. Then θ₁..θₘ are the other converged points, in the
        order of ``result.params``, each kept only if it is linearly independent of θ₀ and
        the points kept before it (as in :meth:`from_points`, tol 1e-6); dependent ones
        (e.g. duplicates) are skipped. Raises InputError if fewer than m remain. The
        subspace records the problem hashes of ``result.config`` (None where absent).
        """
        config = getattr(result, "config", None)
        constant = config.get("constant_loss") if isinstance(config, dict) else None
        eps = resolve_eps(eps, eps_relative, constant, "this search")
        params, losses, converged = _search_parts(result, eps)
        m = positive_int(m, "m")
        count = params.shape[0]
        center_index: int | None = None
        if center is None:
            if not bool(converged.any()):
                finite = losses[torch.isfinite(losses)]
                lowest = f"{float(finite.min()):.3g}" if finite.numel() else "none finite"
                raise InputError(
                    f"no start converged below eps={eps!r} (lowest final loss {lowest} of "
                    f"{count} starts); raise eps or search longer"
                )
            masked = torch.where(converged, losses.double(), math.inf)
            center_index = int(torch.argmin(masked))
            theta0 = params[center_index]
        elif isinstance(center, torch.Tensor):
            theta0 = float_tensor("center", center)
            if theta0.ndim != 1 or theta0.shape[0] != params.shape[1]:
                raise InputError(
                    f"center has shape {list(theta0.shape)} but result.params has rows of "
                    f"{params.shape[1]} values; pass a flat parameter vector [P]"
                )
            check_finite("center", theta0)
            theta0 = theta0.to(device=params.device)
        elif isinstance(center, int) and not isinstance(center, bool):
            if not -count <= center < count:
                raise InputError(
                    f"center={center} is out of range for result.params with {count} rows; "
                    f"pass an index in [0, {count - 1}]"
                )
            center_index = center % count
            theta0 = params[center_index]
        else:
            raise InputError(
                f"center must be None, an int index into result.params or a tensor [P], "
                f"got {type(center).__name__}"
            )

        solver = _GramSchmidt(theta0, _DEFAULT_TOL)
        picked: list[int] = []
        candidates = [int(i) for i in torch.nonzero(converged).flatten() if int(i) != center_index]
        for index in candidates:
            if len(picked) == m:
                break
            vector, remainder_norm, norm = solver.remainder(params[index])
            if solver.is_independent(remainder_norm, norm):
                solver.add(vector, remainder_norm)
                picked.append(index)
        if len(picked) < m:
            raise InputError(
                f"from_search needs m={m} converged points linearly independent of the centre "
                f"and of each other, but {int(converged.sum())} of {count} starts converged "
                f"below eps={eps!r} and only {len(picked)} of the {len(candidates)} besides "
                "the centre were independent; lower m, raise eps or run more starts"
            )
        dtype = theta0.dtype
        theta_hash, probes_hash = _problem_hashes(result)
        return cls(
            theta0.to(dtype),
            solver.basis(dtype),
            params[picked].to(dtype),
            theta_hash=theta_hash,
            probes_hash=probes_hash,
        )

    def _theta(self, theta: object, name: str = "theta") -> torch.Tensor:
        theta = float_tensor(name, theta)
        if theta.ndim not in (1, 2) or theta.shape[-1] != self.num_params:
            raise InputError(
                f"{name} has shape {list(theta.shape)}; pass [{self.num_params}] or "
                f"[K, {self.num_params}] (flat parameter vectors like the centre)"
            )
        check_finite(name, theta)
        return theta.to(self.center.device)

    def _offsets(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(θ − θ₀, coordinates) in float64."""
        offset = theta.double() - self.center.double()
        return offset, offset @ self.basis.double().T

    def coordinates(self, theta: torch.Tensor) -> torch.Tensor:
        """Coordinates of θ's projection onto the plane, float64: [P] -> [m], [K, P] -> [K, m]."""
        return self._offsets(self._theta(theta))[1]

    def distance(self, theta: torch.Tensor) -> torch.Tensor:
        """Euclidean distance of θ from the affine plane, float64: [P] -> 0-d, [K, P] -> [K]."""
        offset, coords = self._offsets(self._theta(theta))
        return torch.linalg.vector_norm(offset - coords @ self.basis.double(), dim=-1)

    def params(self, coeffs: torch.Tensor) -> torch.Tensor:
        """θ₀ + c @ B in the centre's dtype and device: [G, m] -> [G, P] (and [m] -> [P])."""
        if not isinstance(coeffs, torch.Tensor):
            raise InputError(f"coeffs must be a torch.Tensor, got {type(coeffs).__name__}")
        if not (coeffs.is_floating_point() or coeffs.dtype in INT_DTYPES):
            raise InputError(f"coeffs has dtype {coeffs.dtype}; pass real coefficients")
        if coeffs.ndim not in (1, 2) or coeffs.shape[-1] != self.dim:
            raise InputError(
                f"coeffs has shape {list(coeffs.shape)}; pass [G, {self.dim}] "
                f"(one coefficient per direction, m = {self.dim})"
            )
        coeffs = coeffs.detach().to(dtype=self.center.dtype, device=self.center.device)
        check_finite("coeffs", coeffs)
        return self.center + coeffs @ self.basis

    def to(self, like: torch.Tensor) -> Subspace:
        """This subspace with its tensors in ``like``'s dtype and on its device."""
        moved = {
            name: getattr(self, name).to(dtype=like.dtype, device=like.device)
            for name in ("center", "basis", "points")
        }
        return dataclasses.replace(self, **moved)

    def equals(self, other: Subspace) -> bool:
        """Same centre, basis and points (torch.equal: dtype, shape and every value)."""
        return (
            isinstance(other, Subspace)
            and self.center.dtype == other.center.dtype
            and torch.equal(self.center, other.center)
            and torch.equal(self.basis, other.basis)
            and torch.equal(self.points, other.points)
        )


def _stack_points(points: object, center: torch.Tensor) -> torch.Tensor:
    """``points`` as one [m, P] tensor on the centre's device (float32/64 kept)."""
    if isinstance(points, torch.Tensor):
        stacked = float_tensor("points", points)
        if stacked.ndim == 1:
            raise InputError(
                f"points has shape {list(stacked.shape)}; pass [m, {center.shape[0]}] "
                "(one point per row), e.g. points[None] for a single point"
            )
    elif isinstance(points, Sequence) and not isinstance(points, (str, bytes)):
        if len(points) == 0:
            raise InputError("points is empty; pass at least one point besides the centre")
        rows = [float_tensor(f"points[{index}]", point) for index, point in enumerate(points)]
        for index, row in enumerate(rows):
            if row.shape != center.shape:
                raise InputError(
                    f"points[{index}] has shape {list(row.shape)} but center has "
                    f"{list(center.shape)}; every point must be a flat parameter vector"
                )
            if row.device != center.device:
                raise InputError(
                    f"points[{index}] is on {row.device} but center is on {center.device}; "
                    "move them to one device"
                )
        stacked = torch.stack([row.to(rows[0].dtype) for row in rows])
    else:
        raise InputError(
            "points must be a tensor [m, P] or a sequence of tensors [P], got "
            f"{type(points).__name__}"
        )
    if stacked.ndim != 2 or stacked.shape[0] == 0 or stacked.shape[1] != center.shape[0]:
        raise InputError(
            f"points has shape {list(stacked.shape)}; pass [m, {center.shape[0]}] with m >= 1 "
            "(one flat parameter vector per row, like center)"
        )
    if stacked.device != center.device:
        raise InputError(
            f"points is on {stacked.device} but center is on {center.device}; "
            "move them to one device"
        )
    check_finite("points", stacked)
    return stacked


def _problem_hashes(result: object) -> tuple[str | None, str | None]:
    """(theta_hash, probes_hash) of the problem a search result records, None if unknown."""
    config = getattr(result, "config", None)
    if not isinstance(config, dict):
        return None, None
    theta_hash, probes_hash = config.get("theta_hash"), config.get("probes_hash")
    return (
        theta_hash if isinstance(theta_hash, str) and theta_hash else None,
        probes_hash if isinstance(probes_hash, str) and probes_hash else None,
    )


def _search_parts(result: object, eps: object) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(params [K, P], losses [K], converged [K]) of a search result, checked."""
    for attribute in ("params", "losses", "converged"):
        if not hasattr(result, attribute):
            raise InputError(
                f"result must be a SearchResult (from genni_ext.search), got "
                f"{type(result).__name__} without .{attribute}"
            )
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps):
        raise InputError(f"eps must be a finite number, got {eps!r}")
    if eps <= 0:
        raise InputError(f"eps must be positive (J >= 0, so nothing is below {eps!r})")
    params = float_tensor("result.params", result.params)  # type: ignore[attr-defined]
    if params.ndim != 2 or params.shape[0] == 0 or params.shape[1] == 0:
        raise InputError(f"result.params must be [K, P] with K >= 1, got {list(params.shape)}")
    check_finite("result.params", params)
    losses = torch.as_tensor(result.losses).detach()  # type: ignore[attr-defined]
    converged = torch.as_tensor(result.converged(eps)).detach()  # type: ignore[attr-defined]
    count = params.shape[0]
    if losses.shape != (count,) or converged.shape != (count,) or converged.dtype != torch.bool:
        raise InputError(
            f"result has {count} params rows but losses of shape {list(losses.shape)} and a "
            f"converged mask of shape {list(converged.shape)} ({converged.dtype}); pass an "
            "unmodified SearchResult"
        )
    return params, losses.to(params.device), converged.to(params.device)
