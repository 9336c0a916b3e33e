"""Files of the store written so that a crash never leaves half of one.

Every file is written to a temporary file in the same folder (``.<name>.<random>.tmp``),
flushed and fsynced, then renamed over the target; a folder is staged beside its target
and renamed into place. Names that start with a dot are reserved for these temporaries.
Also here: JSON and ``.npy`` helpers, the advisory lock of a grid's writer, content hashes.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from .errors import StoreError

# --- atomic writes --------------------------------------------------------------------------


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (best effort: not every OS allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once: os.umask can only be read by setting it, which is not thread-safe.
_FILE_MODE = 0o666 & ~_read_umask()


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> Path:
    """Write ``path`` atomically: ``write(file)`` fills a temporary file in the same folder,
    which is flushed, fsynced and renamed over ``path``. If ``write`` raises, the temporary
    file is removed and ``path`` is left as it was. The folder is created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, _FILE_MODE)  # mkstemp makes 0600; give the usual mode
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_text(value: object) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, allow_nan=True) + "\n"


def write_json(path: Path, value: object) -> None:
    atomic_write_text(path, json_text(value))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().contiguous().numpy()


def write_array(path: Path, tensor: torch.Tensor) -> None:
    array = to_numpy(tensor)
    atomic_write(path, lambda handle: np.save(handle, array, allow_pickle=False))


def read_array(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.load(path, allow_pickle=False))


@contextlib.contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it replaces ``target``
    (renamed into place), on an exception it is removed and ``target`` is untouched."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield staging
        fsync_dir(staging)
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.{os.getpid()}.{time.time_ns()}.old"
            os.replace(target, old)
        os.replace(staging, target)
        fsync_dir(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def remove_temporaries(folder: Path) -> None:
    """Remove temporary files that an interrupted writer left in ``folder``."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.name.startswith(".") and entry.name.endswith((".tmp", ".old")):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()


@contextlib.contextmanager
def exclusive(lock_path: Path, what: str) -> Iterator[None]:
    """Hold an advisory lock on ``lock_path`` (released when the process dies, too)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        yield
        return
    with open(lock_path, "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(
                f"another process is writing {what} ({lock_path.parent}); wait for it to "
                "finish, or stop it and run this again to resume"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def tensor_hash(*tensors: torch.Tensor) -> str:
    """sha256 (first 16 hex digits) over the dtypes, shapes and bytes of ``tensors``."""
    digest = hashlib.sha256()
    for tensor in tensors:
        array = to_numpy(tensor)
        digest.update(f"{array.dtype.str}{list(array.shape)};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def now() -> str:
    return _dt.datetime.now(_dt.UTC).astimezone().isoformat(timespec="seconds")


def package_version() -> str:
    from . import __version__

    return __version__


def folder_size(path: Path) -> int:
    """Bytes in the files under ``path`` (0 if it does not exist)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).stat().st_size
    return total
