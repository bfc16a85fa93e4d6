"""What makes ``whyserve eval`` fast (``whyserve.eval.passes``), one row per idea, each timed
against the way it was done before, in interleaved rounds (a busy neighbour slows every row
alike). Per flower model:

- 64 masked images of a 192 x 192 grid, one forward: PyTorch vs ONNX Runtime;
- exact Score-CAM of one mixed grid's 4 cells (ONNX Runtime): each cell's masks scored on their
  own vs ``shared_masks()`` (the masks do not depend on the target);
- one deletion curve (33 passes of a 96 x 96 flower): the previous setting (PyTorch's 2
  threads, ONNX Runtime's threads spinning) vs the eval's (1 PyTorch thread, no spinning).

    .venv/bin/python benchmarks/eval_speed.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from engine_speed import interleaved_medians  # this folder: the script's path

from whyserve import Explainer, ExplainRequest
from whyserve.backends.onnx.runtime import create_session, export_onnx
from whyserve.backends.torch_backend import TorchBackend
from whyserve.data.flowers import generate, make_grid
from whyserve.eval import metrics
from whyserve.eval.passes import EvalBackend, torch_threads
from whyserve.eval.report import SCORECAM_CHUNK, _to_tensor
from whyserve.models import load_model


def _rows(name: str) -> dict[str, Callable[[], object]]:
    spec = load_model(name)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(spec, Path(tmp) / "m.onnx")
        spinning, quiet = (EvalBackend(spec, create_session(path, spinning=s)) for s in (True, False))
    grid = make_grid(100, 0)
    cells = _to_tensor(grid.image)[None].expand(4, -1, -1, -1).contiguous()
    masked = cells[:1] * torch.rand(SCORECAM_CHUNK, 1, *cells.shape[-2:])
    explainer = Explainer(spec, scorecam_chunk=SCORECAM_CHUNK, backend=quiet)
    requests = [ExplainRequest("scorecam", t) for t in grid.labels]
    flower = generate(1, 100)[0]
    image, saliency = _to_tensor(flower.image), np.random.default_rng(0).random(flower.image.shape[:2])
    torch_backend = TorchBackend(spec)

    def masked_torch() -> object:
        with torch_backend.running():
            return torch_backend.masked_forward(masked)

    def shared() -> object:
        with quiet.shared_masks():
            return explainer.explain(cells, requests)

    def deletion(backend: EvalBackend, threads: int) -> Callable[[], float]:
        def run() -> float:
            with torch_threads(threads):
                predict = lambda x: torch.softmax(backend.predict(x), dim=1)  # noqa: E731
                return metrics.deletion_auc(predict, image, saliency, flower.label)

        return run

    return {
        f"{name} | 64 masked images, 192 px | PyTorch": masked_torch,
        f"{name} | 64 masked images, 192 px | ONNX Runtime": lambda: quiet.masked_forward(masked),
        f"{name} | Score-CAM, 4 cells of a grid | each cell's masks": lambda: explainer.explain(cells, requests),
        f"{name} | Score-CAM, 4 cells of a grid | shared masks": shared,
        f"{name} | deletion curve, 96 px | 2 torch threads, spinning": deletion(spinning, 2),
        f"{name} | deletion curve, 96 px | 1 torch thread, no spinning": deletion(quiet, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rows = {**_rows("flowers_cnn"), **_rows("flowers_bcos")}
    seconds = interleaved_medians(rows, args.rounds)
    print("| model | what | how | seconds (median) | vs the row above |")
    print("|---|---|---|---:|---:|")
    previous = None
    for k, (row, value) in enumerate(seconds.items()):
        ratio = f"{previous / value:.1f}x faster" if k % 2 and previous else ""
        print(f"| {row} | {value:.3f} | {ratio} |", flush=True)
        previous = value


if __name__ == "__main__":
    main()
