"""Grad-CAM on ONNX Runtime (trunk on ONNX Runtime, head above the layer in PyTorch) against
the ONNX plain forward and the PyTorch path, EfficientNet-Lite0, 1 image of 224 px.

Rows are measured in interleaved rounds (median of the rounds), so a busy neighbour slows
every row alike and the ratios stay meaningful. Goals (issue 15): ONNX-trunk prediction +
Grad-CAM <= 1.3x the ONNX plain forward and <= 0.5x PyTorch prediction + Grad-CAM.

    .venv/bin/python benchmarks/onnx_gradcam_speed.py [--rounds 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from engine_speed import interleaved_medians  # this folder: the script's path
from PIL import Image

from whyserve import Explainer, ExplainRequest, load_model
from whyserve.backends.ort_backend import OrtBackend
from whyserve.onnx_runtime import create_session, export_onnx
from whyserve.photos import photo_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = load_model("efficientnet_lite0")
    with tempfile.TemporaryDirectory() as tmp:
        backend = OrtBackend(create_session(export_onnx(spec, Path(tmp) / "m.onnx"), args.threads), spec)
    ort, eager = Explainer(spec, backend=backend), Explainer(spec)
    x = spec.preprocess(Image.open(photo_path("chelsea")))[None]
    gradcam = [ExplainRequest("gradcam")]
    rows = {
        "ONNX Runtime plain forward": lambda: ort.predict(x),
        "ONNX-trunk prediction + Grad-CAM": lambda: ort.explain(x, gradcam),
        "ONNX-trunk prediction + contrastive": lambda: ort.explain(x, [ExplainRequest("contrastive", contrast=285)]),
        "PyTorch plain forward": lambda: eager.predict(x),
        "PyTorch prediction + Grad-CAM": lambda: eager.explain(x, gradcam),
    }
    ms = {name: seconds * 1e3 for name, seconds in interleaved_medians(rows, args.rounds).items()}
    ort_base, torch_gradcam = ms["ONNX Runtime plain forward"], ms["PyTorch prediction + Grad-CAM"]
    print(f"EfficientNet-Lite0, 1 image of 224 px, {args.threads} threads, median of {args.rounds} interleaved rounds\n")
    lines = [f"| {name} | {value:.1f} | {value / ort_base:.2f} | {value / torch_gradcam:.2f} |" for name, value in ms.items()]
    header = "| what | ms / image | x ONNX plain forward | x PyTorch prediction + Grad-CAM |\n|---|---:|---:|---:|"
    print("\n".join([header, *lines]))


if __name__ == "__main__":
    main()
