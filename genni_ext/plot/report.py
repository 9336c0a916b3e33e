"""Every picture that fits an experiment's grids, saved in its plots folder, and report.md.

By grid dimension: 2-D grids get the linear-scale surface and the log-scale contour; 3-D
grids the ε-set from several angles, slices and a UMAP of the ε-set (plus an interactive
HTML view where plotly is installed); grids of 4 or more dimensions a UMAP. The search gets
its convergence plot. A picture that cannot be drawn (an empty ε-set for UMAP, say) is
listed in the report with the reason instead of stopping the others. Where the experiment
was analysed (``genni analyse``: ``analysis.json``), the report opens with what the ε-set
is: the trivial-function warning, the class dimension at θ, the found points by kind and
each grid's topology with its resolution check, and the analysis figures.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from matplotlib.figure import Figure

from genni_ext.analysis.persistence import UNSEEN
from genni_ext.core.grid import GridResult
from genni_ext.errors import GenniError, StoreError
from genni_ext.plot.interactive import scatter3d_html
from genni_ext.plot.planes import contour, search_convergence, slices, surface
from genni_ext.plot.sets import scatter3d, umap
from genni_ext.store.experiment import Experiment
from genni_ext.store.files import atomic_write, atomic_write_text
from genni_ext.store.names import is_refinement


@dataclass
class Drawn:
    """What ``draw_experiment`` made: figure files, and pictures it could not draw, by reason."""

    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    report: Path | None = None


def _save(figure: Figure, path: Path) -> Path:
    def write(handle: IO[bytes]) -> None:
        figure.savefig(handle, format="png", dpi=100)

    return atomic_write(path, write)


def save_figure(figure: Figure, experiment: Experiment, stem: str) -> Path:
    """Write ``figure`` to ``plots/<stem>.png`` of ``experiment`` (atomically)."""
    return _save(figure, experiment.plots_dir / f"{stem}.png")


def _analysis_lines(analysis: dict, grids: Sequence[str]) -> list[str]:
    """The report's "What the ε-set is" section from ``analysis.json``."""
    lines = ["## What the ε-set is", ""]
    baselines = analysis.get("baselines") or {}
    lines.append(
        f"J of the zero function {baselines.get('zero_loss', float('nan')):.3g}, of the best "
        f"constant function {baselines.get('constant_loss', float('nan')):.3g}; ε = "
        f"{analysis.get('eps', float('nan')):.3g}."
    )
    if baselines.get("warning"):
        lines += ["", f"**Warning:** {baselines['warning']}"]
    local = analysis.get("identifiability") or {}
    lines += ["", f"**Class dimension** ({local.get('where', '?')}): "]
    lines[-1] += local.get("summary", "not computed.") if local.get("computed") else "not computed."
    found = analysis.get("found_points")
    if found:
        lines += [
            "",
            f"**Found points:** {found['summary']}",
            "",
            "![found points](plots/found_points.png)",
        ]
    checked = False
    for name in grids:
        entry = (analysis.get("topology") or {}).get(name)
        if not entry:
            continue
        lines += ["", f"**Topology of grid '{name}':** {entry['summary']}", ""]
        checked = checked or bool((entry.get("resolution") or {}).get("checked"))
        if "shape" in entry:
            lines += [
                f"![{name} components](plots/{name}_components.png)",
                f"![{name} Betti curve](plots/{name}_betti_curve.png)",
                f"![{name} persistence](plots/{name}_persistence.png)",
            ]
    for name in grids:
        entry = (analysis.get("passes") or {}).get(name)
        if not entry:
            continue
        lines += ["", f"**Passes on grid '{name}':** {entry['summary']}", ""]
        if len(entry["points"]) >= 2:
            if len(next(iter(entry["points"].values()))["coords"]) == 2:
                lines.append(f"![{name} passes](plots/{name}_passes.png)")
            lines.append(f"![{name} disconnectivity graph](plots/{name}_disconnectivity.png)")
    if checked:
        lines += [
            "",
            "A resolution check sweeps the grid again at twice the resolution and compares "
            f"the Betti numbers; unchanged numbers are not proof: {UNSEEN}.",
        ]
    connected = analysis.get("connectivity")
    if connected:
        lines += [
            "",
            f"**Connectivity in the full parameter space:** {connected['summary']}",
            "",
            "![connectivity](plots/connectivity.png)",
            "![connection profiles](plots/connection_profiles.png)",
        ]
    representations = analysis.get("representations")
    if representations:
        lines += [
            "",
            f"**Representations of θ and found point {representations['point']}** "
            f"({representations['kind']}, J = {representations['loss']:.3g}):",
        ]
        for metric, entry in (representations.get("similarity") or {}).items():
            lines += ["", entry["summary"], "", f"![{metric}](plots/similarity_{metric}.png)"]
        for entry in representations.get("stitching") or []:
            lines += ["", entry["summary"]]
        if representations.get("stitching"):
            lines += ["", "![stitching](plots/stitching.png)"]
    for name in grids:
        entry = (analysis.get("morse") or {}).get(name)
        if not entry:
            continue
        lines += [
            "",
            f"**Dynamics on grid '{name}' (Morse graph of descent):** {entry['summary']}",
            "",
            f"![{name} Morse sets](plots/{name}_morse_sets.png)",
            f"![{name} Morse graph](plots/{name}_morse_graph.png)",
            f"![{name} retraction](plots/{name}_retraction.png)",
        ]
    for name, reason in (analysis.get("skipped") or {}).items():
        lines += ["", f"**Not computed:** {name}: {reason}."]
    timings = analysis.get("seconds") or {}
    if timings:
        lines += [
            "",
            "Analysis times: "
            + "; ".join(f"{key} {value:.1f} s" for key, value in timings.items()),
        ]
    return [*lines, ""]


def _grid_figures(result: GridResult, eps: float) -> list[tuple[str, Callable[[], Figure]]]:
    """(file suffix, figure maker) for every picture that fits the grid's dimension."""

    dim, has_axes = result.grid.dim, result.grid.axes is not None
    if dim == 2 and has_axes:
        return [
            ("surface", lambda: surface(result, eps=eps)),
            ("contour", lambda: contour(result, eps=eps)),
        ]
    figures: list[tuple[str, Callable[[], Figure]]] = []
    if dim == 3 and has_axes:
        figures += [
            ("scatter3d", lambda: scatter3d(result, eps)),
            ("slices", lambda: slices(result, axis=2, eps=eps)),
        ]
    if dim >= 3:
        figures.append(("umap", lambda: umap(result, eps)))
    return figures


def draw_experiment(
    experiment: Experiment,
    grids: Sequence[str] | None = None,
    *,
    eps: float | None = None,
    search: str = "search",
) -> Drawn:
    """Draw the search and the named grids (default: every complete grid but the
    resolution checks' refined sweeps) into plots/.

    ``eps`` defaults to the experiment config's ``subspace.eps``. Writes report.md in the
    experiment folder with each figure and the numbers behind it, opening with the
    analysis where ``genni analyse`` made one.
    """

    config = experiment.load_config() if experiment.config_path.exists() else {}
    if eps is None:
        eps = float(config.get("subspace", {}).get("eps", 0.0025))
    names = (
        list(grids) if grids else [name for name in experiment.grids() if not is_refinement(name)]
    )
    drawn = Drawn()
    lines = [f"# {experiment.name}", "", f"ε = {eps:g}", ""]
    analysis = experiment.load_analysis()
    if analysis is not None:
        if abs(float(analysis.get("eps", eps)) - eps) > 1e-12 * eps:
            lines += [
                f"(The analysis below was made at ε = {analysis['eps']:.3g}; run "
                f"`genni analyse {experiment.name}` again for ε = {eps:g}.)",
                "",
            ]
        lines += _analysis_lines(analysis, names)

    found = None
    if search in experiment.searches():
        try:
            found = experiment.load_search(search)
        except StoreError as error:
            drawn.skipped.append((f"search '{search}'", str(error)))
    if found is not None:
        result = found
        converged = int(result.converged(eps).sum())
        lines += [
            f"## Search '{search}'",
            "",
            f"{converged} of {result.losses.shape[0]} starts converged (J < {eps:g}); final J "
            f"from {float(result.losses.min()):.3g} to {float(result.losses.max()):.3g}."
            + (
                f" {result.restarts_summary().capitalize()}."
                if result.config.get("restart_collapsed")
                else ""
            ),
            "",
        ]
        lines += _draw(
            drawn, experiment, f"{search}_convergence", lambda: search_convergence(result, eps)
        )

    for name in names:
        try:
            result = experiment.load_grid(name)
        except StoreError as error:
            if grids:  # asked for by name: say why it cannot be drawn
                raise
            drawn.skipped.append((f"grid '{name}'", str(error)))
            continue
        finite = result.values[result.values.isfinite()]
        inside = int(result.eps_mask(eps).sum())
        lines += [
            f"## Grid '{name}'",
            "",
            f"{' × '.join(str(n) for n in result.grid.shape)} points, m = {result.grid.dim}; "
            f"ε-set {inside} of {result.values.numel()} "
            f"({100.0 * inside / result.values.numel():.1f} %); J from "
            f"{float(finite.min()):.3g} to {float(finite.max()):.3g}; backend "
            f"{result.metadata.get('backend', '?')}.",
            "",
        ]
        lines += [
            f"- {marker.name} at ({', '.join(f'{c:.3f}' for c in marker.coords.tolist())}): "
            f"J = {marker.loss:.3g}"
            for marker in result.markers
        ]
        lines.append("")
        for suffix, make in _grid_figures(result, eps):
            lines += _draw(drawn, experiment, f"{name}_{suffix}", make)
        if result.grid.dim == 3 and importlib.util.find_spec("plotly") is not None:
            path = scatter3d_html(result, eps, experiment.plots_dir / f"{name}_scatter3d.html")
            drawn.files.append(path)
            lines += [f"Interactive 3-D view: [{path.name}](plots/{path.name})", ""]

    drawn.report = atomic_write_text(experiment.path / "report.md", "\n".join(lines) + "\n")
    return drawn


def _draw(drawn: Drawn, experiment: Experiment, stem: str, make: Callable[[], Figure]) -> list[str]:
    """Draw one figure into plots/; return its report.md lines."""
    try:
        figure = make()
    except (GenniError, ImportError) as error:  # bad input, or an optional extra missing
        drawn.skipped.append((stem, str(error)))
        return [f"{stem}: not drawn: {error}", ""]
    path = _save(figure, experiment.plots_dir / f"{stem}.png")
    drawn.files.append(path)
    return [f"![{stem}](plots/{path.name})", ""]
