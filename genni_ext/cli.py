"""The ``genni`` command: search, sweep, list and demo, from a YAML config.

    genni search --config run.yml          Problem + batched search, saved in the experiment
    genni sweep  --config run.yml          the config's grids on the searched plane (resumable)
    genni ls                               experiments, searches and grids in the home
    genni demo                             the paper's 4-parameter experiment, end to end
    genni demo --model lenet               a LeNet-5 experiment sized for a laptop

Every command takes ``--config FILE`` and flags that override it (``--lr 0.01``, or any key
with ``--set search.lr=0.01``); ``genni <command> --help`` lists them and the config
schema (also in :mod:`genni_ext.config`). Results go to the experiments home:
``GENNI_HOME``, else ``genni_home:`` in ``./genni.yml``, else ``./genni_home`` (``--home``
overrides all three). ``genni sweep`` writes each grid in chunks; after an interruption
the same command computes only the missing chunks.

``genni demo`` runs the GENNI paper's 4-parameter experiment with the paper's settings:
φ(x) = c·ReLU(a x) + d·ReLU(b x), θ drawn with seed 10, 16384 standard-normal probes,
16 starts of 2000 SGD steps (batch 256, lr 0.015), ε = 0.0025, a 2-D grid [−2, 2]×100
and a 3-D grid [−2, 2]×50 (each on the plane through the best converged point and the
next independent converged ones).

``genni demo --model lenet`` runs LeNet-5 (28×28×1 input, one output, 60,941 parameters,
θ drawn with seed 10) at a size that finishes in a few minutes on two cores. The paper's
settings, and the demo's:

    ==========  ==========================  =========================================
    setting     paper                       genni demo --model lenet
    ==========  ==========================  =========================================
    probes      8192                        1024
    search      batch 256, lr 0.001         Adam, batch 256, lr 0.001, 6 starts × 100
    ε           (not given)                 5·10⁻⁴ (the targets' mean square is 8.8·10⁻³)
    2-D grid    [−13, 13] × 100             [−13, 13] × 40
    3-D grid    [−13, 13] × 35              [−13, 13] × 14
    ==========  ==========================  =========================================

Adam, because plain SGD at lr 0.001 barely moves LeNet-5 in a few hundred steps (J from
2.9·10⁻² to 7·10⁻³ in 60 steps, where Adam reaches 2·10⁻⁴); after 100 Adam steps every
start is at J ≈ 1.3–2.1·10⁻⁴ and stays there on fresh probes. The sweep costs about
6 ms per grid point at 1024 probes (fused engine, two cores), so the paper's grids
(10⁴ and 4.3·10⁴ points at 8192 probes) take about 8 min and 36 min. Run the paper's
size with ``--config`` or flags (``--num-probes 8192 --set grids='[{name: plane2d,
bound: [-13, 13], n: 100, dim: 2}]'``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as _dt
import importlib.util
import logging
import math
import signal
import sys
import textwrap
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import GenniError, InputError

_SCHEMA_START = "    experiment:"


def _schema_text() -> str:
    """The YAML schema block of genni_ext.config's docstring (for --help)."""
    from . import config

    doc = config.__doc__ or ""
    start = doc.find(_SCHEMA_START)
    end = doc.find("\n\n", start)
    block = doc[start:end] if start >= 0 else ""
    return "\n".join(line[2:] if line.startswith("  ") else line for line in block.splitlines())


# --- demo presets ---------------------------------------------------------------------------

# The paper's two-neuron experiment, exactly: θ from seed 10 computes a function so small
# (mean φ² = 1.4e-4) that its ε = 0.0025 is 18× the zero function's J.
DEMO_TWO_NEURON_PAPER: dict[str, Any] = {
    "experiment": "demo_paper",
    "model": {"name": "two_neuron"},
    "seed": 10,
    "probes": {"num_probes": 16384, "seed": 10},
    "search": {
        "starts": 16,
        "steps": 2000,
        "lr": 0.015,
        "batch_size": 256,
        "optimizer": "sgd",
        "seed": 11,
        "record_every": 100,
    },
    "subspace": {"eps": 0.0025, "m": 2},
    "grids": [
        {"name": "plane2d", "bound": [-2, 2], "n": 100, "dim": 2},
        {"name": "space3d", "bound": [-2, 2], "n": 50, "dim": 3},
    ],
}
# The default demo: the paper's net and settings, but a θ whose function is not trivial
# (seed 5: a and b of opposite sign, so [θ] is the 2-D rescaling orbit; J of the best
# constant function 0.047) and ε = 5 % of that (about the paper's 0.0025), so every point of
# the ε-set fits θ 20× better than any constant; 32 starts, since fewer reach that ε.
DEMO_TWO_NEURON: dict[str, Any] = {
    **DEMO_TWO_NEURON_PAPER,
    "experiment": "demo",
    "seed": 5,
    "probes": {"num_probes": 16384, "seed": 5},
    "search": {**DEMO_TWO_NEURON_PAPER["search"], "starts": 32, "seed": 40},
    "subspace": {"eps_relative": 0.05, "m": 2},
    # Odd sizes put c = 0, the plane of the found points, on the grid; ±2.5 holds them all
    # (at ±2, two of them fell just outside).
    "grids": [
        {"name": "plane2d", "bound": [-2.5, 2.5], "n": 101, "dim": 2},
        {"name": "space3d", "bound": [-2.5, 2.5], "n": 51, "dim": 3},
    ],
}
DEMO_LENET: dict[str, Any] = {
    "experiment": "demo_lenet",
    "model": {"name": "lenet5"},
    "seed": 10,
    "probes": {"num_probes": 1024, "seed": 10},
    "search": {
        "starts": 6,
        "steps": 100,
        "lr": 0.001,
        "batch_size": 256,
        "optimizer": "adam",
        "seed": 11,
        "record_every": 25,
    },
    "subspace": {"eps": 0.0005, "m": 2},
    "grids": [
        {"name": "plane2d", "bound": [-13, 13], "n": 40, "dim": 2},
        {"name": "space3d", "bound": [-13, 13], "n": 14, "dim": 3},
    ],
}
# --quick (hidden, for tests): the same experiments, tiny.
_QUICK: dict[str, dict[str, Any]] = {
    "two_neuron": {
        "probes": {"num_probes": 2048},
        "search": {"steps": 1500},
        "grids": [
            {"name": "plane2d", "bound": [-2.5, 2.5], "n": 21, "dim": 2},
            {"name": "space3d", "bound": [-2.5, 2.5], "n": 9, "dim": 3},
        ],
    },
    "lenet5": {
        "probes": {"num_probes": 64},
        "search": {"starts": 4, "steps": 20, "batch_size": 32},
        "subspace": {"eps": 1.0},
        "grids": [
            {"name": "plane2d", "bound": [-13, 13], "n": 4, "dim": 2},
            {"name": "space3d", "bound": [-13, 13], "n": 2, "dim": 3},
        ],
    },
}


# --- argument parsing -----------------------------------------------------------------------

# flag dest -> dotted config key
_OVERRIDES: dict[str, str] = {
    "experiment": "experiment",
    "seed": "seed",
    "num_probes": "probes.num_probes",
    "probe_seed": "probes.seed",
    "search_name": "search.name",
    "starts": "search.starts",
    "steps": "search.steps",
    "lr": "search.lr",
    "batch_size": "search.batch_size",
    "optimizer": "search.optimizer",
    "momentum": "search.momentum",
    "tol": "search.tol",
    "search_seed": "search.seed",
    "record_every": "search.record_every",
    "eps": "subspace.eps",
    "eps_relative": "subspace.eps_relative",
    "m": "subspace.m",
    "center": "subspace.center",
    "backend": "backend",
    "device": "device",
    "precision": "precision",
    "num_threads": "num_threads",
    "chunk_points": "chunk_points",
}


def _add_home(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--home",
        metavar="DIR",
        help="experiments home (default: $GENNI_HOME, else genni_home: in ./genni.yml, "
        "else ./genni_home)",
    )


def _add_config_options(parser: argparse.ArgumentParser, *, model_help: str) -> None:
    from .config import BACKEND_NAMES, OPTIMIZERS

    parser.add_argument("--config", metavar="FILE", help="YAML config file (schema below)")
    _add_home(parser)
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bars (they go to stderr)"
    )
    group = parser.add_argument_group(
        "config overrides", "each sets one config key, over the config file's value"
    )
    group.add_argument("--experiment", metavar="NAME", help="experiment (folder) name")
    group.add_argument("--model", metavar="NAME", help=model_help)
    group.add_argument("--seed", type=int, metavar="INT", help="θ's initialisation seed")
    group.add_argument("--num-probes", type=int, metavar="N", help="probes.num_probes")
    group.add_argument("--probe-seed", type=int, metavar="INT", help="probes.seed")
    group.add_argument("--search-name", metavar="NAME", help="search.name (default: search)")
    group.add_argument("--starts", type=int, metavar="K", help="search.starts")
    group.add_argument("--steps", type=int, metavar="N", help="search.steps")
    group.add_argument("--lr", type=float, metavar="LR", help="search.lr")
    group.add_argument("--batch-size", type=int, metavar="N", help="search.batch_size")
    group.add_argument("--optimizer", choices=OPTIMIZERS, help="search.optimizer")
    group.add_argument("--momentum", type=float, metavar="X", help="search.momentum")
    group.add_argument("--tol", type=float, metavar="J", help="search.tol")
    group.add_argument("--search-seed", type=int, metavar="INT", help="search.seed")
    group.add_argument("--record-every", type=int, metavar="N", help="search.record_every")
    group.add_argument("--eps", type=float, metavar="EPS", help="subspace.eps (ε)")
    group.add_argument(
        "--eps-relative",
        type=float,
        metavar="FRACTION",
        help="subspace.eps_relative: ε as a fraction of the constant-function loss",
    )
    group.add_argument("--m", type=int, metavar="M", help="subspace.m")
    group.add_argument("--center", type=int, metavar="INDEX", help="subspace.center")
    group.add_argument("--backend", choices=BACKEND_NAMES, help="backend of the sweep")
    group.add_argument(
        "--device",
        metavar="DEVICE",
        help="where search and sweep run: cpu (default), cuda or cuda:N",
    )
    group.add_argument(
        "--precision",
        choices=("full", "tf32"),
        help="sweeps in the dtype's full precision (default) or with Linear/Conv2d on TF32 "
        "tensor cores (float32 on CUDA)",
    )
    group.add_argument("--num-threads", type=int, metavar="N", help="CPU threads")
    group.add_argument("--chunk-points", type=int, metavar="N", help="grid points per chunk")
    group.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any config key (dotted, VALUE in YAML), e.g. --set model.sizes=[8,32,1] "
        "or --set grids='[{name: g, bound: [-1, 1], n: 50}]'; repeatable",
    )


def _wrap(*paragraphs: str) -> str:
    """Paragraphs filled to 88 columns (the raw formatter keeps the schema's layout)."""
    return "\n\n".join(textwrap.fill(text, 88) for text in paragraphs)


def _parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    schema = (
        "config file (YAML; every key but experiment and model optional, with the defaults "
        "shown):\n\n" + _schema_text()
    )
    parser = argparse.ArgumentParser(
        prog="genni",
        description="GENNI: find and see the functional equivalence classes of a network's "
        "parameters.",
        epilog="Run `genni COMMAND --help` for a command's options and the config schema.",
        formatter_class=formatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    search = commands.add_parser(
        "search",
        help="search for parameters equivalent to θ; save the result",
        description=_wrap(
            "Build the problem (model, θ, probes) and run the batched search (Algorithm 1); "
            "save the config and the search in <home>/experiments/<experiment>/. A search of "
            "the same name is replaced."
        ),
        epilog=schema,
        formatter_class=formatter,
    )
    _add_config_options(search, model_help="model.name: two_neuron | mlp | lenet5")

    sweep = commands.add_parser(
        "sweep",
        help="sweep J over the config's grids on the searched plane (resumable)",
        description=_wrap(
            "Load the experiment's search, build the plane through its converged points (one "
            "per grid, with m = the grid's dim) and sweep J over every grid of the config, in "
            "chunks written as they finish. Run the same command again after an "
            "interruption: it computes only the missing chunks. Without --config, the "
            "experiment's saved config.yml is used (pass --experiment)."
        ),
        epilog=schema,
        formatter_class=formatter,
    )
    _add_config_options(sweep, model_help="model.name: two_neuron | mlp | lenet5")
    sweep.add_argument(
        "--grid",
        dest="grid_names",
        action="append",
        default=[],
        metavar="NAME",
        help="sweep only this grid of the config (repeatable; default: all)",
    )

    listing = commands.add_parser(
        "ls",
        help="list experiments, searches and grids with sizes and dates",
        description=_wrap(
            "List the experiments in the home: their searches (starts, converged) and grids "
            "(shape, complete or partial: chunks done / total), with sizes on disk and dates."
        ),
        formatter_class=formatter,
    )
    listing.add_argument("experiments", nargs="*", metavar="EXPERIMENT", help="only these")
    listing.add_argument("--config", metavar="FILE", help="list only the config's experiment")
    _add_home(listing)

    plot = commands.add_parser(
        "plot",
        help="draw every picture that fits an experiment's grids, and report.md",
        description=_wrap(
            "Draw into the experiment's plots folder: the search's convergence; for 2-D "
            "grids the surface (linear J) and the contour (log J); for 3-D grids the ε-set "
            "from several angles, slices, a UMAP and an interactive HTML view (with plotly); "
            "for 4-D and larger grids a UMAP. Writes report.md in the experiment with each "
            "figure and the numbers behind it."
        ),
        formatter_class=formatter,
    )
    plot.add_argument("experiment", metavar="EXPERIMENT", help="the experiment's name")
    plot.add_argument(
        "grids", nargs="*", metavar="GRID", help="only these grids (default: every grid)"
    )
    plot.add_argument(
        "--eps", type=float, metavar="EPS", help="ε (default: the config's subspace.eps)"
    )
    _add_home(plot)

    analyse = commands.add_parser(
        "analyse",
        help="what the ε-set is: baselines, class dimension, found points, topology",
        description=_wrap(
            "Analyse an experiment's search and grids and write analysis.json, the analysis "
            "figures and report.md: J of the trivial functions against ε (and a warning when "
            "the ε-set can hold functions that ignore their input); the dimension of the "
            "equivalence class at θ against the known-symmetry orbit (Jacobian rank; models "
            "above 10,000 parameters in the plane of the first grid); what each found point "
            "is (a G_ReLU image of θ, another exact equivalent, approximate, trivial); and the "
            "Betti numbers, persistence and components of each 2-D and 3-D grid's ε-set, "
            "checked on a grid of twice the resolution (a new sweep, stored as "
            "<grid>_refined; --no-refine leaves it out).",
        ),
        formatter_class=formatter,
    )
    analyse.add_argument("experiment", metavar="EXPERIMENT", help="the experiment's name")
    analyse.add_argument(
        "grids", nargs="*", metavar="GRID", help="only these grids (default: every grid)"
    )
    eps_group = analyse.add_mutually_exclusive_group()
    eps_group.add_argument("--eps", type=float, metavar="EPS", help="ε (default: the config's)")
    eps_group.add_argument(
        "--eps-relative",
        type=float,
        metavar="FRACTION",
        help="ε as a fraction of the constant-function loss",
    )
    analyse.add_argument(
        "--no-refine", action="store_true", help="skip the resolution check's finer sweeps"
    )
    analyse.add_argument(
        "--similarity",
        action="store_true",
        help="also CKA, G_ReLU-Procrustes and G_ReLU-CKA per layer between θ and the found "
        "point of lowest J",
    )
    analyse.add_argument(
        "--stitching",
        action="store_true",
        help="also stitch θ's network into that point's after every hidden layer",
    )
    analyse.add_argument(
        "--morse",
        action="store_true",
        help="also the Morse graph of descent on each grid (needs the dynamics extra, CMGDB)",
    )
    analyse.add_argument(
        "--no-progress", action="store_true", help="no progress bars (they go to stderr)"
    )
    _add_home(analyse)

    demo = commands.add_parser(
        "demo",
        help="run the paper's 4-parameter experiment end to end (or LeNet-5)",
        description=_wrap(
            "Run a whole GENNI experiment into the home: search, then a 2-D and a 3-D grid, "
            "the analysis of what the ε-set is (genni analyse) and every picture, and print "
            "where everything is and a summary.",
            "two_neuron (default): the paper's net φ(x) = c·ReLU(a x) + d·ReLU(b x) and its "
            "search settings (16384 probes, SGD, batch 256, lr 0.015, 2000 steps), with θ "
            "from seed 5 and ε = 5 % of the J of the best constant function (0.0023), 32 "
            "starts, grids [−2.5,\u00a02.5]×101 (2-D) and ×51 (3-D). Why not the paper's "
            "θ and ε: its θ (seed 10) computes a function so small that ε = 0.0025 is 18× the "
            "J of the zero function, so most of that ε-set is functions that ignore their "
            "input; seed 5 has a and b of opposite sign, so [θ] is the 2-D rescaling orbit, "
            "and the relative ε keeps every point of the ε-set 20× better than a constant. "
            "Measured on two shared cores: about 45 s end to end, 20 s of it the analysis "
            "(its resolution check sweeps a 101³ grid).",
            "--paper: the paper's exact settings (seed 10, 16 starts, ε = 0.0025, grids "
            "[−2,\u00a02]×100 and ×50); the run warns that its ε-set holds trivial functions.",
            "lenet: LeNet-5 (28×28×1, one output), sized to finish in a few minutes on two "
            "cores: seed 10, 1024 probes, 6 starts × 100 Adam steps, batch 256, lr 0.001, "
            "ε = 5e-4, grids [−13,\u00a013]×40 (2-D) and ×14 (3-D). The paper's settings: 8192 "
            "probes, batch 256, lr 0.001, grids [−13,\u00a013]×100 (2-D) and ×35 (3-D).",
            "--config and the flags override the demo's settings; a search or grid already "
            "in the home with the same settings is reused.",
        ),
        epilog=schema,
        formatter_class=formatter,
    )
    _add_config_options(demo, model_help="two_neuron (default) | lenet")
    demo.add_argument(
        "--paper",
        action="store_true",
        help="the paper's exact two-neuron settings (θ from seed 10, ε = 0.0025), whose ε-set "
        "is mostly functions that ignore their input (the run says so)",
    )
    demo.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)
    return parser


# --- config assembly ------------------------------------------------------------------------


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` laid over it (mappings merged, everything else replaced)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _raw_config(args: argparse.Namespace, base: Mapping[str, Any] | None = None) -> dict:
    """The config file over ``base``, then the flags over both (not yet validated)."""
    from .config import load_config_file, parse_assignment, set_key

    raw: dict[str, Any] = copy.deepcopy(dict(base or {}))
    if args.config is not None:
        raw = _merge(raw, load_config_file(args.config))
    model = getattr(args, "model", None)
    if model is not None and args.command != "demo":
        current = raw.get("model")
        if isinstance(current, Mapping) and current.get("name") == model:
            pass
        else:
            raw["model"] = {"name": model}
    for dest, key in _OVERRIDES.items():
        value = getattr(args, dest, None)
        if value is not None:
            set_key(raw, key, value)
    for assignment in args.assignments:
        key, value = parse_assignment(assignment)
        set_key(raw, key, value)
    return raw


def _home(args: argparse.Namespace) -> Path:
    from .store import genni_home

    return Path(args.home).absolute() if args.home else genni_home()


# --- output helpers -------------------------------------------------------------------------


def _say(text: str = "") -> None:
    print(text, flush=True)


def _size(num_bytes: int) -> str:
    value = float(num_bytes)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"  # pragma: no cover


def _date(path: Path) -> str:
    newest = 0.0
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        with contextlib.suppress(OSError):
            newest = max(newest, item.stat().st_mtime)
    return _dt.datetime.fromtimestamp(newest).strftime("%Y-%m-%d %H:%M") if newest else "-"


def _shape(shape: Sequence[int]) -> str:
    return "×".join(str(n) for n in shape)


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def _threads(config: Mapping[str, Any]) -> None:
    import torch

    if config.get("num_threads"):
        torch.set_num_threads(int(config["num_threads"]))


# --- search ---------------------------------------------------------------------------------


def _resolve_eps(config: dict[str, Any], problem: Any) -> float:
    """Set ``subspace.eps`` from ``eps_relative`` (× the constant-function loss) when that
    is given; print the trivial-function warning when ε reaches a baseline; return ε."""
    from .analysis.baselines import Baselines

    spec = config["subspace"]
    baselines = Baselines.of(problem)
    if spec.get("eps_relative") is not None:
        spec["eps"] = baselines.resolve_eps(eps_relative=spec["eps_relative"])
    warning = baselines.warning(spec["eps"])
    if warning:
        _say(f"warning: {warning}")
    return float(spec["eps"])


def _run_search(config: dict[str, Any], experiment: Any, *, progress: bool) -> tuple[Any, Any]:
    """Build the problem, search, save config and search; return (problem, result)."""
    from .config import build_problem
    from .search import search

    spec = config["search"]
    problem = build_problem(config)
    _resolve_eps(config, problem)
    start = time.perf_counter()
    result = search(
        problem,
        spec["starts"],
        steps=spec["steps"],
        lr=spec["lr"],
        batch_size=spec["batch_size"],
        optimizer=spec["optimizer"],
        momentum=spec["momentum"],
        tol=spec["tol"],
        seed=spec["seed"],
        record_every=spec["record_every"],
        progress=progress,
    )
    seconds = time.perf_counter() - start
    experiment.save_config(config)
    path = experiment.save_search(result, spec["name"], problem=problem)
    eps = config["subspace"]["eps"]
    converged = int(result.converged(eps).sum())
    losses = result.losses
    _say(
        f"search '{spec['name']}': {problem!r}; {losses.shape[0]} starts × "
        f"{result.config['steps_run']} steps in {_seconds(seconds)}; {converged} of "
        f"{losses.shape[0]} converged (J < {eps:g}); final J from {float(losses.min()):.3g} "
        f"to {float(losses.max()):.3g}"
    )
    _say(f"  saved to {path}")
    return problem, result


def _cmd_search(args: argparse.Namespace) -> int:
    from .config import validate_config
    from .store import Experiment

    config = validate_config(_raw_config(args))
    experiment = Experiment(config["experiment"], _home(args))
    _threads(config)
    _run_search(config, experiment, progress=not args.no_progress)
    return 0


# --- sweep ----------------------------------------------------------------------------------


def _problem_for_search(config: dict[str, Any], experiment: Any) -> tuple[Any, Any]:
    """The config's problem and the experiment's search, checked to belong together."""
    from .config import build_problem
    from .store import StoreError

    name = config["search"]["name"]
    metadata = experiment.search_metadata(name)
    problem = build_problem(config)
    _resolve_eps(config, problem)
    saved = metadata.get("problem") or {}
    for key, what in (("theta_hash", "θ (model or seed)"), ("probes_hash", "probes")):
        if saved.get(key) is not None and saved[key] != getattr(problem, key):
            raise StoreError(
                f"the config's {what} differ from those search '{name}' of experiment "
                f"'{experiment.name}' was run with ({key} {saved[key]} on disk, "
                f"{getattr(problem, key)} now); sweep with the config the search used "
                f"({experiment.config_path}) or run `genni search` again"
            )
    return problem, experiment.load_search(name)


def _on_device(value: Any, device: Any) -> Any:
    """A copy of the dataclass ``value`` with its tensor fields on ``device``."""
    import dataclasses

    import torch

    moved = {
        field.name: getattr(value, field.name).to(device)
        for field in dataclasses.fields(value)
        if isinstance(getattr(value, field.name), torch.Tensor)
    }
    return dataclasses.replace(value, **moved)


def _sweep_grids(
    config: Mapping[str, Any],
    experiment: Any,
    problem: Any,
    result: Any,
    grids: Sequence[Mapping[str, Any]],
    *,
    progress: bool,
) -> list[tuple[Mapping[str, Any], Any, float]]:
    """Run the resumable sweep of every grid; print a line or two per grid."""
    from .grid import Grid
    from .store import StoreError, auto_chunk_points
    from .subspace import Subspace

    eps = config["subspace"]["eps"]
    center = config["subspace"]["center"]
    done = []
    for spec in grids:
        grid = Grid.uniform(tuple(spec["bound"]), spec["n"], spec["dim"])
        # From the search's values on the CPU, so that the plane (and the store's hash of
        # it) is the same whether the search ran here, on a GPU or was loaded from disk.
        subspace = _on_device(
            Subspace.from_search(_on_device(result, "cpu"), eps, spec["dim"], center=center),
            problem.theta.device,
        )
        chunk_points = config["chunk_points"] or auto_chunk_points(problem, grid.size)
        total = math.ceil(grid.size / chunk_points)
        label = (
            f"grid '{spec['name']}' ({_shape(grid.shape)} on "
            f"[{spec['bound'][0]:g}, {spec['bound'][1]:g}]^{spec['dim']})"
        )
        try:
            status = experiment.sweep_status(spec["name"])
        except StoreError:
            status = None
        if status is not None and status.complete:
            _say(f"{label}: complete on disk; computing 0 chunks")
        elif status is not None and status.num_chunks == total:
            _say(
                f"{label}: resuming, {status.chunks_done} of {total} chunks done; computing "
                f"{status.chunks_missing} chunks"
            )
        else:
            _say(f"{label}: {total} chunks of {chunk_points} points; computing {total} chunks")
        start = time.perf_counter()
        grid_result = experiment.run_sweep(
            problem,
            subspace,
            grid,
            spec["name"],
            chunk_points=chunk_points,
            backend=config["backend"],
            num_threads=config["num_threads"],
            progress=progress,
            precision=config["precision"],
        )
        seconds = time.perf_counter() - start
        inside = int(grid_result.eps_mask(eps).sum())
        _say(f"  computed {experiment.chunks_computed} of {total} chunks in this run")
        _say(
            f"  ε-set (J < {eps:g}): {inside} of {grid.size} points "
            f"({100.0 * inside / grid.size:.1f}%); J from {float(grid_result.values.min()):.3g} "
            f"to {float(grid_result.values.max()):.3g}; {_seconds(seconds)} "
            f"({grid_result.metadata['backend']}); saved to {experiment.grid_dir(spec['name'])}"
        )
        done.append((spec, grid_result, seconds))
    return done


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .config import validate_config
    from .store import Experiment

    base: dict[str, Any] = {}
    if args.config is None:
        name = args.experiment
        if name is None:
            raise InputError(
                "genni sweep needs --config FILE, or --experiment NAME to use that "
                "experiment's saved config.yml"
            )
        base = Experiment(name, _home(args)).load_config()
    config = validate_config(_raw_config(args, base))
    experiment = Experiment(config["experiment"], _home(args))
    grids = config["grids"]
    if args.grid_names:
        known = {spec["name"] for spec in grids}
        for name in args.grid_names:
            if name not in known:
                raise InputError(
                    f"--grid {name!r} is not a grid of the config (grids: "
                    f"{', '.join(sorted(known)) or 'none'})"
                )
        grids = [spec for spec in grids if spec["name"] in args.grid_names]
    if not grids:
        raise InputError(
            "config key 'grids': the config has no grids to sweep; add a list such as "
            "grids: [{name: plane2d, bound: [-2, 2], n: 100, dim: 2}]"
        )
    _threads(config)
    problem, result = _problem_for_search(config, experiment)
    experiment.save_config(config)
    _sweep_grids(config, experiment, problem, result, grids, progress=not args.no_progress)
    return 0


# --- ls -------------------------------------------------------------------------------------


def _search_line(experiment: Any, name: str, eps: float | None) -> str:
    import numpy as np

    folder = experiment.search_dir(name)
    metadata = experiment.search_metadata(name)
    shape = metadata["tensors"].get("params", {}).get("shape", ["?", "?"])
    steps = metadata["fields"].get("config", {}).get("steps_run", "?")
    text = f"{shape[0]} starts × {steps} steps, {shape[1]} params"
    losses_file = folder / "losses.npy"
    if eps is not None and losses_file.is_file():
        losses = np.load(losses_file, allow_pickle=False)
        text += f", {int((losses < eps).sum())} converged (J < {eps:g})"
    return text


def _cmd_ls(args: argparse.Namespace) -> int:
    from .config import load_config_file
    from .store import Experiment, folder_size, list_experiments

    home = _home(args)
    wanted = list(args.experiments)
    if args.config is not None:
        name = load_config_file(args.config).get("experiment")
        if not isinstance(name, str):
            raise InputError(f"config file {args.config} names no experiment (key 'experiment')")
        wanted.append(name)
    experiments = [Experiment(name, home) for name in wanted] if wanted else list_experiments(home)
    _say(f"genni home: {home}")
    if not experiments:
        _say(
            "  no experiments yet (run `genni demo`, or `genni search --config FILE`); the home "
            "is $GENNI_HOME, else genni_home: in ./genni.yml, else ./genni_home"
        )
        return 0
    missing = [experiment.name for experiment in experiments if not experiment.exists]
    for experiment in experiments:
        if not experiment.exists:
            _say(f"{experiment.name}/  (not found)")
            continue
        eps = None
        model = "?"
        with contextlib.suppress(Exception):
            saved = experiment.load_config()
            eps = float(saved.get("subspace", {}).get("eps"))
            model = saved.get("model", {}).get("name", "?")
        searches, grids = experiment.searches(), experiment.grids()
        plots_dir = experiment.path / "plots"
        plots = [p for p in plots_dir.iterdir() if p.is_file()] if plots_dir.is_dir() else []
        _say(
            f"{experiment.name}/  model {model}; {len(searches)} search(es), {len(grids)} "
            f"grid(s), {len(plots)} plot(s); {_size(folder_size(experiment.path))}; "
            f"{_date(experiment.path)}"
        )
        rows = []
        for name in searches:
            folder = experiment.search_dir(name)
            rows.append((f"searches/{name}", _search_line(experiment, name, eps), folder))
        for name in grids:
            folder = experiment.grid_dir(name)
            status = experiment.sweep_status(name)
            state = (
                "complete"
                if status.complete
                else f"partial: {status.chunks_done}/{status.num_chunks} chunks"
            )
            rows.append((f"grids/{name}", f"{_shape(status.shape)}, {state}", folder))
        if plots_dir.is_dir():
            rows.append(("plots/", f"{len(plots)} file(s)", plots_dir))
        width = max((len(row[0]) for row in rows), default=0)
        inner = max((len(row[1]) for row in rows), default=0)
        for label, text, folder in rows:
            _say(
                f"  {label:<{width}}  {text:<{inner}}  {_size(folder_size(folder)):>9}  "
                f"{_date(folder)}"
            )
    if missing:
        raise InputError(f"no experiment {', '.join(map(repr, missing))} in {home}")
    return 0


# --- demo -----------------------------------------------------------------------------------


def _report_drawn(drawn: Any) -> None:
    for path in drawn.files:
        _say(f"  drew {path}")
    for stem, reason in drawn.skipped:
        _say(f"  not drawn: {stem}: {reason}")
    _say(f"  report:      {drawn.report}")


def _cmd_plot(args: argparse.Namespace) -> int:
    from .plot.report import draw_experiment
    from .store import Experiment, StoreError

    experiment = Experiment(args.experiment, _home(args))
    if not experiment.exists:
        raise StoreError(
            f"no experiment {args.experiment!r} in {experiment.home}; `genni ls` lists them"
        )
    known = experiment.grids()
    unknown = [name for name in args.grids if name not in known]
    if unknown:  # before anything is drawn
        raise InputError(
            f"experiment '{experiment.name}' has no grid {', '.join(map(repr, unknown))} "
            f"(grids: {', '.join(known) or 'none'})"
        )
    _report_drawn(draw_experiment(experiment, args.grids or None, eps=args.eps))
    return 0


def _same_search(saved: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    keys = ("model", "seed", "probes", "search")
    return all(saved.get(key) == config.get(key) for key in keys)


def _cmd_analyse(args: argparse.Namespace) -> int:
    from .experiment_analysis import analyse_experiment
    from .plot.report import draw_experiment
    from .store import Experiment

    experiment = Experiment(args.experiment, _home(args))
    analysis = analyse_experiment(
        experiment,
        args.grids or None,
        eps=args.eps,
        eps_relative=args.eps_relative,
        refine=not args.no_refine,
        morse=args.morse,
        similarity=args.similarity,
        stitching=args.stitching,
        progress=not args.no_progress,
        say=_say,
    )
    drawn = draw_experiment(experiment, args.grids or None, eps=analysis["eps"])
    _say(f"analysis: {experiment.analysis_path}")
    _report_drawn(drawn)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .config import validate_config
    from .store import Experiment

    model = args.model or "two_neuron"
    if model in ("lenet", "lenet5"):
        if args.paper:
            raise InputError(
                "--paper runs the paper's two-neuron experiment; for LeNet-5 set the paper's "
                "sizes with flags (--num-probes 8192, --set grids=...), see genni demo --help"
            )
        key, preset = "lenet5", DEMO_LENET
    elif model == "two_neuron":
        key = "two_neuron"
        preset = DEMO_TWO_NEURON_PAPER if args.paper else DEMO_TWO_NEURON
    else:
        raise InputError(f"--model {model!r}: genni demo runs two_neuron (default) or lenet")
    if args.quick:
        preset = _merge(preset, _QUICK[key])
        preset["experiment"] = f"{preset['experiment']}_quick"
    config = validate_config(_raw_config(args, preset))
    experiment = Experiment(config["experiment"], _home(args))
    _threads(config)
    progress = not args.no_progress
    title = (
        "the GENNI paper's 4-parameter net φ(x) = c·ReLU(a x) + d·ReLU(b x)"
        if key == "two_neuron"
        else "LeNet-5 (28×28×1 input, one output)"
    )
    _say(f"genni demo: {title}")
    _say(f"experiment: {experiment.path}")
    started = time.perf_counter()

    search_name = config["search"]["name"]
    reuse = False
    with contextlib.suppress(GenniError, OSError, ValueError):
        reuse = search_name in experiment.searches() and _same_search(
            experiment.load_config(), config
        )
    search_start = time.perf_counter()
    if reuse:
        from .config import build_problem

        problem = build_problem(config)
        _resolve_eps(config, problem)
        result = experiment.load_search(search_name)
        where = experiment.search_dir(search_name)
        _say(f"search '{search_name}': reusing the one on disk ({where})")
    else:
        problem, result = _run_search(config, experiment, progress=progress)
    search_seconds = time.perf_counter() - search_start
    experiment.save_config(config)
    swept = _sweep_grids(config, experiment, problem, result, config["grids"], progress=progress)
    eps = config["subspace"]["eps"]
    from .experiment_analysis import analyse_experiment
    from .plot.report import draw_experiment

    _say("analysis")
    analysis_start = time.perf_counter()
    analyse_experiment(
        experiment,
        morse=importlib.util.find_spec("CMGDB") is not None,
        similarity=True,
        stitching=True,
        progress=progress,
        say=lambda line: _say(f"  {line}"),
    )
    analysis_seconds = time.perf_counter() - analysis_start
    _say("plots")
    grids = [spec["name"] for spec, _, _ in swept]
    _report_drawn(draw_experiment(experiment, grids, eps=eps, search=search_name))
    total = time.perf_counter() - started

    converged = int(result.converged(eps).sum())
    _say("")
    _say("summary")
    _say(f"  home:        {experiment.home}")
    _say(f"  experiment:  {experiment.path}")
    _say(f"  config:      {experiment.config_path}")
    _say(f"  search:      {experiment.search_dir(search_name)}")
    _say(
        f"               {converged} of {result.losses.shape[0]} starts converged "
        f"(J < {eps:g}), {_seconds(search_seconds)}"
    )
    for spec, grid_result, seconds in swept:
        inside = int(grid_result.eps_mask(eps).sum())
        size = grid_result.values.numel()
        _say(f"  grid:        {experiment.grid_dir(spec['name'])}")
        _say(
            f"               {_shape(grid_result.grid.shape)} on [{spec['bound'][0]:g}, "
            f"{spec['bound'][1]:g}]^{spec['dim']}: ε-set {inside} of {size} points "
            f"({100.0 * inside / size:.1f}%), {_seconds(seconds)}"
        )
    _say(f"  analysis:    {experiment.analysis_path} ({_seconds(analysis_seconds)})")
    _say(f"  plots:       {experiment.path / 'plots'}")
    _say(f"  time taken:  {_seconds(total)}")
    _say(
        f"  in Python:   Experiment({experiment.name!r}, home={str(experiment.home)!r})"
        f".load_grid({swept[0][0]['name']!r})"
        if swept
        else ""
    )
    return 0


# --- entry point ----------------------------------------------------------------------------

_COMMANDS = {
    "search": _cmd_search,
    "sweep": _cmd_sweep,
    "ls": _cmd_ls,
    "plot": _cmd_plot,
    "analyse": _cmd_analyse,
    "demo": _cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``genni`` with ``argv`` (default: the command line); return the exit status:
    0 done, 1 an error (printed as one line), 2 bad usage, 130 interrupted."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="genni: %(message)s")
    # SIGTERM (a batch system's kill, `kill PID`) stops a command as Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _COMMANDS[args.command](args)
    except GenniError as error:
        print(f"genni {args.command}: error: {error}", file=sys.stderr, flush=True)
        return 1
    except OSError as error:  # e.g. an unwritable home: a file, a read-only mount, /proc
        where = f" ({error.filename})" if error.filename else ""
        print(
            f"genni {args.command}: error: {error.strerror or error}{where}; check that the "
            "path is a folder you can write to (the home is GENNI_HOME, --home, or "
            "genni_home: in ./genni.yml)",
            file=sys.stderr,
            flush=True,
        )
        return 1
    except KeyboardInterrupt:
        print(
            f"genni {args.command}: interrupted; finished chunks are saved, run the same "
            "command again to resume",
            file=sys.stderr,
            flush=True,
        )
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
