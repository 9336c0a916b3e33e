"""``genni demo`` where an analysis's optional library is missing: it runs to the end and
says, in its output, its summary and report.md, what it skipped and how to get it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from genni_ext.cli.analyse import OPTIONAL_ANALYSES, unavailable_analyses

# Runs the command with the named modules made unimportable (a None entry in sys.modules
# makes `import` raise ImportError and importlib.util.find_spec return None).
HIDING = (
    "import sys\n"
    "for name in sys.argv[1].split(','):\n"
    "    sys.modules[name] = None\n"
    "from genni_ext.cli import main\n"
    "sys.exit(main(sys.argv[2:]))\n"
)


def _demo_without(cwd: Path, hidden: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "GENNI_HOME"}
    command = [sys.executable, "-c", HIDING, hidden, "demo", "--quick", "--no-progress"]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_unavailable_analyses_names_the_missing_library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gudhi", None)
    unavailable = unavailable_analyses()
    assert unavailable["topology"] == "needs gudhi, which is not installed (pip install gudhi)"
    monkeypatch.setitem(sys.modules, "networkx", None)
    monkeypatch.setitem(sys.modules, "CMGDB", None)
    assert unavailable_analyses()["morse"] == (
        "needs CMGDB and networkx, which are not installed (pip install CMGDB networkx)"
    )
    assert set(OPTIONAL_ANALYSES) == {"topology", "morse"}


@pytest.mark.slow
def test_demo_without_gudhi_and_cmgdb_runs_and_says_what_it_skipped(tmp_path: Path) -> None:
    done = _demo_without(tmp_path, "gudhi,CMGDB")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "skipped: topology needs gudhi, which is not installed (pip install gudhi)" in out
    assert "skipped: morse needs CMGDB, which is not installed (pip install CMGDB networkx)" in out
    experiment = tmp_path / "genni_home" / "experiments" / "demo_quick"
    analysis = json.loads((experiment / "analysis.json").read_text())
    assert set(analysis["skipped"]) == {"topology", "morse"}
    assert analysis["topology"] == {} and "morse" not in analysis
    # The analyses that need no optional library still ran.
    assert analysis["found_points"]["summary"] and analysis["representations"]
    report = (experiment / "report.md").read_text()
    assert "**Not computed:** topology: needs gudhi" in report
    assert "**Not computed:** morse: needs CMGDB" in report
    assert not list((experiment / "plots").glob("*_betti_curve.png"))
    # No resolution sweep was made for a topology that was not computed.
    assert not list((experiment / "grids").glob("*_refined"))
    assert (experiment / "plots" / "plane2d_contour.png").is_file()
