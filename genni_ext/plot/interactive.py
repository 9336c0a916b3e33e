"""An interactive 3-D view of the ε-set as one self-contained HTML file (plotly).

plotly is an optional extra (``pip install "genni_ext[interactive]"``); it is imported
only when a view is written. The file embeds plotly.js, so it opens offline.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from genni_ext.core.grid import GridResult
from genni_ext.errors import InputError
from genni_ext.plot import _style
from genni_ext.plot.sets import empty_eps_set_reason, eps_points, eps_set_summary
from genni_ext.store.files import atomic_write_text

INSTALL_HINT = 'pip install "genni_ext[interactive]"'


def _plotly() -> Any:
    try:
        import plotly.graph_objects as go
    except ImportError as error:
        raise ImportError(
            f"the interactive view needs plotly, which is not installed: {INSTALL_HINT}"
        ) from error
    return go


def scatter3d_html(
    result: GridResult,
    eps: float | None,
    path: str | os.PathLike,
    *,
    eps_relative: float | None = None,
) -> Path:
    """Write the ε-set of a 3-D grid (J < ``eps``) as a rotatable, zoomable 3-D scatter to
    ``path`` (one HTML file with plotly.js inside; hover shows c1, c2, c3 and J), markers
    θ0..θm included. Written atomically; returns the path."""
    if not isinstance(result, GridResult):
        raise InputError(
            f"scatter3d_html needs a genni_ext.GridResult, got {type(result).__name__}"
        )
    eps = result.resolve_eps(eps, eps_relative)
    if result.grid.dim != 3:
        raise InputError(
            f"scatter3d_html needs a grid with m = 3 coefficients per point, got m = "
            f"{result.grid.dim}"
        )
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    target = Path(path)
    if not target.parent.is_dir():
        raise InputError(f"folder {target.parent} does not exist; create it first")
    go = _plotly()
    coeffs, values, nans = eps_points(result, eps)
    low = float(values.min()) if values.size else 0.0
    c1, c2, c3 = _style.AXIS_LABELS[:3]
    traces = [
        go.Scatter3d(
            x=coeffs[:, 0],
            y=coeffs[:, 1],
            z=coeffs[:, 2],
            mode="markers",
            name="ε-set",
            marker={
                "size": 3,
                "color": values,
                "colorscale": _style.CMAP,
                "cmin": min(low, eps),
                "cmax": eps,
                "colorbar": {"title": {"text": f"J (top = ε = {eps:.3g})"}},
            },
            hovertemplate=f"{c1}=%{{x:.4g}}<br>{c2}=%{{y:.4g}}<br>{c3}=%{{z:.4g}}"
            "<br>J=%{marker.color:.4g}<extra></extra>",
        )
    ]
    for index, marker in enumerate(result.markers):
        x, y, z = (float(v) for v in marker.coords)
        traces.append(
            go.Scatter3d(
                x=[x],
                y=[y],
                z=[z],
                mode="markers+text",
                name=marker.name,
                text=[marker.name],
                marker={
                    "size": 7,
                    "color": _style.marker_colour(index),
                    "line": {"color": "black", "width": 1},
                },
                hovertemplate=f"{marker.name}<br>{c1}=%{{x:.4g}}<br>{c2}=%{{y:.4g}}"
                f"<br>{c3}=%{{z:.4g}}<br>J={marker.loss:.4g}<extra></extra>",
            )
        )
    title = eps_set_summary(result, eps, coeffs.shape[0], nans)
    if coeffs.shape[0] == 0:
        title += f"<br>{empty_eps_set_reason(result, eps)}"
    figure = go.Figure(data=traces)
    grid = result.grid.coeffs.numpy()
    corners = [grid.min(0), grid.max(0)] + [m.coords.numpy() for m in result.markers]
    low_c, high_c = np.min(corners, axis=0), np.max(corners, axis=0)
    scene = {
        f"{axis}axis": {"title": {"text": label}, "range": [float(lo), float(hi)]}
        for axis, label, lo, hi in zip("xyz", (c1, c2, c3), low_c, high_c, strict=True)
    }
    figure.update_layout(
        title={"text": title},
        scene=scene,
        legend={"x": 0.0, "y": 0.0, "xanchor": "left", "yanchor": "bottom"},
        margin={"l": 0, "r": 0, "b": 0, "t": 60},
    )
    html = figure.to_html(include_plotlyjs=True, full_html=True)
    return atomic_write_text(target, html)
