"""What the commands print: lines on stdout, flushed, and sizes, dates, shapes, durations."""

from __future__ import annotations

import contextlib
import datetime as _dt
from collections.abc import Sequence
from pathlib import Path


def say(text: str = "") -> None:
    """Print a line at once (progress bars share the terminal on stderr)."""
    print(text, flush=True)


def format_size(num_bytes: int) -> str:
    """``512 B``, ``1.5 kB``, ``3.2 MB``, ``1.0 GB`` (powers of 1000)."""
    value = float(num_bytes)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"  # pragma: no cover


def format_date(path: Path) -> str:
    """The newest modification time in ``path`` (a file or a folder), or ``-``."""
    newest = 0.0
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        with contextlib.suppress(OSError):
            newest = max(newest, item.stat().st_mtime)
    return _dt.datetime.fromtimestamp(newest).strftime("%Y-%m-%d %H:%M") if newest else "-"


def format_shape(shape: Sequence[int]) -> str:
    """``100×100``."""
    return "×".join(str(n) for n in shape)


def format_seconds(value: float) -> str:
    """Seconds below two minutes, minutes above."""
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"
