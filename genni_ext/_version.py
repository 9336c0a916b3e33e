"""The installed package's version, in one place below every layer."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("genni_ext")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"
