"""``genni ls``, ``genni plot`` and ``genni analyse``: the commands that read an experiment.

The plotting and analysis modules are imported when a command needs them, so that ``genni
--help`` and ``genni ls`` start without matplotlib.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

from genni_ext.cli.analyse import analyse_experiment
from genni_ext.cli.configure import experiments_home
from genni_ext.cli.output import format_date, format_shape, format_size, say
from genni_ext.errors import InputError, StoreError
from genni_ext.plot.report import draw_experiment
from genni_ext.store.config import load_config_file
from genni_ext.store.experiment import Experiment, list_experiments
from genni_ext.store.files import folder_size


def _search_line(experiment: Any, name: str, eps: float | None) -> str:
    """Starts, steps, parameters and converged starts, or "damaged: ..." (what to do)."""
    try:
        metadata = experiment.search_metadata(name)
        shape = metadata["tensors"].get("params", {}).get("shape", ["?", "?"])
        steps = metadata["fields"].get("config", {}).get("steps_run", "?")
        losses = experiment.load_search(name).losses
    except (StoreError, AttributeError, KeyError, TypeError) as error:
        return f"DAMAGED: {error}"
    text = f"{shape[0]} starts × {steps} steps, {shape[1]} params"
    if eps is not None:
        text += f", {int((losses < eps).sum())} converged (J < {eps:g})"
    return text


def _grid_line(experiment: Any, name: str) -> str:
    """Shape and complete / partial, or "damaged: ..." (what to do)."""
    try:
        status = experiment.sweep_status(name)
    except StoreError as error:
        return f"DAMAGED: {error}"
    state = (
        "complete"
        if status.complete
        else f"partial: {status.chunks_done}/{status.num_chunks} chunks"
    )
    return f"{format_shape(status.shape)}, {state}"


def check_command(args: argparse.Namespace) -> int:
    """``genni check``: every file of an experiment against its checksum; 1 if any is
    damaged (each named, with what repairs it)."""
    experiment = Experiment(args.experiment, experiments_home(args))
    if not experiment.exists:
        raise InputError(f"no experiment {args.experiment!r} in {experiment.home}")
    findings = experiment.check()
    prefix = {"ok": "", "note": "note: ", "damaged": "DAMAGED "}
    for finding in findings:
        say(f"{prefix[finding.kind]}{finding.where}: {finding.text}")
    damaged = sum(finding.kind == "damaged" for finding in findings)
    say(f"{experiment.name}: {damaged} problem(s)" if damaged else f"{experiment.name}: ok")
    return 1 if damaged else 0


def ls_command(args: argparse.Namespace) -> int:
    """``genni ls``: the home's experiments (or those named), their searches and grids."""
    home = experiments_home(args)
    wanted = list(args.experiments)
    if args.config is not None:
        name = load_config_file(args.config).get("experiment")
        if not isinstance(name, str):
            raise InputError(f"config file {args.config} names no experiment (key 'experiment')")
        wanted.append(name)
    experiments = [Experiment(name, home) for name in wanted] if wanted else list_experiments(home)
    say(f"genni home: {home}")
    if not experiments:
        say(
            "  no experiments yet (run `genni demo`, or `genni search --config FILE`); the home "
            "is $GENNI_HOME, else genni_home: in ./genni.yml, else ./genni_home"
        )
        return 0
    missing = [experiment.name for experiment in experiments if not experiment.exists]
    for experiment in experiments:
        if not experiment.exists:
            say(f"{experiment.name}/  (not found)")
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
        say(
            f"{experiment.name}/  model {model}; {len(searches)} search(es), {len(grids)} "
            f"grid(s), {len(plots)} plot(s); {format_size(folder_size(experiment.path))}; "
            f"{format_date(experiment.path)}"
        )
        rows = []
        for name in searches:
            folder = experiment.search_dir(name)
            rows.append((f"searches/{name}", _search_line(experiment, name, eps), folder))
        for name in grids:
            folder = experiment.grid_dir(name)
            rows.append((f"grids/{name}", _grid_line(experiment, name), folder))
        if plots_dir.is_dir():
            rows.append(("plots/", f"{len(plots)} file(s)", plots_dir))
        width = max((len(row[0]) for row in rows), default=0)
        inner = max((len(row[1]) for row in rows), default=0)
        for label, text, folder in rows:
            say(
                f"  {label:<{width}}  {text:<{inner}}  {format_size(folder_size(folder)):>9}  "
                f"{format_date(folder)}"
            )
    if missing:
        raise InputError(f"no experiment {', '.join(map(repr, missing))} in {home}")
    return 0


def report_drawn(drawn: Any) -> None:
    """Print the files a drawing wrote, what it left out and why, and the report."""
    for path in drawn.files:
        say(f"  drew {path}")
    for stem, reason in drawn.skipped:
        say(f"  not drawn: {stem}: {reason}")
    say(f"  report:      {drawn.report}")


def plot_command(args: argparse.Namespace) -> int:
    """``genni plot``: every figure that fits the experiment's grids, and report.md."""

    experiment = Experiment(args.experiment, experiments_home(args))
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
    report_drawn(draw_experiment(experiment, args.grids or None, eps=args.eps))
    return 0


def analyse_command(args: argparse.Namespace) -> int:
    """``genni analyse``: analysis.json, the analysis figures and report.md."""

    experiment = Experiment(args.experiment, experiments_home(args))
    analysis = analyse_experiment(
        experiment,
        args.grids or None,
        eps=args.eps,
        eps_relative=args.eps_relative,
        refine=not args.no_refine,
        morse=args.morse,
        connect=args.connect,
        similarity=args.similarity,
        stitching=args.stitching,
        progress=not args.no_progress,
        say=say,
    )
    drawn = draw_experiment(experiment, args.grids or None, eps=analysis["eps"])
    say(f"analysis: {experiment.analysis_path}")
    report_drawn(drawn)
    return 0
