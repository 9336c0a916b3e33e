"""Small argument checks shared by the public functions."""

from __future__ import annotations

from .errors import InputError


def positive_int(value: object, argument: str) -> int:
    """Return ``value`` if it is a positive int (not a bool), else raise InputError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{argument} must be a positive int, got {value!r}")
    return value
