"""The experiment store: searches and grids on disk, checked when read, resumable sweeps.

Layout under the home (see :func:`genni_home`)::

    experiments/<experiment>/
        config.yml                       the run's configuration (YAML)
        problem.zarr/                    θ, the probes and the targets, written once when the
                                         experiment was made (genni_ext.store.zarr_problem;
                                         absent in an experiment made before it)
        analysis.json                    what `genni analyse` found
        checksums.json                   SHA-256 of config.yml, analysis.json and
                                         problem.zarr's files
        searches/<search>/               one SearchResult
            search.zarr/                 params, starts, losses, history, history_steps,
                                         restarts (absent in a search saved before them)
                                         (genni_ext.store.zarr_searches)
            metadata.json                seeds, config, the problem's description, the id
            checksums.json               SHA-256 of every file of the search
        grids/<grid>/                    one GridResult, and the subspace it lies on
            grid.zarr/                   J as a zarr v3 array (genni_ext.store.zarr_grids), with
                                         the manifest (what the sweep is of) and coordinates
            done/<k>.json                chunk k written: its checksum and compute time
            grid.json coeffs.npy axis_<i>.npy
            subspace_center.npy subspace_basis.npy subspace_points.npy subspace.json
            markers.json
            checksums.json               SHA-256 of every file but J's chunks (done/ has
                                         theirs), and a copy of the manifest
            metadata.json                written last: its presence means "complete"
        plots/

A grid's small arrays are ``.npy`` files (readable with numpy alone); J and searches are
zarr, which xarray, Dask and zarr itself read (``Experiment.open_grid``,
``Experiment.open_search``, ``xarray.open_zarr``); metadata is JSON. Every file is written
atomically (genni_ext.store.files), so a crash leaves either the old file or the new one, never
half of one; a full disk or a file-size limit raises one StoreError naming the file. A
search is written as a whole folder the same way. Names that start with a dot are
reserved for temporary files and locks.

Nothing is silently wrong: every file has a checksum recorded when it is written, and
every load (``load_grid``, ``open_grid``, ``load_subspace``, ``load_search``,
``load_config``) checks the files it reads, raising a StoreError that names the file and
what repairs it. :meth:`Experiment.check` checks everything (``genni check``). Results
written before checksums were recorded are read as before, their chunks still checked.

:meth:`Experiment.run_sweep` computes a grid in the chunks of a ChunkPlan, each written to
the zarr array as soon as it is computed, and pins the problem (hashes of θ, the probes
and the targets, the model), the subspace, the grid, the dtype, the precision, the backend
and the chunking in the manifest, with the search the subspace came from. Calling it again
after an interruption (Ctrl-C, a kill, a crash, a full disk) computes only the chunks that
are missing or damaged and writes anew every other file that is damaged, keeping the
computed J; a folder left before any chunk was computed is started afresh; with different
arguments it refuses and says what differs. With a Dask client each missing chunk is a
task on the cluster. The fused CPU engine computes every grid point independently and in a
fixed order, so the assembled values equal an uninterrupted
:func:`genni_ext.core.grid.sweep_grid` bit for bit. One process at a time may run a given grid's
sweep (a lock that records its holder; one left by a process that died is cleared with a
warning). A search that grids were built from is replaced only with ``replace=True``
(``genni search --replace``). Grids and searches of the store's first format (``.npy``
files) are still read, by :mod:`genni_ext.store.format1` alone.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from genni_ext._validate import positive_int
from genni_ext.core.chunking import ChunkPlan
from genni_ext.core.grid import Grid, GridResult, Marker
from genni_ext.core.problem import Problem
from genni_ext.core.sgd_search import SearchResult
from genni_ext.core.subspace import Subspace
from genni_ext.errors import InputError, StoreError
from genni_ext.store import format1, zarr_grids, zarr_problem, zarr_searches
from genni_ext.store.config import build_problem, validate_config
from genni_ext.store.files import (
    CHECKSUMS,
    Checksums,
    FileDamage,
    atomic_write_bytes,
    atomic_write_text,
    bytes_digest,
    file_digest,
    files_under,
    fsync_dir,
    json_text,
    load_file,
    lock_held,
    lock_holder,
    now,
    package_version,
    read_array,
    read_json,
    record_checksum,
    record_checksums,
    room_for,
    staged_folder,
    tensor_hash,
    write_array,
    write_checksums,
    write_json,
)
from genni_ext.store.home import check_home, genni_home
from genni_ext.store.manifest import FORMAT, check_manifest
from genni_ext.store.names import check_name

if TYPE_CHECKING:
    import xarray

    from genni_ext.core.grid import Grid, GridResult
    from genni_ext.core.sgd_search import SearchResult
    from genni_ext.core.subspace import Subspace

LOCK = ".lock"
_SUBSPACE_FILES = (
    "subspace_center.npy",
    "subspace_basis.npy",
    "subspace_points.npy",
    "subspace.json",
)


def list_experiments(home: str | os.PathLike[str] | None = None) -> list[Experiment]:
    """Every experiment under ``home`` (default :func:`genni_home`), sorted by name."""
    root = check_home(Path(home).absolute() if home is not None else genni_home())
    folder = root / "experiments"
    if not folder.is_dir():
        return []
    return [
        Experiment(entry.name, root)
        for entry in sorted(folder.iterdir())
        if entry.is_dir() and not entry.name.startswith(".")
    ]


# --- sweep status and checks ----------------------------------------------------------------


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


@dataclass(frozen=True)
class Finding:
    """One line of :meth:`Experiment.check`: ``where`` (``config.yml``, ``searches/<name>``,
    ``grids/<name>``), ``text`` (a sentence: for damage, the file and what repairs it) and
    ``kind``: "ok", "damaged", or "note" (worth knowing, nothing wrong with the data)."""

    where: str
    text: str
    kind: str


@dataclass(frozen=True)
class GridFiles:
    """What a zarr grid's folder holds, read without trusting it: the checksums recorded
    (None: none, or damaged), every recorded file that is not as written (checksums.json
    and J's metadata included), the manifest (from J's metadata where that is intact, else
    the copy kept with the checksums) and whether it predates checksums (``legacy``)."""

    checksums: Checksums | None
    damage: list[FileDamage]
    manifest: dict[str, Any] | None
    legacy: bool


# --- the experiment -------------------------------------------------------------------------


class Experiment:
    """One experiment folder, ``<home>/experiments/<name>/`` (home: :func:`genni_home`).

    Nothing is created until something is saved. Names of experiments, searches and
    grids are checked with :func:`check_name`; a home that is a file is refused.
    ``chunks_computed`` is the number of chunks the last :meth:`run_sweep` call computed
    (the rest it found on disk).
    """

    chunks_computed: int = 0

    def __init__(self, name: str, home: str | os.PathLike[str] | None = None) -> None:
        self.name = check_name(name, "experiment name")
        self.home = check_home((Path(home) if home is not None else genni_home()).absolute())
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
        """Names of the grids on disk, complete or partial (a folder left before anything
        of its grid was written is not one)."""
        return [
            name
            for name in self._names("grids")
            if zarr_grids.exists(self.path / "grids" / name)
            or (self.path / "grids" / name / CHECKSUMS).is_file()
            or format1.is_grid(self.path / "grids" / name)
            or (self.path / "grids" / name / "metadata.json").is_file()
        ]

    # --- files of the experiment itself: config.yml, analysis.json --------------------------

    def _write_recorded(self, path: Path, data: bytes) -> Path:
        """Write ``data`` to ``path`` (in the experiment's folder) and record its checksum."""
        atomic_write_bytes(path, data)
        record_checksum(self.path, path.name, bytes_digest(data))
        return path

    def _check_recorded(self, path: Path, action: str) -> None:
        """StoreError naming ``path`` and ``action`` if it is not as it was written."""
        checksums, damage = Checksums.load(self.path)
        if damage is None and checksums is not None:
            damage = checksums.check(path.name)
        if damage is not None:
            raise StoreError(f"{damage}; {action}")

    def _config_action(self) -> str:
        command = "sweep" if self.searches() else "search"
        return (
            f"run `genni {command} --config FILE` with the config the experiment was made "
            f"with: it checks that config{' against the search' if command == 'sweep' else ''} "
            "and writes config.yml anew"
        )

    def _analysis_action(self) -> str:
        return f"run `genni analyse {self.name}` again: it writes the file anew"

    @property
    def analysis_path(self) -> Path:
        """``analysis.json``: what ``genni analyse`` found (written whole, atomically)."""
        return self.path / "analysis.json"

    def save_analysis(self, analysis: Mapping[str, Any]) -> Path:
        """Write the JSON-able mapping ``analysis`` to ``analysis.json``."""
        if not isinstance(analysis, Mapping):
            raise InputError(f"analysis must be a mapping, got {type(analysis).__name__}")
        return self._write_recorded(self.analysis_path, json_text(dict(analysis)).encode())

    def load_analysis(self) -> dict[str, Any] | None:
        """The mapping in ``analysis.json``, or None when the experiment was not analysed."""
        if not self.analysis_path.is_file():
            return None
        self._check_recorded(self.analysis_path, self._analysis_action())
        try:
            return read_json(self.analysis_path)
        except (OSError, ValueError) as error:
            raise StoreError(
                f"{self.analysis_path} is damaged ({error}); {self._analysis_action()}"
            ) from None

    def save_config(self, config: Mapping[str, Any]) -> Path:
        """Write ``config`` (a mapping of plain YAML values) to ``config.yml``."""
        return self._write_recorded(self.config_path, _config_bytes(config))

    # --- the problem itself: problem.zarr ---------------------------------------------------

    @property
    def problem_path(self) -> Path:
        """``problem.zarr``: θ, the probes and the targets, kept when the experiment was made
        (genni_ext.store.zarr_problem)."""
        return self.path / zarr_problem.ZARR_NAME

    @property
    def keeps_problem(self) -> bool:
        """Whether the experiment keeps its problem in problem.zarr (there, or recorded in
        checksums.json: one deleted since is damage, not an experiment made before it)."""
        if zarr_problem.exists(self.path):
            return True
        return bool(self._problem_files())

    def _problem_files(self) -> list[str]:
        """The files of problem.zarr recorded in the experiment's checksums.json."""
        checksums, _damage = Checksums.load(self.path)
        prefix = f"{zarr_problem.ZARR_NAME}/"
        return [name for name in (checksums.files if checksums else ()) if name.startswith(prefix)]

    def save_problem(self, problem: Problem, model: Mapping[str, Any] | None) -> Path:
        """Keep ``problem`` (θ, probes, targets) in problem.zarr with the model spec ``model``
        (a config's ``model`` mapping, or None); once: StoreError if it is kept already."""
        if not isinstance(problem, Problem):
            raise InputError(f"problem must be a genni_ext.Problem, got {type(problem).__name__}")
        if self.keeps_problem:
            raise StoreError(
                f"experiment '{self.name}' keeps its problem already ({self.problem_path}); "
                "it is written once, when the experiment is made"
            )
        record = zarr_problem.model_record(model)
        with room_for(self.path):
            self.path.mkdir(parents=True, exist_ok=True)
        path = zarr_problem.write(self.path, problem, record)
        names = [f"{path.name}/{name}" for name in files_under(path)]
        record_checksums(self.path, {name: file_digest(self.path / name) for name in names})
        return path

    def load_problem(
        self, config: Mapping[str, Any] | None = None, *, device: str | None = None
    ) -> Problem:
        """The experiment's problem on ``device`` (default: ``config``'s, else the CPU): the
        one kept in problem.zarr (its model built from the stored spec and checked against
        the stored targets: genni_ext.store.zarr_problem), or, for an experiment made before
        problem.zarr, built from ``config`` (default: config.yml) as it was then."""
        if self.keeps_problem:
            self._check_problem_record()
            where = device or (config or {}).get("device") or "cpu"
            return zarr_problem.load(self.path, self.name, str(where))
        return build_problem(config if config is not None else validate_config(self.load_config()))

    def _check_problem_record(self) -> None:
        """StoreError naming every file of problem.zarr that is not as its checksum says. A
        damaged checksums.json is not one of them: it is reported on its own (and written
        anew by the next command that writes config.yml); the arrays are then checked
        against the hashes in problem.zarr's attributes alone."""
        checksums, _bad = Checksums.load(self.path)
        damage = checksums.damage(self._problem_files()) if checksums is not None else []
        if damage:
            text = "; ".join(str(item) for item in damage)
            raise StoreError(f"{text}; {zarr_problem.redo(self.path)}")

    @classmethod
    def create(
        cls,
        problem: Problem,
        name: str,
        *,
        home: str | os.PathLike[str] | None = None,
        model_spec: str | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
    ) -> Experiment:
        """A new experiment ``name`` (under ``home``) that keeps ``problem``: its θ, probes
        and targets in problem.zarr, written once.

        ``model_spec`` ("package.module:function" or "path/to/file.py:function", called with
        ``model_kwargs``) is how the model's code is rebuilt by the CLI and Dask workers: it
        is built and checked here to give the problem's targets at θ, and recorded with the
        sha256 of its source file in problem.zarr and as ``model`` in a config.yml of
        defaults (the problem's device, number and seed of probes; ``genni sweep
        --experiment NAME`` and ``genni analyse`` read it; its θ and probe sections are not
        used, the stored arrays are). Without it the experiment's stored arrays can still
        be read (listed, plotted, analysed where that needs no model), and commands that
        need the model say that it has no model factory. Bad input (a spec that cannot be
        built or computes other targets, an experiment of that name already there) raises
        before anything is written; the folder is written whole or not at all."""
        experiment = cls(name, home)
        if not isinstance(problem, Problem):
            raise InputError(f"problem must be a genni_ext.Problem, got {type(problem).__name__}")
        if experiment.exists:
            raise StoreError(
                f"experiment '{experiment.name}' exists already ({experiment.path}); an "
                "experiment's problem is written once: pick another name"
            )
        config = None
        record = None
        if model_spec is None:
            if model_kwargs:
                raise InputError("model_kwargs given without model_spec (the factory to call)")
        else:
            raw = {
                "experiment": experiment.name,
                "model": {"factory": model_spec, "kwargs": dict(model_kwargs or {})},
                "probes": {"num_probes": problem.num_probes, "seed": problem.seed},
                "device": str(problem.inputs.device),
            }
            config = validate_config(raw)  # a spec that cannot be built: ConfigError
            record = zarr_problem.model_record(config["model"])
            try:
                zarr_problem.check_model(
                    zarr_problem.build(record, experiment.name),
                    zarr_problem.of_problem(problem),
                    f"model_spec {model_spec!r}",
                    str(problem.inputs.device),
                )
            except StoreError as error:
                raise InputError(str(error)) from None
        with staged_folder(experiment.path) as staging:
            zarr_problem.write(staging, problem, record)
            if config is not None:
                atomic_write_bytes(staging / experiment.config_path.name, _config_bytes(config))
            write_checksums(staging, files_under(staging))
        return experiment

    def load_config(self) -> dict[str, Any]:
        """The mapping in ``config.yml`` (StoreError if there is none, or it is not as it
        was written)."""
        import yaml

        if not self.config_path.is_file():
            if self.keeps_problem and not zarr_problem.has_model(self.path):
                raise StoreError(zarr_problem.no_model(self.name))
            raise StoreError(
                f"experiment '{self.name}' has no config.yml ({self.config_path}); run "
                "`genni search --config FILE` first"
            )
        redo = self._config_action()
        self._check_recorded(self.config_path, redo)
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
        replace: bool = False,
    ) -> Path:
        """Save ``result`` as ``searches/<name>/``.

        Every tensor field becomes an array of ``search.zarr``; the other fields (seeds,
        config), the search's id (a hash of its tensors) and, if given,
        ``problem.describe()`` go to ``metadata.json``, and every file's checksum to
        ``checksums.json``. The folder is written whole and renamed into place, so a crash
        leaves the old search or the new one. A search of that name is replaced, but one
        that grids were built from only with ``replace=True`` (StoreError naming them
        otherwise: see :meth:`grids_from_search`).
        """

        target = self.search_dir(name)
        if not isinstance(result, SearchResult):
            raise InputError(f"result must be a SearchResult, got {type(result).__name__}")
        if not replace:
            self.refuse_to_replace(name)
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
            "id": search_id(result),
            "checksums": CHECKSUMS,
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
            with room_for(target / zarr_searches.ZARR_NAME):
                zarr_searches.write(staging, tensors)
            atomic_write_text(staging / "metadata.json", text)
            write_checksums(staging, files_under(staging))
        return target

    def refuse_to_replace(self, name: str) -> None:
        """StoreError if grids were built from search ``name`` (saying how to go on)."""
        built = self.grids_from_search(name)
        if built:
            raise StoreError(
                f"search '{name}' of experiment '{self.name}' is the one grid(s) "
                f"{', '.join(built)} were built from, so it is not replaced by accident. Run "
                "`genni search --replace` to replace it anyway (it then names the grids that "
                "no longer lie on the search's plane), or give the new search another name "
                "(--search-name NAME), or use another experiment"
            )

    def search_id(self, name: str = "search") -> str:
        """The id of search ``name``: a hash of its tensors (from its metadata; computed
        for a search saved before ids were recorded)."""
        recorded = self.search_metadata(name).get("id")
        return str(recorded) if recorded else search_id(self.load_search(name))

    def grids_from_search(self, name: str = "search") -> dict[str, str | None]:
        """The grids built from search ``name`` (as :meth:`run_sweep` records with
        ``search=``), and those on the same plane (refined grids), each with the id of the
        search it was built from (None where not recorded). A sweep that recorded no search
        (run before searches were recorded, or without ``search=``) counts as built from
        the search config.yml names, the one `genni sweep` builds its planes from."""
        manifests = {grid: self._recorded_manifest(self.grid_dir(grid)) for grid in self.grids()}
        try:
            swept_from = (self.load_config().get("search") or {}).get("name", "search")
        except (StoreError, AttributeError):
            swept_from = None  # no config (a library's experiment), or a damaged one
        built: dict[str, str | None] = {}
        planes: dict[str, str | None] = {}
        unrecorded = []
        for grid, manifest in manifests.items():
            if manifest is None or manifest.get("kind") == "saved grid":
                continue
            plane = json.dumps(manifest.get("subspace"), sort_keys=True)
            origin = manifest.get("search")
            if origin is None:
                unrecorded.append((grid, plane))
            elif origin.get("name") == name:
                built[grid] = planes[plane] = origin.get("id")
        for grid, plane in unrecorded:
            if plane in planes or swept_from == name:
                built[grid] = planes.get(plane)
        return dict(sorted(built.items()))

    def search_metadata(self, name: str = "search") -> dict[str, Any]:
        """The metadata of search ``name`` (seeds, config, the problem's description)."""
        folder = self.search_dir(name)
        path = folder / "metadata.json"
        if not path.is_file():
            if folder.is_dir():
                raise StoreError(f"{path} is missing; {self._search_redo(name)}")
            have = ", ".join(self.searches()) or "none"
            raise StoreError(
                f"experiment '{self.name}' has no search '{name}' ({path.parent}; searches: "
                f"{have}); run `genni search` first"
            )
        checksums, damage = Checksums.load(folder)
        if damage is None and checksums is not None:
            damage = checksums.check("metadata.json")
        if damage is not None:
            raise StoreError(f"{damage}; {self._search_redo(name)}")
        metadata = load_file(path, read_json, lambda: self._search_redo(name))
        if not isinstance(metadata, dict) or not {"fields", "tensors"} <= metadata.keys():
            raise StoreError(f"{path} is not a search's metadata; {self._search_redo(name)}")
        return metadata

    def _search_redo(self, name: str) -> str:
        """What repairs search ``name``: computing it again (never deleting it)."""
        built = list(self.grids_from_search(name))
        redo = (
            f"compute it again with `genni search --config FILE{' --replace' if built else ''}"
            f"{'' if name == 'search' else f' --search-name {name}'}` (FILE: the config it "
            "was run with)"
        )
        if built:
            redo += (
                f"; grids {', '.join(built)} were built from it, and that command says whether "
                "the new search is the one they were built from"
            )
        return redo

    def _search_damage(self, name: str) -> list[FileDamage]:
        """The files of search ``name`` that are not as written (every one, if its
        checksums cannot be read; none for a search saved before they were recorded)."""
        folder = self.search_dir(name)
        checksums, damage = Checksums.load(folder)
        if damage is not None:
            return [damage]
        if checksums is not None:
            return checksums.damage()
        try:  # a search saved since checksums were recorded says so in its metadata
            recorded = read_json(folder / "metadata.json").get("checksums") == CHECKSUMS
        except (OSError, ValueError, AttributeError):
            recorded = False  # unreadable metadata: search_metadata names it
        return [FileDamage(folder / CHECKSUMS, "is missing")] if recorded else []

    def load_search(self, name: str = "search") -> SearchResult:
        """The SearchResult saved as ``name`` (tensors on the CPU), its files checked."""

        metadata = self.search_metadata(name)
        folder = self.search_dir(name)
        damage = self._search_damage(name)
        if damage:
            text = "; ".join(str(item) for item in damage)
            raise StoreError(
                f"search '{name}' of experiment '{self.name}': {text}; {self._search_redo(name)}"
            )
        values: dict[str, Any] = dict(metadata["fields"])
        redo = functools.partial(self._search_redo, name)  # called only on an error
        for key in metadata["tensors"]:
            if zarr_searches.exists(folder):
                values[key] = _load_zarr(folder, key, redo)
            else:
                values[key] = format1.read_search_tensor(folder, key, redo)
        try:
            return SearchResult(**values)
        except (TypeError, ValueError) as error:
            raise StoreError(
                f"search '{name}' in {folder} does not fit together ({error}); {redo()}"
            ) from None

    def open_search(self, name: str = "search") -> xarray.Dataset:
        """Search ``name``'s arrays as an xarray Dataset (dims start, parameter, record)."""
        self.load_search(name)  # complete and as written, or a StoreError that says why
        folder = self.search_dir(name)
        if not zarr_searches.exists(folder):
            raise StoreError(
                f"search '{name}' of experiment '{self.name}' is in the first store format "
                f"(.npy files); run `genni search` again to write it as zarr"
            )
        return zarr_searches.open_dataset(folder)

    def check_search(self, name: str) -> list[str]:
        """Every problem with search ``name`` on disk, one sentence each naming the file
        and what repairs it (empty: all is well)."""
        damage = self._search_damage(name)
        if damage:
            return [f"{item}; {self._search_redo(name)}" for item in damage]
        try:
            self.load_search(name)
        except StoreError as error:
            return [str(error)]
        return []

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

    def write_grid_skeleton(
        self,
        folder: Path,
        grid: Grid,
        subspace: Subspace | None,
        plan: ChunkPlan,
        manifest: dict[str, Any],
    ) -> None:
        """Every file of a grid but J's chunks, the markers and the metadata, then their
        checksums with a copy of ``manifest``. The small files are written in place; the
        zarr group (J's metadata, the coordinates) is made in a temporary folder and moved
        in file by file, so that J's chunks already there stay."""
        self._write_grid_and_subspace(folder, grid, subspace)
        staging = Path(tempfile.mkdtemp(prefix=".grid.", suffix=".tmp", dir=folder))
        try:
            with room_for(folder / zarr_grids.ZARR_NAME):
                zarr_grids.create(staging, grid, plan, manifest)
                for name in files_under(staging):
                    (folder / name).parent.mkdir(parents=True, exist_ok=True)
                    os.replace(staging / name, folder / name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        fsync_dir(folder / zarr_grids.ZARR_NAME)
        finished = ("markers.json", "metadata.json")
        names = [name for name in self._grid_files_now(folder) if name not in finished]
        write_checksums(folder, names, extra={"manifest": manifest})

    @staticmethod
    def _grid_files_now(folder: Path) -> list[str]:
        """The files of a grid folder that its checksums.json covers (all but J's chunks)."""
        return files_under(folder, zarr_grids.is_chunk_file)

    def write_finished_grid(
        self, folder: Path, result: GridResult, manifest: dict[str, Any]
    ) -> None:
        """markers.json, the checksums of every file, then metadata.json (the completion
        mark) last."""
        markers = [
            {"name": marker.name, "coords": marker.coords.tolist(), "loss": marker.loss}
            for marker in result.markers
        ]
        write_json(folder / "markers.json", markers)
        text = json_text(result.metadata)
        names = [name for name in self._grid_files_now(folder) if name != "metadata.json"]
        write_checksums(
            folder,
            names,
            written={"metadata.json": bytes_digest(text.encode("utf-8"))},
            extra={"manifest": manifest},
        )
        atomic_write_text(folder / "metadata.json", text)

    def _read_grid(self, folder: Path, redo: str) -> Grid:

        info = load_file(folder / "grid.json", read_json, redo)
        coeffs = load_file(folder / "coeffs.npy", read_array, redo)
        axes = None
        try:
            count, shape = int(info["num_axes"]), tuple(int(n) for n in info["shape"])
        except (KeyError, TypeError, ValueError) as error:
            raise StoreError(
                f"{folder / 'grid.json'} does not describe a grid ({error!r}); {redo}"
            ) from None
        if count:
            axes = tuple(
                load_file(folder / f"axis_{i}.npy", read_array, redo) for i in range(count)
            )
        try:
            return Grid(coeffs, shape, axes)
        except InputError as error:
            raise StoreError(f"the grid files in {folder} do not agree ({error}); {redo}") from None

    @staticmethod
    def _grid_action(manifest: Mapping[str, Any] | None) -> str:
        """What repairs a damaged file of a grid with ``manifest`` (never deleting J)."""
        if (manifest or {}).get("kind") == "saved grid":
            return "save the grid again (Experiment.save_grid), or restore the file from a backup"
        return (
            "run the same `genni sweep` again: it writes the file anew and keeps every "
            "computed chunk of J"
        )

    @staticmethod
    def _chunk_action(manifest: Mapping[str, Any] | None) -> str:
        """What repairs a damaged or missing chunk of J."""
        if (manifest or {}).get("kind") == "saved grid":
            return "save the grid again (Experiment.save_grid)"
        return "the next `genni sweep` of this grid recomputes that chunk and keeps the others"

    def _untold(self, folder: Path, name: str) -> str:
        return (
            f"there is no telling what grid '{name}' of experiment '{self.name}' was computed "
            f"for: J's metadata ({folder / zarr_grids.METADATA_FILE}) and the copy of its "
            f"manifest in {folder / CHECKSUMS} are both damaged or missing, so its chunks "
            f"cannot be used; delete {folder} and run the sweep again"
        )

    def save_grid(self, result: GridResult, name: str, *, subspace: Subspace | None = None) -> Path:
        """Save a finished GridResult (from :func:`genni_ext.core.grid.sweep_grid`) as
        ``grids/<name>/``, with the subspace it was swept on if given (for
        :meth:`load_subspace` and ε-set parameters). Replaces a grid of that name."""

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
        manifest = {
            "format": FORMAT,
            "kind": "saved grid",
            "grid": {"shape": list(grid.shape)},
            "num_chunks": 1,
            "checksums": CHECKSUMS,
        }
        with staged_folder(target) as staging:
            self.write_grid_skeleton(staging, grid, subspace, plan, manifest)
            wall_time = float(result.metadata.get("wall_time_s", 0.0) or 0.0)
            zarr_grids.write_chunk(staging, plan, 0, result.values.reshape(-1), wall_time)
            zarr_grids.finish(staging, result.metadata)
            self.write_finished_grid(staging, result, manifest)
        return target

    @staticmethod
    def grid_layout(folder: Path) -> int | None:
        """The store format of the grid in ``folder``: 2 (zarr), 1 (:mod:`.format1`), or None
        if no grid was written there."""
        if zarr_grids.exists(folder) or (folder / CHECKSUMS).is_file():
            return FORMAT
        if format1.is_grid(folder):
            return 1
        return None

    def _format_of(self, folder: Path, name: str) -> int:
        """:meth:`grid_layout`, or StoreError if no grid is there."""
        layout = self.grid_layout(folder)
        if layout is not None:
            return layout
        if folder.is_dir() and (folder / "metadata.json").is_file():
            raise StoreError(
                f"grid '{name}' of experiment '{self.name}' has metadata.json but no values "
                f"(neither {folder / zarr_grids.ZARR_NAME} nor {format1.VALUES}); "
                f"{format1.redo(folder)}"
            )
        raise StoreError(
            f"experiment '{self.name}' has no grid '{name}' ({folder}); run `genni sweep` "
            "(or Experiment.run_sweep) to compute it"
        )

    @staticmethod
    def has_results(folder: Path) -> bool:
        """Whether anything computed is in ``folder``: a chunk's record or the metadata."""
        done = folder / zarr_grids.DONE_DIR
        return (folder / "metadata.json").is_file() or (done.is_dir() and any(done.glob("*.json")))

    def grid_files(self, folder: Path) -> GridFiles:
        """Every recorded file of the zarr grid in ``folder`` checked against its checksum,
        and the manifest it can be trusted with (see :class:`GridFiles`)."""
        checksums, bad = Checksums.load(folder)
        damage = [bad] if bad is not None else []
        if checksums is not None:
            damage += checksums.damage()
        metadata_file = folder / zarr_grids.METADATA_FILE
        manifest: dict[str, Any] | None = None
        if not any(item.path == metadata_file for item in damage):
            if not metadata_file.is_file():
                damage.append(FileDamage(metadata_file, "is missing"))
            else:
                try:
                    manifest = zarr_grids.manifest(folder)
                except Exception as error:  # zarr raises its own errors for bad metadata
                    problem = f"cannot be read as J's metadata ({type(error).__name__})"
                    damage.append(FileDamage(metadata_file, problem))
        if manifest is None and checksums is not None:
            copy = checksums.extra.get("manifest")
            manifest = dict(copy) if isinstance(copy, dict) else None
        recorded = (manifest or {}).get("checksums") == CHECKSUMS
        if checksums is None and bad is None and recorded:
            damage.append(FileDamage(folder / CHECKSUMS, "is missing"))
        legacy = checksums is None and bad is None and not recorded
        return GridFiles(checksums, damage, manifest, legacy)

    def _recorded_manifest(self, folder: Path) -> dict[str, Any] | None:
        """The manifest of the grid in ``folder`` as recorded (J's, else the copy kept with
        the checksums), unchecked; None where neither can be read."""
        try:
            return zarr_grids.manifest(folder)
        except Exception:  # zarr raises its own errors for missing or bad metadata
            checksums, _damage = Checksums.load(folder)
            copy = checksums.extra.get("manifest") if checksums is not None else None
            return dict(copy) if isinstance(copy, dict) else None

    def recorded_chunk_points(self, name: str, grid: Grid) -> int | None:
        """The chunk size grid ``name`` on disk was begun with, if it has ``grid``'s shape
        (so that a grid begun under an earlier default resumes); None otherwise."""
        try:
            manifest = self._recorded_manifest(self.grid_dir(name)) or {}
            shape = (manifest.get("grid") or {}).get("shape")
            if shape is not None and tuple(int(n) for n in shape) == tuple(grid.shape):
                return positive_int(manifest.get("chunk_points"), "chunk_points")
        except Exception:  # nothing there, or unreadable: the sweep says which
            pass
        return None

    def _plan_of(self, folder: Path, name: str, manifest: Mapping[str, Any] | None) -> ChunkPlan:
        """The chunk plan of the grid with ``manifest`` (StoreError if there is none)."""
        if manifest is None:
            raise StoreError(self._untold(folder, name))
        try:
            shape = (manifest.get("grid") or {}).get("shape")
            if shape is None:  # saved by an older version: the shape is J's
                shape = zarr_grids.open_values(folder).shape
            shape = tuple(int(n) for n in shape)
            return ChunkPlan.for_grid(shape, int(manifest.get("chunk_points") or math.prod(shape)))
        except Exception as error:  # zarr raises its own errors for unreadable metadata
            raise StoreError(
                f"{folder / zarr_grids.ZARR_NAME} cannot be read as a grid ({error}); "
                f"{self._grid_action(manifest)}"
            ) from None

    def sweep_status(self, name: str) -> SweepStatus:
        """How far grid ``name`` is (StoreError if it is not on disk or cannot be read).

        Chunks count as done when they have a record; :meth:`check_grid` reads them back."""
        folder = self.grid_dir(name)
        if self._format_of(folder, name) == 1:
            shape = format1.shape(folder, self._label(name))
            return SweepStatus(name, True, 0, 0, shape, math.prod(shape))
        manifest = self._recorded_manifest(folder)
        plan = self._plan_of(folder, name, manifest)
        complete = (folder / "metadata.json").is_file()
        done = len(zarr_grids.recorded_chunks(folder, plan.num_chunks))
        saved = (manifest or {}).get("kind") == "saved grid"
        return SweepStatus(
            name,
            complete,
            0 if saved else done,
            0 if saved else plan.num_chunks,
            plan.shape,
            plan.num_points,
        )

    def _label(self, name: str) -> str:
        """How messages name grid ``name`` of this experiment."""
        return f"grid '{name}' of experiment '{self.name}'"

    def first_format_result(self, folder: Path, name: str, wanted: dict[str, Any]) -> GridResult:
        """The complete format-1 grid in ``folder`` if it is the sweep ``wanted`` pins (see
        :func:`format1.check_sweep`); else StoreError."""
        format1.check_sweep(folder, self._label(name), wanted, self.name)
        self.chunks_computed = 0
        return self.load_grid(name)

    def check_grid(self, name: str) -> list[str]:
        """Every problem with grid ``name`` on disk, one sentence each naming the file and
        what repairs it (empty: all is well): every recorded file against its checksum,
        each chunk of J read back against its record, and the files a complete grid needs."""
        folder = self.grid_dir(name)
        try:
            if self._format_of(folder, name) == 1:
                self.load_grid(name)
                return []
        except StoreError as error:
            return [str(error)]
        files = self.grid_files(folder)
        if files.manifest is None:
            return [self._untold(folder, name)]
        action = self._grid_action(files.manifest)
        problems = [f"{item}; {action}" for item in files.damage]
        try:
            plan = self._plan_of(folder, name, files.manifest)
        except StoreError as error:
            return [*problems, str(error)]
        if any(item.path == folder / zarr_grids.METADATA_FILE for item in files.damage):
            return problems  # J's chunks are read through that file: checked once it is anew
        good, damage = zarr_grids.check_chunks(folder, plan)
        chunk_action = self._chunk_action(files.manifest)
        problems += [f"{item.reason}; {chunk_action}" for item in damage]
        if (folder / "metadata.json").is_file():
            missing = plan.num_chunks - len(good)
            if missing and not damage:
                problems.append(
                    f"{missing} chunk(s) of the complete grid {folder} have no record in "
                    f"{folder / zarr_grids.DONE_DIR}; {chunk_action}"
                )
            if not problems:
                try:
                    self.load_grid(name)
                except StoreError as error:
                    problems.append(str(error))
        return problems

    def load_grid(self, name: str) -> GridResult:
        """The GridResult saved as ``name``, every file it reads checked against its
        checksum (StoreError, naming the file and what repairs it, if it is missing,
        partial or damaged)."""

        folder = self.grid_dir(name)
        first = self._format_of(folder, name) == 1
        files = None if first else self.grid_files(folder)
        status = self.sweep_status(name)
        if not status.complete:
            raise StoreError(
                f"grid '{name}' of experiment '{self.name}' is partial ({status.chunks_done} "
                f"of {status.num_chunks} chunks); run the same `genni sweep` again to finish it"
            )
        redo = format1.redo(folder) if files is None else self._grid_action(files.manifest)
        if files is not None:
            damage = [item for item in files.damage if item.path.name not in _SUBSPACE_FILES]
            if files.manifest is None:
                raise StoreError(self._untold(folder, name))
            if damage:
                text = "; ".join(str(item) for item in damage)
                raise StoreError(f"grid '{name}' of experiment '{self.name}': {text}; {redo}")
        metadata = load_file(folder / "metadata.json", read_json, redo)
        items = load_file(folder / "markers.json", read_json, redo)
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
        grid = self._read_grid(folder, redo)
        if files is None:
            values = format1.read_values(folder)
        else:
            plan = self._plan_of(folder, name, files.manifest)
            try:
                values, _seconds = zarr_grids.read_all(folder, plan)
            except ValueError as error:
                raise StoreError(
                    f"grid '{name}' of experiment '{self.name}': {error}; "
                    f"{self._chunk_action(files.manifest)}"
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
        self.load_grid(name)  # complete and as written, or a StoreError that says why
        array = zarr_grids.open_data_array(folder)
        array.attrs = {"genni_metadata": array.attrs.get("genni_metadata", {})}
        return array

    def load_subspace(self, name: str) -> Subspace:
        """The subspace grid ``name`` was swept on, its files checked (StoreError if it was
        not saved, or is not as written)."""

        folder = self.grid_dir(name)
        redo = format1.redo(folder)
        if self._format_of(folder, name) == FORMAT:
            files = self.grid_files(folder)
            redo = self._grid_action(files.manifest)
            damage = [item for item in files.damage if item.path.name in _SUBSPACE_FILES]
            if damage:
                text = "; ".join(str(item) for item in damage)
                raise StoreError(f"grid '{name}' of experiment '{self.name}': {text}; {redo}")
        if not (folder / "subspace_center.npy").is_file():
            raise StoreError(
                f"grid '{name}' of experiment '{self.name}' was saved without its subspace "
                f"({folder}); pass subspace= to save_grid to keep it"
            )
        origin = folder / "subspace.json"
        hashes = load_file(origin, read_json, redo) if origin.is_file() else {}  # older: unknown
        return Subspace(
            load_file(folder / "subspace_center.npy", read_array, redo),
            load_file(folder / "subspace_basis.npy", read_array, redo),
            load_file(folder / "subspace_points.npy", read_array, redo),
            theta_hash=hashes.get("theta_hash"),
            probes_hash=hashes.get("probes_hash"),
        )

    # --- checking everything ----------------------------------------------------------------

    def check(self) -> list[Finding]:
        """Every file of the experiment read back against the checksum recorded when it was
        written (``genni check``): config.yml, analysis.json and problem.zarr (its arrays
        also against their recorded hashes), every search, and every grid
        (each chunk of J against its record). One Finding per damaged file (naming it and
        what repairs it), per thing worth knowing (a lock left by a process that died, a
        grid stopped before anything was written, a grid whose search was replaced, files
        older than checksums) and per search or grid found as written."""
        findings = self._check_own_files()
        for name in self._names("searches"):
            where = f"searches/{name}"
            problems = self.check_search(name)
            findings += [Finding(where, text, "damaged") for text in problems]
            if problems:
                continue
            checksums, _bad = Checksums.load(self.search_dir(name))
            if checksums is None:
                findings.append(Finding(where, "ok (no checksums recorded: not checked)", "ok"))
            else:
                findings.append(Finding(where, f"ok ({len(checksums.files)} files)", "ok"))
        for name in self._names("grids"):
            findings += self._check_grid_folder(name)
        return findings

    def _check_own_files(self) -> list[Finding]:
        """config.yml, analysis.json and their checksums.json."""
        checksums, bad = Checksums.load(self.path)
        if bad is not None:
            action = (
                f"{self._config_action()}; then run `genni analyse {self.name}` again if the "
                "experiment was analysed (each records its file's checksum anew)"
            )
            return [Finding(CHECKSUMS, f"{bad}; {action}", "damaged")]
        findings = []
        for path, action, load in (
            (self.config_path, self._config_action, self.load_config),
            (self.analysis_path, self._analysis_action, self.load_analysis),
        ):
            recorded = checksums is not None and path.name in checksums.files
            if not path.is_file():
                if recorded:
                    findings.append(Finding(path.name, f"{path} is missing; {action()}", "damaged"))
                continue
            try:
                load()
            except StoreError as error:
                findings.append(Finding(path.name, str(error), "damaged"))
                continue
            state = "ok" if recorded else "ok (no checksum recorded: not checked)"
            findings.append(Finding(path.name, state, "ok"))
        if self.keeps_problem:
            where = zarr_problem.ZARR_NAME
            try:
                self._check_problem_record()
                problems = zarr_problem.check(self.path)
            except StoreError as error:
                problems = [str(error)]
            findings += [Finding(where, text, "damaged") for text in problems]
            if not problems:
                findings.append(Finding(where, "ok (θ, probes and targets as written)", "ok"))
        # A name no file of the experiment has: checksums.json changed, or a file went.
        covered = (self.config_path.name, self.analysis_path.name)
        others = [
            name
            for name in (checksums.files if checksums is not None else ())
            if name not in covered and not name.startswith(f"{zarr_problem.ZARR_NAME}/")
        ]
        if others and checksums is not None:
            findings += [
                Finding(
                    CHECKSUMS,
                    f"{item}, a file {self.path / CHECKSUMS} records; restore it (or "
                    f"{CHECKSUMS}) from a backup",
                    "damaged",
                )
                for item in checksums.damage(others)
            ]
        return findings

    def _check_grid_folder(self, name: str) -> list[Finding]:
        """The findings of :meth:`check` for the folder ``grids/<name>``."""
        where = f"grids/{name}"
        folder = self.grid_dir(name)
        findings = []
        findings += self._lock_note(where, folder / LOCK)
        if self.grid_layout(folder) is None and not self.has_results(folder):
            left = ", ".join(entry.name for entry in sorted(folder.iterdir())) or "nothing"
            text = (
                f"a sweep stopped before it wrote anything of this grid (left: {left}); "
                "the next `genni sweep` of it starts it afresh"
            )
            return [*findings, Finding(where, text, "note")]
        problems = self.check_grid(name)
        if problems:
            return findings + [Finding(where, text, "damaged") for text in problems]
        status = self.sweep_status(name)
        state = (
            "complete"
            if status.complete
            else f"partial ({status.chunks_done} of {status.num_chunks} chunks)"
        )
        findings.append(Finding(where, f"ok, {state}", "ok"))
        if self.grid_layout(folder) == FORMAT:
            files = self.grid_files(folder)
            if files.legacy:
                text = (
                    "written before checksums of every file were recorded: only J's chunks "
                    "are checked; the next `genni sweep` of it records them"
                )
                findings.append(Finding(where, text, "note"))
            origin = (files.manifest or {}).get("search") or {}
            findings += self._stale_origin(where, origin)
        return findings

    @staticmethod
    def _lock_note(where: str, lock: Path) -> list[Finding]:
        """A note on grid's lock: held by a writer now, or left by one that stopped."""
        holder, held = lock_holder(lock), lock_held(lock)
        alive = holder.alive() if holder is not None else None
        if held or (held is None and alive):
            text = f"being written by {holder or 'another process'}: what follows may change"
        elif holder is None:
            return []
        elif held is False or alive is False:
            state = "is no longer running" if alive is False else "no longer holds it"
            text = (
                f"a lock left by {holder}, which {state}; the next `genni sweep` of this grid "
                "clears it"
            )
        else:
            text = f"a lock recorded by {holder}; this machine cannot tell whether it still runs"
        return [Finding(where, text, "note")]

    def _stale_origin(self, where: str, origin: Mapping[str, Any]) -> list[Finding]:
        """A note if the search a grid was built from has been replaced since."""
        search = origin.get("name")
        if not search or search not in self.searches():
            return []
        try:
            current = self.search_id(search)
        except StoreError:
            return []  # the search's own damage is reported with the search
        if current == origin.get("id"):
            return []
        text = (
            f"built from an earlier search '{search}', since replaced: its J is as computed, "
            "on that search's plane, not on the present search's"
        )
        return [Finding(where, text, "note")]

    # --- the resumable sweep ----------------------------------------------------------------

    def resumable_manifest(self, folder: Path, name: str, wanted: dict[str, Any]) -> dict[str, Any]:
        """The manifest of the grid in ``folder`` if the sweep ``wanted`` may resume it;
        else StoreError saying why (what differs, or what cannot be told)."""
        stored = self.grid_files(folder).manifest
        if stored is None:
            raise StoreError(self._untold(folder, name))
        if stored.get("kind") == "saved grid":
            raise StoreError(
                f"grid '{name}' of experiment '{self.name}' was saved whole (save_grid), "
                f"not by a resumable sweep; delete {folder} or use another grid name"
            )
        check_manifest(stored, wanted, self.name, name, folder)
        return stored


def _config_bytes(config: Mapping[str, Any]) -> bytes:
    """``config`` (a mapping of plain YAML values) as the bytes of config.yml."""
    import yaml

    if not isinstance(config, Mapping):
        raise InputError(f"config must be a mapping, got {type(config).__name__}")
    try:
        text = yaml.safe_dump(dict(config), sort_keys=False, allow_unicode=True)
    except yaml.YAMLError as error:
        raise InputError(f"config holds values YAML cannot store: {error}") from error
    return text.encode("utf-8")


def search_id(result: SearchResult) -> str:
    """The id of a search: a hash of its tensors (found points, J, histories, starts, and
    the restarts where any start was restarted), the same for a search computed again bit
    for bit. Restarts all 0 are left out, so a search without restarts keeps the id it had
    before restarts were recorded."""
    return tensor_hash(
        *(
            value
            for field in dataclasses.fields(result)
            if isinstance(value := getattr(result, field.name), torch.Tensor)
            and not (field.name == "restarts" and not bool(value.any()))
        )
    )


def clear_grid_folder(folder: Path) -> None:
    """Remove everything in ``folder`` but its lock."""
    for entry in folder.iterdir():
        if entry.name == LOCK:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _load_zarr(folder: Path, key: str, redo: Callable[[], str]) -> torch.Tensor:
    """Array ``key`` of the search in ``folder``, or StoreError naming it."""
    try:
        return zarr_searches.read(folder, key)
    except Exception as error:  # zarr raises FileNotFoundError, KeyError or codec errors
        path = folder / zarr_searches.ZARR_NAME / key
        raise StoreError(f"{path} cannot be read ({type(error).__name__}); {redo()}") from None


def open_grid(
    experiment: str, grid: str, home: str | os.PathLike[str] | None = None
) -> xarray.DataArray:
    """Grid ``grid`` of ``experiment`` (under ``home``, default :func:`genni_home`) as an
    ``xarray.DataArray``: see :meth:`Experiment.open_grid`."""
    return Experiment(experiment, home).open_grid(grid)


__all__ = [
    "Experiment",
    "Finding",
    "SweepStatus",
    "list_experiments",
    "open_grid",
    "search_id",
]
