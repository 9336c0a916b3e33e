"""Stop a test run early, with a clear message, when the compiled engine is not importable.

``python -m pytest`` from the repository root puts the source tree first on sys.path, and
the source tree holds no compiled ``genni_ext._C``; the tests must import the installed
package (``pip install ".[test]"``, then ``pytest``).
"""

from __future__ import annotations

import pytest

import genni_ext


def pytest_configure(config: pytest.Config) -> None:
    info = genni_ext.build_info()
    if not info["compiled"]:
        pytest.exit(
            f"genni_ext was imported from {genni_ext.__file__} without its compiled engine "
            f'({info["reason"]}). Install it with `pip install ".[test]"` and run `pytest` '
            "(not `python -m pytest` from the source tree).",
            returncode=4,
        )
