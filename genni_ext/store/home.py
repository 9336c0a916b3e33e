"""The experiments home and the names of what lives in it."""

from __future__ import annotations

import os
from pathlib import Path

from genni_ext.errors import InputError
from genni_ext.store.config import load_config_file

HOME_ENV = "GENNI_HOME"
HOME_FILE = "genni.yml"
DEFAULT_HOME = "genni_home"


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
