"""Train one of models.py's networks on scikit-learn's digits and save its weights.

The images are prepared exactly as the configs' probes are (``genni_ext.core.probe_data``:
standardised per pixel, and for the CNN resized to 16×16), so the analysis probes the network
on the data it was trained on. Run from the repository root, e.g.
``python examples/own_network/train.py mlp`` (writes examples/own_network/mlp.safetensors),
then ``genni search --config examples/own_network/mlp.yml`` and so on (README "Your own
network"). Needs scikit-learn (``pip install "genni_ext[examples]"``).
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from sklearn.datasets import load_digits
from torch import nn

from genni_ext.core.probe_data import load_probes

HERE = Path(__file__).resolve().parent
MODELS = {"mlp": ("digits_mlp", None), "residual": ("residual_cnn", (16, 16))}
BATCH = 128


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(MODELS))
    parser.add_argument("--steps", type=int, default=300, help="Adam steps of 128 digits each")
    parser.add_argument("--out", type=Path, help="weights file (default: next to the configs)")
    args = parser.parse_args(argv)
    factory_name, resize = MODELS[args.model]
    spec = importlib.util.spec_from_file_location("own_models", HERE / "models.py")
    assert spec is not None and spec.loader is not None
    models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(models)

    torch.manual_seed(0)
    model = getattr(models, factory_name)()
    data = load_digits()
    images = load_probes(
        torch.from_numpy(data.data),
        model.input_shape,
        torch.float32,
        standardised=True,
        resize=resize,
    )
    labels = torch.from_numpy(data.target)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    start = time.perf_counter()
    model.train()
    generator = torch.Generator().manual_seed(0)
    for _ in range(args.steps):
        batch = torch.randint(len(labels), (BATCH,), generator=generator)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(images[batch]), labels[batch]).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(images).argmax(dim=1) == labels).float().mean())
    out = args.out or HERE / f"{args.model}.safetensors"
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, str(out))
    print(
        f"{factory_name}: {args.steps} Adam steps in {time.perf_counter() - start:.1f} s, "
        f"accuracy {accuracy:.3f} on the {len(labels)} digits; weights: {out}"
    )
    return out


if __name__ == "__main__":
    main()
