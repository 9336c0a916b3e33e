"""pytest configuration for the benchmark suite (collected only when asked: ``pytest benchmarks``).

It records what ran where: genni_ext's version, location and ``build_info()``, the torch
version and its thread count go into the ``machine_info`` of the ``--benchmark-json``
file, next to pytest-benchmark's own cpu facts, so ``benchmarks/report.py`` can print them.
The repository's root ``conftest.py`` already stops a run that imported the source tree
(``python -m pytest``) instead of the installed package with its compiled engine.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import genni_ext

_THREADS_SUMMARY = pytest.StashKey[list[str]]()


def _usable_cpus() -> int | None:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


def pytest_benchmark_update_machine_info(
    config: pytest.Config, machine_info: dict[str, object]
) -> None:
    """Add the engine's build facts and torch's threading to the JSON's machine_info."""
    machine_info["genni_ext_version"] = genni_ext.__version__
    machine_info["genni_ext_path"] = str(Path(genni_ext.__file__).parent)
    machine_info["genni_ext_build_info"] = genni_ext.build_info()
    machine_info["torch_version"] = torch.__version__
    machine_info["torch_num_threads"] = torch.get_num_threads()
    machine_info["os_cpu_count"] = os.cpu_count()
    machine_info["usable_cpus"] = _usable_cpus()


def pytest_report_header(config: pytest.Config) -> str:
    where = Path(genni_ext.__file__).parent
    return (
        f"genni_ext {genni_ext.__version__} from {where}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); build_info: {genni_ext.build_info()}"
    )


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--engine-before",
        metavar="PATH",
        default=None,
        help="benchmarks/test_threads.py also times this other build of genni_ext._C "
        "(a _C*.so, e.g. from the commit before a change) in the same run",
    )


@pytest.fixture(scope="session")
def threads_summary(request: pytest.FixtureRequest) -> list[str]:
    """Lines of benchmarks/test_threads.py's table, printed at the end of the run."""
    return request.config.stash.setdefault(_THREADS_SUMMARY, [])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = terminalreporter.config.stash.get(_THREADS_SUMMARY, [])
    if lines:
        terminalreporter.section("threads under load (benchmarks/test_threads.py)")
        for line in lines:
            terminalreporter.write_line(line)
