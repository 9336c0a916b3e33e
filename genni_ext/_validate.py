"""Argument checks, helpers and constants (backends, precisions) shared by every layer."""

from __future__ import annotations

import contextlib
import math
import numbers
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.dropout import _DropoutNd
from torch.nn.parameter import is_lazy

from genni_ext.errors import InputError

FLOAT_DTYPES = (torch.float32, torch.float64)
INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
"""Integer dtypes taken where real numbers are asked for (coefficients, grid axes)."""

BACKENDS = ("auto", "fused", "torch")
"""What runs a sweep: the fused engine, torch.func, or "auto" (the fused engine where it can)."""

Precision = Literal["full", "tf32"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
"""A sweep's arithmetic: the dtype's own, or TF32 tensor cores for float32 on CUDA."""

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
    check_finite(name, tensor)
    return tensor


def check_finite(name: str, tensor: torch.Tensor, rule: str = "every value must be finite") -> None:
    """Raise one InputError naming ``name`` and whether it holds NaN or Inf."""
    if not all_finite(tensor):
        kind = "NaN" if bool(torch.isnan(tensor).any()) else "Inf"
        raise InputError(f"{name} contains {kind}; {rule}")


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether every value of ``tensor`` is finite. A CPU tensor is read by numpy on the
    calling thread: torch's own reduction runs on its OpenMP team, whose threads wait at a
    barrier for any one the scheduler has parked, so on a busy machine it can take 100× as
    long (``benchmarks/test_threads.py``)."""
    if tensor.device.type == "cpu":
        return bool(np.isfinite(tensor.detach().numpy()).all())
    return bool(torch.isfinite(tensor).all())


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


# --- memory ---------------------------------------------------------------------------------


def format_size(num_bytes: float) -> str:
    """``512 B``, ``1.5 kB``, ``3.2 MB``, ``1.0 GB``, ``2.0 TB``, ``20.0 PB`` (powers of
    1000)."""
    value = float(num_bytes)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} PB"


@dataclass(frozen=True)
class MemoryRoom:
    """How many bytes this process can still allocate on a device, and the limits that say
    so (each as "what: bytes"), the tightest first."""

    bytes: int
    limits: tuple[str, ...]

    def describe(self) -> str:
        return "; ".join(self.limits)


def _read_int(path: str) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(Path(path).read_text().split()[0])
    return None


def _process_pages(field: int) -> int | None:
    """Field ``field`` of /proc/self/statm (0: the address space, 5: data and stack), bytes."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        pages = int(Path("/proc/self/statm").read_text().split()[field])
        return pages * os.sysconf("SC_PAGE_SIZE")
    return None


def _host_limits() -> list[tuple[int, str]]:
    """(bytes still free, what says so) for each limit on this process's memory that can
    be read here: free memory, RLIMIT_AS and RLIMIT_DATA (less what the process uses), and
    a cgroup v2 memory.max (less the cgroup's use)."""
    limits: list[tuple[int, str]] = []
    available = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    if available is not None:
        limits.append((available, f"free memory (MemAvailable) {format_size(available)}"))
    else:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            limits.append((free, f"free memory {format_size(free)}"))
    with contextlib.suppress(ImportError, OSError, ValueError, AttributeError):
        import resource

        for name, field, how in (("RLIMIT_AS", 0, "ulimit -v"), ("RLIMIT_DATA", 5, "ulimit -d")):
            soft, _hard = resource.getrlimit(getattr(resource, name))
            used = _process_pages(field)
            if soft != resource.RLIM_INFINITY and used is not None:
                limits.append(
                    (
                        max(0, soft - used),
                        f"{name} ({how}) {format_size(soft)} less the {format_size(used)} this "
                        "process holds",
                    )
                )
    cgroup_max = _read_int("/sys/fs/cgroup/memory.max")  # "max" (no limit) reads as None
    cgroup_used = _read_int("/sys/fs/cgroup/memory.current")
    if cgroup_max is not None and cgroup_used is not None:
        limits.append(
            (
                max(0, cgroup_max - cgroup_used),
                f"the cgroup's memory.max {format_size(cgroup_max)} less its "
                f"{format_size(cgroup_used)} in use",
            )
        )
    return limits


def memory_room(device: torch.device) -> MemoryRoom | None:
    """The bytes that can still be allocated on ``device``: on the CPU the least of the
    limits :func:`_host_limits` reads, on CUDA the device's free memory; None where nothing
    can be read (then nothing is refused on an estimate)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        limits = [(int(free), f"free memory on {device}: {format_size(free)}")]
    elif device.type == "cpu":
        limits = _host_limits()
    else:
        return None
    if not limits:
        return None
    limits.sort(key=lambda limit: limit[0])
    return MemoryRoom(limits[0][0], tuple(text for _bytes, text in limits))


def check_room(what: str, needed: int, device: torch.device, advice: str) -> None:
    """Raise InputError, before anything is allocated, if ``needed`` bytes for ``what`` do
    not fit in :func:`memory_room` of ``device``. The rule: refuse when the estimate is
    more than the least of the limits that can be read."""
    room = memory_room(device)
    if room is not None and needed > room.bytes:
        raise InputError(
            f"{what} need about {format_size(needed)}, more than the "
            f"{format_size(room.bytes)} that can still be allocated on {device} (the least "
            f"of: {room.describe()}); {advice}"
        )
