"""Equivalent networks on real data: scikit-learn's digits (no download).

Trains a small MLP on the 8×8 digits to good accuracy (θ), searches for parameters that
compute the same function on the digits themselves (the probes are the images, not
Gaussian noise), says what the found points are, and compares θ's representations with
theirs: CKA and the G_ReLU-invariant similarities per layer, and stitching θ's layers into
a found network. The trained network, the digits and the search are kept as the
experiment ``digits`` in ``DIR/genni_home`` (``Experiment.create`` with the factory of
``examples/own_network/models.py``), so ``genni ls``, ``genni sweep --experiment digits``
and ``genni analyse digits`` (``--home DIR/genni_home``) go on from there, on a Dask cluster
too. Run it with ``python examples/digits.py`` (``--quick`` for a smaller run, as CI does;
``--out DIR`` for where the figures and the store go, default ``digits_out``); needs
``pip install "genni_ext[examples]"`` (scikit-learn).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from genni_ext import Experiment, Problem, search
from genni_ext.analysis import compare, explain, stitch_all
from genni_ext.core.models import load_flat_params, mlp
from genni_ext.plot.analysis import similarity_heatmap, stitching_penalties

# The factory that rebuilds this example's network for the CLI and Dask workers.
FACTORY = f"{Path(__file__).resolve().parent / 'own_network' / 'models.py'}:digits_mlp"
WIDTHS = [32, 16]


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The 1,797 digits as float32 [N, 64] in [0, 1] and their labels [N]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.data, dtype=torch.float32) / 16.0
    return images, torch.tensor(data.target, dtype=torch.int64)


def train(images: torch.Tensor, labels: torch.Tensor, steps: int, seed: int) -> nn.Module:
    """An mlp([64, 32, 16, 10]) trained with Adam on all digits (full batch)."""
    torch.manual_seed(seed)
    model = mlp([64, *WIDTHS, 10])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    return model.eval()


def accuracy(model: nn.Module, params: torch.Tensor, images: torch.Tensor, labels: torch.Tensor):
    """Fraction of digits a copy of ``model`` with flat ``params`` classifies correctly."""
    copy = mlp([64, *WIDTHS, 10])
    load_flat_params(copy, params)
    with torch.no_grad():
        return float((copy(images).argmax(dim=1) == labels).float().mean())


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and starts")
    parser.add_argument("--out", default="digits_out", help="folder for the figures")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps, starts, search_steps = (150, 6, 300) if args.quick else (400, 16, 3000)

    start = time.perf_counter()
    images, labels = digits()
    model = train(images, labels, steps, seed=0)
    problem = Problem(model, images)
    theta = problem.theta
    print(f"θ: mlp([64, 32, 16, 10]), accuracy {accuracy(model, theta, images, labels):.3f} "
          f"on the {images.shape[0]} digits ({time.perf_counter() - start:.1f} s)")  # fmt: skip

    eps = 0.05 * problem.constant_loss
    start = time.perf_counter()
    found = search(problem, starts, steps=search_steps, lr=0.005, optimizer="adam", seed=1,
                   batch_size=256, progress=False)  # fmt: skip
    print(f"search: {starts} starts × {search_steps} Adam steps in "
          f"{time.perf_counter() - start:.1f} s; ε = 5 % of the constant function's J = "
          f"{eps:.3g}")  # fmt: skip
    explanation = explain(found, problem, eps)
    print(f"found points: {explanation.summary()}")
    home = out / "genni_home"
    if Experiment("digits", home).exists:
        print(f"experiment 'digits' exists in {home} already; this run is not kept")
    else:
        kept = Experiment.create(problem, "digits", home=home, model_spec=FACTORY,
                                 model_kwargs={"widths": WIDTHS})  # fmt: skip
        kept.save_search(found, problem=problem)
        print(f"kept: θ, the digits and the search as experiment 'digits' in {home} "
              f"(genni ls --home {home})")  # fmt: skip

    best = int(torch.argmin(found.losses))
    other = found.params[best]
    print(f"best found point: J = {float(found.losses[best]):.3g}, accuracy "
          f"{accuracy(model, other, images, labels):.3f}")  # fmt: skip
    results: dict[str, object] = {"explanation": explanation}
    for metric in ("cka", "relu_procrustes"):
        start = time.perf_counter()
        comparison = compare(model, theta, other, images, metric=metric)
        results[metric] = comparison
        print(f"{comparison.summary()} ({time.perf_counter() - start:.1f} s)")
        similarity_heatmap(comparison).savefig(out / f"similarity_{metric}.png", dpi=100)
    start = time.perf_counter()
    stitches = stitch_all(model, theta, other, images, steps=100 if args.quick else 300)
    results["stitching"] = stitches
    for stitched in stitches:
        print(stitched.summary())
    print(f"stitching: {time.perf_counter() - start:.1f} s")
    stitching_penalties(stitches).savefig(out / "stitching.png", dpi=100)
    print(f"figures: {out}")
    return results


if __name__ == "__main__":
    main()
