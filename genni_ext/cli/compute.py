"""``genni search`` and ``genni sweep``, and the steps of them that ``genni demo`` shares."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from genni_ext.analysis.baselines import Baselines
from genni_ext.cli.configure import experiments_home, raw_config, set_threads
from genni_ext.cli.output import format_seconds, format_shape, say
from genni_ext.cluster import connect
from genni_ext.core.grid import Grid
from genni_ext.core.subspace import Subspace
from genni_ext.errors import InputError, StoreError
from genni_ext.run.chunk_runs import ConfigSource, StoreSource
from genni_ext.run.plan import plan_sweep
from genni_ext.run.resumable import run_planned_sweep
from genni_ext.run.searches import search
from genni_ext.store.config import converged_center, set_key, validate_config
from genni_ext.store.experiment import Experiment, search_id


def set_config_eps(config: dict[str, Any], problem: Any) -> float:
    """Set ``subspace.eps`` from ``eps_relative`` (× the constant-function loss) when that
    is given; print the trivial-function warning when ε reaches a baseline; return ε."""

    spec = config["subspace"]
    baselines = Baselines.of(problem)
    if spec.get("eps_relative") is not None:
        spec["eps"] = baselines.resolve_eps(eps_relative=spec["eps_relative"])
    warning = baselines.warning(spec["eps"])
    if warning:
        say(f"warning: {warning}")
    return float(spec["eps"])


PROBLEM_SECTIONS = ("model", "seed", "theta", "probes")
"""The config's sections that make the problem (what problem.zarr keeps)."""


def validated_config(raw: Mapping[str, Any], args: argparse.Namespace) -> tuple[dict, Experiment]:
    """``raw`` validated, and its experiment. For an experiment that keeps its problem
    (problem.zarr) θ's and the probes' files are not read, and the problem's sections stay
    those of its config.yml: a config that gives others is warned about, not used."""
    name = raw.get("experiment")
    kept = False
    if isinstance(name, str):
        with contextlib.suppress(InputError):  # a bad name: validate_config names it
            kept = Experiment(name, experiments_home(args)).keeps_problem
    config = validate_config(raw, kept_problem=kept)
    experiment = Experiment(config["experiment"], experiments_home(args))
    made = None
    if kept:
        with contextlib.suppress(StoreError):  # damaged or missing: this config writes it anew
            made = validate_config(experiment.load_config(), kept_problem=True)
    if made is not None:
        differ = [key for key in PROBLEM_SECTIONS if config[key] != made[key]]
        for key in PROBLEM_SECTIONS:
            config[key] = made[key]
        if differ:
            say(
                f"warning: experiment '{experiment.name}' keeps the problem it was made with "
                f"({experiment.problem_path}); this config's {', '.join(differ)} differ from "
                "its config.yml and are not used (a new problem needs a new experiment)"
            )
    return config, experiment


def run_search(
    config: dict[str, Any], experiment: Any, *, progress: bool, replace: bool = False
) -> tuple[Any, Any]:
    """Build the problem, search, save config and search; return (problem, result). The
    problem is the one the experiment keeps (problem.zarr), or, for a new experiment, built
    from the config and kept once the search has finished.

    A search that grids were built from is replaced only with ``replace`` (refused before
    anything is computed otherwise); with it, the grids it leaves off its plane are named.
    """
    spec = config["search"]
    name = spec["name"]
    built = experiment.grids_from_search(name)
    if built and not replace:
        experiment.refuse_to_replace(name)
    new = not (experiment.keeps_problem or experiment.searches() or experiment.grids())
    problem = experiment.load_problem(config)
    set_config_eps(config, problem)
    start = time.perf_counter()
    try:
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
            restart_collapsed=spec["restart_collapsed"],
            max_restarts=spec["max_restarts"],
        )
    except KeyboardInterrupt:
        kept = (
            f"; search '{name}' on disk is the earlier one, unchanged"
            if name in experiment.searches()
            else ""
        )
        raise KeyboardInterrupt(
            "the search stopped before it finished, and a search is saved only once it "
            f"finishes, so nothing of it was saved{kept}; run the command again to search "
            "from the start"
        ) from None
    seconds = time.perf_counter() - start
    if new:
        experiment.save_problem(problem, config["model"])
    experiment.save_config(config)
    path = experiment.save_search(result, name, problem=problem, replace=replace)
    eps = config["subspace"]["eps"]
    converged = int(result.converged(eps).sum())
    losses = result.losses
    say(
        f"search '{name}': {problem!r}; {losses.shape[0]} starts × "
        f"{result.config['steps_run']} steps in {format_seconds(seconds)}; {converged} of "
        f"{losses.shape[0]} converged (J < {eps:g}); final J from {float(losses.min()):.3g} "
        f"to {float(losses.max()):.3g}"
    )
    if spec["restart_collapsed"]:
        say(f"  {result.restarts_summary()}")
    say(f"  saved to {path}")
    _say_replaced(built, search_id(result))
    return problem, result


def _say_replaced(built: Mapping[str, str | None], new_id: str) -> None:
    """Which of the grids built from a replaced search still fit the new one."""
    same = [grid for grid, old_id in built.items() if old_id == new_id]
    stale = [grid for grid in built if grid not in same]
    if same:
        say(
            f"  grid(s) {', '.join(same)} were built from a search equal to this one bit for "
            "bit: they still fit it"
        )
    if stale:
        say(
            f"  replaced the search that grid(s) {', '.join(stale)} were built from: they stay "
            "as computed, on the old search's plane; `genni sweep` resumes them only if this "
            "search gives the same plane (else sweep under new grid names, or delete them)"
        )


def search_command(args: argparse.Namespace) -> int:
    """``genni search``: build the problem, search, save both in the experiment."""
    raw = raw_config(args)
    # The search command's own flags (configure.OVERRIDES holds those every command takes).
    for key in ("restart_collapsed", "max_restarts"):
        if getattr(args, key, None) is not None:
            set_key(raw, f"search.{key}", getattr(args, key))
    config, experiment = validated_config(raw, args)
    set_threads(config)
    run_search(config, experiment, progress=not args.no_progress, replace=args.replace)
    return 0


def _problem_for_search(config: dict[str, Any], experiment: Any) -> tuple[Any, Any]:
    """The config's problem and the experiment's search, checked to belong together."""
    name = config["search"]["name"]
    metadata = experiment.search_metadata(name)
    problem = experiment.load_problem(config)
    set_config_eps(config, problem)
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
    moved = {
        field.name: getattr(value, field.name).to(device)
        for field in dataclasses.fields(value)
        if isinstance(getattr(value, field.name), torch.Tensor)
    }
    return dataclasses.replace(value, **moved)


def sweep_grids(
    config: Mapping[str, Any],
    experiment: Any,
    problem: Any,
    result: Any,
    grids: Sequence[Mapping[str, Any]],
    *,
    progress: bool,
    client: Any = None,
) -> list[tuple[Mapping[str, Any], Any, float]]:
    """Run the resumable sweep of every grid (on ``client``'s Dask workers if given); print
    a line or two per grid; return (grid spec, result, seconds) per grid."""
    eps = config["subspace"]["eps"]
    center = converged_center(config, result)  # a converged start, or None: the best
    done = []
    for spec in grids:
        grid = Grid.uniform(tuple(spec["bound"]), spec["n"], spec["dim"])
        # From the search's values on the CPU, so that the plane (and the store's hash of
        # it) is the same whether the search ran here, on a GPU or was loaded from disk.
        subspace = _on_device(
            Subspace.from_search(_on_device(result, "cpu"), eps, spec["dim"], center=center),
            problem.theta.device,
        )
        plan = plan_sweep(
            problem,
            subspace,
            grid,
            backend=config["backend"],
            precision=config["precision"],
            chunk_points=config["chunk_points"],
            experiment=experiment,
            name=spec["name"],
        )
        assert plan.chunks is not None  # plan_sweep cuts the grid into chunks by default
        chunk_points, total = plan.chunks.chunk_points, plan.chunks.num_chunks
        label = (
            f"grid '{spec['name']}' ({format_shape(grid.shape)} on "
            f"[{spec['bound'][0]:g}, {spec['bound'][1]:g}]^{spec['dim']})"
        )
        try:
            status = experiment.sweep_status(spec["name"])
        except StoreError:
            status = None  # nothing there yet, or damaged: run_sweep says which
        if status is not None and status.complete:
            say(f"{label}: complete on disk; computing 0 chunks")
        elif status is not None and status.num_chunks == total:
            say(
                f"{label}: resuming, {status.chunks_done} of {total} chunks done; computing "
                f"{status.chunks_missing} chunks"
            )
        else:
            say(f"{label}: {total} chunks of {chunk_points} points; computing {total} chunks")
        start = time.perf_counter()
        try:
            grid_result = run_planned_sweep(
                experiment,
                plan,
                spec["name"],
                num_threads=config["num_threads"],
                progress=progress,
                client=client,
                source=_worker_source(experiment, config, client),
                search=config["search"]["name"],
            )
        except KeyboardInterrupt:
            finished = [str(done_spec["name"]) for done_spec, _, _ in done]
            raise KeyboardInterrupt(
                _saved_so_far(experiment, spec["name"], finished, client is not None)
            ) from None
        seconds = time.perf_counter() - start
        inside = int(grid_result.eps_mask(eps).sum())
        say(f"  computed {experiment.chunks_computed} of {total} chunks in this run")
        say(
            f"  ε-set (J < {eps:g}): {inside} of {grid.size} points "
            f"({100.0 * inside / grid.size:.1f}%); J from {float(grid_result.values.min()):.3g} "
            f"to {float(grid_result.values.max()):.3g}; {format_seconds(seconds)} "
            f"({grid_result.metadata['backend']}); saved to {experiment.grid_dir(spec['name'])}"
        )
        done.append((spec, grid_result, seconds))
    return done


def _worker_source(experiment: Experiment, config: Mapping[str, Any], client: Any) -> Any:
    """What Dask workers get the problem from: the store (problem.zarr) where the experiment
    keeps it, else the config (None: no cluster)."""
    if client is None:
        return None
    if experiment.keeps_problem:
        return StoreSource(experiment.home, experiment.name, str(config["device"]))
    return ConfigSource(experiment.home, experiment.name)


def _saved_so_far(experiment: Any, name: str, finished: Sequence[str], cluster: bool) -> str:
    """What an interrupted sweep of grid ``name`` (after the grids ``finished``) left saved."""
    parts = [f"grid(s) {', '.join(finished)} complete"] if finished else []
    try:
        status = experiment.sweep_status(name)
    except StoreError:
        status = None  # nothing of it written yet
    if status is None:
        parts.append(f"no chunk of grid '{name}' was saved")
    elif status.complete:
        parts.append(f"grid '{name}' complete")
    else:
        parts.append(f"grid '{name}': {status.chunks_done} of {status.num_chunks} chunks saved")
    if cluster:
        parts.append("chunks still running on the cluster may yet be written")
    return (
        "; ".join(parts)
        + "; run the same command again to compute the rest (saved chunks are kept)"
    )


def sweep_command(args: argparse.Namespace) -> int:
    """``genni sweep``: the config's grids (or those named by --grid) on the searched plane."""
    base: dict[str, Any] = {}
    if args.config is None:
        name = args.experiment
        if name is None:
            raise InputError(
                "genni sweep needs --config FILE, or --experiment NAME to use that "
                "experiment's saved config.yml"
            )
        base = Experiment(name, experiments_home(args)).load_config()
    config, experiment = validated_config(raw_config(args, base), args)
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
    set_threads(config)
    problem, result = _problem_for_search(config, experiment)
    converged_center(config, result)  # a bad center is refused before config.yml is written
    experiment.save_config(config)
    if args.dask is None:
        sweep_grids(config, experiment, problem, result, grids, progress=not args.no_progress)
        return 0

    client = connect(args.dask)
    try:
        say(f"dask: {len(client.scheduler_info()['workers'])} worker(s) at {args.dask}")
        sweep_grids(
            config, experiment, problem, result, grids, progress=not args.no_progress,
            client=client,
        )  # fmt: skip
    finally:
        client.close()
    return 0
