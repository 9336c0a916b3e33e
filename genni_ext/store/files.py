"""Files of the store written so that a crash never leaves half of one.

Every file is written to a temporary file in the same folder (``.<name>.<random>.tmp``),
flushed and fsynced, then renamed over the target; a folder is staged beside its target
and renamed into place. Names that start with a dot are reserved for these temporaries.
A write that runs out of space (a full disk, a quota, a file-size limit) raises one
StoreError naming the file, and leaves no temporary file behind.

Also here: JSON and ``.npy`` helpers, the lock of a folder's writer (which records who
holds it, so that a lock left by a process that died is recognised and cleared), content
hashes, and ``checksums.json``: the SHA-256 of every file a folder of the store holds,
recorded when the files are written and checked when they are read.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import io
import json
import logging
import os
import shutil
import socket
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from genni_ext._version import __version__
from genni_ext.errors import StoreError

log = logging.getLogger("genni_ext.store")

# --- running out of space -------------------------------------------------------------------

# errno values that mean "no room for this write": a full disk, a user's quota, or a file
# larger than the process may write (ulimit -f), and what each is called in a message.
_NO_ROOM = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file-size limit reached (ulimit -f)",
}


def no_room(error: OSError, path: Path) -> StoreError | None:
    """The StoreError for ``error`` if it means that ``path`` did not fit on disk, else None."""
    what = _NO_ROOM.get(error.errno or -1)
    if what is None:
        return None
    return StoreError(
        f"{what} while writing {path}; nothing of that file was kept. Free some space (or "
        "raise the limit) and run the same command again: what was saved before is kept"
    )


@contextlib.contextmanager
def room_for(path: Path) -> Iterator[None]:
    """Turn an out-of-space OSError raised inside into one StoreError naming ``path``."""
    try:
        yield
    except OSError as error:
        full = no_room(error, path)
        if full is None:
            raise
        raise full from None


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
    with room_for(path):
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


def load_file(path: Path, read: Callable[[Path], Any], redo: str | Callable[[], str]) -> Any:
    """``read(path)``, or StoreError naming the file, what is wrong and ``redo`` (a sentence,
    or a function that makes it: called only on an error)."""
    try:
        return read(path)
    except FileNotFoundError:
        raise StoreError(
            f"{path} is missing; {redo if isinstance(redo, str) else redo()}"
        ) from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        action = redo if isinstance(redo, str) else redo()
        raise StoreError(f"{path} cannot be read ({error}); {action}") from None


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().contiguous().numpy()


def array_bytes(tensor: torch.Tensor) -> bytes:
    """``tensor`` as the bytes of a ``.npy`` file."""
    # In memory first: numpy reports a short write to a file without its errno.
    buffer = io.BytesIO()
    np.save(buffer, to_numpy(tensor), allow_pickle=False)
    return buffer.getvalue()


def write_array(path: Path, tensor: torch.Tensor) -> None:
    atomic_write_bytes(path, array_bytes(tensor))


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


def remove_partials(folder: Path) -> None:
    """Remove the ``*.partial`` files that zarr's writer, interrupted, left under ``folder``."""
    for path in folder.rglob("*.partial") if folder.is_dir() else ():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


# --- the lock of a folder's writer ----------------------------------------------------------


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or held) a lock: process ``pid`` on ``host`` since ``since``."""

    pid: int
    host: str
    since: str

    def __str__(self) -> str:
        return f"process {self.pid} on {self.host} (since {self.since})"

    def alive(self) -> bool | None:
        """Whether the process is running: None where that cannot be told (another host,
        or Windows, where probing a process would stop it)."""
        if self.host != socket.gethostname() or os.name == "nt":
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except OSError:  # PermissionError: it runs, as another user
            return True
        return True


def lock_holder(lock_path: Path) -> LockHolder | None:
    """The holder recorded in the lock file ``lock_path`` (None: free, or no record)."""
    try:
        record = json.loads(lock_path.read_text(encoding="utf-8") or "null")
        return LockHolder(int(record["pid"]), str(record["host"]), str(record["since"]))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def lock_held(lock_path: Path) -> bool | None:
    """Whether a process holds the lock ``lock_path`` now (None where flock cannot tell).
    Probed with a shared lock, held for an instant, that no writer is waiting for."""
    try:
        import fcntl

        with open(lock_path, "rb") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            return False
    except FileNotFoundError:
        return False
    except (ImportError, OSError):  # Windows, or no flock on this file system
        return None


def _write_holder(handle: IO[bytes]) -> None:
    record = {"pid": os.getpid(), "host": socket.gethostname(), "since": now()}
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(record).encode())
    handle.flush()
    os.fsync(handle.fileno())


def _take_over(lock_path: Path, what: str, holder: LockHolder | None, locked: bool) -> None:
    """Decide about the holder recorded in a lock this process is taking: one that died
    without releasing it is cleared, with a warning; without ``flock`` (``locked`` False),
    one that may still run is refused with a StoreError naming it."""
    if holder is None or (holder.pid == os.getpid() and holder.host == socket.gethostname()):
        return
    alive = holder.alive()
    if not locked and alive is True:
        raise StoreError(
            f"{holder} is writing {what} ({lock_path.parent}); wait for it to finish, or "
            "stop it and run this again to resume"
        )
    if not locked and alive is None:
        raise StoreError(
            f"{holder} holds the lock of {what} ({lock_path}), and this machine cannot tell "
            f"whether it still runs; if it does not, delete {lock_path} and run this again"
        )
    state = "is no longer running" if alive is False else "no longer holds it"
    log.warning("cleared the lock of %s left by %s, which %s", what, holder, state)


@contextlib.contextmanager
def exclusive(lock_path: Path, what: str) -> Iterator[None]:
    """Hold the lock of ``what`` for this process while the block runs.

    The lock is an advisory ``flock`` on ``lock_path`` (the kernel releases it when the
    process dies, however it dies), and the file records the holder (pid, host, since)
    until it is released. A record found when taking the lock is a process that died
    holding it: it is cleared, with a warning. Where ``flock`` is not available (Windows,
    some network file systems) the record alone decides: a holder on this machine that is
    no longer running is cleared; a live one, or one on another machine, is refused.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        fcntl = None  # type: ignore[assignment]
    with room_for(lock_path):
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock_path, "a+b")  # noqa: SIM115 - closed below
    with handle:
        locked = False
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
            except BlockingIOError:
                holder = lock_holder(lock_path)
                who = str(holder) if holder is not None else "another process"
                if holder is not None and holder.alive() is False:
                    who += ", which is no longer running (a process it started holds the lock)"
                raise StoreError(
                    f"{who} is writing {what} ({lock_path.parent}); wait for it to finish, or "
                    "stop it and run this again to resume"
                ) from None
            except OSError:  # ENOLCK, EOPNOTSUPP: no flock on this file system
                pass
        _take_over(lock_path, what, lock_holder(lock_path), locked)
        with room_for(lock_path):
            _write_holder(handle)
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()  # released: no holder recorded
            handle.flush()
            if locked:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# --- checksums ------------------------------------------------------------------------------

CHECKSUMS = "checksums.json"


def file_digest(path: Path) -> str:
    """SHA-256 (hex) of the bytes of the file ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bytes_digest(data: bytes) -> str:
    """SHA-256 (hex) of ``data``: what :func:`file_digest` gives once it is written."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class FileDamage:
    """File ``path`` is not what the store wrote, and how (a phrase)."""

    path: Path
    problem: str

    def __str__(self) -> str:
        return f"{self.path} {self.problem}"


@dataclass(frozen=True)
class Checksums:
    """The checksums recorded for the files of ``folder`` (``checksums.json`` there): file
    (relative, with "/") → SHA-256, and what else the writer kept with them."""

    folder: Path
    files: dict[str, str]
    extra: dict[str, Any]

    @classmethod
    def load(cls, folder: Path) -> tuple[Checksums | None, FileDamage | None]:
        """The record in ``folder`` (None where there is none), or what is wrong with it."""
        path = folder / CHECKSUMS
        try:
            content = read_json(path)
        except FileNotFoundError:
            return None, None
        except (OSError, ValueError) as error:
            return None, FileDamage(path, f"cannot be read ({error})")
        files = content.get("files") if isinstance(content, dict) else None
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            return None, FileDamage(path, "does not hold checksums")
        extra = {key: value for key, value in content.items() if key != "files"}
        return cls(folder, dict(files), extra), None

    def check(self, name: str) -> FileDamage | None:
        """What is wrong with file ``name`` (relative) against its checksum; None if it is
        as written, or if no checksum was recorded for it."""
        expected = self.files.get(name)
        if expected is None:
            return None
        path = self.folder / name
        try:
            found = file_digest(path)
        except FileNotFoundError:
            return FileDamage(path, "is missing")
        except OSError as error:
            return FileDamage(path, f"cannot be read ({error.strerror or error})")
        if found != expected:
            return FileDamage(path, "does not match the checksum recorded when it was written")
        return None

    def damage(self, names: Iterable[str] | None = None) -> list[FileDamage]:
        """What is wrong with the files ``names`` (default: every recorded file)."""
        chosen = sorted(self.files) if names is None else names
        return [found for name in chosen if (found := self.check(name)) is not None]


def write_checksums(
    folder: Path,
    names: Iterable[str],
    *,
    written: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Record in ``folder/checksums.json`` the SHA-256 of the files ``names`` (relative to
    ``folder``, as they are now) and ``written`` (file → digest of bytes about to be
    written), with ``extra`` beside them."""
    files = {name: file_digest(folder / name) for name in names}
    files.update(written or {})
    write_json(folder / CHECKSUMS, {"files": dict(sorted(files.items())), **(extra or {})})


def record_checksum(folder: Path, name: str, digest: str) -> None:
    """Set file ``name``'s checksum in ``folder/checksums.json`` and keep the others: see
    :func:`record_checksums`."""
    record_checksums(folder, {name: digest})


def record_checksums(folder: Path, digests: Mapping[str, str]) -> None:
    """Set the checksums ``digests`` (file → SHA-256) in ``folder/checksums.json`` and keep
    the others (under a short lock, so that two writers do not lose each other's entry); not
    written again when it records them already. A damaged record is started anew: the files
    it covered are then no longer verified."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        fcntl = None  # type: ignore[assignment]
    with room_for(folder / CHECKSUMS), open(folder / ".checksums.lock", "a+b") as handle:
        if fcntl is not None:
            with contextlib.suppress(OSError):  # no flock on this file system: go on
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        current, _damage = Checksums.load(folder)
        if current is not None and all(current.files.get(k) == v for k, v in digests.items()):
            return  # recorded already (a file written anew with the same bytes)
        files = {**(current.files if current is not None else {}), **digests}
        extra = current.extra if current is not None else {}
        write_json(folder / CHECKSUMS, {"files": dict(sorted(files.items())), **extra})


def files_under(folder: Path, skip: Callable[[str], bool] = lambda name: False) -> list[str]:
    """Every file under ``folder`` (relative, with "/") but temporaries, the lock, the
    checksums and those ``skip`` names."""
    names = []
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        parts = name.split("/")
        if (
            path.is_file()
            and not any(part.startswith(".") for part in parts)
            and not name.endswith(".partial")
            and name != CHECKSUMS
            and not skip(name)
        ):
            names.append(name)
    return names


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
