"""The store is never silently wrong, and nothing is replaced or blocked by accident.

A table of damage: each kind is done to a copy of one small swept experiment (the
two-neuron net, a 6×6 grid in 3 chunks); `genni check` must name the damaged file and what
repairs it (exit 1) and change nothing; every load must give the original values or a
StoreError, never other values; then the same `genni sweep` must repair what can be
recomputed (keeping every computed chunk of J: the experiment comes back byte for byte
where no chunk had to be recomputed, J bitwise equal where one had) or refuse clearly what
cannot. Then the states that are not damage: locks left by processes that died, grid
folders left before anything was computed, a full disk and a file-size limit, a search
replaced under its grids, interrupts, and a home that is a file.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
import zarr

import genni_ext
from genni_ext import cli, run_sweep
from genni_ext.core.grid import Grid
from genni_ext.errors import InputError, StoreError
from genni_ext.run import chunk_runs
from genni_ext.store import Experiment, list_experiments
from genni_ext.store.config import build_problem, validate_config
from genni_ext.store.files import exclusive, now

CONFIG = {
    "experiment": "tiny",
    "model": {"name": "two_neuron"},
    "seed": 10,
    "probes": {"num_probes": 256, "seed": 10},
    "search": {"starts": 6, "steps": 60, "lr": 0.05, "batch_size": 128, "seed": 11},
    "subspace": {"eps": 0.01, "m": 2},
    "grids": [{"name": "plane", "bound": [-2, 2], "n": 6}],
    "chunk_points": 12,  # two rows of the 6×6 grid: 3 chunks
}
LOCKS = (".lock", ".checksums.lock")  # hold no data: their content is not compared


@dataclass(frozen=True)
class Swept:
    """The swept experiment every test copies, and what its loads give."""

    home: Path
    config: Path
    loaded: dict[str, object]


def _genni(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``genni ARGS`` in this process: exit status, stdout, stderr."""
    capsys.readouterr()
    status = cli.main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def _loads(experiment: Experiment) -> dict[str, Callable[[], object]]:
    """Every load of the store, by name."""
    return {
        "load_grid": lambda: experiment.load_grid("plane"),
        "open_grid": lambda: experiment.open_grid("plane"),
        "load_subspace": lambda: experiment.load_subspace("plane"),
        "load_search": lambda: experiment.load_search(),
        "load_config": experiment.load_config,
        "load_analysis": experiment.load_analysis,
    }


def _same(first: object, second: object) -> bool:
    """Whether two loaded values are the same, bit for bit."""
    if isinstance(first, genni_ext.GridResult):
        assert isinstance(second, genni_ext.GridResult)
        return first.equals(second) and first.metadata == second.metadata
    if hasattr(first, "dims"):  # an xarray DataArray
        return bool(first.identical(second)) and first.attrs == second.attrs  # type: ignore[attr-defined]
    if isinstance(first, genni_ext.Subspace):
        return first.equals(second)  # type: ignore[arg-type]
    if hasattr(first, "params"):  # a SearchResult
        return (
            all(
                torch.equal(getattr(first, key), getattr(second, key))
                for key in ("params", "losses", "history", "history_steps", "starts")
            )
            and first.config == second.config
        )  # type: ignore[attr-defined]
    return first == second


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Swept:
    root = tmp_path_factory.mktemp("swept")
    config = root / "tiny.yml"
    config.write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    home = root / "home"
    for command in ("search", "sweep"):
        assert (
            cli.main([command, "--config", str(config), "--home", str(home), "--no-progress"]) == 0
        )
    experiment = Experiment("tiny", home)
    experiment.save_analysis({"eps": 0.01, "note": "what genni analyse would write"})
    loaded = {name: load() for name, load in _loads(experiment).items()}
    return Swept(home, config, loaded)


def _copy(swept: Swept, tmp_path: Path) -> tuple[Path, Experiment]:
    home = tmp_path / "home"
    shutil.copytree(swept.home, home)
    return home, Experiment("tiny", home)


def _snapshot(home: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(home)): path.read_bytes()
        for path in sorted(home.rglob("*"))
        if path.is_file() and path.name not in LOCKS
    }


def _leftovers(home: Path) -> list[str]:
    """Temporary and partial files anywhere in the home."""
    return [
        str(path) for path in home.rglob("*") if path.name.endswith((".tmp", ".old", ".partial"))
    ]


# --- kinds of damage ------------------------------------------------------------------------


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _double_npy(path: Path) -> None:
    np.save(path, np.load(path) * 2)  # same shape and dtype, other values


def _double_zarr(folder: Path, array: str) -> None:
    values = zarr.open_array(store=str(folder), path=array, mode="r+", zarr_format=3)
    values[...] = values[...] * 2


def _edit_json(path: Path, edit: Callable[[object], object]) -> None:
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))


def _double_markers(markers: object) -> object:
    assert isinstance(markers, list)
    return [{**item, "coords": [2 * c for c in item["coords"]]} for item in markers]


def _other_chunk(grid: Path) -> None:
    """Chunk 1 of J replaced by other valid values (its zarr checksum is right)."""
    values = zarr.open_array(store=str(grid / "grid.zarr"), path="J", mode="r+", zarr_format=3)
    values[2:4] = values[2:4] + 1.0


def _nothing_computed(grid: Path) -> None:
    """What a sweep killed in the middle of making the folder leaves: J's zarr metadata
    and some small files, no chunk, no checksums."""
    for name in ("checksums.json", "metadata.json", "markers.json"):
        (grid / name).unlink()
    shutil.rmtree(grid / "done")
    shutil.rmtree(grid / "grid.zarr" / "J" / "c")


G = "experiments/tiny/grids/plane"
S = "experiments/tiny/searches/search"
E = "experiments/tiny"
SWEEP_AGAIN = (
    r"run the same `genni sweep` again: it writes the file anew and keeps every computed chunk of J"
)
RECOMPUTE = r"the next `genni sweep` of this grid recomputes that chunk and keeps the others"
SEARCH_AGAIN = (
    r"compute it again with `genni search --config FILE --replace` \(FILE: the config it was "
    r"run with\); grids plane were built from it"
)
CONFIG_AGAIN = r"run `genni sweep --config FILE` with the config the experiment was made with"
MISMATCH = "does not match the checksum recorded when it was written"


@dataclass(frozen=True)
class Damage:
    """One kind of damage: what is done (to the file ``path`` under the home), the line
    `genni check` prints (a regex), and what the same sweep run again does: "kept" (it
    repairs; the experiment is back byte for byte, no chunk recomputed), "recomputed"
    (it recomputes ``chunks`` chunks; J bitwise equal), "refused" (exit 1, ``after`` in
    its error) or "unrepaired" (a sweep does not write that file; check still names it)."""

    name: str
    path: str
    damage: Callable[[Path], None]
    check: str
    outcome: str
    chunks: int = 0
    after: str = ""


DAMAGE = [
    # Files of the grid besides J: a re-run sweep writes them anew.
    Damage(
        "coeffs flipped",
        f"{G}/coeffs.npy",
        _flip,
        rf"coeffs\.npy {MISMATCH}; {SWEEP_AGAIN}",
        "kept",
    ),
    Damage("coeffs truncated", f"{G}/coeffs.npy", _truncate, rf"coeffs\.npy {MISMATCH}", "kept"),
    Damage(
        "coeffs deleted",
        f"{G}/coeffs.npy",
        Path.unlink,
        rf"coeffs\.npy is missing; {SWEEP_AGAIN}",
        "kept",
    ),
    Damage("axis 0 ×2", f"{G}/axis_0.npy", _double_npy, rf"axis_0\.npy {MISMATCH}", "kept"),
    Damage("axis 1 deleted", f"{G}/axis_1.npy", Path.unlink, r"axis_1\.npy is missing", "kept"),
    Damage(
        "grid.json edited",
        f"{G}/grid.json",
        lambda p: _edit_json(p, lambda g: {**g, "shape": [4, 9]}),
        rf"grid\.json {MISMATCH}",
        "kept",
    ),
    Damage(
        "centre ×2",
        f"{G}/subspace_center.npy",
        _double_npy,
        rf"subspace_center\.npy {MISMATCH}",
        "kept",
    ),
    Damage(
        "basis flipped",
        f"{G}/subspace_basis.npy",
        _flip,
        rf"subspace_basis\.npy {MISMATCH}",
        "kept",
    ),
    Damage(
        "points deleted",
        f"{G}/subspace_points.npy",
        Path.unlink,
        r"subspace_points\.npy is missing",
        "kept",
    ),
    Damage(
        "subspace.json edited",
        f"{G}/subspace.json",
        lambda p: _edit_json(p, lambda h: {**h, "theta_hash": "0" * 16}),
        rf"subspace\.json {MISMATCH}",
        "kept",
    ),
    Damage(
        "markers ×2",
        f"{G}/markers.json",
        lambda p: _edit_json(p, _double_markers),
        rf"markers\.json {MISMATCH}",
        "kept",
    ),
    Damage(
        "metadata truncated", f"{G}/metadata.json", _truncate, rf"metadata\.json {MISMATCH}", "kept"
    ),
    Damage(
        "metadata deleted", f"{G}/metadata.json", Path.unlink, r"metadata\.json is missing", "kept"
    ),
    Damage(
        "group metadata garbage",
        f"{G}/grid.zarr/zarr.json",
        lambda p: p.write_text("{"),
        rf"grid\.zarr/zarr\.json {MISMATCH}",
        "kept",
    ),
    Damage(
        "J's metadata garbage",
        f"{G}/grid.zarr/J/zarr.json",
        lambda p: p.write_text("garbage"),
        rf"J/zarr\.json {MISMATCH}; {SWEEP_AGAIN}",
        "kept",
    ),
    Damage(
        "J's metadata deleted",
        f"{G}/grid.zarr/J/zarr.json",
        Path.unlink,
        r"J/zarr\.json is missing",
        "kept",
    ),
    Damage(
        "coordinate c1 ×2",
        f"{G}/grid.zarr",
        lambda p: _double_zarr(p, "c1"),
        rf"c1/c/0 {MISMATCH}",
        "kept",
    ),
    Damage(
        "coordinate c2 metadata deleted",
        f"{G}/grid.zarr/c2/zarr.json",
        Path.unlink,
        r"c2/zarr\.json is missing",
        "kept",
    ),
    Damage(
        "grid checksums deleted",
        f"{G}/checksums.json",
        Path.unlink,
        rf"plane/checksums\.json is missing; {SWEEP_AGAIN}",
        "kept",
    ),
    Damage(
        "grid checksums garbage",
        f"{G}/checksums.json",
        lambda p: p.write_text("[1]"),
        r"plane/checksums\.json does not hold checksums",
        "kept",
    ),
    # J's chunks and their records: the sweep recomputes that chunk only.
    Damage(
        "chunk flipped",
        f"{G}/grid.zarr/J/c/1/0",
        _flip,
        rf"chunk 1 of J \(.*J/c/1/0\) cannot be read.*; {RECOMPUTE}",
        "recomputed",
        1,
    ),
    Damage(
        "chunk deleted",
        f"{G}/grid.zarr/J/c/1/0",
        Path.unlink,
        rf"chunk 1 of J \(.*J/c/1/0\) does not match the checksum in its record .*done/1\.json; "
        rf"{RECOMPUTE}",
        "recomputed",
        1,
    ),
    Damage(
        "chunk replaced",
        f"{G}",
        _other_chunk,
        r"chunk 1 of J .* does not match the checksum in its record",
        "recomputed",
        1,
    ),
    Damage(
        "chunk record deleted",
        f"{G}/done/1.json",
        Path.unlink,
        rf"1 chunk\(s\) of the complete grid .* have no record .*; {RECOMPUTE}",
        "recomputed",
        1,
    ),
    Damage(
        "chunk record garbage",
        f"{G}/done/1.json",
        lambda p: p.write_text("{"),
        r"chunk 1's record .* is not valid JSON",
        "recomputed",
        1,
    ),
    Damage(
        "nothing computed yet",
        f"{G}",
        _nothing_computed,
        r"plane/checksums\.json is missing",
        "recomputed",
        3,
    ),
    # What cannot be recomputed: refused, saying why.
    Damage(
        "J's metadata and its copy garbage",
        f"{G}",
        lambda p: [(p / n).write_text("x") for n in ("checksums.json", "grid.zarr/J/zarr.json")],
        r"there is no telling what grid 'plane' .* delete .*plane and run the sweep again",
        "refused",
        after=r"there is no telling what grid 'plane'",
    ),
    Damage(
        "search point flipped",
        f"{S}/search.zarr/params/c/0/0",
        _flip,
        rf"params/c/0/0 {MISMATCH}; {SEARCH_AGAIN}",
        "refused",
        after=rf"params/c/0/0 {MISMATCH}",
    ),
    Damage(
        "search losses ×2",
        f"{S}/search.zarr",
        lambda p: _double_zarr(p, "losses"),
        rf"losses/c/0 {MISMATCH}; {SEARCH_AGAIN}",
        "refused",
        after=r"losses/c/0",
    ),
    Damage(
        "search metadata garbage",
        f"{S}/metadata.json",
        lambda p: p.write_text("{"),
        rf"search/metadata\.json {MISMATCH}; {SEARCH_AGAIN}",
        "refused",
        after=r"search/metadata\.json",
    ),
    Damage(
        "search metadata deleted",
        f"{S}/metadata.json",
        Path.unlink,
        rf"search/metadata\.json is missing; {SEARCH_AGAIN}",
        "refused",
        after=r"search/metadata\.json is missing",
    ),
    Damage(
        "search checksums deleted",
        f"{S}/checksums.json",
        Path.unlink,
        rf"search/checksums\.json is missing; {SEARCH_AGAIN}",
        "refused",
        after=r"search/checksums\.json is missing",
    ),
    # The problem the experiment keeps (problem.zarr): nothing recomputes it.
    Damage(
        "problem theta flipped",
        f"{E}/problem.zarr/theta/c/0",
        _flip,
        rf"problem\.zarr/theta/c/0 {MISMATCH}; restore .* from a backup",
        "refused",
        after=rf"theta/c/0 {MISMATCH}",
    ),
    Damage(
        "problem deleted",
        f"{E}/problem.zarr",
        shutil.rmtree,
        r"problem\.zarr/zarr\.json is missing; restore .* from a backup",
        "refused",
        after=r"problem\.zarr/zarr\.json is missing",
    ),
    # The experiment's own files.
    Damage(
        "config edited",
        f"{E}/config.yml",
        lambda p: p.write_text(p.read_text().replace("lr: 0.05", "lr: 0.5")),
        rf"config\.yml {MISMATCH}; {CONFIG_AGAIN}",
        "kept",
    ),
    Damage(
        "config deleted",
        f"{E}/config.yml",
        Path.unlink,
        rf"config\.yml is missing; {CONFIG_AGAIN}",
        "kept",
    ),
    Damage(
        "analysis flipped",
        f"{E}/analysis.json",
        _flip,
        rf"analysis\.json {MISMATCH}; run `genni analyse tiny` again",
        "unrepaired",
    ),
    Damage(
        "experiment checksums garbage",
        f"{E}/checksums.json",
        lambda p: p.write_text("nope"),
        rf"tiny/checksums\.json cannot be read .*{CONFIG_AGAIN}.*"
        r"then run `genni analyse tiny` again",
        "recomputed",
        0,
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", DAMAGE, ids=[case.name for case in DAMAGE])
def test_damage_is_named_loads_refuse_and_a_sweep_repairs(
    case: Damage, swept: Swept, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home, experiment = _copy(swept, tmp_path)
    original = _snapshot(home)
    case.damage(home / case.path)
    damaged = _snapshot(home)
    assert damaged != original

    # genni check names the file and what repairs it, exit 1, and changes nothing.
    status, out, err = _genni(capsys, "check", "tiny", "--home", str(home))
    assert status == 1, out + err
    lines = [line for line in out.splitlines() if line.startswith("DAMAGED ")]
    assert any(re.search(case.check, line) for line in lines), lines
    assert "delete" not in out or case.outcome == "refused", out  # never advice to drop J
    assert _snapshot(home) == damaged

    # Every load gives the original values or a StoreError: never other values.
    for name, load in _loads(experiment).items():
        try:
            value = load()
        except StoreError:
            continue
        assert _same(value, swept.loaded[name]), f"{name} returned other values"

    # The same sweep again.
    status, out, err = _genni(
        capsys, "sweep", "--config", str(swept.config), "--home", str(home), "--no-progress"
    )
    if case.outcome == "refused":
        assert status == 1 and re.search(case.after, err), err
        assert "Traceback" not in err and _snapshot(home) == damaged
        return
    assert status == 0, err
    assert f"computed {case.chunks} of 3 chunks in this run" in out, out
    assert _leftovers(home) == []
    values = experiment.load_grid("plane").values
    assert torch.equal(values, swept.loaded["load_grid"].values)  # type: ignore[attr-defined]
    status, out, _err = _genni(capsys, "check", "tiny", "--home", str(home))
    if case.outcome == "unrepaired":
        assert status == 1 and any(re.search(case.check, line) for line in out.splitlines())
        return
    assert status == 0 and out.rstrip().endswith("tiny: ok"), out
    if case.outcome == "kept":
        assert _snapshot(home) == original  # repaired byte for byte, no J recomputed


@pytest.mark.slow
def test_every_file_the_store_writes_is_checked(swept: Swept, tmp_path: Path) -> None:
    """Each file of the experiment, one at a time, with one bit flipped: `genni check`
    (Experiment.check) names it as damaged, and the loads refuse or give the original."""
    home, experiment = _copy(swept, tmp_path)
    names = sorted(_snapshot(home))
    assert len(names) > 35  # config, analysis, checksums, search arrays, grid files, chunks
    for name in names:
        path = home / name
        data = path.read_bytes()
        _flip(path)
        damaged = [f.text for f in experiment.check() if f.kind == "damaged"]
        chunk = re.search(r"grid\.zarr/J/c/(\d+)/", name)
        named = f"chunk {chunk.group(1)}" if chunk else str(path)
        if path.name == "checksums.json":  # a flip that keeps it JSON changes a checksum:
            named = str(path.parent)  # the file it covers is then named
        assert any(named in text for text in damaged), (name, damaged)
        for load_name, load in _loads(experiment).items():
            try:
                value = load()
            except StoreError:
                continue
            assert _same(value, swept.loaded[load_name]), (name, load_name)
        path.write_bytes(data)
    assert all(finding.kind != "damaged" for finding in experiment.check())


def test_a_damaged_config_refuses_sweeps_from_it(
    swept: Swept, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home, experiment = _copy(swept, tmp_path)
    _flip(experiment.config_path)
    status, _out, err = _genni(capsys, "sweep", "--experiment", "tiny", "--home", str(home))
    assert status == 1 and re.search(rf"config\.yml {MISMATCH}; {CONFIG_AGAIN}", err), err


def test_an_experiment_from_before_checksums_is_read_and_a_sweep_records_them(
    swept: Swept, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As the previous version wrote it: no checksums.json anywhere, no search recorded
    with the grid, no id with the search. Read as before (said so), protected by the
    config's search name, and a sweep records the grid's checksums."""
    home, experiment = _copy(swept, tmp_path)
    grid, search = experiment.grid_dir("plane"), experiment.search_dir()
    for path in (grid, search, experiment.path):
        (path / "checksums.json").unlink()
    manifest = dict(
        zarr.open_array(store=str(grid / "grid.zarr"), path="J").attrs["genni_manifest"]
    )
    older = {key: value for key, value in manifest.items() if key not in ("checksums", "search")}
    zarr.open_array(store=str(grid / "grid.zarr"), path="J", mode="r+").attrs["genni_manifest"] = (
        older
    )
    _edit_json(
        search / "metadata.json",
        lambda m: {k: v for k, v in m.items() if k not in ("id", "checksums")},
    )  # type: ignore[union-attr]

    status, out, _err = _genni(capsys, "check", "tiny", "--home", str(home))
    assert status == 0, out
    assert "config.yml: ok (no checksum recorded: not checked)" in out
    assert "searches/search: ok (no checksums recorded: not checked)" in out
    assert "note: grids/plane: written before checksums of every file were recorded" in out
    assert _same(experiment.load_grid("plane"), swept.loaded["load_grid"])
    args = ("--config", str(swept.config), "--home", str(home), "--no-progress")
    status, _out, err = _genni(capsys, "search", *args)
    assert status == 1 and "grid(s) plane were built from" in err, err

    status, out, err = _genni(capsys, "sweep", *args)
    assert status == 0 and "computed 0 of 3 chunks in this run" in out, err
    status, out, _err = _genni(capsys, "check", "tiny", "--home", str(home))
    assert status == 0 and "note: grids/plane" not in out and "config.yml: ok\n" in out, out
    assert torch.equal(experiment.load_grid("plane").values, swept.loaded["load_grid"].values)  # type: ignore[attr-defined]


# --- locks --------------------------------------------------------------------------------


def _dead_pid() -> int:
    process = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(process.stdout)


def _lock_record(pid: int) -> str:
    import socket

    return json.dumps({"pid": pid, "host": socket.gethostname(), "since": now()})


def test_a_lock_left_by_a_dead_process_is_cleared_with_a_message(
    swept: Swept, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home, experiment = _copy(swept, tmp_path)
    grid = experiment.grid_dir("plane")
    (grid / "done" / "2.json").unlink()  # a partial grid, as a killed sweep leaves it
    (grid / "metadata.json").unlink()
    pid = _dead_pid()
    (grid / ".lock").write_text(_lock_record(pid))

    status, out, _err = _genni(capsys, "check", "tiny", "--home", str(home))
    assert status == 1  # metadata.json is recorded: its absence is named
    assert f"note: grids/plane: a lock left by process {pid} on" in out
    assert "which is no longer running; the next `genni sweep` of this grid clears it" in out

    status, out, err = _genni(
        capsys, "sweep", "--config", str(swept.config), "--home", str(home), "--no-progress"
    )
    assert status == 0, err
    assert re.search(
        rf"cleared the lock of grid 'plane' of experiment 'tiny' left by process {pid} "
        r".*no longer running",
        err,
    ), err
    assert "computed 1 of 3 chunks in this run" in out
    assert (grid / ".lock").read_text() == ""  # released: no holder recorded
    assert torch.equal(experiment.load_grid("plane").values, swept.loaded["load_grid"].values)  # type: ignore[attr-defined]


def test_a_live_holder_is_named_and_refused(
    swept: Swept, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home, experiment = _copy(swept, tmp_path)
    lock = experiment.grid_dir("plane") / ".lock"
    (experiment.grid_dir("plane") / "metadata.json").unlink()
    # A writer as the store's lock makes one (flock, then its record), without the
    # package's import time.
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import fcntl, json, os, socket, sys, time\n"
            "handle = open(sys.argv[1], 'a+b')\n"
            "fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
            "record = {'pid': os.getpid(), 'host': socket.gethostname(), 'since': 'now'}\n"
            "handle.truncate(0); handle.write(json.dumps(record).encode()); handle.flush()\n"
            "print('held', flush=True); time.sleep(120)\n"
        ), str(lock)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        status, _out, err = _genni(
            capsys, "sweep", "--config", str(swept.config), "--home", str(home), "--no-progress"
        )
        assert status == 1
        assert f"process {holder.pid} on" in err and "is writing grid 'plane'" in err, err
        assert "stop it and run this again to resume" in err
        assert json.loads(lock.read_text())["pid"] == holder.pid
        status, out, _err = _genni(capsys, "check", "tiny", "--home", str(home))
        assert f"note: grids/plane: being written by process {holder.pid} on" in out, out
    finally:
        holder.kill()
        holder.wait()
    status, _out, err = _genni(
        capsys, "sweep", "--config", str(swept.config), "--home", str(home), "--no-progress"
    )
    assert status == 0, err  # killed holding it: flock is released, the record cleared
    assert f"left by process {holder.pid}" in err


def test_without_flock_the_record_decides(
    swept: Swept, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where flock fails (some network file systems), a recorded holder that runs is
    refused, one that died is cleared."""
    import fcntl

    def no_flock(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    _home, experiment = _copy(swept, tmp_path)
    lock = experiment.grid_dir("plane") / ".lock"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(_lock_record(live.pid))
        refused = pytest.raises(StoreError, match=rf"process {live.pid} on .* is writing it")
        with refused, exclusive(lock, "it"):
            pass
    finally:
        live.kill()
        live.wait()
    with exclusive(lock, "it"):  # that process is gone now
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert lock.read_text() == ""
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": now()}))
    unknown = pytest.raises(StoreError, match=r"cannot tell whether it still runs; if it does not")
    with unknown, exclusive(lock, "it"):
        pass


# --- folders left half-made: a kill, a full disk, a file-size limit ------------------------


@pytest.mark.parametrize(
    "left",
    [(".lock",), (".lock", ".coeffs.npy.k2j4.tmp", "grid.json"), ("coeffs.npy", "axis_0.npy")],
    ids=["lock only", "lock, temporary and grid.json", "small files"],
)
def test_a_grid_folder_left_before_any_chunk_is_started_afresh(
    left: tuple[str, ...], swept: Swept, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home, experiment = _copy(swept, tmp_path)
    grid = experiment.grid_dir("plane")
    keep = {name: (grid / name).read_bytes() for name in left if (grid / name).is_file()}
    shutil.rmtree(grid)
    grid.mkdir()
    for name in left:
        (grid / name).write_bytes(keep.get(name, b""))
    assert experiment.grids() == []

    status, out, _err = _genni(capsys, "check", "tiny", "--home", str(home))
    assert status == 0, out
    assert re.search(
        r"note: grids/plane: a sweep stopped before it wrote anything of this grid "
        r".*starts it afresh",
        out,
    )
    status, out, err = _genni(
        capsys, "sweep", "--config", str(swept.config), "--home", str(home), "--no-progress"
    )
    assert status == 0, err
    assert "computed 3 of 3 chunks in this run" in out
    assert _leftovers(home) == []
    assert torch.equal(experiment.load_grid("plane").values, swept.loaded["load_grid"].values)  # type: ignore[attr-defined]


def test_a_full_disk_names_the_file_keeps_nothing_partial_and_the_sweep_resumes(
    swept: Swept,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home, experiment = _copy(swept, tmp_path)
    shutil.rmtree(experiment.grid_dir("plane"))
    store_set = zarr.storage.LocalStore.set

    async def full_at_chunk_1(self: zarr.storage.LocalStore, key: str, value: object) -> None:
        if key == "J/c/1/0":
            raise OSError(errno.ENOSPC, "No space left on device")
        await store_set(self, key, value)

    monkeypatch.setattr(zarr.storage.LocalStore, "set", full_at_chunk_1)
    status, _out, err = _genni(
        capsys, "sweep", "--config", str(swept.config), "--home", str(home), "--no-progress"
    )
    chunk = experiment.grid_dir("plane") / "grid.zarr" / "J" / "c" / "1" / "0"
    assert status == 1
    assert f"no space left on device while writing {chunk}; nothing of that file was kept" in err
    assert "Traceback" not in err and _leftovers(home) == [] and not chunk.exists()
    assert experiment.sweep_status("plane").chunks_done == 1

    monkeypatch.undo()  # space is free again
    status, out, err = _genni(
        capsys, "sweep", "--config", str(swept.config), "--home", str(home), "--no-progress"
    )
    assert status == 0, err
    assert "resuming, 1 of 3 chunks done; computing 2 chunks" in out
    assert torch.equal(experiment.load_grid("plane").values, swept.loaded["load_grid"].values)  # type: ignore[attr-defined]
    assert _genni(capsys, "check", "tiny", "--home", str(home))[0] == 0


@pytest.mark.slow
def test_a_file_size_limit_names_the_file_and_the_next_sweep_starts_afresh(
    swept: Swept, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real limit (ulimit -f): the kernel refuses the write with EFBIG."""
    home, experiment = _copy(swept, tmp_path)
    shutil.rmtree(experiment.grid_dir("plane"))
    script = (
        "import resource, sys\n"
        "from genni_ext import cli\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (600, 600))  # coeffs.npy is 704 bytes\n"
        "sys.exit(cli.main(sys.argv[1:]))\n"
    )
    args = ["sweep", "--config", str(swept.config), "--home", str(home), "--no-progress"]
    done = subprocess.run(  # from tmp_path: the repository root would import the source tree
        [sys.executable, "-c", script, *args],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    coeffs = experiment.grid_dir("plane") / "coeffs.npy"
    assert done.returncode == 1, done.stderr
    assert f"file-size limit reached (ulimit -f) while writing {coeffs}" in done.stderr
    assert "Traceback" not in done.stderr and _leftovers(home) == [] and not coeffs.exists()

    status, out, err = _genni(capsys, *args)
    assert status == 0, err
    assert "computed 3 of 3 chunks in this run" in out
    assert torch.equal(experiment.load_grid("plane").values, swept.loaded["load_grid"].values)  # type: ignore[attr-defined]


# --- a search that grids were built from -----------------------------------------------------


def test_a_search_under_grids_is_replaced_only_with_replace(
    swept: Swept, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home, experiment = _copy(swept, tmp_path)
    before = _snapshot(home)
    args = ("search", "--config", str(swept.config), "--home", str(home), "--no-progress")
    status, _out, err = _genni(capsys, *args, "--search-seed", "12")
    assert status == 1
    assert "search 'search' of experiment 'tiny' is the one grid(s) plane were built from" in err
    assert "`genni search --replace`" in err and "--search-name NAME" in err
    assert _snapshot(home) == before  # refused before anything was computed or written

    status, out, _err = _genni(capsys, *args, "--search-seed", "12", "--search-name", "other")
    assert status == 0 and experiment.searches() == ["other", "search"]

    status, out, err = _genni(capsys, *args, "--search-seed", "12", "--replace")
    assert status == 0, err
    assert "replaced the search that grid(s) plane were built from: they stay as computed" in out
    recorded = experiment.grids_from_search()
    assert list(recorded) == ["plane"] and recorded["plane"] != experiment.search_id()
    status, out, _err = _genni(capsys, "check", "tiny", "--home", str(home))
    assert status == 0, out
    assert "note: grids/plane: built from an earlier search 'search', since replaced" in out
    assert torch.equal(experiment.load_grid("plane").values, swept.loaded["load_grid"].values)  # type: ignore[attr-defined]


def test_grids_on_the_plane_of_a_searched_grid_count_as_built_from_the_search(
    swept: Swept, tmp_path: Path
) -> None:
    """A grid swept on a searched grid's plane without naming the search (as the analysis's
    refined grids are) is named with it; the library refuses to replace the search too."""
    _home, experiment = _copy(swept, tmp_path)
    problem = build_problem(validate_config(experiment.load_config()))
    subspace = experiment.load_subspace("plane")
    finer = Grid.uniform((-1.0, 1.0), 4, 2)
    run_sweep(experiment, problem, subspace, finer, "plane_refined", progress=False)
    built = experiment.grids_from_search()
    assert list(built) == ["plane", "plane_refined"] and len(set(built.values())) == 1
    assert experiment.grids_from_search("other") == {}
    with pytest.raises(StoreError, match=r"grid\(s\) plane, plane_refined were built from"):
        experiment.save_search(experiment.load_search())
    experiment.save_search(experiment.load_search(), replace=True)
    assert experiment.search_id() == built["plane"]  # the same search: the grids still fit


# --- interrupts -------------------------------------------------------------------------------


def test_an_interrupted_search_says_nothing_was_saved(
    swept: Swept,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from genni_ext.cli import compute

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(compute, "search", interrupted)
    home, _experiment = _copy(swept, tmp_path)
    before = _snapshot(home)
    status, _out, err = _genni(
        capsys, "search", "--config", str(swept.config), "--home", str(home), "--search-name", "new"
    )
    assert status == 130
    assert err.strip().endswith(
        "genni search: interrupted; the search stopped before it finished, and a search is "
        "saved only once it finishes, so nothing of it was saved; run the command again to "
        "search from the start"
    ), err
    assert "chunks" not in err and _snapshot(home) == before
    status, _out, err = _genni(
        capsys, "search", "--config", str(swept.config), "--home", str(home), "--replace"
    )
    assert status == 130 and "search 'search' on disk is the earlier one, unchanged" in err


def test_an_interrupted_sweep_says_which_chunks_are_saved(
    swept: Swept,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_decided = chunk_runs.run_decided
    calls: list[int] = []

    def stopped_at_the_second(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return run_decided(*args, **kwargs)

    monkeypatch.setattr(chunk_runs, "run_decided", stopped_at_the_second)
    home, experiment = _copy(swept, tmp_path)
    shutil.rmtree(experiment.grid_dir("plane"))
    status, _out, err = _genni(
        capsys, "sweep", "--config", str(swept.config), "--home", str(home), "--no-progress"
    )
    assert status == 130
    assert (
        "genni sweep: interrupted; grid 'plane': 1 of 3 chunks saved; run the same command again"
        in err
    )
    assert experiment.sweep_status("plane").chunks_done == 1


# --- the home -------------------------------------------------------------------------------


def test_a_home_that_is_a_file_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.write_text("a file")
    with pytest.raises(InputError, match=r"the genni home .*home is a file, not a folder"):
        Experiment("tiny", home)
    with pytest.raises(InputError, match=r"lies in .*home, which is a file"):
        list_experiments(home / "inside")
    monkeypatch.setenv("GENNI_HOME", str(home))
    config = tmp_path / "tiny.yml"
    config.write_text(yaml.safe_dump(CONFIG))
    for args in (["ls"], ["check", "tiny"], ["search", "--config", str(config)]):
        status, out, err = _genni(capsys, *args)
        assert status == 1 and "is a file, not a folder; point GENNI_HOME" in err, (args, out, err)
        assert "Traceback" not in err and err.count("\n") == 1
