"""What the commands print: lines on stdout, flushed, and sizes, dates, shapes, durations;
genni_ext's log lines on stderr; output that a terminal's encoding cannot show."""

from __future__ import annotations

import codecs
import contextlib
import datetime as _dt
import io
import logging
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from genni_ext._validate import format_size

__all__ = [
    "LOG_FORMAT",
    "format_date",
    "format_seconds",
    "format_shape",
    "format_size",
    "log_to_stderr",
    "say",
    "spell_out_unencodable",
]

LOG_FORMAT = "genni: %(message)s"
"""How a genni_ext log record (a warning) reaches the user."""


def say(text: str = "") -> None:
    """Print a line at once (progress bars share the terminal on stderr)."""
    print(text, flush=True)


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


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler that writes to ``sys.stderr`` as it is when a record comes (callers and
    test runners replace it)."""

    @property  # type: ignore[override]
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass  # always sys.stderr


def log_to_stderr() -> None:
    """Show the ``genni_ext`` logger's warnings as "genni: ..." lines on stderr, once per
    process. Only that logger's records: other libraries' (Dask's ``distributed`` among
    them) stay on their own loggers, handlers and levels."""
    logger = logging.getLogger("genni_ext")
    if not any(isinstance(handler, _StderrHandler) for handler in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logger.addHandler(handler)


SPELL_OUT = "genni_spell_out"
"""The codec error handler :func:`spell_out_unencodable` installs."""

_SIGNS = {"×": "x", "−": "-", "·": "*", "…": "...", "≈": "~", "≤": "<=", "≥": ">=", "→": "->"}


def _spell(char: str, encoding: str) -> str:
    """``char`` in characters ``encoding`` has: θ -> theta, ε -> epsilon, θ₀ -> theta0,
    x² -> x^2, é -> e, the signs of _SIGNS, anything else as a backslash escape."""
    name = unicodedata.name(char, "")
    words = name.split()
    if name.startswith("GREEK SMALL LETTER ") and len(words) == 4:
        text = words[-1].lower()
    elif name.startswith("GREEK CAPITAL LETTER ") and len(words) == 4:
        text = words[-1].capitalize()
    elif char in _SIGNS:
        text = _SIGNS[char]
    else:
        text = "".join(
            part for part in unicodedata.normalize("NFKD", char) if not unicodedata.combining(part)
        )
        if name.startswith("SUPERSCRIPT "):
            text = f"^{text}"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return char.encode("ascii", "backslashreplace").decode("ascii")
    return text


def _spell_out(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeEncodeError):
        raise error
    text = error.object[error.start : error.end]
    return "".join(_spell(char, error.encoding) for char in text), error.end


def spell_out_unencodable() -> None:
    """Let stdout and stderr show θ, ε, ×, ² ... in an encoding without them (a terminal or
    PYTHONIOENCODING=ascii) as theta, epsilon, x, ^2 ... instead of failing. Only streams in
    Python's default errors mode (strict, backslashreplace for stderr) change; one set
    otherwise (PYTHONIOENCODING=ascii:replace) is left as its owner set it."""
    try:
        codecs.lookup_error(SPELL_OUT)
    except LookupError:
        codecs.register_error(SPELL_OUT, _spell_out)
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and stream.errors in ("strict", "backslashreplace"):
            with contextlib.suppress(ValueError, io.UnsupportedOperation):
                stream.reconfigure(errors=SPELL_OUT)
