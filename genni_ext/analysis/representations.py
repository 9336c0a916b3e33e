"""The representations of a network: what each hidden layer passes on, for given inputs.

A *hidden layer* is a Linear or Conv2d layer whose output feeds another one (the layers
:func:`genni_ext.analysis.structure.hidden_layers` counts), and its *representation* is the
tensor the network passes on from it: the layer's output after its activation and pooling,
just before the next Linear or Conv2d reads it, and before any Flatten on the way there.
It is [N, C] for a dense layer and [N, C, H, W] for a conv layer (after pooling, if the
layer is pooled), N inputs by C units (neurons or channels) in dimension 1. Without an
activation in between it is the layer's own output. The last Linear or Conv2d (the
output layer) is not a hidden layer.

How it is taken: the model runs with θ by ``torch.func.functional_call`` (θ a dict of
tensors; the model's own parameter values are not used, nor changed), and forward pre-hooks on
its leaf layers count their calls in execution order and read the first input of the one
call that holds a representation (for stitching, :func:`forward_replacing` replaces it).
The hooks are removed in a ``finally``.

Names. A model that lowers (:func:`genni_ext.engine.lowering.lower`: nested plain nn.Sequential,
as the package's models are) names its hidden layers by the lowering's parametric ops,
"<op>_<k>", with op "linear" or "conv2d" and k the position of the hidden layer, the index
of :class:`~genni_ext.analysis.structure.HiddenLayer` and of ``Alignment.permutations``:
LeNet5's are "conv2d_0", "conv2d_1", "linear_2", "linear_3". Any other model is traced:
hidden layer k is the input of the (k+1)-th call of a Linear or Conv (1d/2d/3d) layer,
named by the module path of the k-th call's layer ("@n" added for its n-th call when one
layer runs more than once). Activations a custom forward() applies as functions are then
included (they run before the next layer reads its input), but so is a flatten done in
forward(): such a representation is flat, [N, features].
"""

from __future__ import annotations

import contextlib
import itertools
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from genni_ext._validate import contiguous_finite, float_tensor, module_argument, positive_int
from genni_ext.core.functional import buffers_for, every_path, probe_forward
from genni_ext.core.models import flat_point, flatten_params
from genni_ext.core.problem import expected_input_shape
from genni_ext.engine.lowering import CONV2D, LINEAR, OP_NAMES, lower
from genni_ext.errors import InputError, LoweringError

PARAMETRIC_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
"""The layers whose calls delimit hidden layers."""
PASS_THROUGH_LAYERS = (nn.Identity, nn.Flatten)
"""Layers of a lowered model that change no value: a representation is taken before them."""
PROBE_CHUNK = 4096
"""Inputs per forward pass when taking representations."""
TRACE_SAMPLES = 2
"""Inputs of the forward pass that finds where the representations are."""


@dataclass(frozen=True)
class LayerSite:
    """Where hidden layer ``name`` is in a forward pass: the first input of leaf-layer call
    number ``call`` (counted from 0 in execution order, every leaf layer counted), whose
    shape for one input is ``shape``."""

    name: str
    call: int
    shape: tuple[int, ...]


@dataclass(frozen=True)
class _Call:
    """One call of a leaf layer: its number, path, layer and one input's shape."""

    index: int
    path: str
    layer: nn.Module
    shape: tuple[int, ...]


def _leaf_layers(module: nn.Module, prefix: str, seen: set[int]) -> Iterator[tuple[str, nn.Module]]:
    """The layers the hooks watch, each module once (at its first path): parametric layers
    and modules without children, not looking inside either."""
    if id(module) in seen:
        return
    children = list(module.named_children())
    if not children or isinstance(module, PARAMETRIC_LAYERS):
        seen.add(id(module))
        yield prefix, module
        return
    for name, child in children:
        yield from _leaf_layers(child, f"{prefix}.{name}" if prefix else name, seen)


Visit = Callable[[int, str, nn.Module, torch.Tensor], torch.Tensor | None]


@contextlib.contextmanager
def _visiting(model: nn.Module, visit: Visit) -> Iterator[None]:
    """Within the block, every call of a leaf layer whose first input is a tensor calls
    ``visit(call, path, layer, input)``, ``call`` counting every leaf call from 0 at block
    entry; a tensor that ``visit`` returns replaces the input."""
    calls = itertools.count()

    def watch(path: str) -> Callable[[nn.Module, tuple[object, ...]], object]:
        def hook(layer: nn.Module, args: tuple[object, ...]) -> object:
            call = next(calls)
            if not args or not isinstance(args[0], torch.Tensor):
                return None
            replaced = visit(call, path, layer, args[0])
            return None if replaced is None else (replaced, *args[1:])

        return hook

    handles = [
        layer.register_forward_pre_hook(watch(path))
        for path, layer in _leaf_layers(model, "", set())
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _forward(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    inputs: torch.Tensor,
) -> torch.Tensor:
    return functional_call(model, (params, buffers), (inputs,), tie_weights=False)


def _trace(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    sample: torch.Tensor,
) -> list[_Call]:
    """Every leaf-layer call with a tensor input of one forward pass on ``sample``, in order."""
    calls: list[_Call] = []

    def record(call: int, path: str, layer: nn.Module, value: torch.Tensor) -> None:
        calls.append(_Call(call, path, layer, tuple(value.shape[1:])))

    with torch.no_grad(), _visiting(model, record):
        _forward(model, params, buffers, sample)
    return calls


def _sites(model: nn.Module, calls: list[_Call], input_shape: Sequence[int]) -> list[LayerSite]:
    """The hidden layers of a traced forward pass (see the module docstring)."""
    try:
        lower(model, input_shape)
        lowered = True
    except LoweringError:
        lowered = False
    starts = [i for i, call in enumerate(calls) if isinstance(call.layer, PARAMETRIC_LAYERS)]
    runs: Counter[str] = Counter(calls[i].path for i in starts[:-1])
    seen: Counter[str] = Counter()
    sites = []
    for position, (here, there) in enumerate(itertools.pairwise(starts)):
        reader = there
        if lowered:
            while reader - 1 > here and isinstance(calls[reader - 1].layer, PASS_THROUGH_LAYERS):
                reader -= 1
            kind = LINEAR if isinstance(calls[here].layer, nn.Linear) else CONV2D
            name = f"{OP_NAMES[kind]}_{position}"
        else:
            path = calls[here].path or type(model).__name__
            name = path if runs[calls[here].path] == 1 else f"{path}@{seen[path]}"
            seen[path] += 1
        sites.append(LayerSite(name=name, call=calls[reader].index, shape=calls[reader].shape))
    return sites


def _input_shape(value: object) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        raise InputError(
            f"input_shape must be one sample's shape, a non-empty sequence of positive ints "
            f"such as (5,) or (1, 28, 28), got {value!r}"
        )
    return tuple(positive_int(size, f"input_shape[{i}]") for i, size in enumerate(value))


def probe_inputs(value: object, theta: torch.Tensor) -> torch.Tensor:
    """``value`` if it is finite inputs [N, ...] (N >= 1) in θ's dtype and on its device."""
    inputs = float_tensor("inputs", value)
    if inputs.ndim < 2 or inputs.shape[0] == 0:
        raise InputError(
            f"inputs must have shape [N, ...] with N >= 1 (one input per row), got "
            f"{list(inputs.shape)}"
        )
    if inputs.dtype != theta.dtype or inputs.device != theta.device:
        raise InputError(
            f"inputs are {inputs.dtype} on {inputs.device} but theta is {theta.dtype} on "
            f"{theta.device}; pass both in one dtype on one device"
        )
    return contiguous_finite("inputs", inputs)


def layer_sites(model: nn.Module, input_shape: Sequence[int]) -> list[LayerSite]:
    """Where the hidden layers of ``model`` are, for inputs of one-sample shape
    ``input_shape``: one traced forward pass on zeros with the model's own parameters."""
    module_argument(model)
    shape = _input_shape(input_shape)
    theta = flatten_params(model)
    sample = torch.zeros(TRACE_SAMPLES, *shape, dtype=theta.dtype, device=theta.device)
    return sites_at(model, theta, sample)[0]


def hidden_layer_names(model: nn.Module, input_shape: Sequence[int]) -> list[str]:
    """The names of ``model``'s hidden layers in execution order, for inputs of one-sample
    shape ``input_shape`` (see the module docstring for how they are named)."""
    return [site.name for site in layer_sites(model, input_shape)]


def sites_at(
    model: nn.Module, theta: torch.Tensor, inputs: torch.Tensor
) -> tuple[list[LayerSite], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The hidden layers of ``model`` traced at θ on the first inputs, with θ as
    ``functional_call`` takes it and the model's buffers on the inputs' device; for
    checked arguments (:func:`flat_point`, :func:`probe_inputs`)."""
    params = every_path(model, theta)
    buffers = buffers_for(model, inputs)
    sample = inputs[:TRACE_SAMPLES]
    probe_forward(model, params, buffers, sample, expected_shape=expected_input_shape(model))
    sites = _sites(model, _trace(model, params, buffers, sample), tuple(inputs.shape[1:]))
    return sites, params, buffers


def select_layer(sites: Sequence[LayerSite], layer: object) -> LayerSite:
    """The site of ``layer``: an index into ``sites`` or a hidden layer's name."""
    names = [site.name for site in sites]
    if not sites:
        raise InputError("the model has no hidden layer (it needs two Linear or Conv layers)")
    if isinstance(layer, str):
        if layer not in names:
            raise InputError(f"no hidden layer is called {layer!r}; the hidden layers are {names}")
        return sites[names.index(layer)]
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < len(sites):
        raise InputError(
            f"layer must be a hidden layer's index, 0 to {len(sites) - 1}, or its name (one "
            f"of {names}), got {layer!r}"
        )
    return sites[layer]


def forward_replacing(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    inputs: torch.Tensor,
    site: LayerSite,
    value: torch.Tensor,
) -> torch.Tensor:
    """The model's output on ``inputs`` with the representation at ``site`` replaced by
    ``value`` ([N, *site.shape]); differentiable in ``value`` (and in ``params``)."""

    def replace(call: int, _path: str, _layer: nn.Module, _value: torch.Tensor) -> object:
        return value if call == site.call else None

    with _visiting(model, replace):
        return _forward(model, params, buffers, inputs)


def layer_outputs(
    model: nn.Module,
    theta: torch.Tensor,
    inputs: torch.Tensor,
    *,
    layers: Sequence[str | int] | None = None,
) -> dict[str, torch.Tensor]:
    """The representation of every hidden layer of φ(·, θ) on ``inputs`` ([N, ...]), by
    name in execution order: [N, C] for dense and [N, C, H, W] for conv layers (see the
    module docstring for which tensor that is), detached, in θ's dtype and on its device.

    ``theta`` is a flat parameter vector of ``model`` ([P], float32 or float64); the
    inputs must be finite and in its dtype, on its device. ``layers`` picks hidden layers
    by index or name (default: all). The model's own parameters are not used or changed.
    """
    module_argument(model)
    theta = flat_point(model, theta, "theta")
    inputs = probe_inputs(inputs, theta)
    sites, params, buffers = sites_at(model, theta, inputs)
    if layers is None:
        wanted = sites
    elif isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence):
        raise InputError(
            f"layers must be a list of hidden-layer indices or names, got {layers!r}; the "
            f"hidden layers are {[site.name for site in sites]}"
        )
    else:
        chosen = {select_layer(sites, layer).call for layer in layers}
        wanted = [site for site in sites if site.call in chosen]
    by_call = {site.call: site.name for site in wanted}
    parts: dict[str, list[torch.Tensor]] = {site.name: [] for site in wanted}

    def keep(call: int, _path: str, _layer: nn.Module, value: torch.Tensor) -> None:
        if call in by_call:
            parts[by_call[call]].append(value.detach())

    # One visit per chunk: the call counter restarts with each forward pass.
    with torch.no_grad():
        for first in range(0, inputs.shape[0], PROBE_CHUNK):
            with _visiting(model, keep):
                _forward(model, params, buffers, inputs[first : first + PROBE_CHUNK])
    return {name: torch.cat(chunks) for name, chunks in parts.items()}


__all__ = [
    "PARAMETRIC_LAYERS",
    "LayerSite",
    "flat_point",
    "forward_replacing",
    "hidden_layer_names",
    "layer_outputs",
    "layer_sites",
    "probe_inputs",
    "select_layer",
    "sites_at",
]
