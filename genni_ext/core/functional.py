"""A model run at flat parameters with torch.func, and the checks that it runs on its probes:
:func:`probe_forward` and :func:`check_vmap`, shared by ``Problem``, the search and the
sweep's fallback.

The model is evaluated in its current mode; ``sweep`` and ``Problem`` refuse BatchNorm or
Dropout in training mode (call ``model.eval()`` first), so that φ(x, θ) is deterministic and
its buffers are only read.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, vmap

from genni_ext.core.models import unflatten_params
from genni_ext.errors import InputError

DEFAULT_MEMORY_BUDGET = 1 << 30
"""Bytes of activations one chunk may hold when no ``memory_budget`` is given."""

_PROBE_SAMPLES = 2


def buffers_for(model: nn.Module, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """The model's buffers on the inputs' device, floating ones in the inputs' dtype."""
    return {
        name: buffer.to(
            device=inputs.device,
            dtype=inputs.dtype if buffer.is_floating_point() else buffer.dtype,
        )
        for name, buffer in model.named_buffers()
    }


@dataclass(frozen=True)
class ProbeRun:
    """What one forward pass on a few probes showed: the output values per probe and the
    activation scalars the leaf layers produce per probe (which size the chunks)."""

    outputs_per_sample: int
    activations_per_sample: int


def _layer_takes(layer: nn.Module) -> str:
    """What a layer takes, where its type says it (", 3 input features"), else ""."""
    if isinstance(layer, nn.Linear):
        return f", {layer.in_features} input features"
    if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return f", {layer.in_channels} input channels"
    return ""


def _sample_shape(shape: Sequence[int]) -> str:
    return f"({', '.join(str(size) for size in shape)}{',' if len(shape) == 1 else ''})"


def check_output_size(produced: int, expected: int) -> None:
    """Raise InputError unless the model's ``produced`` values per probe match the targets'
    ``expected``; a mismatch would otherwise broadcast silently against the targets."""
    if produced != expected:
        raise InputError(
            f"targets has {expected} values per probe but the model outputs {produced}; "
            "compute targets with the same model (targets = model(inputs).reshape(N, -1))"
        )


def _unwrap_hint(output: object) -> str:
    """How to wrap a model whose forward returns ``output`` instead of one tensor."""
    if isinstance(output, dict) and output:
        return f"output[{next(iter(output))!r}]"
    if isinstance(output, (tuple, list)) and output:
        return "output[0]"
    return "the output tensor"


VMAP_UNSUPPORTED: tuple[type[nn.Module], ...] = (nn.RNNBase, nn.LSTMCell)
"""Layers that ``torch.func.vmap`` has no batching rule for (aten::lstm, gru, rnn_tanh,
rnn_relu, lstm_cell; python_tests check that it still has none): a model with one cannot be
searched or swept. RNNCell and GRUCell run (on vmap's slower fallback)."""


def vmap_unsupported(model: nn.Module) -> list[str]:
    """The layers of ``model`` in VMAP_UNSUPPORTED, as "'path' (Class)"."""
    return [
        f"'{path}' ({type(layer).__name__})" if path else f"the model ({type(layer).__name__})"
        for path, layer in model.named_modules()
        if isinstance(layer, VMAP_UNSUPPORTED)
    ]


def check_vmap(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    inputs: torch.Tensor,
) -> None:
    """Raise InputError unless the model runs under ``torch.func.vmap`` over parameter
    vectors and inputs both, as the search runs it (each start has its own minibatch;
    :meth:`Problem.loss` and the torch sweep batch the parameters only). One call on the
    first probes, after :func:`probe_forward` has shown that a plain call works."""
    sample = inputs[:_PROBE_SAMPLES]

    def run(batched: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        return functional_call(model, (batched, buffers), (inputs,), tie_weights=False)

    try:
        vmap(run)({key: value[None] for key, value in params.items()}, sample[None])
    except (RuntimeError, ValueError, TypeError, IndexError, AttributeError) as error:
        unsupported = vmap_unsupported(model)
        if unsupported:
            raise InputError(_vmap_unsupported_message(model, unsupported)) from error
        raise InputError(
            f"{type(model).__name__} runs on one parameter vector but not under "
            "torch.func.vmap, which genni_ext uses to evaluate many at once: "
            f"{type(error).__name__}: {error}. The usual causes are Python control flow on a "
            "tensor's value (if x.sum() > 0), .item() or float(tensor), and random numbers "
            "drawn in forward(); write them with tensor ops (torch.where)"
        ) from error


def _vmap_unsupported_message(model: nn.Module, layers: list[str]) -> str:
    return (
        f"{type(model).__name__} has layers that torch.func.vmap cannot run (torch has no "
        f"batching rule for them): {', '.join(layers)}; genni_ext evaluates many parameter "
        "vectors at once under vmap (search, Problem.loss, the torch sweep) and the fused "
        "engine does not run them either, so this model cannot be studied as it is"
    )


def check_vmap_layers(model: nn.Module) -> None:
    """InputError naming the layers of ``model`` that vmap cannot run (VMAP_UNSUPPORTED),
    for checks made without inputs to run it on."""
    unsupported = vmap_unsupported(model)
    if unsupported:
        raise InputError(_vmap_unsupported_message(model, unsupported))


def probe_forward(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    inputs: torch.Tensor,
    *,
    expected_shape: Sequence[int] | None = None,
) -> ProbeRun:
    """Run the model once on the first probes and check that it gives one tensor [n, ...].

    This is the check that a model and its probe inputs fit, made before any real work
    (:func:`check_vmap` is the second half, for callers that vmap the model):
    a model that cannot take the inputs' per-sample shape raises InputError naming that
    shape, the one ``expected_shape`` says the model takes (if known), and the layer that
    failed (dotted path, class, what it takes and gets) with torch's message; a model
    whose forward returns a tuple, dict or anything but one float32/float64 tensor with a
    row per probe raises InputError too. ``params`` and ``buffers`` are as
    ``functional_call`` takes them.
    """
    sample = inputs[:_PROBE_SAMPLES]
    count = sample.shape[0]
    name = type(model).__name__
    total = 0
    running: list[tuple[str, nn.Module, list[int] | None]] = []  # leaves entered, not left

    def enter(path: str) -> Callable[[nn.Module, tuple[object, ...]], None]:
        def hook(module: nn.Module, args: tuple[object, ...]) -> None:
            first = args[0] if args else None
            shape = list(first.shape) if isinstance(first, torch.Tensor) else None
            running.append((path, module, shape))

        return hook

    def leave(_module: nn.Module, _args: object, output: object) -> None:
        nonlocal total
        running.pop()
        if isinstance(output, torch.Tensor):
            total += output.numel()

    leaves = [
        (path, module)
        for path, module in model.named_modules()
        if next(module.children(), None) is None
    ]
    handles = [module.register_forward_pre_hook(enter(path)) for path, module in leaves]
    handles += [module.register_forward_hook(leave) for _path, module in leaves]
    try:
        output = functional_call(model, (params, buffers), (sample,), tie_weights=False)
    except (RuntimeError, ValueError, TypeError, IndexError, AttributeError) as error:
        given = tuple(sample.shape[1:])
        message = (
            f"{name} cannot run on inputs of shape {list(inputs.shape)} "
            f"(one sample {_sample_shape(given)})"
        )
        advice = "Pass probe inputs [N, ...] whose samples have the shape the model takes"
        if expected_shape is not None and tuple(expected_shape) != given:
            message += f"; it takes one sample of shape {_sample_shape(expected_shape)}"
        elif expected_shape is not None:
            advice = "That is the model's own input shape, so check the model's layers"
        if running:
            path, layer, received = running[-1]
            takes = _layer_takes(layer)
            where = f"layer '{path}' ({type(layer).__name__}{takes})" if path else "the model"
            got = f" on an input of shape {received}" if received is not None else ""
            message += f"; {where} failed{got}"
        raise InputError(f"{message}: {type(error).__name__}: {error}. {advice}") from error
    finally:
        for handle in handles:
            handle.remove()
    if not isinstance(output, torch.Tensor):
        raise InputError(
            f"{name} returns a {type(output).__name__}; genni_ext needs a model whose forward "
            f"returns one tensor of outputs [N, ...]; wrap it, e.g. a small Module whose "
            f"forward returns {_unwrap_hint(output)}"
        )
    if output.dtype not in (torch.float32, torch.float64):
        raise InputError(
            f"{name} returns {output.dtype} outputs; genni_ext compares real outputs in float32 "
            "or float64, so make its forward return one of those (a model that returns class "
            "indices, e.g. argmax, has a piecewise-constant J: compare its logits instead)"
        )
    outputs = output[0].numel() if output.ndim > 0 and output.shape[0] > 0 else 0
    if output.ndim == 0 or output.shape[0] != count or outputs == 0:
        raise InputError(
            f"{name} maps inputs of shape {list(sample.shape)} to {list(output.shape)}; it "
            "must return one row of outputs per probe ([N, ...])"
        )
    activations = math.ceil(total / count) + math.prod(sample.shape[1:])
    return ProbeRun(outputs_per_sample=outputs, activations_per_sample=activations)


def every_path(model: nn.Module, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Parameters of ``flat`` named once for every module attribute that holds them.

    A weight tied between two modules is held by two attributes; naming both lets
    functional_call run with tie_weights=False. A module used twice is named once: torch
    swaps and restores names in the same order, so a second name for one attribute would
    restore vmap's BatchedTensor (and tie_weights=True fails the same way,
    pytorch/pytorch#164759).
    """
    views = unflatten_params(model, flat)
    canonical = {id(parameter): name for name, parameter in model.named_parameters()}
    return {
        f"{prefix}.{name}" if prefix else name: views[canonical[id(parameter)]]
        for prefix, module in model.named_modules()
        for name, parameter in module.named_parameters(recurse=False)
    }
