#!/usr/bin/env python
"""Train the flowers models (``flowers_cnn``, ``flowers_bcos``, ``flowers_part``, ``flowers_quality``) on generated flowers.

    .venv/bin/python scripts/train_flowers.py                # all, into whyserve/models/weights/
    .venv/bin/python scripts/train_flowers.py --model bcos --epochs 10
    .venv/bin/python scripts/train_flowers.py --model part   # the single-part variant (6 classes)
    .venv/bin/python scripts/train_flowers.py --model quality   # the noise-strength regressor (whyserve.data.quality)

Seeded (torch, the data and the batch order), CPU-only, two threads: each model takes a
few minutes on 2 CPU cores. Training images come from seed 1 of the generator, the
held-out images the accuracy is reported on from seed 2 (the tests use other seeds).
``quality`` is a regression (``whyserve.data.quality``: the label is the strength of the noise
in one square): MSE loss, held-out MSE and Pearson correlation reported instead of accuracy.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from whyserve.data import quality
from whyserve.data.flowers import SINGLE_NUM_CLASSES, as_arrays, generate, generate_single_part
from whyserve.models.flowers import WEIGHTS, FlowersBcos, FlowersCNN
from whyserve.models.quality import QualityCNN

MODELS = {
    "cnn": FlowersCNN,
    "bcos": FlowersBcos,
    "part": functools.partial(FlowersCNN, classes=SINGLE_NUM_CLASSES),
    "quality": QualityCNN,
}
# (generator, arrays): part has one discriminative part per class; quality a noisy square
DATA = {
    "cnn": (generate, as_arrays),
    "bcos": (generate, as_arrays),
    "part": (generate_single_part, as_arrays),
    "quality": (quality.generate, quality.as_arrays),
}
REGRESSION = {"quality"}


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0


def outputs(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.inference_mode():
        return torch.cat([model(x[i : i + 256]) for i in range(0, len(x), 256)])


def heldout(kind: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> str:
    """Accuracy of a classifier; MSE and Pearson r of predicted vs true value of a regressor."""
    out = outputs(model, x)
    if kind in REGRESSION:
        pred = out[:, 0].double()
        r = float(torch.corrcoef(torch.stack([pred, y.double()]))[0, 1])
        return f"held-out MSE {float(((pred - y) ** 2).mean()):.4f}, Pearson r {r:.3f} (n={len(y)})"
    return f"held-out accuracy {float((out.argmax(1) == y).float().mean()):.2%}"


def loss_of(kind: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(out[:, 0], y) if kind in REGRESSION else F.cross_entropy(out, y)


def recalibrate_norms(model: torch.nn.Module, x: torch.Tensor) -> None:
    """Batch-norm statistics as the plain average over ``x`` with the final weights.

    The running statistics are exponential averages over weights that kept changing; the
    B-cos model's first layers drift enough that its eval-mode accuracy suffers (~20
    points after a short run), so both models get precise statistics after training.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for i in range(0, len(x), 100):
            model(x[i : i + 100])
    for norm in norms:
        norm.momentum = 0.1
    model.eval()


def train(kind: str, x: torch.Tensor, y: torch.Tensor, xv: torch.Tensor, yv: torch.Tensor, args) -> torch.nn.Module:
    torch.manual_seed(args.seed)
    model = MODELS[kind]()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4 if kind == "cnn" else 0.0)
    steps = args.epochs * (len(x) // args.batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=steps, pct_start=0.15)
    order = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    with tqdm(total=steps, desc=f"flowers_{kind}", unit="step", file=sys.stderr) as bar:
        for epoch in range(args.epochs):
            model.train()
            perm = torch.randperm(len(x), generator=order)
            for i in range(len(x) // args.batch):
                idx = perm[i * args.batch : (i + 1) * args.batch]
                batch = x[idx]
                if torch.rand(1, generator=order).item() < 0.5:  # mirror half the batches
                    batch = batch.flip(3)
                loss = loss_of(kind, model(batch), y[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                bar.update()
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
            bar.write(f"flowers_{kind} epoch {epoch + 1}: {heldout(kind, model, xv, yv)}")
    recalibrate_norms(model, x[: args.recalibrate])
    print(f"flowers_{kind}: {time.perf_counter() - start:.0f} s, {heldout(kind, model, xv, yv)}")
    return model.eval()


@functools.cache
def data(source, train: int, held: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    generator, arrays = source
    print(f"generating {train} training and {held} held-out images ({generator.__module__})", file=sys.stderr)
    images, labels = arrays(generator(train, seed=1))
    heldout_images, heldout_labels = arrays(generator(held, seed=2))
    return to_tensor(images), torch.from_numpy(labels), to_tensor(heldout_images), torch.from_numpy(heldout_labels)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=[*MODELS, "all"], default="all")
    parser.add_argument("--train", type=int, default=4000, help="training images")
    parser.add_argument("--heldout", type=int, default=400, help="held-out images")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--recalibrate", type=int, default=1000, help="training images for the final norm statistics")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    args.out.mkdir(parents=True, exist_ok=True)
    for kind in MODELS if args.model == "all" else [args.model]:
        x, y, xv, yv = data(DATA[kind], args.train, args.heldout)
        model = train(kind, x, y, xv, yv, args)
        path = args.out / f"flowers_{kind}.pt"
        torch.save(model.state_dict(), path)
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
