"""The experiments home and the names of what lives in it."""

from __future__ import annotations

import os
from pathlib import Path

from .config import load_config_file
from .errors import InputError

HOME_ENV = "GENNI_HOME"
HOME_FILE = "genni.yml"
DEFAULT_HOME = "genni_home"


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


def check_home(home: Path) -> Path:
    """``home`` if it is a folder, or can be made one; InputError if it, or a folder it
    would lie in, is a file."""
    for path in (home, *home.parents):
        if path.exists():
            if path.is_dir():
                return home
            where = "is a file" if path == home else f"lies in {path}, which is a file"
            raise InputError(
                f"the genni home {home} {where}, not a folder; point GENNI_HOME, --home or "
                "genni_home: in ./genni.yml at a folder (it is created when first needed)"
            )
    return home


def genni_home(cwd: str | os.PathLike[str] | None = None) -> Path:
    """The experiments home, as an absolute path (not created here).

    1. The ``GENNI_HOME`` environment variable, if set and not empty (relative paths are
       taken from the working directory).
    2. Else ``genni_home:`` in a ``genni.yml`` in the working directory (relative paths
       are taken from that file's folder).
    3. Else ``./genni_home``.

    ``cwd`` stands in for the working directory.
    """
    base = Path.cwd() if cwd is None else Path(cwd)
    base = base.absolute()
    env = os.environ.get(HOME_ENV, "")
    if env.strip():
        return (base / Path(env).expanduser()).absolute()
    settings = base / HOME_FILE
    if settings.is_file():
        content = load_config_file(settings)  # UTF-8 YAML holding a mapping, or InputError
        unknown = sorted(str(key) for key in content if key != "genni_home")
        if unknown:
            raise InputError(
                f"{settings}: unknown key(s) {', '.join(unknown)}; the only key is "
                "'genni_home: path/to/home'"
            )
        value = content.get("genni_home")
        if value is not None:
            if not isinstance(value, str) or not value.strip():
                raise InputError(
                    f"{settings}: key 'genni_home' must be a non-empty path string, got {value!r}"
                )
            return (base / Path(value).expanduser()).absolute()
    return base / DEFAULT_HOME
