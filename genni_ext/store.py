"""The experiment store: searches and grids on disk, resumable sweeps.

Layout under the home (see :func:`genni_home`)::

    experiments/<experiment>/
        config.yml                       the run's configuration (YAML)
        searches/<search>/               one SearchResult
            params.npy losses.npy history.npy history_steps.npy starts.npy
            metadata.json                seeds, config, the problem's description
        grids/<grid>/                    one GridResult, and the subspace it lies on
            manifest.json                what the sweep is of (hashes), chunking
            grid.json coeffs.npy axis_<i>.npy
            subspace_center.npy subspace_basis.npy subspace_points.npy
            chunks/chunk_<k>.npz         J on grid points [k·c, (k+1)·c) while running
            values.npy markers.json
            metadata.json                written last: its presence means "complete"
        plots/

Arrays are ``.npy`` files (readable with numpy alone, without torch or this package);
metadata is JSON. Every file is written atomically: to a temporary file in the same
folder (named ``.<name>.<random>.tmp``), flushed and fsynced, then ``os.replace``-d over
the target, so a crash leaves either the old file or the new one, never half of one. A
search is written as a whole folder the same way (staged in a temporary folder, then
renamed into place). Names that start with a dot are reserved for these temporary
files, so experiment, search and grid names may not.

:meth:`Experiment.run_sweep` writes a grid in chunks of ``chunk_points`` grid points,
each chunk its own file as soon as it is computed, next to a manifest that pins the
problem (hashes of θ and of the probes, the model), the subspace, the grid, the dtype,
the backend and the chunking. Calling it again with the same arguments after an
interruption (Ctrl-C, a kill, a crash) computes only the chunks that are missing; with
different arguments it refuses and says what differs. Each chunk is evaluated with
:func:`genni_ext.sweep` on a slice of ``grid.coeffs``; the fused CPU engine computes every
grid point independently and in a fixed order, so the assembled values equal an
uninterrupted :func:`genni_ext.grid.sweep_grid` bit for bit. One process at a time may
run a given grid's sweep (an advisory lock says so where ``fcntl`` exists).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import io
import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import torch

from ._checks import device_label, positive_int
from .errors import GenniError, InputError

if TYPE_CHECKING:
    from .grid import Grid, GridResult
    from .problem import Problem
    from .search import SearchResult
    from .subspace import Subspace

FORMAT = 1
HOME_ENV = "GENNI_HOME"
HOME_FILE = "genni.yml"
DEFAULT_HOME = "genni_home"
_CHUNK_RE = re.compile(r"^chunk_(\d{6,})\.npz$")
# Work per chunk when chunk_points is left to the store: 1-5 s on two cores (the fused
# engine runs LeNet-5 at ~130 GFLOP/s there), so an interruption loses little and the
# chunk files stay few.
_FLOPS_PER_CHUNK = 2e11


class StoreError(GenniError, RuntimeError):
    """What is on disk does not fit the request: a missing or partial result, or a sweep
    resumed with different inputs. The message says what to do."""


# --- names and the home ---------------------------------------------------------------------


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
        import yaml

        try:
            content = yaml.safe_load(settings.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise InputError(f"{settings} is not valid YAML: {error}") from error
        if content is not None and not isinstance(content, Mapping):
            raise InputError(
                f"{settings} must hold a mapping such as 'genni_home: path/to/home', got "
                f"{type(content).__name__}"
            )
        unknown = sorted(str(key) for key in (content or {}) if key != "genni_home")
        if unknown:
            raise InputError(
                f"{settings}: unknown key(s) {', '.join(unknown)}; the only key is "
                "'genni_home: path/to/home'"
            )
        value = (content or {}).get("genni_home")
        if value is not None:
            if not isinstance(value, str) or not value.strip():
                raise InputError(
                    f"{settings}: key 'genni_home' must be a non-empty path string, got {value!r}"
                )
            return (base / Path(value).expanduser()).absolute()
    return base / DEFAULT_HOME


def list_experiments(home: str | os.PathLike[str] | None = None) -> list[Experiment]:
    """Every experiment under ``home`` (default :func:`genni_home`), sorted by name."""
    root = Path(home) if home is not None else genni_home()
    folder = root / "experiments"
    if not folder.is_dir():
        return []
    return [
        Experiment(entry.name, root)
        for entry in sorted(folder.iterdir())
        if entry.is_dir() and not entry.name.startswith(".")
    ]


# --- atomic writes --------------------------------------------------------------------------


def _fsync_dir(folder: Path) -> None:
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
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_text(value: object) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, allow_nan=True) + "\n"


def _write_json(path: Path, value: object) -> None:
    atomic_write_text(path, _json_text(value))


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().contiguous().numpy()


def _write_array(path: Path, tensor: torch.Tensor) -> None:
    array = _array(tensor)
    atomic_write(path, lambda handle: np.save(handle, array, allow_pickle=False))


def _read_array(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.load(path, allow_pickle=False))


@contextlib.contextmanager
def _staged_folder(target: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it replaces ``target``
    (renamed into place), on an exception it is removed and ``target`` is untouched."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield staging
        _fsync_dir(staging)
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.{os.getpid()}.{time.time_ns()}.old"
            os.replace(target, old)
        os.replace(staging, target)
        _fsync_dir(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _remove_temporaries(folder: Path) -> None:
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
def _exclusive(lock_path: Path, what: str) -> Iterator[None]:
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


def _tensor_hash(*tensors: torch.Tensor) -> str:
    """sha256 (first 16 hex digits) over the dtypes, shapes and bytes of ``tensors``."""
    digest = hashlib.sha256()
    for tensor in tensors:
        array = _array(tensor)
        digest.update(f"{array.dtype.str}{list(array.shape)};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).astimezone().isoformat(timespec="seconds")


def _version() -> str:
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


# --- sweep status ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepStatus:
    """How far a grid on disk is: ``chunks_done`` of ``num_chunks`` (both 0 for a grid
    saved whole with :meth:`Experiment.save_grid`), ``complete`` when the result is
    assembled, ``shape`` the grid's shape and ``num_points`` its size."""

    name: str
    complete: bool
    chunks_done: int
    num_chunks: int
    shape: tuple[int, ...]
    num_points: int

    @property
    def chunks_missing(self) -> int:
        """Chunks still to compute (0 when complete)."""
        return 0 if self.complete else self.num_chunks - self.chunks_done


def auto_chunk_points(problem: Problem, num_points: int) -> int:
    """Grid points per chunk for about 2·10¹¹ flops of forward work (1-5 s on two cores),
    so an interruption loses little and the chunk files stay few (at most ``num_points``)."""
    flops = None
    with contextlib.suppress(Exception):
        from .lowering import lower

        flops = lower(problem.model, tuple(problem.inputs.shape[1:])).flops_per_sample
    if not flops:
        flops = 2 * problem.num_params
    per_point = max(1, int(flops)) * problem.num_probes
    return max(1, min(num_points, math.ceil(_FLOPS_PER_CHUNK / per_point)))


# --- the experiment -------------------------------------------------------------------------


class Experiment:
    """One experiment folder, ``<home>/experiments/<name>/`` (home: :func:`genni_home`).

    Nothing is created until something is saved. Names of experiments, searches and
    grids are checked with :func:`check_name`. ``chunks_computed`` is the number of
    chunks the last :meth:`run_sweep` call computed (the rest it found on disk).
    """

    chunks_computed: int = 0

    def __init__(self, name: str, home: str | os.PathLike[str] | None = None) -> None:
        self.name = check_name(name, "experiment name")
        self.home = (Path(home) if home is not None else genni_home()).absolute()
        self.path = self.home / "experiments" / self.name

    def __repr__(self) -> str:
        return f"Experiment({self.name!r}, home={str(self.home)!r})"

    # --- folders ----------------------------------------------------------------------------

    @property
    def exists(self) -> bool:
        """Whether the experiment's folder exists."""
        return self.path.is_dir()

    @property
    def config_path(self) -> Path:
        """``config.yml`` of the experiment."""
        return self.path / "config.yml"

    @property
    def plots_dir(self) -> Path:
        """``plots/`` of the experiment (created on first use)."""
        folder = self.path / "plots"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def search_dir(self, name: str = "search") -> Path:
        """The folder of search ``name``."""
        return self.path / "searches" / check_name(name, "search name")

    def grid_dir(self, name: str) -> Path:
        """The folder of grid ``name``."""
        return self.path / "grids" / check_name(name, "grid name")

    def _names(self, kind: str) -> list[str]:
        folder = self.path / kind
        if not folder.is_dir():
            return []
        return sorted(
            entry.name
            for entry in folder.iterdir()
            if entry.is_dir() and not entry.name.startswith(".")
        )

    def searches(self) -> list[str]:
        """Names of the saved searches (complete ones: with their metadata)."""
        return [
            name
            for name in self._names("searches")
            if (self.path / "searches" / name / "metadata.json").is_file()
        ]

    def grids(self) -> list[str]:
        """Names of the grids on disk, complete or partial."""
        return [
            name
            for name in self._names("grids")
            if (self.path / "grids" / name / "manifest.json").is_file()
            or (self.path / "grids" / name / "metadata.json").is_file()
        ]

    # --- analysis ---------------------------------------------------------------------------

    @property
    def analysis_path(self) -> Path:
        """``analysis.json``: what ``genni analyse`` found (written whole, atomically)."""
        return self.path / "analysis.json"

    def save_analysis(self, analysis: Mapping[str, Any]) -> Path:
        """Write the JSON-able mapping ``analysis`` to ``analysis.json``."""
        if not isinstance(analysis, Mapping):
            raise InputError(f"analysis must be a mapping, got {type(analysis).__name__}")
        _write_json(self.analysis_path, dict(analysis))
        return self.analysis_path

    def load_analysis(self) -> dict[str, Any] | None:
        """The mapping in ``analysis.json``, or None when the experiment was not analysed."""
        if not self.analysis_path.is_file():
            return None
        try:
            return _read_json(self.analysis_path)
        except (OSError, ValueError) as error:
            raise StoreError(
                f"{self.analysis_path} is damaged ({error}); run `genni analyse "
                f"{self.name}` again to rewrite it"
            ) from None

    # --- config -----------------------------------------------------------------------------

    def save_config(self, config: Mapping[str, Any]) -> Path:
        """Write ``config`` (a mapping of plain YAML values) to ``config.yml``."""
        import yaml

        if not isinstance(config, Mapping):
            raise InputError(f"config must be a mapping, got {type(config).__name__}")
        try:
            text = yaml.safe_dump(dict(config), sort_keys=False, allow_unicode=True)
        except yaml.YAMLError as error:
            raise InputError(f"config holds values YAML cannot store: {error}") from error
        return atomic_write_text(self.config_path, text)

    def load_config(self) -> dict[str, Any]:
        """The mapping in ``config.yml`` (StoreError if there is none)."""
        import yaml

        if not self.config_path.is_file():
            raise StoreError(
                f"experiment '{self.name}' has no config.yml ({self.config_path}); run "
                "`genni search --config FILE` first"
            )
        content = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        return dict(content or {})

    # --- searches ---------------------------------------------------------------------------

    def save_search(
        self,
        result: SearchResult,
        name: str = "search",
        *,
        problem: Problem | None = None,
    ) -> Path:
        """Save ``result`` as ``searches/<name>/`` (replacing a search of that name).

        Every tensor field becomes ``<field>.npy``; the other fields (seeds, config) and,
        if given, ``problem.describe()`` go to ``metadata.json``. The folder is written
        whole and renamed into place, so a crash leaves the old search or the new one.
        """
        from .search import SearchResult

        target = self.search_dir(name)
        if not isinstance(result, SearchResult):
            raise InputError(f"result must be a SearchResult, got {type(result).__name__}")
        tensors: dict[str, torch.Tensor] = {}
        fields: dict[str, Any] = {}
        for field in dataclasses.fields(result):
            value = getattr(result, field.name)
            if isinstance(value, torch.Tensor):
                tensors[field.name] = value
            else:
                fields[field.name] = value
        metadata: dict[str, Any] = {
            "format": FORMAT,
            "kind": "search",
            "name": name,
            "fields": fields,
            "tensors": {
                key: {"shape": list(value.shape), "dtype": str(value.dtype)}
                for key, value in tensors.items()
            },
            "problem": problem.describe() if problem is not None else None,
            "version": _version(),
            "saved": _now(),
        }
        try:
            text = json.dumps(metadata, indent=2, ensure_ascii=False) + "\n"
        except (TypeError, ValueError) as error:
            raise InputError(
                f"the search's non-tensor fields must be JSON-able (seeds, config): {error}"
            ) from error
        with _staged_folder(target) as staging:
            for key, value in tensors.items():
                _write_array(staging / f"{key}.npy", value)
            atomic_write_text(staging / "metadata.json", text)
        return target

    def search_metadata(self, name: str = "search") -> dict[str, Any]:
        """The metadata of search ``name`` (seeds, config, the problem's description)."""
        path = self.search_dir(name) / "metadata.json"
        if not path.is_file():
            have = ", ".join(self.searches()) or "none"
            raise StoreError(
                f"experiment '{self.name}' has no search '{name}' ({path.parent}; searches: "
                f"{have}); run `genni search` first"
            )
        return _read_json(path)

    def load_search(self, name: str = "search") -> SearchResult:
        """The SearchResult saved as ``name`` (tensors on the CPU)."""
        from .search import SearchResult

        metadata = self.search_metadata(name)
        folder = self.search_dir(name)
        values: dict[str, Any] = dict(metadata["fields"])
        for key in metadata["tensors"]:
            values[key] = _read_array(folder / f"{key}.npy")
        return SearchResult(**values)

    # --- grids ------------------------------------------------------------------------------

    def _write_grid_and_subspace(self, folder: Path, grid: Grid, subspace: Subspace | None) -> None:
        grid_info = {
            "shape": list(grid.shape),
            "num_axes": 0 if grid.axes is None else len(grid.axes),
        }
        _write_array(folder / "coeffs.npy", grid.coeffs)
        for index, axis in enumerate(grid.axes or ()):
            _write_array(folder / f"axis_{index}.npy", axis)
        _write_json(folder / "grid.json", grid_info)
        if subspace is not None:
            _write_array(folder / "subspace_center.npy", subspace.center)
            _write_array(folder / "subspace_basis.npy", subspace.basis)
            _write_array(folder / "subspace_points.npy", subspace.points)
            # Which problem the subspace's points come from, where known (from_search).
            _write_json(
                folder / "subspace.json",
                {"theta_hash": subspace.theta_hash, "probes_hash": subspace.probes_hash},
            )

    def _read_grid(self, folder: Path) -> Grid:
        from .grid import Grid

        info = _read_json(folder / "grid.json")
        coeffs = _read_array(folder / "coeffs.npy")
        axes = None
        if info["num_axes"]:
            axes = tuple(_read_array(folder / f"axis_{i}.npy") for i in range(info["num_axes"]))
        return Grid(coeffs, tuple(int(n) for n in info["shape"]), axes)

    def _write_result(self, folder: Path, result: GridResult) -> None:
        """values.npy, markers.json, then metadata.json (the completion mark) last."""
        markers = [
            {"name": marker.name, "coords": marker.coords.tolist(), "loss": marker.loss}
            for marker in result.markers
        ]
        _write_array(folder / "values.npy", result.values)
        _write_json(folder / "markers.json", markers)
        _write_json(folder / "metadata.json", result.metadata)

    def save_grid(self, result: GridResult, name: str, *, subspace: Subspace | None = None) -> Path:
        """Save a finished GridResult (from :func:`genni_ext.grid.sweep_grid`) as
        ``grids/<name>/``, with the subspace it was swept on if given (for
        :meth:`load_subspace` and ε-set parameters). Replaces a grid of that name."""
        from .grid import GridResult
        from .subspace import Subspace

        target = self.grid_dir(name)
        if not isinstance(result, GridResult):
            raise InputError(f"result must be a GridResult, got {type(result).__name__}")
        if subspace is not None and not isinstance(subspace, Subspace):
            raise InputError(f"subspace must be a Subspace or None, got {type(subspace).__name__}")
        if subspace is not None and subspace.dim != result.grid.dim:
            raise InputError(
                f"subspace has m={subspace.dim} directions but the grid has {result.grid.dim} "
                "coefficients per point; pass the subspace the grid was swept on"
            )
        try:
            json.dumps(result.metadata)
        except (TypeError, ValueError) as error:
            raise InputError(f"result.metadata must be JSON-able: {error}") from error
        with _staged_folder(target) as staging:
            self._write_grid_and_subspace(staging, result.grid, subspace)
            self._write_result(staging, result)
        return target

    def sweep_status(self, name: str) -> SweepStatus:
        """How far grid ``name`` is (StoreError if it is not on disk)."""
        folder = self.grid_dir(name)
        manifest_path = folder / "manifest.json"
        complete = (folder / "metadata.json").is_file()
        if manifest_path.is_file():
            manifest = _read_json(manifest_path)
            done = len(_chunk_files(folder / "chunks", manifest["num_chunks"]))
            return SweepStatus(
                name,
                complete,
                manifest["num_chunks"] if complete else done,
                manifest["num_chunks"],
                tuple(manifest["grid"]["shape"]),
                manifest["grid"]["size"],
            )
        if complete:
            info = _read_json(folder / "grid.json")
            shape = tuple(info["shape"])
            return SweepStatus(name, True, 0, 0, shape, math.prod(shape))
        raise StoreError(
            f"experiment '{self.name}' has no grid '{name}' ({folder}); run `genni sweep` "
            "(or Experiment.run_sweep) to compute it"
        )

    def load_grid(self, name: str) -> GridResult:
        """The GridResult saved as ``name`` (StoreError if it is missing or partial)."""
        from .grid import GridResult, Marker

        folder = self.grid_dir(name)
        status = self.sweep_status(name)
        if not status.complete:
            raise StoreError(
                f"grid '{name}' of experiment '{self.name}' is partial ({status.chunks_done} "
                f"of {status.num_chunks} chunks); run the same `genni sweep` again to finish it"
            )
        markers = [
            Marker(item["name"], torch.tensor(item["coords"], dtype=torch.float64), item["loss"])
            for item in _read_json(folder / "markers.json")
        ]
        return GridResult(
            values=_read_array(folder / "values.npy"),
            grid=self._read_grid(folder),
            markers=markers,
            metadata=_read_json(folder / "metadata.json"),
        )

    def load_subspace(self, name: str) -> Subspace:
        """The subspace grid ``name`` was swept on (StoreError if it was not saved)."""
        from .subspace import Subspace

        folder = self.grid_dir(name)
        if not (folder / "subspace_center.npy").is_file():
            raise StoreError(
                f"grid '{name}' of experiment '{self.name}' was saved without its subspace "
                f"({folder}); pass subspace= to save_grid to keep it"
            )
        origin = folder / "subspace.json"
        hashes = _read_json(origin) if origin.is_file() else {}  # grids saved before: unknown
        return Subspace(
            _read_array(folder / "subspace_center.npy"),
            _read_array(folder / "subspace_basis.npy"),
            _read_array(folder / "subspace_points.npy"),
            theta_hash=hashes.get("theta_hash"),
            probes_hash=hashes.get("probes_hash"),
        )

    # --- the resumable sweep ----------------------------------------------------------------

    def run_sweep(
        self,
        problem: Problem,
        subspace: Subspace,
        grid: Grid,
        name: str,
        *,
        chunk_points: int | None = None,
        backend: str = "auto",
        num_threads: int | None = None,
        progress: bool = True,
        precision: str = "full",
    ) -> GridResult:
        """Sweep ``grid`` on ``subspace`` for ``problem`` into ``grids/<name>/``, resumably.

        The grid's points are evaluated ``chunk_points`` at a time (None: about 2·10¹¹
        flops per chunk, see :func:`auto_chunk_points`), each chunk written to its own
        file when done. Run again with the same arguments after an interruption, it
        computes only the missing chunks; a finished grid is loaded, not recomputed. With
        a different problem, subspace, grid, dtype, precision, backend or chunk size it raises
        StoreError naming what differs. Returns the same GridResult as
        :func:`genni_ext.grid.sweep_grid` (values bitwise equal on the fused CPU engine;
        ``wall_time_s`` is the sum over the chunks' compute times, and
        ``metadata["store"]`` records the chunking).
        """
        from .grid import Grid, GridResult, backend_used, check_match, grid_markers, grid_metadata
        from .sweep import sweep

        folder = self.grid_dir(name)
        if not isinstance(grid, Grid):
            raise InputError(f"grid must be a Grid, got {type(grid).__name__}")
        check_match(problem, subspace, grid)
        if chunk_points is None:
            chunk_points = auto_chunk_points(problem, grid.size)
        positive_int(chunk_points, "chunk_points")
        if num_threads is not None:
            positive_int(num_threads, "num_threads")
        if not isinstance(progress, bool):
            raise InputError(f"progress must be True or False, got {progress!r}")
        from ._fused import check_precision

        check_precision(precision, problem.theta.dtype, problem.inputs.device)
        used = backend_used(problem, backend)
        engine = "torch" if used == "torch" else "fused"
        manifest = _manifest(problem, subspace, grid, used, chunk_points, precision)
        num_chunks = manifest["num_chunks"]
        chunk_dir = folder / "chunks"
        coeffs = grid.coeffs.to(dtype=problem.theta.dtype, device=problem.inputs.device)

        def compute(index: int) -> tuple[torch.Tensor, float]:
            first = index * chunk_points
            last = min(first + chunk_points, grid.size)
            start = time.perf_counter()
            values = sweep(
                problem.model,
                subspace.center,
                subspace.basis,
                coeffs[first:last],
                problem.inputs,
                problem.targets,
                backend=engine,
                num_threads=num_threads,
                progress=False,
                precision=precision,
            )
            return values.cpu(), time.perf_counter() - start

        self.chunks_computed = 0
        existing = folder / "manifest.json"
        first_chunk: tuple[torch.Tensor, float] | None = None
        if existing.is_file():
            _check_manifest(_read_json(existing), manifest, self.name, name, folder)
        elif (folder / "metadata.json").is_file():
            raise StoreError(
                f"grid '{name}' of experiment '{self.name}' was saved whole (save_grid), not "
                f"by a resumable sweep; delete {folder} or use another grid name"
            )
        else:
            # Compute the first chunk before writing anything: bad input that only the
            # sweep detects then leaves no files behind.
            first_chunk = compute(0)
            self.chunks_computed = 1

        folder.mkdir(parents=True, exist_ok=True)
        with _exclusive(folder / ".lock", f"grid '{name}' of experiment '{self.name}'"):
            if first_chunk is not None:
                if not (folder / "manifest.json").is_file():
                    shutil.rmtree(chunk_dir, ignore_errors=True)
                    _remove_temporaries(folder)
                    self._write_grid_and_subspace(folder, grid, subspace)
                    _write_json(folder / "manifest.json", {**manifest, "created": _now()})
                _write_chunk(chunk_dir, 0, *first_chunk)
            elif (folder / "metadata.json").is_file():
                result = self.load_grid(name)
                shutil.rmtree(chunk_dir, ignore_errors=True)
                return result
            _remove_temporaries(chunk_dir)
            _remove_temporaries(folder)
            done = _chunk_files(chunk_dir, num_chunks)
            missing = [index for index in range(num_chunks) if index not in done]
            bar = None
            if progress:
                from tqdm.auto import tqdm

                points_done = sum(_chunk_length(i, chunk_points, grid.size) for i in done)
                bar = tqdm(total=grid.size, initial=points_done, unit="pt", desc=f"sweep {name}")
            try:
                for index in missing:
                    values, seconds = compute(index)
                    _write_chunk(chunk_dir, index, values, seconds)
                    self.chunks_computed += 1
                    if bar is not None:
                        bar.update(values.shape[0])
            finally:
                if bar is not None:
                    bar.close()

            parts, wall_time = [], 0.0
            for index in range(num_chunks):
                values, seconds = _read_chunk(
                    chunk_dir / _chunk_name(index), _chunk_length(index, chunk_points, grid.size)
                )
                parts.append(values)
                wall_time += seconds
            metadata = grid_metadata(
                problem, grid, backend=used, wall_time_s=wall_time, precision=precision
            )
            metadata["store"] = {
                "experiment": self.name,
                "grid": name,
                "chunk_points": chunk_points,
                "num_chunks": num_chunks,
            }
            result = GridResult(
                values=torch.cat(parts).reshape(grid.shape),
                grid=grid,
                markers=grid_markers(problem, subspace),
                metadata=json.loads(_json_text(metadata)),
            )
            self._write_result(folder, result)
            shutil.rmtree(chunk_dir, ignore_errors=True)
            return result


# --- sweep manifest and chunks --------------------------------------------------------------


def _manifest(
    problem: Problem,
    subspace: Subspace,
    grid: Grid,
    backend: str,
    chunk_points: int,
    precision: str,
) -> dict[str, Any]:
    """What a resumable sweep is of: every key but "created" must match to resume."""
    description = problem.describe()
    return {
        "format": FORMAT,
        "kind": "resumable sweep",
        "problem": {
            "model": description["model"],
            "repr": description["repr"],
            "num_params": problem.num_params,
            "num_probes": problem.num_probes,
            "dtype": description["dtype"],
            "theta_hash": problem.theta_hash,
            "probes_hash": problem.probes_hash,
            "targets_hash": _tensor_hash(problem.targets),
        },
        "subspace": {
            "m": subspace.dim,
            "hash": _tensor_hash(subspace.center, subspace.basis, subspace.points),
        },
        "grid": {
            "shape": list(grid.shape),
            "size": grid.size,
            "hash": _tensor_hash(grid.coeffs, *(grid.axes or ())),
        },
        "backend": backend,
        "precision": precision,
        "device": device_label(problem.inputs.device),
        "chunk_points": chunk_points,
        "num_chunks": math.ceil(grid.size / chunk_points),
    }


def _check_manifest(
    stored: dict[str, Any], wanted: dict[str, Any], experiment: str, name: str, folder: Path
) -> None:
    """StoreError naming what differs between a grid on disk and the sweep asked for."""
    labels = {
        "problem": "problem (model, θ, probes or dtype)",
        "subspace": "subspace",
        "grid": "grid",
        "backend": "backend",
        "precision": "precision",
        "device": "device (J on another kind of device differs in its last bits, so the "
        "chunks would not join into the grid an uninterrupted run gives)",
        "chunk_points": "chunk_points",
        "format": "store format",
    }
    differences = []
    for key, label in labels.items():
        # Grids started before the store recorded devices and precisions were all computed
        # on the CPU in full precision.
        on_disk = stored.get(key, {"device": "cpu", "precision": "full"}.get(key))
        if on_disk != wanted.get(key):
            if key in ("backend", "precision", "device", "chunk_points", "format"):
                differences.append(f"{label}: on disk {on_disk!r}, now {wanted.get(key)!r}")
            elif key == "problem":
                parts = [
                    f"{field} {stored[key].get(field)!r} != {value!r}"
                    for field, value in wanted[key].items()
                    if stored[key].get(field) != value and field != "repr"
                ] or ["model architecture differs"]
                differences.append(f"{label}: {'; '.join(parts)}")
            else:
                differences.append(f"{label} differs")
    if differences:
        raise StoreError(
            f"grid '{name}' of experiment '{experiment}' was started with other inputs, so it "
            f"cannot be resumed: {'; '.join(differences)}. Run it with the inputs it was "
            f"started with, use another grid name, or delete {folder} to start over"
        )


def _chunk_name(index: int) -> str:
    return f"chunk_{index:06d}.npz"


def _chunk_length(index: int, chunk_points: int, size: int) -> int:
    return min(chunk_points, size - index * chunk_points)


def _chunk_files(chunk_dir: Path, num_chunks: int) -> set[int]:
    """Indices of the chunk files present (only finished ones exist: writes are atomic)."""
    if not chunk_dir.is_dir():
        return set()
    found = set()
    for entry in chunk_dir.iterdir():
        match = _CHUNK_RE.match(entry.name)
        if match and int(match.group(1)) < num_chunks:
            found.add(int(match.group(1)))
    return found


def _write_chunk(chunk_dir: Path, index: int, values: torch.Tensor, seconds: float) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, values=_array(values), wall_time_s=np.float64(seconds))
    atomic_write_bytes(chunk_dir / _chunk_name(index), buffer.getvalue())


def _read_chunk(path: Path, length: int) -> tuple[torch.Tensor, float]:
    try:
        with np.load(path, allow_pickle=False) as data:
            values = torch.from_numpy(data["values"].copy())
            seconds = float(data["wall_time_s"])
    except (OSError, ValueError, KeyError) as error:
        raise StoreError(
            f"chunk file {path} cannot be read ({error}); delete it and run the sweep "
            "again to recompute it"
        ) from error
    if values.dtype != torch.float64 or tuple(values.shape) != (length,):
        raise StoreError(
            f"chunk file {path} holds {values.dtype} {list(values.shape)}, not float64 "
            f"[{length}]; delete it and run the sweep again to recompute it"
        )
    return values, seconds


__all__ = [
    "Experiment",
    "StoreError",
    "SweepStatus",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "auto_chunk_points",
    "check_name",
    "genni_home",
    "list_experiments",
]
