"""``genni demo``: a whole experiment from a preset: search, sweeps, analysis, plots, summary."""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Mapping
from typing import Any

from genni_ext.cli.analyse import analyse_experiment, unavailable_analyses
from genni_ext.cli.compute import run_search, set_config_eps, sweep_grids
from genni_ext.cli.configure import experiments_home, raw_config, set_threads
from genni_ext.cli.output import format_seconds, format_shape, say
from genni_ext.cli.presets import demo_preset
from genni_ext.cli.results import report_drawn
from genni_ext.errors import GenniError
from genni_ext.plot.report import draw_experiment
from genni_ext.store.config import build_problem, validate_config
from genni_ext.store.experiment import Experiment


def _same_search(saved: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    """Whether a saved config's search settings are ``config``'s (so its search is reused)."""
    keys = ("model", "seed", "probes", "search")
    return all(saved.get(key) == config.get(key) for key in keys)


def demo_command(args: argparse.Namespace) -> int:
    """``genni demo``: run the preset (with --config and flags over it) end to end."""
    preset, title = demo_preset(args.model, paper=args.paper, quick=args.quick)
    config = validate_config(raw_config(args, preset))
    experiment = Experiment(config["experiment"], experiments_home(args))
    set_threads(config)
    progress = not args.no_progress
    say(f"genni demo: {title}")
    say(f"experiment: {experiment.path}")
    started = time.perf_counter()

    search_name = config["search"]["name"]
    reuse = False
    with contextlib.suppress(GenniError, OSError, ValueError):
        reuse = search_name in experiment.searches() and _same_search(
            experiment.load_config(), config
        )
    search_start = time.perf_counter()
    if reuse:
        problem = build_problem(config)
        set_config_eps(config, problem)
        result = experiment.load_search(search_name)
        where = experiment.search_dir(search_name)
        say(f"search '{search_name}': reusing the one on disk ({where})")
    else:
        problem, result = run_search(config, experiment, progress=progress)
    search_seconds = time.perf_counter() - search_start
    experiment.save_config(config)
    swept = sweep_grids(config, experiment, problem, result, config["grids"], progress=progress)
    eps = config["subspace"]["eps"]
    # Imported after the sweeps: matplotlib and the analyses take a while to load.

    say("analysis")
    skipped = unavailable_analyses()
    for analysis, reason in skipped.items():
        say(f"  skipped: {analysis} {reason}")
    analysis_start = time.perf_counter()
    analyse_experiment(
        experiment,
        topology_of_grids="topology" not in skipped,
        morse="morse" not in skipped,
        connect=True,
        similarity=True,
        stitching=True,
        skipped=skipped,
        progress=progress,
        say=lambda line: say(f"  {line}"),
    )
    analysis_seconds = time.perf_counter() - analysis_start
    say("plots")
    grids = [spec["name"] for spec, _, _ in swept]
    report_drawn(draw_experiment(experiment, grids, eps=eps, search=search_name))
    total = time.perf_counter() - started

    converged = int(result.converged(eps).sum())
    say("")
    say("summary")
    say(f"  home:        {experiment.home}")
    say(f"  experiment:  {experiment.path}")
    say(f"  config:      {experiment.config_path}")
    say(f"  search:      {experiment.search_dir(search_name)}")
    say(
        f"               {converged} of {result.losses.shape[0]} starts converged "
        f"(J < {eps:g}), {format_seconds(search_seconds)}"
        + (f"; {result.restarts_summary()}" if config["search"]["restart_collapsed"] else "")
    )
    for spec, grid_result, seconds in swept:
        inside = int(grid_result.eps_mask(eps).sum())
        size = grid_result.values.numel()
        say(f"  grid:        {experiment.grid_dir(spec['name'])}")
        say(
            f"               {format_shape(grid_result.grid.shape)} on [{spec['bound'][0]:g}, "
            f"{spec['bound'][1]:g}]^{spec['dim']}: ε-set {inside} of {size} points "
            f"({100.0 * inside / size:.1f}%), {format_seconds(seconds)}"
        )
    say(f"  analysis:    {experiment.analysis_path} ({format_seconds(analysis_seconds)})")
    for analysis, reason in skipped.items():
        say(f"               skipped: {analysis} {reason}")
    say(f"  plots:       {experiment.path / 'plots'}")
    say(f"  time taken:  {format_seconds(total)}")
    say(
        f"  in Python:   Experiment({experiment.name!r}, home={str(experiment.home)!r})"
        f".load_grid({swept[0][0]['name']!r})"
        if swept
        else ""
    )
    return 0
