"""The ``genni`` command: end to end, kill-and-resume, --help, bad configs.

The command runs in a subprocess (``python -m genni_ext.cli``) with its working directory
in a temporary folder, so that it imports the installed package, not the source tree.
Checks that need no process of their own call ``genni_ext.cli.main`` directly.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image
import pytest
import torch
import yaml

from genni_ext import cli
from genni_ext.analysis import lowest_passes
from genni_ext.cli.parser import build_parser
from genni_ext.cli.presets import DEMO_LENET, DEMO_TWO_NEURON, DEMO_TWO_NEURON_PAPER
from genni_ext.core.grid import Grid
from genni_ext.core.subspace import Subspace
from genni_ext.errors import InputError
from genni_ext.run.grid_sweep import sweep_grid
from genni_ext.store import Experiment
from genni_ext.store.config import TOP_KEYS, build_problem, validate_config

TINY = {
    "experiment": "tiny",
    "model": {"name": "two_neuron"},
    "seed": 10,
    "probes": {"num_probes": 512, "seed": 10},
    "search": {"starts": 6, "steps": 150, "lr": 0.05, "batch_size": 128, "seed": 11},
    "subspace": {"eps": 0.01, "m": 2},
    "grids": [
        {"name": "plane", "bound": [-2, 2], "n": 12},
        {"name": "cube", "bound": [-2, 2], "n": 5, "dim": 3},
    ],
    "chunk_points": 50,
}


def _env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key != "GENNI_HOME"}


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "genni_ext.cli", *args]


def _genni(cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _command(*args), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout
    )


def _write(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _reference_values(home: Path, experiment: str, grid_name: str, spec: dict) -> torch.Tensor:
    """The grid's values from one uninterrupted sweep_grid call, in this process."""
    stored = Experiment(experiment, home)
    config = validate_config(stored.load_config())
    problem = build_problem(config)
    result = stored.load_search(config["search"]["name"])
    subspace = Subspace.from_search(result, config["subspace"]["eps"], spec["dim"])
    grid = Grid.uniform(tuple(spec["bound"]), spec["n"], spec["dim"])
    return sweep_grid(problem, subspace, grid).values


# --- end to end -----------------------------------------------------------------------------


@pytest.mark.slow
def test_search_sweep_ls(tmp_path: Path) -> None:
    config = _write(tmp_path / "tiny.yml", TINY)
    home = tmp_path / "home"

    done = _genni(tmp_path, "search", "--config", str(config), "--home", str(home))
    assert done.returncode == 0, done.stderr
    assert re.search(r"\d+ of 6 converged \(J < 0\.01\)", done.stdout), done.stdout
    experiment = Experiment("tiny", home)
    assert experiment.searches() == ["search"]
    assert experiment.load_config()["search"]["lr"] == 0.05

    done = _genni(tmp_path, "sweep", "--config", str(config), "--home", str(home), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "grid 'plane' (12×12 on [-2, 2]^2): 3 chunks of 60 points" in done.stdout
    assert "computed 3 of 3 chunks in this run" in done.stdout  # plane: 144 points
    assert "computed 3 of 3 chunks in this run" in done.stdout.split("grid 'cube'")[1]  # 125
    assert "ε-set (J < 0.01)" in done.stdout
    assert experiment.grids() == ["cube", "plane"]
    plane = experiment.load_grid("plane")
    assert plane.values.shape == (12, 12)
    reference = _reference_values(home, "tiny", "plane", {**TINY["grids"][0], "dim": 2})
    assert torch.equal(plane.values, reference)
    assert experiment.load_grid("cube").values.shape == (5, 5, 5)

    # Again, from the saved config: nothing left to compute.
    done = _genni(tmp_path, "sweep", "--experiment", "tiny", "--home", str(home))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("complete on disk; computing 0 chunks") == 2

    # The home from GENNI_HOME, as `genni ls` sees it.
    listing = subprocess.run(
        _command("ls"),
        cwd=tmp_path,
        env={**_env(), "GENNI_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listing.returncode == 0, listing.stderr
    out = listing.stdout
    assert f"genni home: {home}" in out
    assert "tiny/  model two_neuron; 1 search(es), 2 grid(s)" in out
    assert re.search(r"searches/search +6 starts × 150 steps, 4 params, \d+ converged", out)
    assert re.search(r"grids/plane +12×12, complete +[\d.]+ kB +\d{4}-\d\d-\d\d \d\d:\d\d", out)
    assert re.search(r"grids/cube +5×5×5, complete", out)
    assert not [name for name in _files(home) if name.endswith(".tmp")]


@pytest.mark.slow
def test_demo_quick(tmp_path: Path) -> None:
    done = _genni(tmp_path, "demo", "--quick", "--no-progress", timeout=180)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    home = tmp_path / "genni_home"  # the default home: ./genni_home
    assert f"home:        {home}" in out
    assert re.search(r"\d+ of 32 starts converged \(J < 0\.0022\d+\)", out)
    assert re.search(r"21×21 on \[-2\.5, 2\.5\]\^2: ε-set \d+ of 441 points", out)
    assert re.search(r"9×9×9 on \[-2\.5, 2\.5\]\^3: ε-set \d+ of 729 points", out)
    # The analysis: class dimension, found points, topology with the resolution check.
    assert "the class is locally 2-dimensional" in out
    assert re.search(r"Of 32 found points: \d+ G_ReLU images of θ", out)
    assert "refined to 41×41" in out and "refined to 17×17×17" in out
    assert "warning" not in out  # ε = 5 % of the constant function's J
    assert "time taken:" in out
    experiment = Experiment("demo_quick", home)
    # The demo ends by drawing every picture that fits, and report.md shows each one.
    pictures = {
        "search_convergence.png",
        "plane2d_surface.png",
        "plane2d_contour.png",
        "space3d_scatter3d.png",
        "space3d_slices.png",
    }
    drawn = {path.name for path in experiment.plots_dir.iterdir()}
    assert pictures | {"space3d_scatter3d.html"} <= drawn
    report = (experiment.path / "report.md").read_text()
    assert "space3d_umap" in report  # drawn, or listed with the reason it was not
    # The demo restarts collapsed starts and says how often, in the run and the report.
    restarts = r"estarts of collapsed starts: \d+ \(\d+ of 32 starts restarted, at most 5 each\)"
    assert re.search("r" + restarts, out) and re.search("R" + restarts, report)
    assert "## What the ε-set is" in report and "**Class dimension** (at θ)" in report
    for figure in ("found_points", "plane2d_components", "space3d_betti_curve"):
        assert (experiment.plots_dir / f"{figure}.png").is_file()
        assert f"(plots/{figure}.png)" in report
    assert set(experiment.grids()) == {"plane2d", "space3d", "plane2d_refined", "space3d_refined"}
    for name in pictures:
        assert f"(plots/{name})" in report
        assert float(matplotlib.image.imread(experiment.plots_dir / name).std()) > 0.0
    # `genni plot` redraws one grid at another ε; an unknown experiment is a clear error.
    redraw = _genni(tmp_path, "plot", "demo_quick", "plane2d", "--eps", "0.01", timeout=120)
    assert redraw.returncode == 0, redraw.stderr
    assert "plane2d_contour.png" in redraw.stdout and "space3d" not in redraw.stdout
    assert "ε = 0.01" in (experiment.path / "report.md").read_text()
    missing = _genni(tmp_path, "plot", "no_such_experiment", timeout=60)
    assert missing.returncode == 1 and "no experiment 'no_such_experiment'" in missing.stderr
    # A second run reuses the search and the grids.
    again = _genni(tmp_path, "demo", "--quick", "--no-progress", timeout=180)
    assert again.returncode == 0, again.stderr
    assert "reusing the one on disk" in again.stdout
    assert again.stdout.count("computing 0 chunks") == 2


@pytest.mark.slow
def test_demo_paper_warns_about_trivial_functions(tmp_path: Path) -> None:
    """--paper: the paper's θ, whose ε = 0.0025 is 18× the zero function's J: said at once."""
    done = _genni(tmp_path, "demo", "--paper", "--quick", "--no-progress", timeout=180)
    assert done.returncode == 0, done.stderr
    assert "warning: ε = 0.0025 is" in done.stdout
    assert "the ε-set contains functions that ignore their input" in done.stdout
    report = (tmp_path / "genni_home/experiments/demo_paper_quick/report.md").read_text()
    assert "**Warning:**" in report


@pytest.mark.slow
def test_analyse_command(tmp_path: Path) -> None:
    """genni analyse on a searched and swept experiment: analysis.json, figures, report."""
    config = _write(tmp_path / "tiny.yml", TINY)
    home = str(tmp_path / "home")
    for command in ("search", "sweep"):
        done = _genni(tmp_path, command, "--config", str(config), "--home", home, "--no-progress")
        assert done.returncode == 0, done.stderr
    done = _genni(tmp_path, "analyse", "tiny", "plane", "--home", home, "--no-refine",
                  "--eps-relative", "0.5", "--connect", "--no-progress")  # fmt: skip
    assert done.returncode == 0, done.stderr
    experiment = Experiment("tiny", Path(home))
    analysis = experiment.load_analysis()
    assert analysis is not None and set(analysis["topology"]) == {"plane"}
    constant = analysis["baselines"]["constant_loss"]
    assert analysis["eps"] == pytest.approx(0.5 * constant)
    assert analysis["topology"]["plane"]["resolution"]["checked"] is False
    assert analysis["identifiability"]["computed"] is True
    assert "plane_refined" not in experiment.grids()
    assert (experiment.plots_dir / "plane_components.png").is_file()
    # The passes: the same numbers as lowest_passes on the stored grid, in JSON and report.
    entry = analysis["passes"]["plane"]
    expected = lowest_passes(experiment.load_grid("plane"), analysis["eps"])
    assert {tuple(p["between"]): p["J"] for p in entry["passes"]} == pytest.approx(expected.heights)
    assert entry["summary"] == expected.summary()
    report = (experiment.path / "report.md").read_text()
    assert "## What the ε-set is" in report
    assert f"**Passes on grid 'plane':** {expected.summary()}" in report
    # --connect: θ and every converged start, grouped by paths below ε, in JSON and report.
    connected = analysis["connectivity"]
    converged = int(experiment.load_search().converged(analysis["eps"]).sum())
    assert connected["points"][0] == "θ" and len(connected["points"]) == 1 + converged
    assert sum(len(group) for group in connected["groups_below_eps"]) == 1 + converged
    assert f"**Connectivity in the full parameter space:** {connected['summary']}" in report
    assert (experiment.plots_dir / "connectivity.png").is_file()
    if len(expected.points) >= 2:
        assert (experiment.plots_dir / "plane_passes.png").is_file()
        assert (experiment.plots_dir / "plane_disconnectivity.png").is_file()
    missing = _genni(tmp_path, "analyse", "nope", "--home", home)
    assert missing.returncode == 1 and "nope" in missing.stderr
    both = _genni(tmp_path, "analyse", "tiny", "--home", home, "--eps", "1", "--eps-relative", "1")
    assert both.returncode == 2 and "not allowed with" in both.stderr


def test_demo_presets_are_the_papers() -> None:
    """--paper is the paper's experiment exactly; the default demo keeps its net, probes and
    optimiser but takes a θ with a non-trivial function and ε relative to it."""
    config = validate_config(DEMO_TWO_NEURON_PAPER)
    assert config["model"] == {"name": "two_neuron"}
    assert config["seed"] == 10
    assert config["probes"]["num_probes"] == 16384
    assert (config["search"]["batch_size"], config["search"]["lr"]) == (256, 0.015)
    assert config["subspace"]["eps"] == 0.0025
    assert config["subspace"]["eps_relative"] is None
    grids = {(g["dim"], g["n"], tuple(g["bound"])) for g in config["grids"]}
    assert grids == {(2, 100, (-2.0, 2.0)), (3, 50, (-2.0, 2.0))}
    demo = validate_config(DEMO_TWO_NEURON)
    assert (demo["seed"], demo["subspace"]["eps_relative"]) == (5, 0.05)
    for key in ("model", "probes"):
        assert demo[key] == {**config[key], **({"seed": 5} if key == "probes" else {})}
    assert (demo["search"]["batch_size"], demo["search"]["lr"]) == (256, 0.015)
    assert all(g["n"] % 2 == 1 for g in demo["grids"])  # c = 0 on the grid
    lenet = validate_config(DEMO_LENET)
    assert lenet["model"]["name"] == "lenet5"
    assert (lenet["model"]["input_size"], lenet["model"]["num_outputs"]) == (28, 1)
    assert lenet["search"]["lr"] == 0.001
    assert {tuple(g["bound"]) for g in lenet["grids"]} == {(-13.0, 13.0)}


# --- kill and resume ------------------------------------------------------------------------

RESUME = {
    "experiment": "resume",
    "model": {"name": "mlp", "sizes": [8, 64, 64, 1]},
    "probes": {"num_probes": 4096},
    "search": {"starts": 3, "steps": 1},
    "subspace": {"eps": 1.0e6},  # every start counts: the plane only has to exist
    "grids": [{"name": "plane", "bound": [-1, 1], "n": 40}],
    "chunk_points": 40,  # one row of the 40x40 grid a chunk: 40 chunks
}


@pytest.mark.slow
def test_kill_and_resume(tmp_path: Path) -> None:
    config = _write(tmp_path / "resume.yml", RESUME)
    home = tmp_path / "home"
    assert cli.main(["search", "--config", str(config), "--home", str(home), "--no-progress"]) == 0
    chunks = Experiment("resume", home).grid_dir("plane") / "done"  # one record a chunk

    process = subprocess.Popen(
        _command("sweep", "--config", str(config), "--home", str(home), "--no-progress"),
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    try:
        while not (chunks.is_dir() and any(chunks.glob("*.json"))):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no chunk file appeared"
            time.sleep(0.002)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.communicate()
    assert process.returncode == -signal.SIGKILL
    done = len(list(chunks.glob("*.json")))
    assert 1 <= done < 40, f"{done} of 40 chunks done when killed"

    listing = _genni(tmp_path, "ls", "--home", str(home))
    assert re.search(rf"grids/plane +40×40, partial: {done}/40 chunks", listing.stdout), listing

    resumed = _genni(tmp_path, "sweep", "--config", str(config), "--home", str(home))
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming, {done} of 40 chunks done; computing {40 - done} chunks" in resumed.stdout
    assert f"computed {40 - done} of 40 chunks in this run" in resumed.stdout
    values = Experiment("resume", home).load_grid("plane").values
    expected = _reference_values(home, "resume", "plane", {**RESUME["grids"][0], "dim": 2})
    assert torch.equal(values, expected)
    assert not [name for name in _files(home) if name.endswith(".tmp")]
    assert Experiment("resume", home).check_grid("plane") == []


# --- help -----------------------------------------------------------------------------------


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("command", ["search", "sweep", "ls", "analyse", "demo"])
def test_help_lists_every_option(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    parser = _subparsers()[command]
    for action in parser._actions:
        if action.help == argparse.SUPPRESS:
            continue
        for option in action.option_strings:
            assert option in text, f"{option} missing from `genni {command} --help`"
        if not action.option_strings:
            assert action.metavar in text
        assert action.help, f"{action.dest} of `genni {command}` has no help text"
    if command not in ("ls", "analyse"):
        for key in (*TOP_KEYS, "num_probes", "starts", "record_every", "eps", "bound"):
            assert f"{key}:" in text, f"config key {key} missing from `genni {command} --help`"


@pytest.mark.slow
def test_top_level_help(tmp_path: Path) -> None:
    done = _genni(tmp_path, "--help", timeout=60)
    assert done.returncode == 0
    for command in ("search", "sweep", "ls", "analyse", "demo"):
        assert command in done.stdout


# --- bad configs ----------------------------------------------------------------------------


BAD_CONFIGS = [
    ({**TINY, "colour": "red"}, "config key 'colour': is not a known key"),
    ({**TINY, "search": {"lrate": 0.1}}, "config key 'search.lrate': is not a known key"),
    ({**TINY, "search": {"lr": "fast"}}, "config key 'search.lr': expected a positive number"),
    ({**TINY, "probes": {"num_probes": 0}}, "config key 'probes.num_probes': expected an int >= 1"),
    ({**TINY, "grids": [{"name": "g", "bound": [2, -2], "n": 3}]}, "'grids[0].bound'"),
    ({**TINY, "grids": [{"name": "g", "bound": [-2, 2], "n": "ten"}]}, "'grids[0].n'"),
    ({**TINY, "grids": [{"bound": [-2, 2], "n": 3}]}, "'grids[0].name': is missing"),
    ({key: v for key, v in TINY.items() if key != "model"}, "config key 'model': is missing"),
    ({**TINY, "model": {"name": "resnet"}}, "'model.name': expected one of two_neuron"),
    ({**TINY, "model": {"name": "mlp"}}, "config key 'model.sizes': is missing"),
    ({**TINY, "model": {"name": "lenet5", "depth": 3}}, "'model.depth': is not a known key"),
    ({**TINY, "experiment": "a/b"}, "config key 'experiment'"),
    ({**TINY, "seed": 12}, "config key 'search.seed'"),
    ({**TINY, "search": {"optimizer": "adam", "momentum": 0.9}}, "'search.momentum'"),
    ({**TINY, "backend": "gpu"}, "config key 'backend': expected one of auto | fused | torch"),
    ({**TINY, "device": "gpu"}, "config key 'device': expected cpu, cuda or cuda:N, got 'gpu'"),
    ({**TINY, "device": "cpu:1"}, "config key 'device': expected cpu, cuda or cuda:N"),
    ({**TINY, "device": 0}, "config key 'device': expected cpu, cuda or cuda:N, got 0 (int)"),
    (
        {**TINY, "device": f"cuda:{torch.cuda.device_count() if torch.cuda.is_available() else 0}"},
        "config key 'device': is 'cuda:",
    ),
]


@pytest.mark.parametrize(("config", "message"), BAD_CONFIGS)
def test_bad_config(
    tmp_path: Path, config: dict, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path / "bad.yml", config)
    home = tmp_path / "home"
    for command in ("search", "sweep"):
        assert cli.main([command, "--config", str(path), "--home", str(home)]) == 1
        error = capsys.readouterr().err
        assert message in error, error
        assert error.startswith(f"genni {command}: error:")
    assert not home.exists()
    assert _files(tmp_path) == ["bad.yml"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "search.lr=fast"], "config key 'search.lr'"),
        (["--lr", "-1"], "config key 'search.lr': expected a positive number, got -1.0"),
        (["--set", "search.colour=1"], "config key 'search.colour': is not a known key"),
        (["--set", "nonsense"], "expected KEY=VALUE"),
        (["--model", "mlp"], "config key 'model.sizes': is missing"),
    ],
)
def test_bad_overrides(
    tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path / "ok.yml", TINY)
    home = tmp_path / "home"
    assert cli.main(["search", "--config", str(path), "--home", str(home), *args]) == 1
    assert message in capsys.readouterr().err
    assert not home.exists()


def test_unreadable_configs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "broken.yml").write_text("model: {name: two_neuron\n")
    assert cli.main(["search", "--config", str(tmp_path / "broken.yml")]) == 1
    assert "is not valid YAML" in capsys.readouterr().err
    (tmp_path / "list.yml").write_text("- 1\n- 2\n")
    assert cli.main(["search", "--config", str(tmp_path / "list.yml")]) == 1
    assert "must hold a mapping" in capsys.readouterr().err
    assert cli.main(["search", "--config", str(tmp_path / "missing.yml")]) == 1
    assert "cannot read the config file" in capsys.readouterr().err


def test_sweep_needs_a_search(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path / "ok.yml", TINY)
    home = tmp_path / "home"
    assert cli.main(["sweep", "--config", str(path), "--home", str(home)]) == 1
    assert "has no search 'search'" in capsys.readouterr().err
    assert cli.main(["sweep", "--home", str(home)]) == 1
    assert "needs --config FILE, or --experiment NAME" in capsys.readouterr().err
    assert not home.exists()


def test_ls_empty_home(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["ls", "--home", str(tmp_path / "none")]) == 0
    assert "no experiments yet" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_search_and_sweep_on_cuda(tmp_path: Path) -> None:
    """--device cuda runs search and sweep on the GPU and records it; the same grid cannot
    then be resumed on the CPU (J differs in its last bits there)."""
    config = _write(tmp_path / "tiny.yml", {**TINY, "grids": TINY["grids"][:1]})
    home = str(tmp_path / "home")
    for command in ("search", "sweep"):
        done = _genni(tmp_path, command, "--config", str(config), "--home", home, "--device",
                      "cuda", "--no-progress")  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert "(fused-cuda)" in done.stdout
    experiment = Experiment("tiny", Path(home))
    loaded = experiment.load_grid("plane")
    assert loaded.metadata["device"].startswith("cuda (")
    assert experiment.search_metadata("search")["problem"]["device"].startswith("cuda (")
    again = _genni(tmp_path, "sweep", "--config", str(config), "--home", home, "--no-progress")
    assert again.returncode == 1
    assert "device (J on another kind of device" in again.stderr


# --- the front door of the store and the command line -------------------------------------


def test_config_reads_1e_3_as_a_number_and_lenet_as_lenet5() -> None:
    config = validate_config(
        {**TINY, "search": {"lr": "1e-3"}, "model": {"name": "lenet", "input_size": 16}}
    )
    assert config["search"]["lr"] == 0.001
    assert config["model"]["name"] == "lenet5"
    with pytest.raises(InputError, match=r"search\.lr"):
        validate_config({**TINY, "search": {"lr": "fast"}})


@pytest.mark.slow
def test_genni_yml_with_a_typo_is_refused(tmp_path: Path) -> None:
    (tmp_path / "genni.yml").write_text("genni_hom: elsewhere\n")
    done = _genni(tmp_path, "ls", timeout=60)
    assert done.returncode == 1 and "unknown key(s) genni_hom" in done.stderr


@pytest.mark.slow
def test_ls_of_an_unknown_experiment_fails(tmp_path: Path) -> None:
    done = _genni(tmp_path, "ls", "nope", timeout=60)
    assert done.returncode == 1 and "no experiment 'nope'" in done.stderr


@pytest.mark.slow
def test_an_unwritable_home_is_one_clear_error(tmp_path: Path) -> None:
    home = tmp_path / "a_file"
    home.write_text("not a folder")
    config = _write(tmp_path / "tiny.yml", TINY)
    done = _genni(tmp_path, "search", "--config", str(config), "--home", str(home), timeout=120)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "is a file, not a folder" in done.stderr


@pytest.mark.slow
def test_plot_checks_grid_names_before_drawing(tmp_path: Path) -> None:
    config = _write(tmp_path / "tiny.yml", {**TINY, "grids": TINY["grids"][:1]})
    home = str(tmp_path / "home")
    for command in ("search", "sweep"):
        done = _genni(tmp_path, command, "--config", str(config), "--home", home, "--no-progress")
        assert done.returncode == 0, done.stderr
    done = _genni(tmp_path, "plot", "tiny", "nope", "--home", home, timeout=60)
    assert done.returncode == 1 and "no grid 'nope'" in done.stderr
    assert not (Path(home) / "experiments/tiny/plots").exists()


@pytest.mark.slow
def test_sigterm_stops_like_ctrl_c(tmp_path: Path) -> None:
    """SIGTERM mid-sweep: the interrupted message, exit 130, finished chunks kept."""
    config = _write(tmp_path / "resume.yml", RESUME)
    home = str(tmp_path / "home")
    done = _genni(tmp_path, "search", "--config", str(config), "--home", home, "--no-progress")
    assert done.returncode == 0, done.stderr
    process = subprocess.Popen(
        _command("sweep", "--config", str(config), "--home", home, "--no-progress"),
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    chunks = Path(home) / "experiments/resume/grids/plane/done"
    deadline = time.time() + 60
    while time.time() < deadline and not (chunks.is_dir() and len(list(chunks.iterdir())) >= 2):
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    saved = len(list(chunks.iterdir()))  # each chunk's record
    assert f"interrupted; grid 'plane': {saved} of 40 chunks saved; run the same command" in err


# --- the run layer: a Dask cluster, damage, genni check -----------------------------------


@pytest.mark.slow
def test_sweep_on_a_dask_cluster_equals_one_process(tmp_path: Path) -> None:
    pytest.importorskip("distributed", reason="dask is in the test extra")
    config = _write(tmp_path / "tiny.yml", {**TINY, "grids": TINY["grids"][:1]})
    home = tmp_path / "home"
    assert _genni(tmp_path, "search", "--config", str(config), "--home", str(home)).returncode == 0
    done = _genni(
        tmp_path, "sweep", "--config", str(config), "--home", str(home), "--dask", "local:2",
        "--no-progress", timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "dask: 2 worker(s) at local:2" in done.stdout
    assert "computed 3 of 3 chunks in this run" in done.stdout
    values = Experiment("tiny", home).load_grid("plane").values
    spec = {**TINY["grids"][0], "dim": 2}
    assert torch.equal(values, _reference_values(home, "tiny", "plane", spec))
    bad = _genni(tmp_path, "sweep", "--config", str(config), "--home", str(home), "--dask", "x")
    assert bad.returncode == 1 and "local:N" in bad.stderr and "tcp://HOST:PORT" in bad.stderr


@pytest.mark.slow
def test_damage_is_reported_by_check_ls_and_plot_and_repaired_by_sweep(tmp_path: Path) -> None:
    config = _write(tmp_path / "tiny.yml", TINY)
    home = tmp_path / "home"
    for command in ("search", "sweep"):
        done = _genni(tmp_path, command, "--config", str(config), "--home", str(home))
        assert done.returncode == 0, done.stderr
    ok = _genni(tmp_path, "check", "tiny", "--home", str(home))
    assert ok.returncode == 0 and "tiny: ok" in ok.stdout, ok.stdout + ok.stderr

    experiment = Experiment("tiny", home)
    chunk = experiment.grid_dir("cube") / "grid.zarr" / "J" / "c" / "1" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:-5])  # truncated
    (experiment.search_dir() / "metadata.json").write_text("{broken")
    check = _genni(tmp_path, "check", "tiny", "--home", str(home))
    assert check.returncode == 1
    assert re.search(r"DAMAGED grids/cube: chunk 1 .*cannot be read.*genni sweep", check.stdout)
    assert re.search(
        r"DAMAGED searches/search: .*metadata\.json does not match the checksum.*genni search "
        r"--config FILE --replace.*grids cube, plane were built from it",
        check.stdout,
    )
    assert "tiny: 2 problem(s)" in check.stdout and "Traceback" not in check.stderr

    listing = _genni(tmp_path, "ls", "--home", str(home))
    assert listing.returncode == 0, listing.stderr
    assert re.search(r"searches/search +DAMAGED: .*metadata\.json", listing.stdout)
    assert re.search(r"grids/plane +12×12, complete", listing.stdout)

    drawn = _genni(tmp_path, "plot", "tiny", "plane", "--home", str(home))
    assert drawn.returncode == 0, drawn.stderr
    everything = _genni(tmp_path, "plot", "tiny", "--home", str(home))
    assert everything.returncode == 0, everything.stderr
    assert re.search(r"grid 'cube'.*chunk 1", everything.stdout), everything.stdout
    assert (home / "experiments/tiny/plots").is_dir()
    cube = _genni(tmp_path, "plot", "tiny", "cube", "--home", str(home))
    assert cube.returncode == 1 and "chunk 1" in cube.stderr and "Traceback" not in cube.stderr

    again = _genni(tmp_path, "search", "--config", str(config), "--home", str(home))
    assert again.returncode == 1 and "grid(s) cube, plane were built from" in again.stderr
    again = _genni(tmp_path, "search", "--config", str(config), "--home", str(home), "--replace")
    assert again.returncode == 0, again.stderr
    assert "grid(s) cube, plane were built from a search equal to this one" in again.stdout
    repaired = _genni(tmp_path, "sweep", "--config", str(config), "--home", str(home))
    assert repaired.returncode == 0, repaired.stderr
    assert _genni(tmp_path, "check", "tiny", "--home", str(home)).returncode == 0
