"""The experiment store: searches and grids on disk, resumable sweeps.

Layout under the home (see :func:`genni_home`)::

    experiments/<experiment>/
        config.yml                       the run's configuration (YAML)
        searches/<search>/               one SearchResult
            search.zarr/                 params, starts, losses, history, history_steps
                                         (genni_ext.search_store)
            metadata.json                seeds, config, the problem's description
        grids/<grid>/                    one GridResult, and the subspace it lies on
            grid.zarr/                   J as a zarr v3 array (genni_ext.grid_store), with
                                         the manifest (what the sweep is of) and coordinates
            done/<k>.json                chunk k written: its checksum and compute time
            grid.json coeffs.npy axis_<i>.npy
            subspace_center.npy subspace_basis.npy subspace_points.npy subspace.json
            markers.json
            metadata.json                written last: its presence means "complete"
        plots/

A grid's small arrays are ``.npy`` files (readable with numpy alone); J and searches are
zarr, which xarray, Dask and zarr itself read (``Experiment.open_grid``,
``Experiment.open_search``, ``xarray.open_zarr``); metadata is JSON. Every file is written
atomically (genni_ext.files), so a crash leaves either the old file or the new one, never
half of one. A search is written as a whole folder the same way. Names that start with a
dot are reserved for temporary files.

:meth:`Experiment.run_sweep` computes a grid in the chunks of a ChunkPlan, each written to
the zarr array as soon as it is computed, and pins the problem (hashes of θ, the probes
and the targets, the model), the subspace, the grid, the dtype, the precision, the backend
and the chunking in the manifest. Calling it again after an interruption (Ctrl-C, a kill,
a crash) computes only the chunks that are missing or damaged; with different arguments
it refuses and says what differs. With a Dask client each missing chunk is a task on the
cluster. The fused CPU engine computes every grid point independently and in a fixed
order, so the assembled values equal an uninterrupted :func:`genni_ext.grid.sweep_grid` bit
for bit. One process at a time may run a given grid's sweep (an advisory lock says so
where ``fcntl`` exists). Grids of the store's first format (values.npy) are still read.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from . import grid_store, search_store
from ._checks import positive_int
from .chunk_runs import ChunkTask, ConfigSource, ProblemSource, run_local, run_on_cluster
from .chunks import ChunkPlan, auto_chunk_points
from .errors import InputError, StoreError
from .files import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    exclusive,
    folder_size,
    json_text,
    now,
    package_version,
    read_array,
    read_json,
    remove_temporaries,
    staged_folder,
    write_array,
    write_json,
)
from .home import check_name, genni_home
from .manifest import FORMAT, check_manifest, sweep_manifest

if TYPE_CHECKING:
    import xarray

    from .grid import Grid, GridResult
    from .problem import Problem
    from .search import SearchResult
    from .subspace import Subspace

_CHUNK_RE = re.compile(r"^chunk_(\d{6,})\.npz$")
# Work per chunk when chunk_points is left to the store: 1-5 s on two cores (the fused
# engine runs LeNet-5 at ~130 GFLOP/s there), so an interruption loses little and the
# chunk files stay few.
_FLOPS_PER_CHUNK = 2e11


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
            if grid_store.exists(self.path / "grids" / name)
            or (self.path / "grids" / name / "manifest.json").is_file()  # first format
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
        write_json(self.analysis_path, dict(analysis))
        return self.analysis_path

    def load_analysis(self) -> dict[str, Any] | None:
        """The mapping in ``analysis.json``, or None when the experiment was not analysed."""
        if not self.analysis_path.is_file():
            return None
        try:
            return read_json(self.analysis_path)
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
        redo = "fix it, or write it again with `genni search --config FILE`"
        try:
            content = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            raise StoreError(f"{self.config_path} cannot be read ({error}); {redo}") from None
        if content is not None and not isinstance(content, Mapping):
            raise StoreError(
                f"{self.config_path} holds a {type(content).__name__}, not a mapping; {redo}"
            )
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
            "version": package_version(),
            "saved": now(),
        }
        try:
            text = json.dumps(metadata, indent=2, ensure_ascii=False) + "\n"
        except (TypeError, ValueError) as error:
            raise InputError(
                f"the search's non-tensor fields must be JSON-able (seeds, config): {error}"
            ) from error
        with staged_folder(target) as staging:
            search_store.write(staging, tensors)
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
        metadata = _load(path, read_json, self._search_redo(name))
        if not isinstance(metadata, dict) or not {"fields", "tensors"} <= metadata.keys():
            raise StoreError(f"{path} is not a search's metadata; {self._search_redo(name)}")
        return metadata

    def _search_redo(self, name: str) -> str:
        return f"delete {self.search_dir(name)} and run `genni search` again"

    def load_search(self, name: str = "search") -> SearchResult:
        """The SearchResult saved as ``name`` (tensors on the CPU)."""
        from .search import SearchResult

        metadata = self.search_metadata(name)
        folder = self.search_dir(name)
        values: dict[str, Any] = dict(metadata["fields"])
        redo = self._search_redo(name)
        for key in metadata["tensors"]:
            if search_store.exists(folder):
                values[key] = _load_zarr(folder, key, redo)
            else:  # the first store format: one .npy file per tensor
                values[key] = _load(folder / f"{key}.npy", read_array, redo)
        try:
            return SearchResult(**values)
        except (TypeError, ValueError) as error:
            raise StoreError(
                f"search '{name}' in {folder} does not fit together ({error}); "
                f"{self._search_redo(name)}"
            ) from None

    def open_search(self, name: str = "search") -> xarray.Dataset:
        """Search ``name``'s arrays as an xarray Dataset (dims start, parameter, record)."""
        self.load_search(name)  # complete and readable, or a StoreError that says why
        folder = self.search_dir(name)
        if not search_store.exists(folder):
            raise StoreError(
                f"search '{name}' of experiment '{self.name}' is in the first store format "
                f"(.npy files); run `genni search` again to write it as zarr"
            )
        return search_store.open_dataset(folder)

    # --- grids ------------------------------------------------------------------------------

    def _write_grid_and_subspace(self, folder: Path, grid: Grid, subspace: Subspace | None) -> None:
        grid_info = {
            "shape": list(grid.shape),
            "num_axes": 0 if grid.axes is None else len(grid.axes),
        }
        write_array(folder / "coeffs.npy", grid.coeffs)
        for index, axis in enumerate(grid.axes or ()):
            write_array(folder / f"axis_{index}.npy", axis)
        write_json(folder / "grid.json", grid_info)
        if subspace is not None:
            write_array(folder / "subspace_center.npy", subspace.center)
            write_array(folder / "subspace_basis.npy", subspace.basis)
            write_array(folder / "subspace_points.npy", subspace.points)
            # Which problem the subspace's points come from, where known (from_search).
            write_json(
                folder / "subspace.json",
                {"theta_hash": subspace.theta_hash, "probes_hash": subspace.probes_hash},
            )

    def _read_grid(self, folder: Path) -> Grid:
        from .grid import Grid

        info = _load(folder / "grid.json", read_json, self._redo(folder))
        coeffs = _load(folder / "coeffs.npy", read_array, self._redo(folder))
        axes = None
        try:
            count, shape = int(info["num_axes"]), tuple(int(n) for n in info["shape"])
        except (KeyError, TypeError, ValueError) as error:
            raise StoreError(
                f"{folder / 'grid.json'} does not describe a grid ({error!r}); {self._redo(folder)}"
            ) from None
        if count:
            axes = tuple(
                _load(folder / f"axis_{i}.npy", read_array, self._redo(folder))
                for i in range(count)
            )
        try:
            return Grid(coeffs, shape, axes)
        except InputError as error:
            raise StoreError(
                f"the grid files in {folder} do not agree ({error}); {self._redo(folder)}"
            ) from None

    def _redo(self, folder: Path) -> str:
        return f"delete {folder} and run the sweep again (or restore the file from a backup)"

    def _write_finished(self, folder: Path, result: GridResult) -> None:
        """markers.json, then metadata.json (the completion mark) last."""
        markers = [
            {"name": marker.name, "coords": marker.coords.tolist(), "loss": marker.loss}
            for marker in result.markers
        ]
        write_json(folder / "markers.json", markers)
        write_json(folder / "metadata.json", result.metadata)

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
        grid = result.grid
        plan = ChunkPlan.for_grid(grid.shape, grid.size)
        manifest = {"format": FORMAT, "kind": "saved grid", "num_chunks": 1}
        with staged_folder(target) as staging:
            self._write_grid_and_subspace(staging, grid, subspace)
            grid_store.create(staging, grid, plan, manifest)
            wall_time = float(result.metadata.get("wall_time_s", 0.0) or 0.0)
            grid_store.write_chunk(staging, plan, 0, result.values.reshape(-1), wall_time)
            grid_store.finish(staging, result.metadata)
            self._write_finished(staging, result)
        return target

    def _format_of(self, folder: Path, name: str) -> int:
        """The store format of grid ``name``: 2 (zarr), 1 (the .npy layout before it), or
        StoreError if nothing is there."""
        if grid_store.exists(folder):
            return FORMAT
        if (folder / "values.npy").is_file() or (folder / "manifest.json").is_file():
            return 1
        if folder.is_dir() and (folder / "metadata.json").is_file():
            raise StoreError(
                f"grid '{name}' of experiment '{self.name}' has metadata.json but no values "
                f"(neither {folder / grid_store.ZARR_NAME} nor values.npy); {self._redo(folder)}"
            )
        raise StoreError(
            f"experiment '{self.name}' has no grid '{name}' ({folder}); run `genni sweep` "
            "(or Experiment.run_sweep) to compute it"
        )

    def _plan_on_disk(self, folder: Path) -> tuple[dict[str, Any], ChunkPlan]:
        """The manifest stored with a zarr grid, and its chunk plan."""
        try:
            manifest = grid_store.manifest(folder)
            shape = tuple(int(n) for n in grid_store.open_values(folder).shape)
            chunk_points = int(manifest.get("chunk_points") or math.prod(shape))
            return manifest, ChunkPlan.for_grid(shape, chunk_points)
        except Exception as error:  # zarr raises its own errors for unreadable metadata
            raise StoreError(
                f"{folder / grid_store.ZARR_NAME} cannot be read as a grid ({error}); "
                f"{self._redo(folder)}"
            ) from None

    def sweep_status(self, name: str) -> SweepStatus:
        """How far grid ``name`` is (StoreError if it is not on disk or cannot be read).

        Chunks count as done when they have a record; :meth:`check_grid` reads them back."""
        folder = self.grid_dir(name)
        if self._format_of(folder, name) == 1:
            return self._old_status(folder, name)
        manifest, plan = self._plan_on_disk(folder)
        complete = (folder / "metadata.json").is_file()
        done = len(grid_store.recorded_chunks(folder, plan.num_chunks))
        saved = manifest.get("kind") == "saved grid"
        return SweepStatus(
            name,
            complete,
            0 if saved else done,
            0 if saved else plan.num_chunks,
            plan.shape,
            plan.num_points,
        )

    def _old_status(self, folder: Path, name: str) -> SweepStatus:
        if not (folder / "metadata.json").is_file():
            raise StoreError(
                f"grid '{name}' of experiment '{self.name}' is a partial sweep in the store "
                f"format of genni_ext before 0.2 (chunks/*.npz), which this version does not "
                f"resume; delete {folder} and run the sweep again"
            )
        info = _load(folder / "grid.json", read_json, self._redo(folder))
        shape = tuple(int(n) for n in info["shape"])
        return SweepStatus(name, True, 0, 0, shape, math.prod(shape))

    def _first_format_result(self, folder: Path, name: str, wanted: dict[str, Any]) -> GridResult:
        """A complete grid of the first store format, if it is the sweep asked for (its
        manifest pins the same problem, subspace, grid and backend); else StoreError."""
        self._old_status(folder, name)  # raises for a partial sweep
        path = folder / "manifest.json"
        if not path.is_file():
            raise StoreError(
                f"grid '{name}' of experiment '{self.name}' was saved whole (save_grid), not "
                f"by a resumable sweep; delete {folder} or use another grid name"
            )
        stored = _load(path, read_json, self._redo(folder))
        keys = ("problem", "subspace", "grid", "backend")
        # The first format's chunking and fields differ; what the grid is of must not.
        check_manifest(
            {**wanted, **{key: stored.get(key) for key in keys}}, wanted, self.name, name, folder
        )
        self.chunks_computed = 0
        return self.load_grid(name)

    def check_grid(self, name: str) -> list[str]:
        """Every problem with grid ``name`` on disk, one sentence each (empty: all is well):
        each chunk read back and compared with its recorded checksum, and the files a
        complete grid needs."""
        folder = self.grid_dir(name)
        try:
            if self._format_of(folder, name) == 1:
                self._old_status(folder, name)
                self.load_grid(name)
                return []
            _manifest_on_disk, plan = self._plan_on_disk(folder)
        except StoreError as error:
            return [str(error)]
        _good, damage = grid_store.check_chunks(folder, plan)
        problems = [f"{item.reason}; the next `genni sweep` recomputes it" for item in damage]
        if (folder / "metadata.json").is_file():
            missing = plan.num_chunks - len(_good)
            if missing and not damage:
                problems.append(f"{missing} chunk(s) have no record although the grid is complete")
            try:
                self.load_grid(name)
            except StoreError as error:
                if not damage:
                    problems.append(str(error))
        return problems

    def load_grid(self, name: str) -> GridResult:
        """The GridResult saved as ``name`` (StoreError, naming the file and what to do, if
        it is missing, partial or damaged)."""
        from .grid import GridResult, Marker

        folder = self.grid_dir(name)
        status = self.sweep_status(name)
        if not status.complete:
            raise StoreError(
                f"grid '{name}' of experiment '{self.name}' is partial ({status.chunks_done} "
                f"of {status.num_chunks} chunks); run the same `genni sweep` again to finish it"
            )
        redo = self._redo(folder)
        metadata = _load(folder / "metadata.json", read_json, redo)
        items = _load(folder / "markers.json", read_json, redo)
        try:
            markers = [
                Marker(
                    item["name"], torch.tensor(item["coords"], dtype=torch.float64), item["loss"]
                )
                for item in items
            ]
        except (KeyError, TypeError, ValueError) as error:
            raise StoreError(
                f"{folder / 'markers.json'} does not hold markers ({error!r}); {redo}"
            ) from None
        grid = self._read_grid(folder)
        if self._format_of(folder, name) == 1:
            values = _load(folder / "values.npy", read_array, redo)
        else:
            _manifest_on_disk, plan = self._plan_on_disk(folder)
            try:
                values, _seconds = grid_store.read_all(folder, plan)
            except ValueError as error:
                raise StoreError(
                    f"grid '{name}' of experiment '{self.name}': {error}; run the same "
                    "`genni sweep` again to recompute the damaged chunks"
                ) from None
        if tuple(values.shape) != grid.shape:
            raise StoreError(
                f"{folder}: values of shape {tuple(values.shape)} for a grid of shape "
                f"{grid.shape}; {redo}"
            )
        return GridResult(values=values, grid=grid, markers=markers, metadata=metadata)

    def open_grid(self, name: str) -> xarray.DataArray:
        """Grid ``name``'s J as an xarray DataArray read from the zarr store (dims c1..cm,
        coordinates from the axes, the result's metadata in ``attrs``)."""
        folder = self.grid_dir(name)
        if self._format_of(folder, name) == 1:
            return self.load_grid(name).to_xarray()
        self.load_grid(name)  # complete and undamaged, or a StoreError that says why
        array = grid_store.open_data_array(folder)
        array.attrs = {"genni_metadata": array.attrs.get("genni_metadata", {})}
        return array

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
        redo = self._redo(folder)
        hashes = _load(origin, read_json, redo) if origin.is_file() else {}  # older: unknown
        return Subspace(
            _load(folder / "subspace_center.npy", read_array, redo),
            _load(folder / "subspace_basis.npy", read_array, redo),
            _load(folder / "subspace_points.npy", read_array, redo),
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
        client: Any = None,
        source: ProblemSource | None = None,
    ) -> GridResult:
        """Sweep ``grid`` on ``subspace`` for ``problem`` into ``grids/<name>/``, resumably.

        The grid's points are evaluated in the chunks of a :class:`ChunkPlan` (about
        ``chunk_points`` points each, rounded up to whole slabs of the grid's first axis;
        None: about 2·10¹¹ flops, see :func:`auto_chunk_points`); each chunk is written to
        the zarr array as soon as it is computed. Run again with the same arguments after an
        interruption, it computes only the missing chunks, and recomputes any whose values
        no longer match their checksum; a finished grid is loaded, not recomputed. With a
        different problem, subspace, grid, dtype, precision, backend or chunk size it raises
        StoreError naming what differs. Returns the same GridResult as
        :func:`genni_ext.grid.sweep_grid` (values bitwise equal on the fused CPU engine;
        ``wall_time_s`` is the sum over the chunks' compute times, and
        ``metadata["store"]`` records the chunking).

        ``client`` (a ``distributed.Client``) runs one task per missing chunk on its
        workers, which must see this experiment's folder at the same path (a shared file
        system). Each worker gets the problem from ``source`` (default: the problem
        itself, shipped once to every worker; :class:`ConfigSource` rebuilds it on the
        worker from the experiment's config), checks its θ, probe and target hashes against
        the grid's manifest, and writes its chunk.
        """
        from .grid import Grid, GridResult, check_match, grid_markers, grid_metadata
        from .sweep import checked_inputs, decide

        folder = self.grid_dir(name)
        if not isinstance(grid, Grid):
            raise InputError(f"grid must be a Grid, got {type(grid).__name__}")
        check_match(problem, subspace, grid)
        if chunk_points is None:
            chunk_points = auto_chunk_points(problem, grid.size)
        plan = ChunkPlan.for_grid(grid.shape, positive_int(chunk_points, "chunk_points"))
        if num_threads is not None:
            positive_int(num_threads, "num_threads")
        if not isinstance(progress, bool):
            raise InputError(f"progress must be True or False, got {progress!r}")
        if client is not None:
            from .cluster import check_client

            check_client(client)
        coeffs = grid.coeffs.to(dtype=problem.theta.dtype, device=problem.inputs.device)
        _center, _basis, first_coeffs, inputs, targets = checked_inputs(
            problem.model,
            subspace.center,
            subspace.basis,
            coeffs[slice(*plan.bounds(0))],
            problem.inputs,
            problem.targets,
        )
        decision = decide(problem.model, inputs, targets, backend, precision=precision)
        manifest = sweep_manifest(problem, subspace, grid, decision.backend, plan, precision)
        task = ChunkTask(folder, plan, decision, num_threads, manifest["problem"])

        self.chunks_computed = 0
        on_disk = folder.is_dir() and any(folder.iterdir())
        first_chunk: tuple[torch.Tensor, float] | None = None
        fresh = False
        if on_disk and not grid_store.exists(folder) and self._format_of(folder, name) == 1:
            return self._first_format_result(folder, name, manifest)
        if on_disk and grid_store.exists(folder):
            stored, _plan = self._plan_on_disk(folder)
            if stored.get("kind") == "saved grid":
                raise StoreError(
                    f"grid '{name}' of experiment '{self.name}' was saved whole (save_grid), "
                    f"not by a resumable sweep; delete {folder} or use another grid name"
                )
            check_manifest(stored, manifest, self.name, name, folder)
        else:
            # Compute before writing anything, so that bad input that only the sweep
            # detects leaves no files behind: the first chunk here, or with a cluster (which
            # then computes every chunk, none waiting on this one) its first point.
            fresh = True
            if client is None:
                first_chunk = task.compute(problem, subspace, first_coeffs, 0)
                self.chunks_computed = 1
            else:
                task.compute(problem, subspace, first_coeffs[:1], 0)

        folder.mkdir(parents=True, exist_ok=True)
        with exclusive(folder / ".lock", f"grid '{name}' of experiment '{self.name}'"):
            if fresh:
                if not grid_store.exists(folder):
                    remove_temporaries(folder)
                    self._write_grid_and_subspace(folder, grid, subspace)
                    grid_store.create(folder, grid, plan, {**manifest, "created": now()})
                if first_chunk is not None:
                    grid_store.write_chunk(folder, plan, 0, *first_chunk)
            else:
                # The manifest matched: rewriting the small files repairs a lost one.
                self._write_grid_and_subspace(folder, grid, subspace)
                if (folder / "metadata.json").is_file():
                    try:
                        return self.load_grid(name)
                    except StoreError:
                        (folder / "metadata.json").unlink()  # damaged: redo what is bad
            remove_temporaries(folder)
            remove_temporaries(folder / grid_store.DONE_DIR)
            good, damage = grid_store.check_chunks(folder, plan)
            for item in damage:
                grid_store.forget_chunk(folder, item.index)
                if progress:
                    print(f"grid '{name}': {item.reason}; recomputing it")
            missing = [index for index in range(plan.num_chunks) if index not in good]
            if client is None:
                self.chunks_computed += run_local(
                    task, problem, subspace, coeffs, missing, progress, name
                )
            else:
                self.chunks_computed += run_on_cluster(
                    client, task, source or problem, subspace, coeffs, missing, progress, name
                )
            try:
                values, wall_time = grid_store.read_all(folder, plan)
            except ValueError as error:
                raise StoreError(
                    f"grid '{name}' of experiment '{self.name}': {error} after the sweep; run "
                    "it again to recompute that chunk"
                ) from None
            metadata = grid_metadata(
                problem, grid, backend=decision.backend, wall_time_s=wall_time, precision=precision
            )
            metadata["store"] = {
                "experiment": self.name,
                "grid": name,
                "chunk_points": plan.chunk_points,
                "num_chunks": plan.num_chunks,
            }
            result = GridResult(
                values=values,
                grid=grid,
                markers=grid_markers(problem, subspace),
                metadata=json.loads(json_text(metadata)),
            )
            grid_store.finish(folder, result.metadata)
            self._write_finished(folder, result)
            return result


def _load_zarr(folder: Path, key: str, redo: str) -> torch.Tensor:
    """Array ``key`` of the search in ``folder``, or StoreError naming it."""
    try:
        return search_store.read(folder, key)
    except Exception as error:  # zarr raises FileNotFoundError, KeyError or codec errors
        path = folder / search_store.ZARR_NAME / key
        raise StoreError(f"{path} cannot be read ({type(error).__name__}); {redo}") from None


def _load(path: Path, read: Callable[[Path], Any], redo: str) -> Any:
    """``read(path)``, or StoreError naming the file, what is wrong and ``redo``."""
    try:
        return read(path)
    except FileNotFoundError:
        raise StoreError(f"{path} is missing; {redo}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise StoreError(f"{path} cannot be read ({error}); {redo}") from None


def open_grid(
    experiment: str, grid: str, home: str | os.PathLike[str] | None = None
) -> xarray.DataArray:
    """Grid ``grid`` of ``experiment`` (under ``home``, default :func:`genni_home`) as an
    ``xarray.DataArray``: see :meth:`Experiment.open_grid`."""
    return Experiment(experiment, home).open_grid(grid)


__all__ = [
    "ConfigSource",
    "Experiment",
    "StoreError",
    "SweepStatus",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "auto_chunk_points",
    "check_name",
    "folder_size",
    "genni_home",
    "list_experiments",
    "open_grid",
]
