"""The ``genni`` argument parser: every command, flag and help text."""

from __future__ import annotations

import argparse
import textwrap

from genni_ext._validate import BACKENDS, PRECISIONS
from genni_ext.cli.presets import DEMO_MODEL_HELP, demo_help, paper_flag_help
from genni_ext.core.sgd_search import OPTIMIZERS, SearchOptions
from genni_ext.store.config import CONFIG_SCHEMA

_SCHEMA_EPILOG = (
    "config file (YAML; every key but experiment and model optional, with the defaults "
    "shown):\n\n" + textwrap.indent(CONFIG_SCHEMA.rstrip("\n"), "  ")
)


def _add_home(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--home",
        metavar="DIR",
        help="experiments home (default: $GENNI_HOME, else genni_home: in ./genni.yml, "
        "else ./genni_home)",
    )


def _add_config_options(parser: argparse.ArgumentParser, *, model_help: str) -> None:
    """--config, --home, --no-progress and a flag per config key (see configure.OVERRIDES)."""
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
    group.add_argument("--seed", type=_whole_number, metavar="INT", help="θ's initialisation seed")
    group.add_argument("--num-probes", type=_whole_number, metavar="N", help="probes.num_probes")
    group.add_argument("--probe-seed", type=_whole_number, metavar="INT", help="probes.seed")
    group.add_argument("--search-name", metavar="NAME", help="search.name (default: search)")
    group.add_argument("--starts", type=_whole_number, metavar="K", help="search.starts")
    group.add_argument("--steps", type=_whole_number, metavar="N", help="search.steps")
    group.add_argument("--lr", type=float, metavar="LR", help="search.lr")
    group.add_argument("--batch-size", type=_whole_number, metavar="N", help="search.batch_size")
    group.add_argument("--optimizer", choices=OPTIMIZERS, help="search.optimizer")
    group.add_argument("--momentum", type=float, metavar="X", help="search.momentum")
    group.add_argument("--tol", type=float, metavar="J", help="search.tol")
    group.add_argument("--search-seed", type=_whole_number, metavar="INT", help="search.seed")
    group.add_argument(
        "--record-every", type=_whole_number, metavar="N", help="search.record_every"
    )
    _add_eps(
        group,
        eps_help="subspace.eps: ε, replacing an eps_relative of the config file or preset",
        relative_help="subspace.eps_relative: ε as a fraction of the constant-function loss, "
        "replacing an eps of the config file or preset",
    )
    group.add_argument("--m", type=_whole_number, metavar="M", help="subspace.m")
    group.add_argument(
        "--center",
        type=_whole_number,
        metavar="INDEX",
        help="subspace.center: θ₀ is start INDEX (0 for the first), which must have converged",
    )
    group.add_argument("--backend", choices=BACKENDS, help="backend of the sweep")
    group.add_argument(
        "--device",
        metavar="DEVICE",
        help="where search and sweep run: cpu (default), cuda or cuda:N",
    )
    group.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="sweeps in the dtype's full precision (default) or with Linear/Conv2d on TF32 "
        "tensor cores (float32 on CUDA)",
    )
    group.add_argument("--num-threads", type=_whole_number, metavar="N", help="CPU threads")
    group.add_argument(
        "--chunk-points", type=_whole_number, metavar="N", help="grid points per chunk"
    )
    group.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any config key (dotted, VALUE in YAML), e.g. --set model.sizes=[8,32,1] "
        "or --set grids='[{name: g, bound: [-1, 1], n: 50}]'; repeatable",
    )


def _add_eps(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, eps_help: str, relative_help: str
) -> None:
    """--eps and --eps-relative, the two ways of giving ε: one or the other, in every command
    (argparse refuses both with "argument --eps-relative: not allowed with argument --eps")."""
    either = parser.add_mutually_exclusive_group()
    either.add_argument(
        "--eps", type=float, metavar="EPS", help=f"{eps_help} (not with --eps-relative)"
    )
    either.add_argument(
        "--eps-relative", type=float, metavar="FRACTION", help=f"{relative_help} (not with --eps)"
    )


def _whole_number(text: str) -> int:
    """An int flag's value: ``16384``, or a whole number in exponent form (``1e4``), as the
    config's int keys take it."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int, got {text!r}") from None
    if not value.is_integer() or abs(value) > 2**53:
        raise argparse.ArgumentTypeError(f"expected an int (a whole number), got {text!r}")
    return int(value)


def _wrap(*paragraphs: str) -> str:
    """Paragraphs filled to 88 columns (the raw formatter keeps the schema's layout)."""
    return "\n\n".join(textwrap.fill(text, 88) for text in paragraphs)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``genni`` and its commands (``args.command`` names the one given)."""
    formatter = argparse.RawDescriptionHelpFormatter
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
            "the same name is replaced, but one that grids were built from only with --replace."
        ),
        epilog=_SCHEMA_EPILOG,
        formatter_class=formatter,
    )
    _add_config_options(search, model_help="model.name: two_neuron | mlp | lenet5")
    search.add_argument(
        "--replace",
        action="store_true",
        help="replace the search even if grids were built from it (the command names those "
        "that no longer lie on its plane)",
    )
    search.add_argument(
        "--restart-collapsed",
        action="store_true",
        default=None,
        help="search.restart_collapsed: true: re-initialise a start whose hidden ReLU units "
        "collapsed (more dead or merged than θ's) with a fresh seed, within the same steps",
    )
    search.add_argument(
        "--max-restarts",
        type=_whole_number,
        metavar="N",
        help="search.max_restarts: restarts per start at most "
        f"(default {SearchOptions.max_restarts})",
    )

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
        epilog=_SCHEMA_EPILOG,
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
    sweep.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="run one task per chunk on a Dask cluster: local:N (N worker processes here) or "
        "tcp://HOST:PORT (a running `dask scheduler`); workers rebuild the problem from the "
        "experiment's config.yml and need the experiment home at the same path (pip install "
        '"genni_ext[dask]")',
    )

    check = commands.add_parser(
        "check",
        help="verify an experiment's files, each against its checksum",
        description=_wrap(
            "Read back everything an experiment holds (config.yml, analysis.json, every file "
            "of every search and grid, every chunk of J) against the checksum recorded when "
            "it was written. Each damaged or missing file is named with what repairs it; exit "
            "status 1 if any. The next `genni sweep` of a grid recomputes its damaged chunks "
            "and writes its other damaged files anew, keeping the computed J. Notes (not "
            "damage) name locks left by processes that died, grids stopped before anything "
            "was written and grids whose search was replaced since."
        ),
        formatter_class=formatter,
    )
    check.add_argument("experiment", metavar="EXPERIMENT")
    _add_home(check)

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
        help="what the ε-set is: baselines, class dimension, found points, topology, passes",
        description=_wrap(
            "Analyse an experiment's search and grids and write analysis.json, the analysis "
            "figures and report.md: J of the trivial functions against ε (and a warning when "
            "the ε-set can hold functions that ignore their input); the dimension of the "
            "equivalence class at θ against the known-symmetry orbit (Jacobian rank; models "
            "above 10,000 parameters in the plane of the first grid); what each found point "
            "is (a G_ReLU image of θ, another exact equivalent, near-constant, collapsed, "
            "approximate or not converged); the "
            "Betti numbers, persistence and components of each 2-D and 3-D grid's ε-set, "
            "checked on a grid of twice the resolution (a new sweep, stored as "
            "<grid>_refined; --no-refine leaves it out); and the lowest passes on each such "
            "grid (minimax J over grid paths) between its found points and its lowest local "
            "minima, with a pass map (2-D) and a disconnectivity graph.",
        ),
        formatter_class=formatter,
    )
    analyse.add_argument("experiment", metavar="EXPERIMENT", help="the experiment's name")
    analyse.add_argument(
        "grids", nargs="*", metavar="GRID", help="only these grids (default: every grid)"
    )
    _add_eps(
        analyse,
        eps_help="ε (default: the config's)",
        relative_help="ε as a fraction of the constant-function loss",
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
        "--connect",
        action="store_true",
        help="also paths in the full parameter space between θ and every converged found "
        "point (segment, G_ReLU orbit, a trained curve between groups): which are joined "
        "below ε, certified by the path",
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
            *demo_help(),
            "--config and the flags override the demo's settings; a search or grid already "
            "in the home with the same settings is reused.",
        ),
        epilog=_SCHEMA_EPILOG,
        formatter_class=formatter,
    )
    _add_config_options(demo, model_help=DEMO_MODEL_HELP)
    demo.add_argument("--paper", action="store_true", help=paper_flag_help())
    demo.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)
    return parser
