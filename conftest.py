"""Stop a test run early, with a clear message, when the compiled engine is not importable.

``python -m pytest`` from the repository root puts the source tree first on sys.path, and
the source tree holds no compiled ``genni_ext._C``; the tests must import the installed
package (``pip install ".[test]"``, then ``pytest``).
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    try:
        import genni_ext  # noqa: F401 (the import is the check)
    except ImportError as error:
        pytest.exit(
            f"genni_ext cannot be imported with its compiled engine ({error}). Install it "
            'with `pip install ".[test]"` and run `pytest` (not `python -m pytest` from the '
            "source tree).",
            returncode=4,
        )
