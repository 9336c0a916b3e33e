"""The equivalence problem: a model φ, a reference θ, probe inputs x and targets φ(x, θ).

GENNI asks which parameters θ̃ compute the same function as θ. On a probe set C it
measures that by the auxiliary loss J(θ̃) = 1/|C| Σ_{x∈C} ‖φ(x, θ) - φ(x, θ̃)‖². A
:class:`Problem` holds everything J needs (targets computed once) and evaluates it for one
flat parameter vector or for a batch of them with ``torch.func`` (``vmap`` over
``functional_call``, as the sweep's fallback does, and with its helpers, so tied and reused
modules are handled the same way). The search (:mod:`genni_ext.core.sgd_search`), the subspace and
the grid sweep all start from a Problem.

The model is evaluated in its current mode, with its own buffers, and is never changed. A
model with BatchNorm or Dropout (or RReLU) in training mode is refused, naming the layers:
their forward would update the caller's running statistics or draw random numbers, so J
would not be a function of θ; call ``model.eval()`` first. Its own parameter values are not
used (θ is), so the caller may go on changing the model's parameters; its structure must
stay as it was.

Two baselines put an ε in scale (both float64, from the targets): ``zero_loss``, J of the
function that outputs 0 (mean ‖y‖²), and ``constant_loss``, J of the best constant output ȳ,
the mean target (mean ‖y − ȳ‖², never more than ``zero_loss``). A model whose last layer
has a bias can output ȳ for every input, so an ε above ``constant_loss`` admits points of the
ε-set that ignore their input: at that ε the set says nothing about θ's function.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import torch
from torch import nn
from torch.func import functional_call, vmap

from genni_ext._validate import (
    all_finite,
    check_room,
    contiguous_finite,
    device_label,
    float_tensor,
    module_argument,
    positive_int,
    seed_argument,
)
from genni_ext.core.functional import (
    DEFAULT_MEMORY_BUDGET,
    buffers_for,
    check_vmap,
    every_path,
    probe_forward,
)
from genni_ext.core.models import flatten_params, num_params
from genni_ext.errors import InputError

# Parameter-free layers that keep a sample's shape: an MLP may start with them and still
# take (in_features,) inputs.
_SHAPE_PRESERVING = (
    nn.Identity,
    nn.Dropout,
    nn.ReLU,
    nn.LeakyReLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.GELU,
    nn.ELU,
    nn.SiLU,
    nn.Softplus,
)


def _check_shape(value: object, argument: str) -> tuple[int, ...]:
    """A per-sample input shape: a non-empty sequence of positive ints."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        raise InputError(
            f"{argument} must be a non-empty sequence of positive ints (one sample's shape, "
            f"e.g. (1,) or (1, 28, 28)), got {value!r}"
        )
    for index, size in enumerate(value):
        positive_int(size, f"{argument}[{index}]")
    return tuple(value)


def _first_layer(module: nn.Module) -> nn.Module | None:
    """The first layer that a plain ``nn.Sequential`` (any nesting) applies, skipping
    parameter-free shape-preserving ones; the module itself if it is not such a Sequential
    (its forward decides the order); None for a Sequential of only shape-preserving layers."""
    if not (isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward):
        return module
    for child in module:
        if not isinstance(child, _SHAPE_PRESERVING):
            return _first_layer(child)
    return None


def infer_input_shape(model: nn.Module) -> tuple[int, ...] | None:
    """One sample's input shape: ``model.input_shape`` if the model has it, else
    ``(in_features,)`` of a first ``nn.Linear`` of a plain ``nn.Sequential`` (as
    :func:`genni_ext.core.models.mlp` builds), else None."""
    declared = getattr(model, "input_shape", None)
    if declared is not None:
        return _check_shape(declared, f"{type(model).__name__}.input_shape")
    first = _first_layer(model)
    if isinstance(first, nn.Linear):
        return (first.in_features,)
    return None


def expected_input_shape(model: nn.Module) -> tuple[int, ...] | None:
    """What :func:`infer_input_shape` says, for messages about inputs that were given: None
    where it cannot tell, a malformed ``input_shape`` attribute included (given inputs
    decide the shape then, so the attribute is no reason to refuse them)."""
    try:
        return infer_input_shape(model)
    except InputError:
        return None


_BLOCK_VALUES = 1 << 22
"""Target values (32 MB in float64) a baseline sums at a time."""


def _check_probes_fit(
    model: nn.Module, theta: torch.Tensor, num_probes: int, shape: tuple[int, ...]
) -> None:
    """Refuse ``num_probes`` probes of ``shape`` before drawing them when they and their
    targets cannot fit in memory (:func:`check_room`). The output width comes from a
    forward pass on two zero probes; where that fails, the probes alone are counted and the
    forward on the drawn probes reports the failure."""
    outputs = 0
    with contextlib.suppress(InputError), torch.no_grad():
        zeros = torch.zeros(2, *shape, dtype=theta.dtype, device=theta.device)
        params = every_path(model, theta)
        outputs = probe_forward(model, params, buffers_for(model, zeros), zeros).outputs_per_sample
    dtype = str(theta.dtype).removeprefix("torch.")
    check_room(
        f"{num_probes} probes of shape {shape} and their targets ({outputs} output(s) each, "
        f"{dtype})",
        num_probes * (math.prod(shape) + outputs) * theta.element_size(),
        theta.device,
        "use fewer probes (num_probes)",
    )
    if theta.device.type != "cpu":  # they are drawn on the CPU, then moved
        check_room(
            f"{num_probes} probes of shape {shape} ({dtype}, drawn on the CPU)",
            num_probes * math.prod(shape) * theta.element_size(),
            torch.device("cpu"),
            "use fewer probes (num_probes)",
        )


_T = TypeVar("_T")


def _short_hash(tensor: torch.Tensor) -> str:
    """First 16 hex digits of the sha256 of the tensor's bytes (dtype-specific)."""
    data = tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


class Problem:
    """The equivalence problem: model φ, reference θ, probe inputs and targets φ(x, θ).

    ``theta`` ([P], flat parameters in ``parameters_to_vector`` order) defaults to the
    model's current parameters. ``inputs`` ([N, *input_shape]) default to ``num_probes``
    standard-normal probes drawn with a ``torch.Generator`` seeded by ``seed``, in θ's dtype,
    on θ's device (``num_probes`` and ``seed`` only serve that). Their per-sample shape
    ``input_shape`` defaults to ``model.input_shape`` (the package's models have it) or, for
    a plain ``nn.Sequential`` that starts with a Linear (``mlp``), ``(in_features,)``; for
    any other model pass ``inputs=`` or ``input_shape=``. Given inputs must be float32 or
    float64 like θ, on θ's device, finite; they are kept, not copied.

    ``targets`` = φ(inputs, θ) as [N, outputs] is computed once, without autograd, in θ's
    dtype; J is evaluated in that dtype and summed in float64. The model must return one
    tensor with a row per probe, and be in eval mode where that matters (BatchNorm, Dropout):
    both are checked, with one forward pass on two probes, before anything else runs.
    ``zero_loss`` and ``constant_loss`` are J of the zero and of the best constant function.
    """

    model: nn.Module
    theta: torch.Tensor
    inputs: torch.Tensor
    targets: torch.Tensor
    seed: int
    input_shape: tuple[int, ...]
    activations_per_sample: int
    """Activation scalars the model's leaf layers produce per probe: sizes chunks of work."""

    def __init__(
        self,
        model: nn.Module,
        inputs: torch.Tensor | None = None,
        *,
        theta: torch.Tensor | None = None,
        num_probes: int = 16384,
        seed: int = 0,
        input_shape: Sequence[int] | None = None,
    ) -> None:
        module_argument(model)
        count = num_params(model)
        if theta is None:
            theta = flatten_params(model)
            if not theta.is_floating_point() or theta.dtype not in (torch.float32, torch.float64):
                raise InputError(
                    f"the model's parameters are {theta.dtype}; use a float32 or float64 model "
                    "(model.float() or model.double()) or pass theta="
                )
        theta = float_tensor("theta", theta)
        if theta.ndim != 1 or theta.shape[0] != count:
            raise InputError(
                f"theta has shape {list(theta.shape)} but {type(model).__name__} has {count} "
                f"parameters; pass a flat vector of shape [{count}] in parameters_to_vector "
                "order (genni_ext.core.models.flatten_params)"
            )
        theta = contiguous_finite("theta", theta).clone()
        seed_argument(seed, "seed")
        if input_shape is not None:
            input_shape = _check_shape(input_shape, "input_shape")

        if inputs is None:
            positive_int(num_probes, "num_probes")
            shape = input_shape if input_shape is not None else infer_input_shape(model)
            if shape is None:
                raise InputError(
                    f"cannot infer the input shape of {type(model).__name__} (it has no "
                    "input_shape attribute and is not a plain nn.Sequential starting with a "
                    "Linear); pass inputs= (probe inputs [N, ...]) or input_shape= (one "
                    "sample's shape, e.g. input_shape=(3, 32, 32))"
                )
            _check_probes_fit(model, theta, num_probes, shape)
            generator = torch.Generator().manual_seed(seed)
            try:
                inputs = torch.randn(num_probes, *shape, generator=generator, dtype=theta.dtype)
            except RuntimeError as error:  # the allocation failed: num_probes is far too large
                raise InputError(
                    f"cannot allocate {num_probes} probes of shape {shape} "
                    f"({num_probes * math.prod(shape) * theta.element_size():.3g} bytes): "
                    f"{error}; use fewer probes (num_probes)"
                ) from error
            inputs = inputs.to(theta.device)
        else:
            inputs = float_tensor("inputs", inputs)
            if inputs.ndim < 2 or inputs.shape[0] == 0:
                raise InputError(
                    f"inputs must have shape [N, ...] with N >= 1 (one probe per row), got "
                    f"{list(inputs.shape)}"
                )
            if inputs.dtype != theta.dtype:
                raise InputError(
                    f"inputs is {inputs.dtype} but theta is {theta.dtype}; pass inputs in "
                    "theta's dtype (inputs.float() or inputs.double()), or a theta= of the "
                    "inputs' dtype"
                )
            if inputs.device != theta.device:
                raise InputError(
                    f"inputs is on {inputs.device} but theta is on {theta.device}; move them "
                    "to one device"
                )
            inputs = contiguous_finite("inputs", inputs)
            shape = tuple(inputs.shape[1:])
            if input_shape is not None and input_shape != shape:
                raise InputError(
                    f"input_shape={input_shape} does not match the inputs' per-sample shape "
                    f"{shape}; leave input_shape out when passing inputs"
                )

        self._memo: dict[str, tuple[tuple[int, int], Any]] = {}
        self.model = model
        self.theta = theta
        self.inputs = inputs
        self.seed = seed
        self.input_shape = shape
        self._buffers = buffers_for(model, inputs)
        self.activations_per_sample = 0  # set by _compute_targets
        self.targets = self._compute_targets()
        # x2: a layer's input and output are alive at the same time.
        self._bytes_per_sample = 2 * self.activations_per_sample * inputs.element_size()

    # --- properties -------------------------------------------------------------------------

    @property
    def num_params(self) -> int:
        """P, the length of a flat parameter vector."""
        return self.theta.shape[0]

    @property
    def num_probes(self) -> int:
        """N, the number of probe inputs."""
        return self.inputs.shape[0]

    @property
    def theta_hash(self) -> str:
        """First 16 hex digits of the sha256 of θ's bytes."""
        return self._remembered("theta_hash", self.theta, lambda: _short_hash(self.theta))

    @property
    def probes_hash(self) -> str:
        """First 16 hex digits of the sha256 of the probe inputs' bytes."""
        return self._remembered("probes_hash", self.inputs, lambda: _short_hash(self.inputs))

    def _remembered(self, key: str, source: torch.Tensor, compute: Callable[[], _T]) -> _T:
        """``compute()``, computed again only when ``source`` was replaced or changed in place
        (its storage or torch's version counter differ): every result's metadata asks for
        the hashes and baselines, and each is a pass over θ, the probes or the targets."""
        stamp = (source.data_ptr(), source._version)
        known = self._memo.get(key)
        if known is None or known[0] != stamp:
            known = (stamp, compute())
            self._memo[key] = known
        return known[1]

    def _target_blocks(self) -> Iterator[torch.Tensor]:
        """The targets as float64 in blocks of rows of about _BLOCK_VALUES values: the
        baselines sum them a block at a time, never in a float64 copy of them all."""
        rows = max(1, _BLOCK_VALUES // self.targets.shape[1])
        for first in range(0, self.num_probes, rows):
            yield self.targets[first : first + rows].double()

    def _mean_squared_distance(self, offset: torch.Tensor | None) -> float:
        """Mean over probes of ‖y − offset‖² (offset None: ‖y‖²), in float64."""
        total = torch.zeros((), dtype=torch.float64, device=self.targets.device)
        for block in self._target_blocks():
            total += (block if offset is None else block - offset).square().sum(dim=1).sum()
        return float(total / self.num_probes)

    @property
    def zero_loss(self) -> float:
        """J of the zero function: mean over probes of ‖y‖², in float64.

        An ε above it admits any θ̃ whose outputs are all 0 (for example a zero last layer).
        """
        return self._remembered(
            "zero_loss", self.targets, lambda: self._mean_squared_distance(None)
        )

    @property
    def constant_loss(self) -> float:
        """J of the best constant output ȳ (the mean target): mean of ‖y − ȳ‖², in float64.

        When ε >= constant_loss the ε-set contains functions that ignore their input (any
        model whose last layer has a bias can output ȳ everywhere), so ε should stay well
        below it.
        """
        return self._remembered("constant_loss", self.targets, self._best_constant_loss)

    def _best_constant_loss(self) -> float:
        total = torch.zeros(self.targets.shape[1], dtype=torch.float64, device=self.targets.device)
        for block in self._target_blocks():
            total += block.sum(dim=0)
        return self._mean_squared_distance(total / self.num_probes)

    # --- evaluation -------------------------------------------------------------------------

    def _forward(self, params: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, (params, self._buffers), (inputs,), tie_weights=False)

    def _compute_targets(self) -> torch.Tensor:
        """φ(inputs, θ) as [N, outputs], in probe chunks sized from the memory budget (sets
        ``activations_per_sample``); refused before it is allocated if it cannot fit."""
        num = self.inputs.shape[0]
        with torch.no_grad():
            params = every_path(self.model, self.theta)
            probe = probe_forward(
                self.model,
                params,
                self._buffers,
                self.inputs,
                expected_shape=expected_input_shape(self.model),
            )
            check_vmap(self.model, params, self._buffers, self.inputs)
            outputs, per_sample = probe.outputs_per_sample, probe.activations_per_sample
            self.activations_per_sample = per_sample
            check_room(
                f"the targets of {num} probes ({outputs} output(s) each, "
                f"{str(self.inputs.dtype).removeprefix('torch.')})",
                num * outputs * self.inputs.element_size(),
                self.inputs.device,
                "use fewer probes (num_probes)",
            )
            targets = torch.empty(num, outputs, dtype=self.inputs.dtype, device=self.inputs.device)
            chunk = max(1, DEFAULT_MEMORY_BUDGET // (2 * per_sample * self.inputs.element_size()))
            for first in range(0, num, chunk):
                part = self._forward(params, self.inputs[first : first + chunk])
                targets[first : first + chunk] = part.reshape(-1, outputs)
        if not all_finite(targets):
            raise InputError(
                f"{type(self.model).__name__} outputs NaN or Inf at theta for some probe "
                "inputs; check theta and the inputs (every target must be finite)"
            )
        return targets

    def minibatch_loss(
        self, flat: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """Mean ‖φ(x, flat) - y‖² over a minibatch, in θ's dtype and differentiable in
        ``flat`` ([P]); ``torch.func.grad`` and ``vmap`` of it drive the search."""
        out = self._forward(every_path(self.model, flat), inputs)
        return (out.reshape(targets.shape) - targets).square().sum(dim=-1).mean()

    def unchecked_loss(self, params: torch.Tensor) -> torch.Tensor:
        """J on the whole probe set for every row of ``params`` ([K, P], θ's dtype and
        device, not checked) as float64 [K]. Rows and probes are chunked so that one call
        holds about DEFAULT_MEMORY_BUDGET bytes of activations."""
        rows_total, num = params.shape[0], self.inputs.shape[0]
        rows = max(1, min(rows_total, DEFAULT_MEMORY_BUDGET // (self._bytes_per_sample * num)))
        probes = max(1, min(num, DEFAULT_MEMORY_BUDGET // (self._bytes_per_sample * rows)))
        values = torch.empty(rows_total, dtype=torch.float64, device=params.device)
        batched = vmap(self._forward, in_dims=(0, None))
        with torch.no_grad():
            for start in range(0, rows_total, rows):
                stop = min(start + rows, rows_total)
                named = every_path(self.model, params[start:stop])
                squared = torch.zeros(stop - start, dtype=torch.float64, device=params.device)
                for first in range(0, num, probes):
                    last = min(first + probes, num)
                    out = batched(named, self.inputs[first:last]).reshape(
                        stop - start, last - first, -1
                    )
                    errors = (out - self.targets[first:last]).square().sum(dim=-1)
                    squared += errors.double().sum(dim=-1)
                values[start:stop] = squared / num
        return values

    def loss(self, params: torch.Tensor) -> torch.Tensor:
        """J(params) on the whole probe set: [P] -> 0-d float64, [K, P] -> [K] float64.

        ``params`` are flat parameter vectors in ``parameters_to_vector`` order; they are
        cast to θ's dtype and device (the model computes in that dtype) and must be finite.
        The K rows are evaluated together (``vmap`` over ``functional_call``).
        """
        module_argument(self.model)  # the caller may have switched it to training mode since
        if not isinstance(params, torch.Tensor):
            raise InputError(f"params must be a torch.Tensor, got {type(params).__name__}")
        if (
            params.ndim not in (1, 2)
            or params.shape[-1] != self.num_params
            or (params.ndim == 2 and params.shape[0] == 0)
        ):
            raise InputError(
                f"params has shape {list(params.shape)}; pass one flat parameter vector "
                f"[{self.num_params}] or a batch [K, {self.num_params}] with K >= 1"
            )
        flat = float_tensor("params", params).to(dtype=self.theta.dtype, device=self.theta.device)
        flat = contiguous_finite("params", flat)
        if flat.ndim == 1:
            return self.unchecked_loss(flat[None])[0]
        return self.unchecked_loss(flat)

    def with_probes(self, num_probes: int, seed: int) -> Problem:
        """The same model and θ with ``num_probes`` fresh standard-normal probes drawn with
        ``seed``: to check that points found on one probe set are equivalent on another."""
        return Problem(
            self.model,
            theta=self.theta,
            num_probes=num_probes,
            seed=seed,
            input_shape=self.input_shape,
        )

    def describe(self) -> dict[str, object]:
        """JSON-able facts that identify the problem (for results' metadata)."""
        return {
            "model": type(self.model).__name__,
            "repr": repr(self.model),
            "num_params": self.num_params,
            "num_probes": self.num_probes,
            "seed": self.seed,
            "input_shape": list(self.input_shape),
            "dtype": str(self.theta.dtype).removeprefix("torch."),
            "device": device_label(self.inputs.device),
            "theta_hash": self.theta_hash,
            "probes_hash": self.probes_hash,
            "zero_loss": self.zero_loss,
            "constant_loss": self.constant_loss,
        }

    def __repr__(self) -> str:
        return (
            f"Problem({type(self.model).__name__}, P={self.num_params}, N={self.num_probes}, "
            f"input_shape={self.input_shape}, dtype={str(self.theta.dtype).removeprefix('torch.')})"
        )


__all__ = ["Problem", "expected_input_shape", "infer_input_shape"]
