"""``genni analyse``: what the ε-set of a stored experiment is, computed and written down.

For an experiment in the store (config, search, grids) this runs every analysis of
:mod:`genni_ext.analysis`: the trivial-function baselines at the experiment's ε, the local
dimension of [θ] at θ against the known-symmetry orbit (for models above 10,000
parameters, restricted to the plane of the first grid at its centre θ₀), what each found
point is, the topology of every 2-D and 3-D grid's ε-set with its resolution check, and the
lowest passes between its found points and local minima.
The check sweeps a grid of twice the resolution with the experiment's own runner
(:meth:`Experiment.run_sweep`, stored as ``<grid>_refined``, resumable like any grid), and
says so. Results go to ``analysis.json`` (numbers and plain-sentence summaries) and
``plots/`` (Betti curve, persistence diagram, component map, pass map and
disconnectivity graph per grid; the found points).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genni_ext.analysis import (
    Baselines,
    ConnectivityGraph,
    Explanation,
    Identifiability,
    MorseGraph,
    Passes,
    Topology,
    compare,
    connectivity_graph,
    explain,
    identifiability,
    lowest_passes,
    morse_graph,
    stitch_all,
    topology,
)
from genni_ext.analysis.persistence import UNSEEN
from genni_ext.core.grid import Grid, GridResult
from genni_ext.core.problem import Problem
from genni_ext.errors import InputError, LoweringError, StoreError
from genni_ext.plot import analysis as figures
from genni_ext.plot import connectivity as connectivity_figures
from genni_ext.plot import passes as pass_figures
from genni_ext.plot.report import save_figure
from genni_ext.run.resumable import run_sweep
from genni_ext.store.config import validate_config
from genni_ext.store.experiment import Experiment
from genni_ext.store.names import REFINED_SUFFIX, is_refinement

# Above this many parameters the exact Jacobian SVD is left out and the rank is taken in
# the plane of the first grid (genni_ext.analysis.identifiability's max_params).
EXACT_RANK_MAX_PARAMS = 10_000

Say = Callable[[str], None]

# The analyses that need an optional library: analysis → (modules it imports, what to install).
OPTIONAL_ANALYSES: dict[str, tuple[tuple[str, ...], str]] = {
    "topology": (("gudhi",), "pip install gudhi"),
    "morse": (("CMGDB", "networkx"), "pip install CMGDB networkx"),
}


def unavailable_analyses() -> dict[str, str]:
    """Analysis → why it cannot run here (a library missing and how to install it), for
    every analysis of :data:`OPTIONAL_ANALYSES` whose libraries are not all importable."""
    unavailable = {}
    for analysis, (modules, install) in OPTIONAL_ANALYSES.items():
        missing = [name for name in modules if importlib.util.find_spec(name) is None]
        if missing:
            unavailable[analysis] = (
                f"needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                f"not installed ({install})"
            )
    return unavailable


def _analysed_grids(experiment: Experiment, grids: Sequence[str] | None) -> list[str]:
    known = experiment.grids()
    if grids is None:
        return [name for name in known if not is_refinement(name)]
    for name in grids:
        if name not in known:
            raise InputError(
                f"experiment '{experiment.name}' has no grid {name!r} (grids: "
                f"{', '.join(known) or 'none'})"
            )
    return list(grids)


def _eps(config: dict[str, Any], baselines: Baselines, eps: float | None, relative: float | None):
    if eps is not None or relative is not None:
        return baselines.resolve_eps(eps, relative)
    spec = config["subspace"]
    if spec.get("eps_relative") is not None:
        return baselines.resolve_eps(eps_relative=spec["eps_relative"])
    return baselines.resolve_eps(spec["eps"])


def _identifiability(
    problem: Any, experiment: Experiment, grids: list[str], say: Say
) -> tuple[Identifiability | None, str]:
    if problem.num_params <= EXACT_RANK_MAX_PARAMS:
        return identifiability(problem), "at θ"
    if not grids:
        return None, (
            f"not computed: {problem.num_params:,} parameters is above the exact limit of "
            f"{EXACT_RANK_MAX_PARAMS:,} and there is no grid whose plane could stand in"
        )
    subspace = experiment.load_subspace(grids[0])
    subspace = _to(subspace, problem.theta)
    say(
        f"  {problem.num_params:,} parameters: the Jacobian's rank is taken in the plane of "
        f"grid '{grids[0]}' at its centre θ₀"
    )
    return identifiability(problem, subspace=subspace), f"in the plane of grid '{grids[0]}' at θ₀"


def _to(value: Any, like: Any) -> Any:
    """A copy of dataclass ``value`` with its tensors in ``like``'s dtype and device."""
    moved = {
        field.name: getattr(value, field.name).to(dtype=like.dtype, device=like.device)
        for field in dataclasses.fields(value)
        if isinstance(getattr(value, field.name), torch.Tensor)
        and getattr(value, field.name).is_floating_point()
    }
    return dataclasses.replace(value, **moved)


def _refiner(
    experiment: Experiment, problem: Any, config: dict[str, Any], name: str, progress: bool
) -> Callable[[Grid], GridResult]:
    subspace = _to(experiment.load_subspace(name), problem.theta)

    def sweep_refined(grid: Grid) -> GridResult:
        return run_sweep(
            experiment,
            problem,
            subspace,
            grid,
            f"{name}{REFINED_SUFFIX}",
            backend=config["backend"],
            num_threads=config["num_threads"],
            progress=progress,
            precision=config.get("precision", "full"),
        )

    return sweep_refined


def _topology_entry(topo: Topology) -> dict[str, Any]:
    check = topo.resolution
    return {
        "shape": list(topo.shape),
        "betti": list(topo.betti),
        "component_sizes": topo.component_sizes,
        "marker_components": topo.marker_components,
        "persistence": [[dim, birth, death] for dim, birth, death in topo.persistence],
        "resolution": {
            "checked": check.checked,
            "refined_shape": list(check.shape) if check.shape else None,
            "betti_coarse": list(check.betti_coarse) if check.betti_coarse else None,
            "betti_refined": list(check.betti_refined) if check.betti_refined else None,
            "unchanged": check.unchanged,
            "reason": check.reason,
            "unseen": UNSEEN,
        },
        "summary": topo.summary(),
    }


def _identifiability_entry(result: Identifiability | None, where: str) -> dict[str, Any]:
    if result is None:
        return {"computed": False, "where": where}
    gap = result.gap if result.gap is None or math.isfinite(result.gap) else None
    return {
        "computed": True,
        "where": where,
        "num_params": result.num_params,
        "num_directions": result.num_directions,
        "rank": result.rank,
        "null_dim": result.null_dim,
        "symmetry_dim": result.symmetry_dim,
        "unexplained_dim": result.unexplained_dim,
        "probe_limited": result.probe_limited,
        "gap": gap,
        "tol": result.tol,
        "method": result.method,
        "symmetry_reason": result.symmetry_reason,
        "seconds": result.seconds,
        "summary": result.summary(),
    }


def _morse_entry(morse: MorseGraph) -> dict[str, Any]:
    return {
        "log": morse.log,
        "box_shape": list(morse.box_shape),
        "sets": [
            {
                "index": s.index,
                "kind": s.kind,
                "min_loss": s.min_loss,
                "volume": s.volume,
                "share": s.share,
                "markers": list(s.markers),
                "boxes": int(s.boxes.shape[0]),
            }
            for s in morse.morse_sets
        ],
        "edges": [[int(a), int(b)] for a, b in morse.graph.edges],
        "marker_basins": morse.marker_basins,
        "dropped": morse.dropped,
        "seconds": morse.timings.get("total"),
        "consistency": _consistency_entry(morse),
        "summary": morse.summary(),
    }


def _consistency_entry(morse: MorseGraph) -> dict[str, Any] | None:
    """The Morse sets against the ε-set's components, and the finer run (None: unchecked)."""
    check = morse.consistency
    if check is None:
        return None
    refined = check.refined
    return {
        "eps": check.eps,
        "components": check.components,
        "attracting": check.attracting,
        "set_components": {
            str(index): list(labels) for index, labels in check.set_components.items()
        },
        "merged": list(check.merged),
        "unattracted": list(check.unattracted),
        "merged_markers": list(check.merged_markers),
        "component_minima": {
            str(label): {"coords": list(coords), "loss": loss}
            for label, (coords, loss) in check.component_minima.items()
        },
        "components_confirmed": check.components_confirmed,
        "consistent": check.consistent,
        "refine_note": check.refine_note,
        "refined": None
        if refined is None or refined.consistency is None
        else {
            "subdivisions": refined.subdivisions,
            "box_shape": list(refined.box_shape),
            "attracting": refined.consistency.attracting,
            "attracting_markers": [
                list(s.markers) for s in refined.morse_sets if s.kind == "attracting"
            ],
            "merged": list(refined.consistency.merged),
            "unattracted": list(refined.consistency.unattracted),
            "consistent": refined.consistency.consistent,
            "seconds": refined.timings.get("total"),
        },
    }


def _explanation_entry(result: Explanation) -> dict[str, Any]:
    return {
        "kinds": result.kinds,
        "details": result.details,
        "counts": result.counts,
        "losses": [_finite(value) for value in result.losses],
        "residuals": [_finite(value) for value in result.residuals],
        "dead": result.dead,
        "merged": result.merged,
        "differing": [_finite(value) for value in result.differing],
        "thresholds": result.thresholds,
        "summary": result.summary(),
    }


def _representations(
    experiment: Experiment,
    problem: Any,
    found: Explanation,
    analysis: dict[str, Any],
    timings: dict[str, float],
    similarity: bool,
    stitching: bool,
    say: Say,
) -> list[Path]:
    """Similarity and stitching between θ and the found point of lowest J."""
    losses = np.where(np.isfinite(found.losses), found.losses, np.inf)
    best = int(np.argmin(losses))
    config = validate_config(experiment.load_config(), kept_problem=experiment.keeps_problem)
    other = experiment.load_search(config["search"]["name"]).params[best]
    other = other.to(dtype=problem.theta.dtype, device=problem.theta.device)
    model, theta, inputs = problem.model, problem.theta, problem.inputs
    entry: dict[str, Any] = {"point": best, "kind": found.kinds[best], "loss": float(losses[best])}
    plots: list[Path] = []
    if similarity:
        entry["similarity"] = {}
        for metric in ("cka", "relu_procrustes", "relu_cka"):
            start = time.perf_counter()
            comparison = compare(model, theta, other, inputs, metric=metric)
            timings[f"similarity {metric}"] = time.perf_counter() - start
            entry["similarity"][metric] = {
                "layers": comparison.layers,
                "diagonal": [_finite(value) for value in comparison.diagonal],
                "matrix": [[_finite(value) for value in row] for row in comparison.matrix],
                "summary": comparison.summary(),
            }
            say(comparison.summary())
            plots.append(
                save_figure(
                    figures.similarity_heatmap(comparison), experiment, f"similarity_{metric}"
                )
            )
    if stitching:
        start = time.perf_counter()
        stitches = stitch_all(model, theta, other, inputs)
        timings["stitching"] = time.perf_counter() - start
        entry["stitching"] = [
            {
                "layer": item.layer,
                "penalty": item.penalty,
                "other_loss": item.other_loss,
                "ratio": _finite(item.ratio),
                "exact": item.exact,
                "control_penalty": item.control_penalty,
                "fit_residuals": [float(value) for value in item.fit_residuals],
                "fit_tol": item.fit_tol,
                "represents": item.represents,
                "summary": item.summary(),
            }
            for item in stitches
        ]
        for item in stitches:
            say(item.summary())
        plots.append(save_figure(figures.stitching_penalties(stitches), experiment, "stitching"))
    analysis["representations"] = entry
    return plots


def _finite(value: float) -> float | None:
    """JSON has no NaN or inf: None stands for them."""
    value = float(value)
    return value if math.isfinite(value) else None


def _connectivity_entry(graph: ConnectivityGraph) -> dict[str, Any]:
    return {
        "eps": graph.eps,
        "points": graph.names,
        "paths": [
            {
                "between": [a, b],
                "method": path.method,
                "J_max": _finite(path.peak),
                "barrier": _finite(path.barrier),
                "barrier_eps": _finite(path.barrier_eps),
                "below_eps": path.below_eps,
            }
            for (a, b), path in graph.edges.items()
        ],
        "groups_below_eps": graph.components(),
        "tried": graph.tried,
        "seconds": graph.seconds,
        "summary": graph.summary(),
    }


def _connectivity(
    experiment: Experiment,
    problem: Problem,
    search_name: str,
    eps: float,
    analysis: dict[str, Any],
    timings: dict[str, float],
    say: Say,
) -> list[str]:
    """Which of θ and the search's converged points are joined below ε in the full space,
    into ``analysis``, with its two figures; the paths of the saved figures."""
    result = experiment.load_search(search_name)
    converged = torch.nonzero(result.converged(eps)).flatten().tolist()
    if not converged:
        analysis.setdefault("skipped", {})["connectivity"] = "no start converged below ε"
        say("connectivity: not computed: no start converged below ε")
        return []
    points = {f"start {k}": result.params[k] for k in converged}
    graph = connectivity_graph(problem, points, eps)
    timings["connectivity"] = graph.seconds
    analysis["connectivity"] = _connectivity_entry(graph)
    say(f"connectivity: {graph.summary()}")
    return [
        save_figure(connectivity_figures.connectivity_graph_figure(graph), experiment,
                    "connectivity"),
        save_figure(connectivity_figures.connection_profiles(graph), experiment,
                    "connection_profiles"),
    ]  # fmt: skip


def _passes_entry(passes: Passes, seconds: float) -> dict[str, Any]:
    return {
        "eps": passes.eps,
        "points": {
            name: {
                "coords": list(passes.coords[name]),
                "J": _finite(passes.levels[name]),
                "found": name in passes.found,
            }
            for name in passes.points
        },
        "passes": [
            {
                "between": [a, b],
                "J": _finite(height),
                "relative_to_eps": _finite(height / passes.eps),
                "at": None if passes.saddles[(a, b)] is None else list(passes.saddles[(a, b)]),
                "joined_below_eps": height < passes.eps,
            }
            for (a, b), height in passes.heights.items()
        ],
        "groups_below_eps": passes.groups(),
        "minima_left_out": passes.minima_left_out,
        "seconds": seconds,
        "summary": passes.summary(),
    }


def _passes(
    experiment: Experiment,
    name: str,
    result: GridResult,
    eps: float,
    analysis: dict[str, Any],
    timings: dict[str, float],
    say: Say,
) -> list[str]:
    """The lowest passes on grid ``name`` into ``analysis`` and their figures (a 2-D grid's
    pass map and any grid's disconnectivity graph); the paths of the saved figures."""
    start = time.perf_counter()
    passes = lowest_passes(result, eps)
    timings[f"passes {name}"] = seconds = time.perf_counter() - start
    analysis.setdefault("passes", {})[name] = _passes_entry(passes, seconds)
    say(f"grid '{name}' passes: {passes.summary()}")
    if len(passes.points) < 2:
        return []
    drawn = [("disconnectivity", pass_figures.disconnectivity_graph(passes, result))]
    if result.grid.dim == 2:
        drawn.insert(0, ("passes", pass_figures.pass_map(passes, result)))
    return [save_figure(figure, experiment, f"{name}_{stem}") for stem, figure in drawn]


def analyse_experiment(
    experiment: Experiment,
    grids: Sequence[str] | None = None,
    *,
    eps: float | None = None,
    eps_relative: float | None = None,
    refine: bool = True,
    topology_of_grids: bool = True,
    morse: bool = False,
    connect: bool = False,
    similarity: bool = False,
    stitching: bool = False,
    skipped: dict[str, str] | None = None,
    progress: bool = True,
    say: Say = print,
) -> dict[str, Any]:
    """Analyse ``experiment`` (its config, search and ``grids``, default: all but the
    refinements), write ``analysis.json`` and the analysis figures, and return the
    analysis as written. ε is the config's unless ``eps`` or ``eps_relative`` is given.
    ``refine=False`` skips the resolution checks (their entries then say "not checked");
    ``topology_of_grids=False`` skips the topology (and so the resolution sweeps);
    ``morse=True`` adds the Morse graph of descent on each 2-D and 3-D grid (CMGDB), checked
    against the components of the grid's ε-set when the topology is computed (where they
    disagree, recomputed on finer boxes if that fits in dynamics.DEFAULT_REFINE_SECONDS);
    ``connect=True`` adds :func:`~genni_ext.analysis.connectivity_graph` of θ and the search's
    converged points (paths in the full parameter space; which are joined below ε).
    ``similarity=True`` and ``stitching=True`` compare θ with the found point of lowest J
    on the probes (CKA, G_ReLU-Procrustes and G_ReLU-CKA per layer; a ps_inv-initialised
    linear stitch after every hidden layer, with its representation fit and the same stitch
    into random weights as a control). ``skipped`` (analysis → reason) is recorded
    in ``analysis.json`` under "skipped" so that the report says what was not computed.
    """

    if not isinstance(experiment, Experiment):
        raise InputError(f"experiment must be a genni_ext.Experiment, got {type(experiment)}")
    if not experiment.exists:
        raise StoreError(f"experiment '{experiment.name}' does not exist in {experiment.home}")
    config = validate_config(experiment.load_config(), kept_problem=experiment.keeps_problem)
    names = _analysed_grids(experiment, grids)
    problem = experiment.load_problem(config)  # problem.zarr where kept, else from config
    baselines = Baselines.of(problem)
    eps = _eps(config, baselines, eps, eps_relative)
    analysis: dict[str, Any] = {"experiment": experiment.name, "eps": eps}
    if skipped:
        analysis["skipped"] = dict(skipped)
    timings: dict[str, float] = {}

    analysis["baselines"] = baselines.describe(eps)
    if analysis["baselines"]["warning"]:
        say(f"warning: {analysis['baselines']['warning']}")

    start = time.perf_counter()
    local, where = _identifiability(problem, experiment, names, say)
    timings["identifiability"] = time.perf_counter() - start
    analysis["identifiability"] = _identifiability_entry(local, where)
    say(f"class dimension ({where}): {local.summary() if local else where}")

    search_name = config["search"]["name"]
    plots: list[str] = []
    found = None
    if search_name in experiment.searches():
        start = time.perf_counter()
        try:
            found = explain(experiment.load_search(search_name), problem, eps)
        except InputError as error:
            if not isinstance(error.__cause__, LoweringError):
                raise
            # A model whose hidden units the analysis cannot read (it does not lower).
            analysis.setdefault("skipped", {})["found points"] = str(error)
            say(f"found points: not computed: {error}")
    if found is not None:
        timings["found_points"] = time.perf_counter() - start
        analysis["found_points"] = _explanation_entry(found)
        say(f"found points: {found.summary()}")
        plots.append(save_figure(figures.found_points(found), experiment, "found_points"))
        if similarity or stitching:
            plots += _representations(
                experiment, problem, found, analysis, timings, similarity, stitching, say
            )
    else:
        analysis["found_points"] = None
    if connect and search_name in experiment.searches():
        plots += _connectivity(experiment, problem, search_name, eps, analysis, timings, say)

    analysis["topology"] = {}
    for name in names:
        result = experiment.load_grid(name)
        if result.grid.axes is None or result.grid.dim not in (2, 3):
            if topology_of_grids or morse:
                analysis["topology"][name] = {
                    "summary": "not computed: needs a 2-D or 3-D axis grid"
                }
            continue
        if topology_of_grids:
            start = time.perf_counter()
            refiner = _refiner(experiment, problem, config, name, progress) if refine else None
            topo = topology(result, eps, sweep_refined=refiner)
            timings[f"topology {name}"] = time.perf_counter() - start
            analysis["topology"][name] = _topology_entry(topo)
            say(f"grid '{name}': {topo.summary()}")
            for stem, figure in (
                ("betti_curve", figures.betti_curve(topo)),
                ("persistence", figures.persistence_diagram(topo)),
                ("components", figures.component_map(topo, result)),
            ):
                plots.append(save_figure(figure, experiment, f"{name}_{stem}"))
        plots += _passes(experiment, name, result, eps, analysis, timings, say)
        if morse:
            start = time.perf_counter()
            graph = morse_graph(result, topology=topo if topology_of_grids else None)
            timings[f"morse {name}"] = time.perf_counter() - start
            analysis.setdefault("morse", {})[name] = _morse_entry(graph)
            say(f"grid '{name}' dynamics: {graph.summary()}")
            for stem, figure in (
                ("morse_sets", figures.morse_sets(graph, result)),
                ("morse_graph", figures.morse_graph_figure(graph)),
                ("retraction", figures.retraction(graph, result)),
            ):
                plots.append(save_figure(figure, experiment, f"{name}_{stem}"))
    analysis["seconds"] = timings
    analysis["plots"] = [Path(path).name for path in plots]
    experiment.save_analysis(analysis)
    return analysis
