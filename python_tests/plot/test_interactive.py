"""The interactive 3-D view: a self-contained HTML file, drawn by headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib import colormaps
from matplotlib.image import imread

from genni_ext.core.grid import Grid, GridResult, Marker
from genni_ext.errors import InputError

pytest.importorskip("plotly", reason="plotly (the interactive extra) is not installed")

from genni_ext.plot.interactive import scatter3d_html


def make_result(m: int = 3) -> GridResult:
    grid = Grid.uniform((-1, 1), 10, m)
    values = (grid.coeffs**2).sum(1).reshape(grid.shape)
    coords = torch.zeros(m + 1, m, dtype=torch.float64)
    coords[1:] = 0.5 * torch.eye(m, dtype=torch.float64)
    return GridResult(values, grid, [Marker(f"θ{i}", coords[i], 0.0) for i in range(m + 1)], {})


def test_html_is_written_and_self_contained(tmp_path: Path) -> None:
    target = scatter3d_html(make_result(), 0.5, tmp_path / "eps.html")
    assert target == tmp_path / "eps.html" and target.is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["eps.html"]  # no temp file left
    html = target.read_text(encoding="utf-8")
    assert len(html) > 1_000_000  # plotly.js is inside
    assert "plotly.js v" in html or "Plotly" in html
    assert not re.search(r"<script[^>]+src=[\"']?(https?:)?//", html)
    assert "hovertemplate" in html and "c1=" in html and "J=" in html
    assert "θ0" in html and "θ3" in html


def test_html_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="m = 3"):
        scatter3d_html(make_result(2), 0.5, tmp_path / "x.html")
    with pytest.raises(InputError, match="does not exist"):
        scatter3d_html(make_result(), 0.5, tmp_path / "missing" / "x.html")
    with pytest.raises(InputError, match="eps"):
        scatter3d_html(make_result(), 0.0, tmp_path / "x.html")
    assert list(tmp_path.iterdir()) == []


def test_missing_plotly_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "plotly", None)
    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)
    with pytest.raises(ImportError, match=r'pip install "genni_ext\[interactive\]"'):
        scatter3d_html(make_result(), 0.5, tmp_path / "x.html")
    assert list(tmp_path.iterdir()) == []


def screenshot(chromium: str, html: Path, png: Path, profile: Path) -> np.ndarray:
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", f"--screenshot={png}",
        "--window-size=800,600", "--virtual-time-budget=5000", html.as_uri(),
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    return imread(png)[..., :3]


def viridis_pixels(image: np.ndarray) -> int:
    """Pixels of the plot area (left of the colour bar) close to a viridis colour."""
    area = image[80:, :620].reshape(-1, 3)
    palette = colormaps["viridis"](np.linspace(0, 1, 64))[:, :3]
    distance = np.abs(area[:, None, :] - palette[None, :, :]).max(-1).min(-1)
    return int((distance < 0.04).sum())


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_chromium_draws_the_points(tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    assert chromium is not None
    result = make_result()
    full = scatter3d_html(result, 0.5, tmp_path / "full.html")
    empty = scatter3d_html(result, 1e-9, tmp_path / "empty.html")
    full_png = screenshot(chromium, full, tmp_path / "full.png", tmp_path / "profile1")
    empty_png = screenshot(chromium, empty, tmp_path / "empty.png", tmp_path / "profile2")
    assert full_png.shape == empty_png.shape == (600, 800, 3)
    assert float(full_png.std()) > 0.05 and float(empty_png.std()) > 0.02  # not blank
    drawn, background = viridis_pixels(full_png), viridis_pixels(empty_png)
    assert drawn > 300 and background < 50, (drawn, background)
    # the marker θ0 (red) is drawn in both
    red = (full_png[..., 0] > 0.9) & (full_png[..., 1] < 0.15) & (full_png[..., 2] < 0.15)
    assert int(red.sum()) > 20
