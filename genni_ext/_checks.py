"""Small argument checks and helpers shared by the public functions."""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.dropout import _DropoutNd
from torch.nn.parameter import is_lazy

from .errors import InputError

FLOAT_DTYPES = (torch.float32, torch.float64)

# Layers whose training-mode forward uses batch statistics (and updates running ones) or
# draws random numbers: J would not be a function of θ, the model's buffers would change,
# and vmap refuses them. Dropout with p = 0 is the identity in either mode.
TRAINING_DEPENDENT = (_NormBase, _DropoutNd, nn.RReLU)


def _depends_on_training(layer: nn.Module) -> bool:
    """Whether ``layer`` is in training mode and that changes what its forward does."""
    if not layer.training or not isinstance(layer, TRAINING_DEPENDENT):
        return False
    return not (isinstance(layer, _DropoutNd) and layer.p == 0)


def positive_int(value: object, argument: str) -> int:
    """Return ``value`` if it is a positive int (not a bool), else raise InputError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{argument} must be a positive int, got {value!r}")
    return value


def positive_number(value: object, argument: str) -> float:
    """``value`` as a float if it is a positive finite real number (not a bool), else
    InputError. For ε this says why: J >= 0, so nothing is below a non-positive ε."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{argument} must be a positive number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        why = " (J >= 0, so nothing is below it)" if argument.startswith("eps") else ""
        raise InputError(f"{argument} must be a positive finite number{why}, got {value!r}")
    return float(value)


def resolve_eps(
    eps: object, eps_relative: object, constant_loss: object, where: str = "this result"
) -> float:
    """The absolute ε: ``eps``, or ``eps_relative`` × ``constant_loss`` (the J of the best
    constant function, ``Problem.constant_loss``). Exactly one of the two must be given;
    ``where`` says what lacks the constant-function loss when it is unknown (None)."""
    if (eps is None) == (eps_relative is None):
        raise InputError(
            "give exactly one of eps (absolute) and eps_relative (a fraction of the J of the "
            f"best constant function), got eps={eps!r}, eps_relative={eps_relative!r}"
        )
    if eps is not None:
        return positive_number(eps, "eps")
    fraction = positive_number(eps_relative, "eps_relative")
    if constant_loss is None:
        raise InputError(
            f"eps_relative needs the constant-function loss, which {where} does not record "
            "(it was made before genni_ext recorded it); give an absolute eps"
        )
    constant = float(constant_loss)  # type: ignore[arg-type]
    if not math.isfinite(constant) or constant <= 0:
        raise InputError(
            f"eps_relative needs a positive constant-function loss, got {constant!r} (θ's "
            "outputs are the same on every probe); give an absolute eps"
        )
    return fraction * constant


def non_negative_int(value: object, argument: str) -> int:
    """Return ``value`` if it is an int >= 0 (not a bool), else raise InputError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"{argument} must be a non-negative int, got {value!r}")
    return value


MAX_SEED = 2**64 - 1
"""The largest seed ``torch.Generator.manual_seed`` takes."""


def seed_argument(value: object, argument: str, *, draws: int = 1) -> int:
    """Return ``value`` if it is an int seed such that ``value + draws - 1 <= MAX_SEED`` (a
    search seeds start k with ``seed + 1 + k``), else raise InputError."""
    seed = non_negative_int(value, argument)
    if seed + draws - 1 > MAX_SEED:
        largest = "2**64 - 1" if draws == 1 else f"2**64 - {draws}"
        raise InputError(
            f"{argument}={seed} is too large: torch seeds are at most 2**64 - 1, so {argument} "
            f"must be at most {largest} here"
        )
    return seed


def module_argument(model: object) -> nn.Module:
    """Return ``model`` if it is an ``nn.Module`` that genni_ext can study, else raise.

    It must have parameters, none of them lazy (uninitialized), and be in eval mode where
    that matters: layers of ``TRAINING_DEPENDENT`` in training mode are refused by dotted
    path and class, before anything runs, because running them would change the caller's
    running statistics and make the targets random. genni_ext never switches the caller's
    model to eval itself.
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    name = type(model).__name__
    lazy = [path for path, parameter in model.named_parameters() if is_lazy(parameter)]
    if lazy:
        raise InputError(
            f"{name} has uninitialized (lazy) parameters: {', '.join(lazy[:5])}; run one "
            "forward pass on a batch of inputs first (model(x)) so that they get their shapes"
        )
    if sum(parameter.numel() for parameter in model.parameters()) == 0:
        raise InputError(
            f"model ({name}) has no parameters; genni_ext compares parameter vectors, so "
            "pass a model with at least one parameter"
        )
    training = [
        f"'{path}' ({type(layer).__name__})"
        if path
        else f"the model itself ({type(layer).__name__})"
        for path, layer in model.named_modules()
        if _depends_on_training(layer)
    ]
    if training:
        shown = ", ".join(training[:5]) + (
            f" and {len(training) - 5} more" if len(training) > 5 else ""
        )
        raise InputError(
            f"{name} has layers in training mode whose output depends on the "
            f"batch or on chance: {shown}; in training mode BatchNorm uses and updates batch "
            "statistics and Dropout drops at random, so J would not be a function of the "
            "parameters. Call model.eval() first (genni_ext does not change your model)"
        )
    return model


def float_tensor(name: str, value: object) -> torch.Tensor:
    """Reject what is not a dense real float32/float64 tensor with data."""
    if not isinstance(value, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.layout != torch.strided:
        raise InputError(f"{name} is a {value.layout} tensor; pass a dense one ({name}.to_dense())")
    if value.is_quantized:
        raise InputError(f"{name} is quantized; pass {name}.dequantize()")
    if value.is_complex():
        raise InputError(f"{name} is complex ({value.dtype}); genni_ext needs real values")
    if value.dtype not in FLOAT_DTYPES:
        raise InputError(
            f"{name} has dtype {value.dtype}; use float32 or float64 "
            f"({name}.float() or {name}.double())"
        )
    if value.device.type == "meta":
        raise InputError(f"{name} is on the meta device and has no values")
    return value.detach()


def contiguous_finite(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """Reject broadcast views, make other strided tensors contiguous, reject NaN/Inf."""
    for dim, (size, stride) in enumerate(zip(tensor.shape, tensor.stride(), strict=True)):
        if stride == 0 and size > 1:
            raise InputError(
                f"{name} is an expanded view (stride 0 in dimension {dim} of size {size}), so "
                f"its entries repeat; if that is intended, pass {name}.contiguous() or "
                f"{name}.clone()"
            )
    tensor = tensor.contiguous()
    if not bool(torch.isfinite(tensor).all()):
        kind = "NaN" if bool(torch.isnan(tensor).any()) else "Inf"
        raise InputError(f"{name} contains {kind}; every value must be finite")
    return tensor


def device_label(device: torch.device) -> str:
    """What results on ``device`` are reproducible across: "cpu", or "cuda (<GPU name>)"
    (devices of one GPU model compute bitwise the same J; other models may differ)."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


@contextlib.contextmanager
def torch_threads(num_threads: int | None, device: torch.device) -> Iterator[None]:
    """Use ``num_threads`` intra-op threads for CPU work inside the block, then restore."""
    if num_threads is None or device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def torch_precision(precision: str) -> Iterator[None]:
    """cuBLAS matmuls and cuDNN convolutions in TF32 (``"tf32"``) or in full float32
    (``"full"``) inside the block, then restore: torch's own default runs float32
    convolutions in TF32, which would make the torch backend less precise than asked."""
    tf32 = precision == "tf32"
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(matmul, "fp32_precision") and hasattr(conv, "conv"):  # torch >= 2.9
        previous = (matmul.fp32_precision, conv.conv.fp32_precision)
        matmul.fp32_precision = conv.conv.fp32_precision = "tf32" if tf32 else "ieee"
        try:
            yield
        finally:
            matmul.fp32_precision, conv.conv.fp32_precision = previous
        return
    previous_flags = (matmul.allow_tf32, conv.allow_tf32)
    matmul.allow_tf32 = conv.allow_tf32 = tf32
    try:
        yield
    finally:
        matmul.allow_tf32, conv.allow_tf32 = previous_flags
