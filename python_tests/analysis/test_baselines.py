"""Trivial-function baselines: ε relative to the constant function's J, and the warning."""

from __future__ import annotations

import pytest
import torch

from genni_ext import Problem
from genni_ext.analysis import Baselines
from genni_ext.core.models import TwoNeuronNet
from genni_ext.errors import InputError


def _problem(seed: int) -> Problem:
    torch.manual_seed(seed)
    return Problem(TwoNeuronNet(), num_probes=16384, seed=seed)


def test_baselines_are_the_trivial_functions_losses() -> None:
    problem = _problem(5)
    baselines = Baselines.of(problem)
    targets = problem.targets.double()
    assert baselines.zero_loss == pytest.approx(float(targets.square().sum(1).mean()), rel=1e-12)
    centred = targets - targets.mean(dim=0)
    assert baselines.constant_loss == pytest.approx(
        float(centred.square().sum(1).mean()), rel=1e-12
    )
    # J of the best constant is J of the zero function minus the mean's square.
    assert baselines.constant_loss <= baselines.zero_loss
    # Evaluated as J: a model whose output is the constant mean has exactly that loss.
    assert problem.loss(torch.zeros(1, 4)).item() == pytest.approx(baselines.zero_loss, rel=1e-6)


def test_the_warning_fires_on_the_papers_theta_and_not_on_the_demos() -> None:
    """The paper's θ (seed 10) computes a tiny function: ε = 0.0025 is 18× the zero
    function's J. The demo's θ (seed 5) at ε = 5 % of the constant function's J: no warning."""
    paper = Baselines.of(_problem(10))
    warning = paper.warning(0.0025)
    assert warning is not None
    assert f"{0.0025 / paper.zero_loss:.3g}× the J of the zero function" in warning
    assert 17.0 < 0.0025 / paper.zero_loss < 19.0
    demo = Baselines.of(_problem(5))
    assert demo.warning(demo.resolve_eps(eps_relative=0.05)) is None
    assert demo.warning(demo.constant_loss) is not None  # at the baseline itself: warned


def test_resolve_eps_takes_exactly_one() -> None:
    baselines = Baselines(zero_loss=0.2, constant_loss=0.1)
    assert baselines.resolve_eps(eps=0.003) == 0.003
    assert baselines.resolve_eps(eps_relative=0.05) == pytest.approx(0.005)
    with pytest.raises(InputError, match="exactly one"):
        baselines.resolve_eps()
    with pytest.raises(InputError, match="exactly one"):
        baselines.resolve_eps(eps=0.1, eps_relative=0.1)
    for bad in (0.0, -1.0, float("nan"), float("inf"), True, "0.1"):
        with pytest.raises(InputError, match="eps"):
            baselines.resolve_eps(eps_relative=bad)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="positive constant-function loss"):
        Baselines(zero_loss=1.0, constant_loss=0.0).resolve_eps(eps_relative=0.1)


def test_describe_records_eps_both_ways() -> None:
    facts = Baselines(zero_loss=0.2, constant_loss=0.1).describe(0.02)
    assert facts["eps"] == 0.02 and facts["eps_relative"] == pytest.approx(0.2)
    assert facts["warning"] is None


@pytest.mark.parametrize("bad", [-1.0, float("nan"), "x", None])
def test_bad_baselines(bad: object) -> None:
    with pytest.raises(InputError):
        Baselines(zero_loss=bad, constant_loss=0.1)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"genni_ext\.Problem"):
        Baselines.of(object())
