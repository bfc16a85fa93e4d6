"""Grad-CAM on ONNX Runtime (trunk on ONNX Runtime, head above the layer in PyTorch) against
the ONNX plain forward and the PyTorch path, EfficientNet-Lite0, 1 image of 224 px.

Rows are measured in interleaved rounds (median of the rounds), so a busy neighbour slows
every row alike and the ratios stay meaningful; each timed call comes after a settle pause
(``--settle``) so that no row pays for the previous row's thread pools busy-waiting (ONNX
Runtime's intra-op pool spins after a run unless ``session.intra_op.allow_spinning`` is 0,
and PyTorch's OpenMP pool spins too). ``--spinning`` adds the ONNX rows of a session whose
pool spins (ONNX Runtime's default), beside whyserve's (no spinning); ``--torch-threads N``
adds every row that runs PyTorch (the ONNX-trunk head and map scaling, the PyTorch path) with
PyTorch on N intra-op threads (``handler.torch_threads``) instead of ``--threads``: on a busy
machine, fewer threads than cores keep PyTorch from waiting on descheduled threads. Goals (issue 15):
ONNX-trunk prediction + Grad-CAM <= 1.3x the ONNX plain forward and <= 0.5x PyTorch
prediction + Grad-CAM.

    .venv/bin/python benchmarks/onnx_gradcam_speed.py [--rounds 30] [--threads 2] [--settle 0.05] [--spinning] [--torch-threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from engine_speed import interleaved_medians  # this folder: the script's path
from PIL import Image

from whyserve import Explainer, ExplainRequest, load_model
from whyserve.backends.onnx.backend import OrtBackend
from whyserve.backends.onnx.runtime import create_session, export_onnx
from whyserve.eval.passes import torch_threads
from whyserve.photos import photo_path

ORT_BASE, TORCH_GRADCAM = "ONNX plain forward", "PyTorch prediction + Grad-CAM"


def onnx_rows(ort: Explainer, x: torch.Tensor, suffix: str) -> dict[str, Callable[[], object]]:
    gradcam, contrastive = [ExplainRequest("gradcam")], [ExplainRequest("contrastive", contrast=285)]
    return {
        f"{ORT_BASE}{suffix}": lambda: ort.predict(x),
        f"ONNX-trunk prediction + Grad-CAM{suffix}": lambda: ort.explain(x, gradcam),
        f"ONNX-trunk prediction + contrastive{suffix}": lambda: ort.explain(x, contrastive),
    }


def on_threads(threads: int, fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` with PyTorch on ``threads`` intra-op threads, then back (process-wide setting)."""

    def run() -> object:
        with torch_threads(threads):
            return fn()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--settle", type=float, default=0.05, help="seconds of sleep before each timed call")
    parser.add_argument("--spinning", action="store_true", help="also time a session whose threads spin")
    parser.add_argument("--torch-threads", type=int, help="also time the rows that run PyTorch with it on N threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = load_model("efficientnet_lite0")
    x = spec.preprocess(Image.open(photo_path("chelsea")))[None]
    eager = Explainer(spec)
    rows: dict[str, Callable[[], object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(spec, Path(tmp) / "m.onnx")
        for spinning in (False, True) if args.spinning else (False,):
            session = create_session(path, args.threads, spinning=spinning)
            ort = Explainer(spec, backend=OrtBackend(session, spec))
            rows |= onnx_rows(ort, x, " (spinning)" if spinning else "")
            if args.torch_threads and not spinning:
                extra = onnx_rows(ort, x, f" (PyTorch on {args.torch_threads} thread(s))")
                rows |= {name: on_threads(args.torch_threads, fn) for name, fn in list(extra.items())[1:]}
    torch_rows = {
        "PyTorch plain forward": lambda: eager.predict(x),
        TORCH_GRADCAM: lambda: eager.explain(x, [ExplainRequest("gradcam")]),
    }
    rows |= torch_rows
    if args.torch_threads:
        suffix = f" (on {args.torch_threads} thread(s))"
        rows |= {name + suffix: on_threads(args.torch_threads, fn) for name, fn in torch_rows.items()}
    ms = {name: s * 1e3 for name, s in interleaved_medians(rows, args.rounds, args.settle, warmup=3).items()}
    print(
        f"EfficientNet-Lite0, 1 image of 224 px, {args.threads} threads, median of {args.rounds} interleaved rounds, "
        f"{args.settle * 1e3:.0f} ms settle pause before each call\n"
    )
    print("| what | ms / image | x ONNX plain forward | x PyTorch prediction + Grad-CAM |\n|---|---:|---:|---:|")
    for name, value in ms.items():
        print(f"| {name} | {value:.1f} | {value / ms[ORT_BASE]:.2f} | {value / ms[TORCH_GRADCAM]:.2f} |")


if __name__ == "__main__":
    main()
