"""A model from the user's code: ``"package.module:function"`` or ``"path/to/file.py:function"``.

The factory is called with the config's keyword arguments and must return an ``nn.Module``.
What identifies it for the store (:func:`describe_factory`) is the spec, its kwargs and a hash
of the source file that defines it, so an experiment can say when that file changed since it
was made. Importing a module runs its code: a factory is the user's own code, named by the
user, never something read from a downloaded file.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from genni_ext.errors import InputError

SPEC_FORMS = '"package.module:function" or "path/to/file.py:function"'
"""The forms a factory spec takes, for messages."""


def _split(spec: object) -> tuple[str, str]:
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise InputError(f"model.factory must be {SPEC_FORMS}, got {spec!r}")
    where, name = spec.rsplit(":", 1)
    if not where or not name.isidentifier():
        raise InputError(f"model.factory must be {SPEC_FORMS}, got {spec!r}")
    return where, name


def _module_from_file(path: Path) -> ModuleType:
    """Import ``path`` as a module named after its resolved path (imported once per process,
    so a model's classes stay the same objects across calls)."""
    if not path.is_file():
        raise InputError(f"model.factory: no file {path}; give a path to a .py file")
    name = "genni_user_" + hashlib.sha256(str(path).encode()).hexdigest()[:16]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InputError(f"model.factory: cannot import {path} as Python code")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up while it runs
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[name]
        raise InputError(
            f"model.factory: importing {path} raised {type(error).__name__}: {error}"
        ) from error
    return module


def load_factory(spec: object, base: Path | None = None) -> Callable[..., Any]:
    """The function ``spec`` names; a relative file path is taken from ``base`` (the
    config file's folder) or the working directory."""
    where, name = _split(spec)
    if where.endswith(".py"):
        path = Path(where).expanduser()
        if not path.is_absolute():
            path = (base or Path.cwd()) / path
        module = _module_from_file(path.resolve())
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as error:
            raise InputError(
                f"model.factory: cannot import module {where!r} ({error}); install the package "
                "that defines it, or give a file path (path/to/file.py:function)"
            ) from error
        except Exception as error:
            raise InputError(
                f"model.factory: importing {where!r} raised {type(error).__name__}: {error}"
            ) from error
    factory = getattr(module, name, None)
    if not callable(factory):
        raise InputError(f"model.factory: {where} has no function {name!r}")
    return factory


def build_from_factory(
    spec: object, kwargs: Mapping[str, Any] | None = None, base: Path | None = None
) -> nn.Module:
    """Call the factory ``spec`` with ``kwargs`` and check that it returned an nn.Module."""
    factory = load_factory(spec, base)
    kwargs = dict(kwargs or {})
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as error:
        raise InputError(f"model.factory {spec}: wrong kwargs {sorted(kwargs)}: {error}") from None
    except ValueError:  # a builtin without a signature: let the call say what is wrong
        pass
    try:
        model = factory(**kwargs)
    except Exception as error:
        raise InputError(f"model.factory {spec} raised {type(error).__name__}: {error}") from error
    if not isinstance(model, nn.Module):
        raise InputError(
            f"model.factory {spec} returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def source_file(spec: object, base: Path | None = None) -> Path | None:
    """The file that defines the factory ``spec`` (None when it has no source file)."""
    factory = load_factory(spec, base)
    try:
        name = inspect.getsourcefile(factory)
    except TypeError:  # a builtin or C function
        return None
    return Path(name).resolve() if name else None


def describe_factory(
    spec: object, kwargs: Mapping[str, Any] | None = None, base: Path | None = None
) -> dict[str, Any]:
    """JSON-able facts that identify the factory: spec, kwargs, source file and its sha256."""
    path = source_file(spec, base)
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path and path.is_file() else None
    return {
        "factory": spec,
        "kwargs": dict(kwargs or {}),
        "source": str(path) if path else None,
        "source_sha256": digest,
    }


__all__ = ["SPEC_FORMS", "build_from_factory", "describe_factory", "load_factory", "source_file"]
