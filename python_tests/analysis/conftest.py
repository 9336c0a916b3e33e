"""Fixtures shared by the analysis tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One torch thread, restored afterwards: the path tests' small batches run many times
    faster so on a busy machine (a second thread mostly waits for its share)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
