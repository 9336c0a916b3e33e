"""The names of what lives in the store: folder names it accepts, and the grid names a
resolution check gives its refined sweeps."""

from __future__ import annotations

import os

from genni_ext.errors import InputError

REFINED_SUFFIX = "_refined"
"""Appended to a grid's name for its resolution check's refined sweep."""


def check_name(name: object, what: str = "name") -> str:
    """``name`` if it can name a folder of the store, else InputError saying why.

    Not empty, no path separators, not "." or "..", no leading dot (reserved for
    temporary files), no control characters, at most 255 characters.
    """
    if not isinstance(name, str):
        raise InputError(f"{what} must be a string, got {type(name).__name__}")
    problem = None
    if not name or not name.strip():
        problem = "is empty"
    elif "/" in name or "\\" in name or (os.altsep and os.altsep in name):
        problem = "contains a path separator"
    elif name.startswith("."):
        problem = "starts with a dot (reserved for the store's temporary files)"
    elif any(ord(char) < 32 or ord(char) == 127 for char in name):
        problem = "contains a control character"
    elif len(name) > 255:
        problem = "is longer than 255 characters"
    if problem is not None:
        raise InputError(
            f"{what} {name!r} {problem}; use a plain folder name such as 'lenet_run1' "
            "(letters, digits, '-', '_', '.')"
        )
    return name


def is_refinement(name: str) -> bool:
    """Whether grid ``name`` is a resolution check's refined sweep of another grid."""
    return name.endswith(REFINED_SUFFIX)
