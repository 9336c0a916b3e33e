"""Trivial-function baselines: is an ε small enough that the ε-set is about θ?

J of the zero function is mean ‖y‖² (``Problem.zero_loss``) and J of the best constant
function is mean ‖y − ȳ‖² (``Problem.constant_loss``). When ε reaches either, the ε-set
holds functions that ignore their input: a "found" point there fits θ no better than a
constant. ε can therefore be given relative to the constant-function loss, and every
result says when it is not below both baselines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from genni_ext._validate import positive_number, resolve_eps
from genni_ext.errors import InputError


@dataclass(frozen=True)
class Baselines:
    """J of the zero function and of the best constant function for one problem."""

    zero_loss: float
    constant_loss: float

    def __post_init__(self) -> None:
        for name in ("zero_loss", "constant_loss"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InputError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise InputError(f"{name} must be finite and >= 0, got {value!r}")

    @classmethod
    def of(cls, problem: object) -> Baselines:
        """The baselines of a :class:`genni_ext.Problem`."""
        try:
            return cls(float(problem.zero_loss), float(problem.constant_loss))  # type: ignore[attr-defined]
        except AttributeError:
            raise InputError(
                f"expected a genni_ext.Problem (with zero_loss and constant_loss), got "
                f"{type(problem).__name__}"
            ) from None

    def resolve_eps(self, eps: float | None = None, eps_relative: float | None = None) -> float:
        """The absolute ε: ``eps`` as given, or ``eps_relative`` × constant_loss.

        Exactly one of the two must be given.
        """
        return resolve_eps(eps, eps_relative, self.constant_loss, "the problem")

    def warning(self, eps: float) -> str | None:
        """A sentence when ε reaches a trivial function's J, else None."""
        eps = positive_number(eps, "eps")
        reached = [
            (name, value)
            for name, value in (
                ("the zero function", self.zero_loss),
                ("the best constant function", self.constant_loss),
            )
            if eps >= value
        ]
        if not reached:
            return None
        parts = ", ".join(
            f"{eps / value:.3g}× the J of {name} ({value:.3g})" if value > 0 else
            f"above the J of {name} (0)"
            for name, value in reached
        )  # fmt: skip
        return (
            f"ε = {eps:.3g} is {parts}: the ε-set contains functions that ignore their input, "
            "so points in it need not be close to θ's function; use a smaller ε "
            "(e.g. eps_relative=0.05)"
        )

    def describe(self, eps: float) -> dict[str, object]:
        """JSON-able facts for results: both baselines, ε relative to them, the warning."""
        eps = positive_number(eps, "eps")
        return {
            "zero_loss": self.zero_loss,
            "constant_loss": self.constant_loss,
            "eps": eps,
            "eps_relative": eps / self.constant_loss if self.constant_loss > 0 else None,
            "warning": self.warning(eps),
        }
