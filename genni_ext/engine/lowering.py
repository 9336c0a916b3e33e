"""Lowering of a PyTorch model to the fused engine's flat op program.

The fused engine (csrc/) knows no ``nn.Module``: it runs a list of ops, each a row of
integers that gives the op kind, its input and output shapes and the offsets of its
weight and bias in the flat parameter vector (the order of
``torch.nn.utils.parameters_to_vector(model.parameters())``).

Supported, in any nesting of plain ``nn.Sequential``: Linear, Conv2d (groups 1,
dilation 1, zero padding), MaxPool2d, AvgPool2d, ReLU, LeakyReLU, Tanh, Sigmoid,
Identity and Flatten. Identity and Flatten lower to nothing: activations are stored
channel-major (C, H, W) per sample, which is already the order ``flatten`` gives.
Anything else raises :class:`~genni_ext.errors.LoweringError` naming the layer, and
``backend="auto"`` then uses the torch.func fallback. A module with a forward() of its own
(a custom ``nn.Module`` or a Sequential subclass) is never lowered; its error names the
first layer inside it that could not be lowered either (dotted path, class), and says
separately that the custom forward() is not lowered, so the user sees both obstacles.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn
from torch.nn.parameter import is_lazy

import genni_ext._C as _C
from genni_ext.errors import LoweringError

# The program's layout is the compiled engine's (csrc/genni/program.h), exported by _C:
# op kinds, the columns of an op row, and the most ops the engine runs (its CUDA kernel takes
# the program as a kernel argument).
_KINDS: dict[str, int] = _C.OP_KINDS
_FIELD: dict[str, int] = _C.OP_FIELD_INDEX
OP_FIELDS: int = _C.OP_FIELDS
MAX_OPS: int = _C.MAX_OPS
OP_NAMES: tuple[str, ...] = tuple(_KINDS)  # in kind order: OP_NAMES[kind] names it
LINEAR = _KINDS["linear"]
CONV2D = _KINDS["conv2d"]
MAXPOOL2D = _KINDS["maxpool2d"]
AVGPOOL2D = _KINDS["avgpool2d"]
RELU = _KINDS["relu"]
LEAKY_RELU = _KINDS["leaky_relu"]
TANH = _KINDS["tanh"]
SIGMOID = _KINDS["sigmoid"]
F_KIND = _FIELD["kind"]
F_IN_C = _FIELD["in_c"]
F_IN_H = _FIELD["in_h"]
F_IN_W = _FIELD["in_w"]
F_OUT_C = _FIELD["out_c"]
F_OUT_H = _FIELD["out_h"]
F_OUT_W = _FIELD["out_w"]
F_KERNEL_H = _FIELD["kernel_h"]
F_KERNEL_W = _FIELD["kernel_w"]
F_PAD_H = _FIELD["pad_h"]
F_PAD_W = _FIELD["pad_w"]
F_WEIGHT = _FIELD["weight"]
F_BIAS = _FIELD["bias"]
F_FLAG = _FIELD["flag"]

_ACTIVATIONS: dict[type[nn.Module], int] = {
    nn.ReLU: RELU,
    nn.LeakyReLU: LEAKY_RELU,
    nn.Tanh: TANH,
    nn.Sigmoid: SIGMOID,
}
# The layer types the engine lowers (subclasses too, unless they override forward()).
_SUPPORTED = (
    *_ACTIVATIONS,
    nn.Linear,
    nn.Conv2d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.Identity,
    nn.Flatten,
)


@dataclass(frozen=True)
class Program:
    """A model lowered for the fused engine.

    ``ops`` is int64 ``[n_ops, OP_FIELDS]``; ``slopes`` is float64 ``[n_ops]`` (the
    negative slope of LeakyReLU ops, 0 elsewhere). Sizes count scalars per sample.
    :attr:`native` is the engine's own copy, built from them once.
    """

    ops: torch.Tensor
    slopes: torch.Tensor
    input_shape: tuple[int, ...]
    output_size: int
    max_activation: int
    num_params: int
    flops_per_sample: int
    first_fan_in: int

    @property
    def input_size(self) -> int:
        return math.prod(self.input_shape)

    @cached_property
    def native(self) -> _C.Program:
        """The program as the compiled engine takes it, built and checked (in C++) on first
        use and then kept, so that every chunk of a sweep passes the same object; raises
        ValueError for rows the engine cannot run."""
        return _C.Program(self.ops.tolist(), self.slopes.tolist(), self.num_params)

    @property
    def first_is_parametric(self) -> bool:
        """Whether the first op is Linear or Conv2d (so its response is affine in c)."""
        return int(self.ops[0, F_KIND]) in (LINEAR, CONV2D)

    def describe(self) -> str:
        """One line per op, for logs and ``explain_backend``."""
        lines = []
        for row in self.ops.tolist():
            kind = OP_NAMES[row[F_KIND]]
            lines.append(
                f"{kind}: ({row[F_IN_C]}, {row[F_IN_H]}, {row[F_IN_W]}) -> "
                f"({row[F_OUT_C]}, {row[F_OUT_H]}, {row[F_OUT_W]})"
            )
        return "\n".join(lines)


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    first, second = value
    return int(first), int(second)


def _window(
    path: str,
    shape: tuple[int, ...],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pad: tuple[int, int],
    what: str,
) -> tuple[tuple[int, int], dict[str, int]]:
    """Output height and width of a sliding window over ``shape`` (C, H, W), and its fields."""
    out_h = (shape[1] + 2 * pad[0] - kernel[0]) // stride[0] + 1
    out_w = (shape[2] + 2 * pad[1] - kernel[1]) // stride[1] + 1
    if out_h < 1 or out_w < 1:
        raise LoweringError(path, f"a {shape[1:]} input is smaller than the {what} {kernel}")
    fields = {
        "kernel_h": kernel[0],
        "kernel_w": kernel[1],
        "stride_h": stride[0],
        "stride_w": stride[1],
        "pad_h": pad[0],
        "pad_w": pad[1],
    }
    return (out_h, out_w), fields


def _walk(module: nn.Module, prefix: str) -> Iterator[tuple[str, nn.Module]]:
    """Yield the leaf layers of nested plain Sequentials in execution order.

    A module listed twice runs twice, so it is yielded at each place (``named_children``
    would name it once). A container with a forward of its own (a Sequential subclass that
    overrides it, or another module with children that is not a supported layer; a
    parametrized Linear has children and is checked as a Linear) raises
    :func:`_own_forward_error`.
    """
    if module._forward_hooks or module._forward_pre_hooks:
        raise LoweringError(prefix, "it has forward hooks, which only the torch path runs")
    if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
        for name, child in module._modules.items():
            if child is not None:
                yield from _walk(child, f"{prefix}.{name}" if prefix else name)
        return
    has_children = next(module.children(), None) is not None
    if isinstance(module, nn.Sequential) or (has_children and not isinstance(module, _SUPPORTED)):
        raise _own_forward_error(module, prefix)
    yield prefix, module


def _layers(module: nn.Module, prefix: str) -> Iterator[tuple[str, nn.Module]]:
    """The layers inside ``module`` in ``named_modules`` order: supported layer types and
    modules without children, not looking inside either."""
    children = list(module.named_children())
    if not children or isinstance(module, _SUPPORTED):
        yield prefix, module
        return
    for name, child in children:
        yield from _layers(child, f"{prefix}.{name}" if prefix else name)


def _own_forward_error(module: nn.Module, prefix: str) -> LoweringError:
    """The error for a container whose own forward() decides what runs.

    Its forward is Python the engine cannot lower, whatever its layers are. The error names
    the first layer (in ``named_modules`` order) that could not be lowered either, so that
    rewriting the model as an ``nn.Sequential`` is only suggested where it would help.
    """
    name = type(module).__name__
    own = (
        f"{name} overrides forward(), which the fused engine does not lower (it runs only "
        "nested plain nn.Sequential)"
    )
    for path, layer in _layers(module, prefix):
        reason = _unsupported_reason(layer)
        if reason is not None:
            return LoweringError(path, f"{reason}; separately, {own}")
    return LoweringError(
        prefix,
        f"{own}; its layers are all supported, so if forward() only applies them in order, "
        "the same model written as nn.Sequential (nn.Flatten where it flattens) lowers",
    )


def _check_no_global_hooks() -> None:
    """Hooks registered for every module run in torch's forward but not in the engine."""
    hooks = torch.nn.modules.module
    if any(
        getattr(hooks, name, None)
        for name in ("_global_forward_hooks", "_global_forward_pre_hooks")
    ):
        raise LoweringError(
            "", "global forward hooks are registered (register_module_forward_hook)"
        )


def _unsupported_reason(layer: nn.Module) -> str | None:
    """Why the type of the leaf ``layer`` cannot be lowered, or None if it can."""
    base = next((cls for cls in _SUPPORTED if isinstance(layer, cls)), None)
    if base is None:
        return (
            f"{type(layer).__name__} is not supported (supported: Linear, Conv2d, MaxPool2d, "
            "AvgPool2d, ReLU, LeakyReLU, Tanh, Sigmoid, Identity, Flatten in nn.Sequential)"
        )
    for method in ("forward", "_conv_forward"):
        if getattr(type(layer), method, None) is not getattr(base, method, None):
            return f"{type(layer).__name__} overrides {method}()"
    return None


def _check_plain(path: str, layer: nn.Module) -> None:
    reason = _unsupported_reason(layer)
    if reason is not None:
        raise LoweringError(path, reason)


def _check_initialized(model: nn.Module) -> None:
    """Lazy layers (nn.LazyLinear, ...) have no shapes until their first forward pass."""
    for name, parameter in model.named_parameters():
        if is_lazy(parameter):
            layer = name.rpartition(".")[0]
            raise LoweringError(
                layer,
                f"{type(model.get_submodule(layer)).__name__} has uninitialized (lazy) "
                "parameters; run one forward pass (model(x)) first so that they get shapes",
            )


def check_lowerable(model: nn.Module) -> None:
    """Raise LoweringError if the model's layer types cannot be lowered (no shapes needed)."""
    _check_initialized(model)
    _check_no_global_hooks()
    for path, layer in _walk(model, ""):
        _check_plain(path, layer)


def lower(model: nn.Module, input_shape: Sequence[int]) -> Program:
    """Lower ``model`` for per-sample inputs of shape ``input_shape`` (no batch dimension).

    Raises LoweringError naming the first layer that cannot run on the fused engine.
    """
    _check_initialized(model)
    offsets: dict[int, int] = {}
    total = 0
    for parameter in model.parameters():
        offsets[id(parameter)] = total
        total += parameter.numel()

    def offset_of(path: str, tensor: torch.Tensor | None) -> int:
        if tensor is None:
            return -1
        if id(tensor) not in offsets:
            raise LoweringError(path, "its weight is not a plain parameter of the model")
        return offsets[id(tensor)]

    _check_no_global_hooks()
    shape = tuple(int(s) for s in input_shape)
    if len(shape) not in (1, 3):
        raise LoweringError(
            "",
            f"per-sample input shape {shape} is neither (features,) nor (channels, height, width)",
        )
    rows: list[list[int]] = []
    slopes: list[float] = []
    flops = 0
    max_activation = math.prod(shape)
    first_fan_in = 0

    def emit(kind: int, out_shape: tuple[int, ...], *, slope: float = 0.0, **fields: int) -> None:
        row = [0] * OP_FIELDS
        row[F_KIND] = kind
        in3 = shape if len(shape) == 3 else (shape[0], 1, 1)
        out3 = out_shape if len(out_shape) == 3 else (out_shape[0], 1, 1)
        row[F_IN_C], row[F_IN_H], row[F_IN_W] = in3
        row[F_OUT_C], row[F_OUT_H], row[F_OUT_W] = out3
        row[F_WEIGHT] = row[F_BIAS] = -1
        for key, value in fields.items():
            row[_FIELD[key]] = value
        rows.append(row)
        slopes.append(slope)

    for path, layer in _walk(model, ""):
        _check_plain(path, layer)
        if isinstance(layer, nn.Identity):
            continue
        if isinstance(layer, nn.Flatten):
            if layer.start_dim != 1 or layer.end_dim != -1:
                raise LoweringError(path, "only Flatten(start_dim=1, end_dim=-1) is supported")
            shape = (math.prod(shape),)
            continue
        if isinstance(layer, tuple(_ACTIVATIONS)):
            kind = _ACTIVATIONS[next(c for c in _ACTIVATIONS if isinstance(layer, c))]
            slope = float(layer.negative_slope) if isinstance(layer, nn.LeakyReLU) else 0.0
            emit(kind, shape, slope=slope)
            continue
        if isinstance(layer, nn.Linear):
            if len(shape) != 1:
                raise LoweringError(
                    path, f"Linear receives a {shape} activation; add nn.Flatten() before it"
                )
            if shape[0] != layer.in_features:
                raise LoweringError(
                    path, f"expects {layer.in_features} input features but receives {shape[0]}"
                )
            out = (layer.out_features,)
            if not rows:
                first_fan_in = layer.in_features
            emit(
                LINEAR,
                out,
                weight=offset_of(path, layer.weight),
                bias=offset_of(path, layer.bias),
            )
            flops += 2 * layer.in_features * layer.out_features
            shape = out
        elif isinstance(layer, nn.Conv2d):
            if len(shape) != 3:
                raise LoweringError(path, f"Conv2d receives a flat {shape} activation")
            if layer.groups != 1 or _pair(layer.dilation) != (1, 1):
                raise LoweringError(path, "only groups=1 and dilation=1 are supported")
            if layer.padding_mode != "zeros":
                raise LoweringError(path, f"padding_mode='{layer.padding_mode}' is not supported")
            if isinstance(layer.padding, str):
                if layer.padding != "valid":
                    raise LoweringError(path, "padding='same' is not supported; give it as ints")
                pad = (0, 0)
            else:
                pad = _pair(layer.padding)
            if shape[0] != layer.in_channels:
                raise LoweringError(
                    path, f"expects {layer.in_channels} input channels but receives {shape[0]}"
                )
            kernel = _pair(layer.kernel_size)
            size, window = _window(path, shape, kernel, _pair(layer.stride), pad, "kernel")
            out = (layer.out_channels, *size)
            fan_in = layer.in_channels * kernel[0] * kernel[1]
            if not rows:
                first_fan_in = fan_in
            emit(
                CONV2D,
                out,
                weight=offset_of(path, layer.weight),
                bias=offset_of(path, layer.bias),
                **window,
            )
            flops += 2 * fan_in * math.prod(out)
            shape = out
        else:
            assert isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d))
            if len(shape) != 3:
                raise LoweringError(path, f"{type(layer).__name__} receives a flat activation")
            if layer.ceil_mode:
                raise LoweringError(path, "ceil_mode=True is not supported")
            is_max = isinstance(layer, nn.MaxPool2d)
            if is_max and (_pair(layer.dilation) != (1, 1) or layer.return_indices):
                raise LoweringError(path, "only dilation=1 without return_indices is supported")
            if not is_max and layer.divisor_override is not None:
                raise LoweringError(path, "divisor_override is not supported")
            kernel = _pair(layer.kernel_size)
            stride = _pair(layer.stride if layer.stride is not None else layer.kernel_size)
            size, window = _window(path, shape, kernel, stride, _pair(layer.padding), "window")
            out = (shape[0], *size)
            emit(
                MAXPOOL2D if is_max else AVGPOOL2D,
                out,
                flag=0 if is_max else int(layer.count_include_pad),
                **window,
            )
            shape = out
        max_activation = max(max_activation, math.prod(shape))

    if not rows:
        raise LoweringError("", "the model has no layer the fused engine computes")
    if len(rows) > MAX_OPS:
        raise LoweringError(
            "", f"it lowers to {len(rows)} ops and the fused engine runs at most {MAX_OPS}"
        )
    return Program(
        ops=torch.tensor(rows, dtype=torch.int64),
        slopes=torch.tensor(slopes, dtype=torch.float64),
        input_shape=tuple(int(s) for s in input_shape),
        output_size=math.prod(shape),
        max_activation=max_activation,
        num_params=total,
        flops_per_sample=flops,
        first_fan_in=first_fan_in,
    )
