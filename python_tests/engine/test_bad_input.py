"""Every bad argument of ``sweep`` raises an error that names it and says what to fix."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from genni_ext.core.models import flatten_params, mlp, num_params
from genni_ext.engine.front_door import explain_backend, sweep
from genni_ext.errors import InputError, LoweringError

Args = dict[str, object]


def _valid() -> Args:
    torch.manual_seed(0)
    model = mlp([3, 4, 2])
    center = flatten_params(model)
    inputs = torch.randn(10, 3)
    with torch.no_grad():
        targets = model(inputs)
    return {
        "model": model,
        "center": center,
        "directions": torch.randn(2, center.numel()),
        "coeffs": torch.randn(5, 2),
        "inputs": inputs,
        "targets": targets,
    }


def _run(args: Args, **options: object) -> torch.Tensor:
    options.setdefault("backend", "torch")
    return sweep(*args.values(), **options)  # type: ignore[arg-type]


def test_valid_arguments_run() -> None:
    values = _run(_valid())
    assert values.shape == (5,) and values.dtype == torch.float64


def _set(name: str, make: Callable[[Args], object]) -> Callable[[Args], None]:
    def change(args: Args) -> None:
        args[name] = make(args)

    return change


def _t(args: Args, name: str) -> torch.Tensor:
    value = args[name]
    assert isinstance(value, torch.Tensor)
    return value


def _with(name: str, index: tuple[int, ...], value: float) -> Callable[[Args], None]:
    def change(args: Args) -> None:
        tensor = _t(args, name).clone()
        tensor[index] = value
        args[name] = tensor

    return change


def _empty_probes(args: Args) -> None:
    args["inputs"] = _t(args, "inputs")[:0]
    args["targets"] = _t(args, "targets")[:0]


def _no_directions(args: Args) -> None:
    args["directions"] = _t(args, "directions")[:0]
    args["coeffs"] = _t(args, "coeffs")[:, :0]


P = 26  # parameters of mlp([3, 4, 2]): 3*4 + 4 + 4*2 + 2

BAD: dict[str, tuple[Callable[[Args], None], list[str]]] = {
    "model not a module": (_set("model", lambda a: "mlp"), ["model", "nn.Module"]),
    "model without parameters": (_set("model", lambda a: nn.ReLU()), ["model", "no parameters"]),
    "center a list": (_set("center", lambda a: _t(a, "center").tolist()), ["center", "Tensor"]),
    "targets None": (_set("targets", lambda a: None), ["targets", "Tensor"]),
    "center 2-D": (_set("center", lambda a: _t(a, "center")[None]), ["center", "[P]"]),
    "directions 1-D": (
        _set("directions", lambda a: _t(a, "directions")[0]),
        ["directions", "[m, P]"],
    ),
    "coeffs 1-D": (_set("coeffs", lambda a: _t(a, "coeffs")[:, 0]), ["coeffs", "[G, m]"]),
    "inputs 1-D": (_set("inputs", lambda a: _t(a, "inputs")[:, 0]), ["inputs", "[N, ...]"]),
    "targets 3-D": (_set("targets", lambda a: _t(a, "targets")[..., None]), ["targets"]),
    "center too long": (
        _set("center", lambda a: torch.zeros(P + 1)),
        ["center", str(P + 1), str(P)],
    ),
    "directions wrong P": (
        _set("directions", lambda a: torch.zeros(2, P - 1)),
        ["directions", str(P - 1), str(P)],
    ),
    "coeffs wrong m": (_set("coeffs", lambda a: torch.zeros(5, 3)), ["coeffs", "3", "2"]),
    "targets wrong N": (_set("targets", lambda a: _t(a, "targets")[:9]), ["targets", "9", "10"]),
    "targets wrong width": (
        _set("targets", lambda a: torch.zeros(10, 3)),
        ["targets", "3", "outputs 2"],
    ),
    "empty grid": (_set("coeffs", lambda a: _t(a, "coeffs")[:0]), ["coeffs", "empty grid"]),
    "empty probe set": (_empty_probes, ["inputs", "empty probe set"]),
    "no directions": (_no_directions, ["directions", "m = 0"]),
    "int inputs": (_set("inputs", lambda a: _t(a, "inputs").long()), ["inputs", "float32"]),
    "half center": (_set("center", lambda a: _t(a, "center").half()), ["center", "float16"]),
    "bfloat16 targets": (
        _set("targets", lambda a: _t(a, "targets").bfloat16()),
        ["targets", "bfloat16"],
    ),
    "mixed dtypes": (
        _set("coeffs", lambda a: _t(a, "coeffs").double()),
        ["coeffs", "center", "float64", "float32"],
    ),
    "complex directions": (
        _set("directions", lambda a: _t(a, "directions").to(torch.complex64)),
        ["directions", "complex"],
    ),
    "sparse coeffs": (_set("coeffs", lambda a: _t(a, "coeffs").to_sparse()), ["coeffs", "dense"]),
    "quantized inputs": (
        _set("inputs", lambda a: torch.quantize_per_tensor(_t(a, "inputs"), 0.1, 0, torch.qint8)),
        ["inputs", "dequantize"],
    ),
    "meta targets": (_set("targets", lambda a: _t(a, "targets").to("meta")), ["targets", "meta"]),
    "expanded inputs": (
        _set("inputs", lambda a: _t(a, "inputs")[:1].expand(10, 3)),
        ["inputs", "expanded", ".contiguous()"],
    ),
    "expanded directions": (
        _set("directions", lambda a: _t(a, "directions")[:, :1].expand(2, P)),
        ["directions", "expanded"],
    ),
    "NaN center": (_with("center", (3,), float("nan")), ["center", "NaN"]),
    "Inf directions": (_with("directions", (1, 0), float("inf")), ["directions", "Inf"]),
    "NaN coeffs": (_with("coeffs", (4, 1), float("nan")), ["coeffs", "NaN"]),
    "-Inf inputs": (_with("inputs", (0, 2), float("-inf")), ["inputs", "Inf"]),
    "NaN targets": (_with("targets", (9, 0), float("nan")), ["targets", "NaN"]),
}


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
@pytest.mark.parametrize("case", list(BAD))
def test_bad_tensor_argument(case: str) -> None:
    change, words = BAD[case]
    args = _valid()
    change(args)
    with pytest.raises(InputError) as error:
        _run(args)
    message = str(error.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device")
def test_mixed_devices() -> None:
    args = _valid()
    args["targets"] = _t(args, "targets").cuda()
    with pytest.raises(InputError, match="targets is on cuda"):
        _run(args)


@pytest.mark.parametrize(
    "options, argument",
    [
        ({"backend": "cuda"}, "backend"),
        ({"num_threads": 0}, "num_threads"),
        ({"num_threads": 2.0}, "num_threads"),
        ({"num_threads": True}, "num_threads"),
        ({"batch_points": -1}, "batch_points"),
        ({"batch_points": "8"}, "batch_points"),
        ({"progress": "yes"}, "progress"),
    ],
)
def test_bad_options(options: dict[str, object], argument: str) -> None:
    with pytest.raises(InputError, match=argument):
        _run(_valid(), **options)


def test_fused_names_the_layer_it_cannot_lower() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).eval()
    args = _valid()
    args["model"] = model
    assert num_params(model) == P + 8
    args["center"] = flatten_params(model)
    args["directions"] = torch.randn(2, P + 8)
    with pytest.raises(LoweringError) as error:
        _run(args, backend="fused")
    assert error.value.layer == "1"
    assert "layer '1'" in str(error.value) and "BatchNorm1d" in str(error.value)
    assert explain_backend(model).startswith("torch: layer '1'")


def test_fused_rejects_a_shape_mismatch_before_running() -> None:
    args = _valid()
    args["targets"] = torch.zeros(10, 5)
    with pytest.raises(InputError, match="targets has 5 values per probe"):
        _run(args, backend="fused")
    args = _valid()
    args["inputs"] = torch.randn(10, 4)
    for backend in ("fused", "auto", "torch"):
        with pytest.raises(
            InputError, match=r"one sample \(4,\)\); it takes one sample of shape \(3,\)"
        ):
            _run(args, backend=backend)


def test_explain_backend_bad_inputs() -> None:
    model = mlp([3, 2])
    with pytest.raises(InputError, match="inputs"):
        explain_backend(model, [[1.0, 2.0, 3.0]])  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"\[N, \.\.\.\]"):
        explain_backend(model, torch.randn(3))
    with pytest.raises(InputError, match="model"):
        explain_backend("mlp")  # type: ignore[arg-type]
