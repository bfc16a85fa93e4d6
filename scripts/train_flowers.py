#!/usr/bin/env python
"""Train the flowers classifiers (``flowers_cnn``, ``flowers_bcos``, ``flowers_part``) on generated flowers.

    .venv/bin/python scripts/train_flowers.py                # all, into whyserve/models/weights/
    .venv/bin/python scripts/train_flowers.py --model bcos --epochs 10
    .venv/bin/python scripts/train_flowers.py --model part   # the single-part variant (6 classes)

Seeded (torch, the data and the batch order), CPU-only, two threads: each model takes a
few minutes on 2 CPU cores. Training images come from seed 1 of the generator, the
held-out images the accuracy is reported on from seed 2 (the tests use other seeds).
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

from whyserve.data.flowers import SINGLE_NUM_CLASSES, as_arrays, generate, generate_single_part  # noqa: E402
from whyserve.models.flowers import WEIGHTS, FlowersBcos, FlowersCNN  # noqa: E402

MODELS = {"cnn": FlowersCNN, "bcos": FlowersBcos, "part": functools.partial(FlowersCNN, classes=SINGLE_NUM_CLASSES)}
DATA = {"cnn": generate, "bcos": generate, "part": generate_single_part}  # part: one discriminative part per class


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.inference_mode():
        pred = torch.cat([model(x[i : i + 256]).argmax(1) for i in range(0, len(x), 256)])
    return float((pred == y).float().mean())


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
                loss = F.cross_entropy(model(batch), y[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                bar.update()
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
            bar.write(f"flowers_{kind} epoch {epoch + 1}: held-out accuracy {accuracy(model, xv, yv):.2%}")
    recalibrate_norms(model, x[: args.recalibrate])
    print(f"flowers_{kind}: {time.perf_counter() - start:.0f} s, held-out accuracy {accuracy(model, xv, yv):.2%}")
    return model.eval()


@functools.cache
def data(generator, train: int, heldout: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    print(f"generating {train} training and {heldout} held-out flowers ({generator.__name__})", file=sys.stderr)
    images, labels = as_arrays(generator(train, seed=1))
    heldout_images, heldout_labels = as_arrays(generator(heldout, seed=2))
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
