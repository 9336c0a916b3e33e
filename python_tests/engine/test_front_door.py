"""The front door: bad inputs a new user hit give clear InputErrors, and the baselines.

Each test is one hole found by trying the public API with wrong models, shapes, types and
values; the error must name what was wrong and what to do, before any work and without
changing the caller's model.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from genni_ext import run_sweep
from genni_ext.core.grid import Grid, GridResult, Marker
from genni_ext.core.models import LeNet5, flatten_params, load_flat_params, mlp
from genni_ext.core.problem import Problem
from genni_ext.core.sgd_search import MAX_STARTS, SearchResult
from genni_ext.core.subspace import Subspace
from genni_ext.engine import front_door as sweep_module
from genni_ext.engine.front_door import explain_backend, sweep
from genni_ext.engine.lowering import lower
from genni_ext.errors import InputError, LoweringError
from genni_ext.run.grid_sweep import sweep_grid
from genni_ext.run.searches import search
from genni_ext.store import Experiment


def _mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return mlp([3, 5, 2], activation="tanh")


def _sweep_args(model: nn.Module, inputs: torch.Tensor, outputs: int) -> tuple:
    """(model, center, directions, coeffs, inputs, targets) of a small valid-looking sweep."""
    center = flatten_params(model)
    directions = torch.linalg.qr(torch.randn(center.numel(), 2)).Q.T.contiguous()
    return model, center, directions, torch.randn(4, 2), inputs, torch.zeros(len(inputs), outputs)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in model.state_dict().items()}


def _bitwise_equal(before: dict[str, torch.Tensor], model: nn.Module) -> bool:
    after = model.state_dict()
    return before.keys() == after.keys() and all(
        torch.equal(value, after[key]) for key, value in before.items()
    )


# --- 1. baselines ------------------------------------------------------------------------


def _constant_output(problem: Problem, bias: torch.Tensor) -> torch.Tensor:
    """θ with the last Linear's weight zero and its bias ``bias``: a function that outputs
    ``bias`` whatever its input."""
    model = copy.deepcopy(problem.model)
    load_flat_params(model, problem.theta)
    last = model[-1]
    assert isinstance(last, nn.Linear) and last.bias is not None
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(bias)
    return flatten_params(model)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_baselines_are_j_of_the_zero_and_best_constant_function(dtype: torch.dtype) -> None:
    model = _mlp().to(dtype)
    problem = Problem(model, num_probes=200, seed=3)
    zero, constant = problem.zero_loss, problem.constant_loss
    assert isinstance(zero, float) and isinstance(constant, float)
    assert 0.0 < constant <= zero
    mean = problem.targets.double().mean(dim=0)
    outputs_zero = _constant_output(problem, torch.zeros(2))
    outputs_mean = _constant_output(problem, mean)
    rtol = 1e-6 if dtype == torch.float32 else 1e-12
    assert float(problem.loss(outputs_zero)) == pytest.approx(zero, rel=rtol)
    assert float(problem.loss(outputs_mean)) == pytest.approx(constant, rel=rtol)
    # ȳ is the best constant: moving it raises J.
    shifted = _constant_output(problem, mean + 0.05)
    assert float(problem.loss(shifted)) > constant
    # An ε above constant_loss admits a function that ignores its input.
    assert float(problem.loss(outputs_mean)) < constant * 1.01
    description = problem.describe()
    assert description["zero_loss"] == zero and description["constant_loss"] == constant


def test_baselines_are_summed_in_float64() -> None:
    problem = Problem(_mlp(), num_probes=64)
    targets = problem.targets.double()
    assert problem.zero_loss == float(targets.square().sum(dim=1).mean())
    centred = targets - targets.mean(dim=0)
    assert problem.constant_loss == float(centred.square().sum(dim=1).mean())


# --- 2. training-mode BatchNorm / Dropout --------------------------------------------------


class _ConvNet(nn.Module):
    """A custom Module with conv layers and a BatchNorm2d (the README's case)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU())
        self.head = nn.Linear(2 * 4 * 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def _bn_mlp() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1))
    with torch.no_grad():  # running statistics that a training-mode pass would move
        model[1].running_mean.uniform_(-1.0, 1.0)
        model[1].running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize(
    ("make", "inputs", "named"),
    [
        (_bn_mlp, torch.randn(16, 3), ["'1' (BatchNorm1d)"]),
        (_ConvNet, torch.randn(8, 1, 6, 6), ["'features.1' (BatchNorm2d)"]),
        (
            lambda: nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.3), nn.Linear(3, 1)),
            torch.randn(8, 3),
            ["'1' (Dropout)"],
        ),
        (
            lambda: nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.3), nn.BatchNorm1d(3)),
            torch.randn(8, 3),
            ["'1' (Dropout)", "'2' (BatchNorm1d)"],
        ),
    ],
)
def test_training_mode_layers_are_refused_without_touching_the_model(
    make: Callable[[], nn.Module], inputs: torch.Tensor, named: list[str]
) -> None:
    model = make()
    assert model.training
    before = _state(model)
    with pytest.raises(InputError, match=r"model\.eval\(\)") as error:
        Problem(model, inputs)
    for name in named:
        assert name in str(error.value)
    assert _bitwise_equal(before, model)
    outputs = 1
    with pytest.raises(InputError, match=r"model\.eval\(\)"):
        sweep(*_sweep_args(model, inputs, outputs), backend="torch")
    assert _bitwise_equal(before, model)
    assert model.training  # genni_ext does not switch the caller's model either


def test_after_eval_search_and_sweep_run_and_leave_the_buffers() -> None:
    model = _bn_mlp()
    before = _state(model)
    model.eval()
    problem = Problem(model, num_probes=64)
    result = search(problem, 3, steps=5, lr=0.01, progress=False)
    subspace = Subspace.from_search(result, float(result.losses.max()) * 2, 2)
    grid_result = sweep_grid(problem, subspace, Grid.uniform((-1.0, 1.0), 3, 2))
    assert bool(torch.isfinite(grid_result.values).all())
    args = _sweep_args(model, problem.inputs, 1)
    assert bool(torch.isfinite(sweep(*args[:5], problem.targets)).all())
    assert _bitwise_equal(before, model)


def test_switching_to_training_mode_after_the_problem_is_caught() -> None:
    model = _bn_mlp().eval()
    problem = Problem(model, num_probes=32)
    model.train()
    before = _state(model)
    for call in (
        lambda: problem.loss(problem.theta),
        lambda: search(problem, 2, steps=2, progress=False),
    ):
        with pytest.raises(InputError, match=r"'1' \(BatchNorm1d\).*model\.eval\(\)"):
            call()
    assert _bitwise_equal(before, model)


def test_dropout_with_p_zero_is_the_identity_and_accepted() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.Dropout(0.0))
    assert model.training
    problem = Problem(model, num_probes=8)
    assert float(problem.loss(problem.theta)) == 0.0


# --- 3. inputs of the wrong per-sample shape -----------------------------------------------


@pytest.mark.parametrize("backend", ["auto", "fused", "torch"])
def test_sweep_names_the_expected_and_given_shape_before_any_work(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_work(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the sweep started work on inputs it should have refused")

    monkeypatch.setattr(sweep_module, "decide", no_work)
    monkeypatch.setattr(sweep_module, "torch_sweep", no_work)
    model = _mlp()
    args = _sweep_args(model, torch.randn(10, 5), 2)
    with pytest.raises(InputError) as error:
        sweep(*args, backend=backend)
    message = str(error.value)
    assert "one sample (5,)" in message and "takes one sample of shape (3,)" in message
    assert "layer '0' (Linear, 3 input features)" in message


def test_a_conv_net_names_its_declared_input_shape() -> None:
    model = LeNet5().eval()
    with pytest.raises(InputError, match=r"one sample \(1, 32, 32\)\); it takes .* \(1, 28, 28\)"):
        sweep(*_sweep_args(model, torch.randn(4, 1, 32, 32), 1), backend="fused")
    with pytest.raises(InputError, match=r"\(3, 28, 28\)\); it takes .*\(1, 28, 28\)"):
        Problem(model, torch.randn(4, 3, 28, 28))


def test_a_custom_model_names_the_layer_that_failed() -> None:
    model = _ConvNet().eval()
    with pytest.raises(InputError) as error:
        Problem(model, torch.randn(4, 1, 8, 8))
    message = str(error.value)
    assert "one sample (1, 8, 8)" in message
    assert "layer 'head' (Linear, 32 input features)" in message and "[2, 72]" in message


def test_a_model_broken_on_its_own_shape_is_told_to_check_its_layers() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(5, 1))
    with pytest.raises(InputError, match=r"layer '1' \(Linear, 5 input.*check the model's layers"):
        Problem(model, num_probes=4)


def test_a_malformed_input_shape_attribute_does_not_refuse_given_inputs() -> None:
    class Declared(nn.Module):
        input_shape = 3  # not a shape; the given inputs decide

        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x)

    assert Problem(Declared(), torch.randn(4, 3)).input_shape == (3,)
    with pytest.raises(InputError, match=r"Declared\.input_shape must be"):
        Problem(Declared())


# --- 4. models that return something else than one tensor ----------------------------------


class _Pair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> object:
        return self.linear(x), x


class _Named(_Pair):
    def forward(self, x: torch.Tensor) -> object:
        return {"logits": self.linear(x)}


class _First(nn.Module):
    """The wrapper the error message suggests."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)[0]


@pytest.mark.parametrize(
    ("make", "kind", "hint"), [(_Pair, "tuple", "output[0]"), (_Named, "dict", "output['logits']")]
)
def test_a_model_that_returns_a_tuple_or_dict(make: type, kind: str, hint: str) -> None:
    model = make()
    for call in (
        lambda: Problem(model, torch.randn(6, 3)),
        lambda: sweep(*_sweep_args(model, torch.randn(6, 3), 2), backend="auto"),
    ):
        with pytest.raises(InputError) as error:
            call()
        message = str(error.value)
        assert f"returns a {kind}" in message and "one tensor" in message and hint in message


def test_the_suggested_wrapper_works() -> None:
    problem = Problem(_First(_Pair()), torch.randn(6, 3))
    assert problem.targets.shape == (6, 2)


@pytest.mark.parametrize(
    ("forward", "dtype"),
    [
        (lambda layer, x: layer(x).argmax(1, keepdim=True), "torch.int64"),
        (lambda layer, x: layer(x).half(), "torch.float16"),
        (lambda layer, x: torch.complex(layer(x), layer(x)), "torch.complex64"),
    ],
)
def test_outputs_must_be_float32_or_float64(
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor], dtype: str
) -> None:
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return forward(self.linear, x)

    with pytest.raises(InputError, match=f"returns {dtype} outputs.*float32 or float64"):
        Problem(Model(), torch.randn(4, 3))


# --- models that run once but not under vmap -----------------------------------------------


class _Branching(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x)
        return out if out.sum() > 0 else -out


class _Scalar(_Branching):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * float(x.mean())


@pytest.mark.parametrize("make", [_Branching, _Scalar])
def test_a_model_that_vmap_cannot_run_is_refused_up_front(make: type) -> None:
    with pytest.raises(InputError, match=r"not under torch\.func\.vmap.*torch\.where"):
        Problem(make(), torch.randn(8, 3))
    with pytest.raises(InputError, match=r"not under torch\.func\.vmap"):
        sweep(*_sweep_args(make(), torch.randn(8, 3), 1), backend="torch")


# --- 5. grids --------------------------------------------------------------------------------


def test_uniform_needs_two_points_per_axis() -> None:
    with pytest.raises(InputError, match=r"n must be an int >= 2.*got 1"):
        Grid.uniform((-2.0, 2.0), 1, 2)
    axis = Grid.uniform((-2.0, 2.0), 2, 1).axes
    assert axis is not None and axis[0].tolist() == [-2.0, 2.0]
    single = Grid.from_axes([[0.0], torch.linspace(-2, 2, 3)])  # the way to one value
    assert single.shape == (1, 3)


def test_grid_numbers_may_be_numpy_scalars() -> None:
    grid = Grid.uniform((np.int64(-1), np.float32(1.0)), 3, 1)
    assert grid.axes is not None and grid.axes[0].tolist() == [-1.0, 0.0, 1.0]
    assert Grid.from_axes([[np.float32(0.5), 2]]).coeffs.tolist() == [[0.5], [2.0]]
    with pytest.raises(InputError, match=r"got ndarray \(convert an array with torch\.as_tensor"):
        Grid.from_axes([np.zeros(3)])


def test_a_bound_too_wide_for_float64_is_named() -> None:
    with pytest.raises(InputError, match=r"too wide: b - a overflows float64"):
        Grid.uniform((-1e308, 1e308), 3, 1)


def test_markers_and_results_check_their_fields() -> None:
    with pytest.raises(InputError, match=r"Marker coords must be a float64 tensor \[m\]"):
        Marker("θ0", [0.0, 0.0], 1.0)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="Marker loss must be a number"):
        Marker("θ0", torch.zeros(2, dtype=torch.float64), "1")  # type: ignore[arg-type]
    assert Marker("θ0", torch.zeros(2, dtype=torch.float64), 1).loss == 1.0
    grid = Grid.uniform((0.0, 1.0), 2, 2)
    values = torch.zeros(2, 2, dtype=torch.float64)
    with pytest.raises(InputError, match=r"markers\[0\] must be a Marker"):
        GridResult(values, grid, ["θ0"], {})  # type: ignore[list-item]
    with pytest.raises(InputError, match="metadata must be a dict"):
        GridResult(values, grid, [], None)  # type: ignore[arg-type]


# --- 6. a subspace remembers its problem ----------------------------------------------------


@pytest.fixture(scope="module")
def searched() -> tuple[Problem, SearchResult]:
    problem = Problem(_mlp(), num_probes=64, seed=1)
    return problem, search(problem, 4, steps=20, lr=0.05, progress=False)


def _plane(result: SearchResult) -> Subspace:
    return Subspace.from_search(result, float(result.losses.max()) * 2, 2)


def test_from_search_records_the_problem(searched: tuple[Problem, SearchResult]) -> None:
    problem, result = searched
    subspace = _plane(result)
    assert (subspace.theta_hash, subspace.probes_hash) == (problem.theta_hash, problem.probes_hash)
    grid = Grid.uniform((-1.0, 1.0), 3, 2)
    assert sweep_grid(problem, subspace, grid).values.shape == (3, 3)


def test_sweep_grid_refuses_a_subspace_of_another_problem(
    searched: tuple[Problem, SearchResult],
) -> None:
    problem, result = searched
    subspace = _plane(result)
    grid = Grid.uniform((-1.0, 1.0), 3, 2)
    other_probes = problem.with_probes(64, seed=2)
    with pytest.raises(InputError) as error:
        sweep_grid(other_probes, subspace, grid)
    message = str(error.value)
    assert problem.probes_hash in message and other_probes.probes_hash in message
    other_theta = Problem(_mlp(seed=5), num_probes=64, seed=1)
    assert other_theta.num_params == problem.num_params
    with pytest.raises(InputError, match=f"{problem.theta_hash}.*{other_theta.theta_hash}"):
        sweep_grid(other_theta, subspace, grid)
    # On purpose: forget the record, or build the plane from points.
    forgotten = dataclasses.replace(subspace, theta_hash=None, probes_hash=None)
    assert sweep_grid(other_probes, forgotten, grid).values.shape == (3, 3)
    from_points = Subspace.from_points(subspace.center, subspace.points)
    assert from_points.theta_hash is None
    assert sweep_grid(other_theta, from_points, grid).values.shape == (3, 3)


def test_a_search_without_hashes_is_taken_on_trust(
    searched: tuple[Problem, SearchResult],
) -> None:
    problem, result = searched
    old_config = {k: v for k, v in result.config.items() if not k.endswith("_hash")}
    old = dataclasses.replace(result, config=old_config)
    subspace = _plane(old)
    assert subspace.theta_hash is None and subspace.probes_hash is None
    other = problem.with_probes(64, seed=2)
    assert sweep_grid(other, subspace, Grid.uniform((-1.0, 1.0), 2, 2)).values.shape == (2, 2)


def test_saved_searches_keep_the_record(
    searched: tuple[Problem, SearchResult], tmp_path: Path
) -> None:
    problem, result = searched
    experiment = Experiment("front", tmp_path)
    experiment.save_search(result, problem=problem)
    subspace = _plane(experiment.load_search())
    assert subspace.theta_hash == problem.theta_hash
    grid = Grid.uniform((-1.0, 1.0), 2, 2)
    with pytest.raises(InputError, match="another problem"):
        run_sweep(experiment, problem.with_probes(64, seed=2), subspace, grid, "g", progress=False)
    assert not experiment.grid_dir("g").exists()  # refused before anything was written


def test_subspace_hashes_are_checked() -> None:
    center = torch.zeros(3)
    points = torch.eye(3)[:1]
    with pytest.raises(InputError, match="theta_hash must be None or a non-empty str"):
        Subspace(center, points.clone(), points, theta_hash=5)  # type: ignore[arg-type]


# --- 7. explain_backend on a custom Module ---------------------------------------------------


def test_explain_backend_names_the_layer_and_the_custom_forward() -> None:
    model = _ConvNet().eval()
    for explanation in (
        explain_backend(model),
        explain_backend(model, torch.randn(2, 1, 6, 6)),
    ):
        assert explanation.startswith(
            "torch: layer 'features.1' cannot be lowered: BatchNorm2d is not supported"
        )
        assert "_ConvNet overrides forward()" in explanation
    with pytest.raises(LoweringError) as error:
        lower(model, (1, 6, 6))
    assert error.value.layer == "features.1"


def test_explain_backend_names_the_class_where_the_reason_does_not() -> None:
    grouped = nn.Sequential(nn.Conv2d(2, 2, 3, groups=2), nn.Flatten(), nn.Linear(8, 1)).eval()
    explanation = explain_backend(grouped, torch.zeros(2, 2, 4, 4))
    assert explanation == (
        "torch: layer '0' cannot be lowered: Conv2d: only groups=1 and dilation=1 are supported"
    )


def test_explain_backend_on_inputs_the_model_cannot_take_reports_the_refusal() -> None:
    """sweep refuses inputs of another per-sample shape; explain_backend says the same."""
    explanation = explain_backend(_mlp(), torch.zeros(2, 5))
    assert explanation.startswith(
        "refused: Sequential cannot run on inputs of shape [2, 5] (one sample (5,)); it takes "
        "one sample of shape (3,)"
    )


def test_a_custom_forward_of_supported_layers_is_named_alone() -> None:
    class Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.head = nn.Linear(8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.conv(x).flatten(1))

    explanation = explain_backend(Plain())
    assert explanation.startswith("torch: the model cannot be lowered: Plain overrides forward()")
    assert "Plain overrides forward()" in explanation and "nn.Sequential" in explanation
    assert "not supported" not in explanation


def test_explain_backend_on_lazy_layers_says_to_run_them_first() -> None:
    """sweep refuses a model with lazy parameters, so explain_backend reports that refusal."""
    model = nn.Sequential(nn.LazyLinear(2))
    for explanation in (explain_backend(model), explain_backend(model, torch.zeros(2, 3))):
        assert explanation.startswith(
            "refused: Sequential has uninitialized (lazy) parameters: 0.weight, 0.bias; run "
            "one forward pass"
        )


# --- 8. more holes ---------------------------------------------------------------------------


def _lazy() -> nn.Module:
    return nn.Sequential(nn.LazyLinear(2))


BAD_CALLS: list[tuple[str, Callable[[], object], str]] = [
    (
        "lazy parameters in Problem",
        lambda: Problem(_lazy(), input_shape=(3,), num_probes=4),
        r"uninitialized \(lazy\) parameters: 0\.weight, 0\.bias.*model\(x\)",
    ),
    (
        "lazy parameters in sweep",
        lambda: sweep(
            _lazy(),
            torch.zeros(3),
            torch.zeros(1, 3),
            torch.zeros(2, 1),
            torch.zeros(4, 3),
            torch.zeros(4, 2),
        ),
        r"uninitialized \(lazy\) parameters",
    ),
    (
        "num_probes too many to allocate",
        # 12 PB: more than any 64-bit address space holds, so the allocation always fails.
        lambda: Problem(_mlp(), num_probes=10**15),
        r"1000000000000000 probes of shape \(3,\) and their targets \(2 output\(s\) each, "
        r"float32\) need about 20\.0 PB, more than the .* that can still be allocated on cpu "
        r"\(the least of: .*free memory.*\); use fewer probes",
    ),
    ("seed above 2**64 - 1", lambda: Problem(_mlp(), num_probes=4, seed=2**64), r"seed=.*2\*\*64"),
    (
        "search seeds past 2**64 - 1",
        lambda: search(Problem(_mlp(), num_probes=4), 3, seed=2**64 - 3, progress=False),
        r"seed=.* must be at most 2\*\*64 - 4",
    ),
    (
        "starts far too many",
        lambda: search(Problem(_mlp(), num_probes=4), MAX_STARTS + 1, progress=False),
        r"more than the 1e\+06 random starts allowed",
    ),
    (
        "explain_backend integer inputs",
        lambda: explain_backend(_mlp(), torch.zeros(2, 3, dtype=torch.int64)),
        r"inputs has dtype torch\.int64",
    ),
    (
        "explain_backend no probes",
        lambda: explain_backend(_mlp(), torch.zeros(0, 3)),
        r"N >= 1",
    ),
]


@pytest.mark.parametrize(
    ("call", "message"), [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS]
)
def test_more_bad_calls(call: Callable[[], object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        call()
