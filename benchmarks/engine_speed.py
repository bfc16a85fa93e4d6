"""Prediction + explanation cost against a plain forward, EfficientNet-Lite0, 224 px, this CPU.

Prints a markdown table. Rows are measured in interleaved rounds (median of the rounds),
so a busy neighbour slows every row alike and the ratios stay meaningful.

    .venv/bin/python benchmarks/engine_speed.py [--rounds 30] [--scorecam] [--peer-scorecam]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from PIL import Image
from pytorch_grad_cam import GradCAM, ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from whyserve import Explainer, ExplainRequest, load_model
from whyserve.photos import photo_path


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved_medians(
    rows: dict[str, Callable[[], object]], rounds: int, settle: float = 0.0, warmup: int = 1
) -> dict[str, float]:
    """Seconds per call of each row: median of ``rounds`` rounds that each run every row once
    (after ``warmup`` calls each), so a busy neighbour slows every row alike. ``settle``
    seconds of sleep before each timed call let the previous row's thread pools (ONNX
    Runtime's and OpenMP's busy-wait after a run) go idle, so no row pays for another's."""
    for fn in rows.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(rounds):
        for name, fn in rows.items():
            time.sleep(settle)
            times[name].append(_time(fn))
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--scorecam", action="store_true", help="also time exact Score-CAM (tens of seconds)")
    parser.add_argument("--peer-scorecam", action="store_true", help="also time pytorch-grad-cam's ScoreCAM (~1 min)")
    args = parser.parse_args()

    spec = load_model("efficientnet_lite0")
    explainer = Explainer(spec)
    x = spec.preprocess(Image.open(photo_path("chelsea")))[None]
    peer = GradCAM(model=spec.module, target_layers=[spec.module.head_act])

    fast = {
        "plain forward (inference_mode)": lambda: explainer.predict(x),
        "prediction + Grad-CAM": lambda: explainer.explain(x, [ExplainRequest("gradcam")]),
        "prediction + contrastive": lambda: explainer.explain(x, [ExplainRequest("contrastive", contrast=285)]),
        "pytorch-grad-cam GradCAM": lambda: peer(input_tensor=x, targets=None),
    }
    seconds = interleaved_medians(fast, args.rounds)

    slow = {}
    if args.scorecam:
        for weighting in ("probability", "channel_softmax"):
            request = ExplainRequest("scorecam", weighting=weighting)
            slow[f"exact Score-CAM, {weighting} (1280 channels)"] = lambda r=request: explainer.explain(x, [r])
    if args.peer_scorecam:
        peer_scorecam = ScoreCAM(model=spec.module, target_layers=[spec.module.head_act])
        peer_scorecam.batch_size = 16
        slow["pytorch-grad-cam ScoreCAM (1280 channels)"] = lambda: peer_scorecam(
            input_tensor=x, targets=[ClassifierOutputTarget(282)]
        )
    for name, fn in slow.items():
        seconds[name] = _time(fn)

    base = seconds["plain forward (inference_mode)"]
    print(f"EfficientNet-Lite0, 1 image of 224 px, {torch.get_num_threads()} threads, median of {args.rounds} rounds")
    print("(Score-CAM rows: one run each)\n")
    print("| what | ms / image | x plain forward |")
    print("|---|---:|---:|")
    for name, s in seconds.items():
        print(f"| {name} | {s * 1e3:,.1f} | {s / base:.2f} |")


if __name__ == "__main__":
    main()
