"""FGVis cost, and deletion AUC against the iteration budget (so the default comes from data).

Tables: seconds per image at the default options (deletion game, defense on) on
EfficientNet-Lite0 (224 px, the bundled photos) and flowers_cnn (96 px, generated flowers);
deletion AUC (whyserve.eval.metrics; its baseline: zeros of the model input) and
iterations actually run for budgets 50/100/200/500, both games; resident memory over 20 runs.

    .venv/bin/python benchmarks/fgvis_speed.py [--flowers 16] [--photos 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import gc
import time

import numpy as np
import psutil
import torch
from PIL import Image

from whyserve import load_model
from whyserve.data.flowers import balanced_labels, generate
from whyserve.eval import metrics
from whyserve.methods.fgvis import FGVisOptions, optimise
from whyserve.photos import available_photos, photo_path

BUDGETS = (50, 100, 200, 500)


def black(spec) -> torch.Tensor:
    return spec.normalize(Image.new("RGB", spec.input_size[::-1]))


def inputs(name: str, n: int) -> tuple:
    """(spec, images (n, C, H, W), top-1 targets)."""
    spec = load_model(name)
    if name == "efficientnet_lite0":
        x = torch.stack([spec.preprocess(Image.open(photo_path(p))) for p in available_photos()[:n]])
    else:
        x = torch.stack([spec.normalize(Image.fromarray(f.image)) for f in generate(n, 100, balanced_labels(n))])
    with torch.inference_mode():
        targets = spec.module(x).argmax(1).tolist()
    return spec, x, targets


def predictor(spec):
    def predict(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return torch.softmax(spec.module(x), dim=1)

    return predict


def per_image_seconds(spec, x, targets, options: FGVisOptions) -> tuple[float, list[int]]:
    """One image at a time, as a served request with batchSize 1 runs it."""
    seconds, steps = [], []
    for i in range(len(x)):
        start = time.perf_counter()
        result = optimise(spec.module, x[i : i + 1], targets[i : i + 1], [options], black(spec))
        seconds.append(time.perf_counter() - start)
        steps += result.iterations
    return float(np.median(seconds)), steps


def budget_rows(spec, x, targets, game: str) -> list[str]:
    predict, rows = predictor(spec), []
    for budget in BUDGETS:
        options = FGVisOptions(game=game, iterations=budget)
        start = time.perf_counter()
        result = optimise(spec.module, x, targets, [options] * len(x), black(spec))
        seconds = (time.perf_counter() - start) / len(x)
        aucs = [metrics.deletion_auc(predict, x[i], result.heatmaps[i].numpy(), targets[i]) for i in range(len(x))]
        rows.append(
            f"| {spec.name} | {game} | {budget} | {np.mean(aucs):.3f} | {np.mean(result.iterations):.0f} "
            f"(max {max(result.iterations)}) | {seconds:.2f} | {len(x)} |"
        )
    return rows


def memory_row(spec, x, targets, runs: int = 20) -> str:
    process = psutil.Process()
    readings = []
    for _ in range(runs):
        optimise(spec.module, x[:1], targets[:1], [FGVisOptions()], black(spec))
        gc.collect()
        readings.append(process.memory_info().rss / 2**20)
    return f"| {spec.name} | {readings[0]:.0f} | {readings[runs // 2]:.0f} | {readings[-1]:.0f} | {runs} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flowers", type=int, default=16)
    parser.add_argument("--photos", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--preservation", action="store_true", help="also budget the preservation game (slow: it rarely stops early)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = [("flowers_cnn", args.flowers), ("efficientnet_lite0", args.photos)]
    loaded = []
    for name, n in cases:
        loaded.append(inputs(name, n))
    print(f"torch threads {args.threads}, CPU\n")
    print("| model | px | default options | s / image (median) | iterations run (mean) | n |")
    print("|---|---|---|---:|---:|---:|")
    for spec, x, targets in loaded:
        seconds, steps = per_image_seconds(spec, x, targets, FGVisOptions())
        size = x.shape[-1]
        print(f"| {spec.name} | {size} | deletion, 100 iterations, defense | {seconds:.3f} | {np.mean(steps):.0f} | {len(x)} |")
    print("\n| model | game | budget | deletion AUC ↓ | iterations run | s / image (batched) | n |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for spec, x, targets in loaded:
        games = ("deletion", "preservation") if args.preservation else ("deletion",)
        for game in games:
            print("\n".join(budget_rows(spec, x, targets, game)), flush=True)
    print("\n| model | RSS MiB after run 1 | after run 10 | after run 20 | runs |")
    print("|---|---:|---:|---:|---:|")
    for spec, x, targets in loaded:
        print(memory_row(spec, x, targets), flush=True)


if __name__ == "__main__":
    main()
