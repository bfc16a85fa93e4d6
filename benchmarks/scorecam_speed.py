"""Score-CAM cost and fidelity, EfficientNet-Lite0 at 224 px, all rows in one run.

Rows: one plain forward; exact Score-CAM (all 1280 head channels) on PyTorch one mask at
a time, PyTorch batched and ONNX Runtime; fast mode (top-N channels by spread) on both
backends; pytorch-grad-cam's ScoreCAM as the anchor. Seconds per image on ``--photo``;
"corr" is the Pearson correlation of the fast map with the exact map, averaged over the
bundled photos (the exact maps of both backends agree to 1e-4, see tests).

    .venv/bin/python benchmarks/scorecam_speed.py [--no-peer] [--no-eager]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from whyserve import Explainer, ExplainRequest, load_model
from whyserve.backends.onnx.backend import OrtBackend
from whyserve.backends.onnx.runtime import create_session, export_onnx
from whyserve.photos import available_photos, photo_path

WEIGHTING = "channel_softmax"  # the peer's, so the anchor row computes the same map


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photo", default="chelsea", choices=available_photos())
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-peer", action="store_true", help="skip pytorch-grad-cam's ScoreCAM (~1 min)")
    parser.add_argument("--no-eager", action="store_true", help="skip PyTorch one-mask-at-a-time (~1 min)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    spec = load_model("efficientnet_lite0")
    torch_explainer = Explainer(spec, scorecam_chunk=16)
    eager = Explainer(spec, scorecam_chunk=1)
    with tempfile.TemporaryDirectory() as tmp:
        session = create_session(export_onnx(spec, Path(tmp) / "m.onnx"), args.threads)
        ort_explainer = Explainer(spec, backend=OrtBackend(session, spec))
    photos = {name: spec.preprocess(Image.open(photo_path(name)))[None] for name in available_photos()}
    x = photos[args.photo]

    def scorecam(explainer, image, channels=None):
        return explainer.explain(image, [ExplainRequest("scorecam", weighting=WEIGHTING, channels=channels)])

    for _ in range(3):  # warm-up
        torch_explainer.predict(x), ort_explainer.predict(x)
    forward = min(_timed(lambda: torch_explainer.predict(x))[0] for _ in range(10))
    ort_forward = min(_timed(lambda: ort_explainer.predict(x))[0] for _ in range(10))
    rows = [("one plain forward, PyTorch", forward, None), ("one plain forward, ONNX Runtime", ort_forward, None)]

    exact = {name: scorecam(ort_explainer, image).explanations[0].heatmap for name, image in photos.items()}
    if not args.no_eager:
        rows.append(("exact, PyTorch one mask at a time", _timed(lambda: scorecam(eager, x))[0], None))
    rows.append(("exact, PyTorch batched (16 masks)", _timed(lambda: scorecam(torch_explainer, x))[0], None))
    rows.append(("exact, ONNX Runtime (16 masks)", _timed(lambda: scorecam(ort_explainer, x))[0], None))
    for backend, explainer in (("PyTorch", torch_explainer), ("ONNX Runtime", ort_explainer)):
        for n in (32, 64, 128):
            seconds = _timed(lambda explainer=explainer, n=n: scorecam(explainer, x, n))[0]
            corr = np.mean(
                [
                    np.corrcoef(scorecam(explainer, image, n).explanations[0].heatmap.ravel(), exact[name].ravel())[0, 1]
                    for name, image in photos.items()
                ]
            )
            rows.append((f"fast N={n}, {backend}", seconds, corr))
    if not args.no_peer:
        peer = ScoreCAM(model=spec.module, target_layers=[spec.module.head_act])
        peer.batch_size = 16
        target = int(torch_explainer.predict(x).argmax())
        rows.append(("pytorch-grad-cam ScoreCAM (anchor)", _timed(lambda: peer(x, [ClassifierOutputTarget(target)]))[0], None))

    print(
        f"Score-CAM ({WEIGHTING}) on EfficientNet-Lite0 head_act (1280x7x7), 224 px, photo {args.photo!r}, "
        f"{args.threads} threads; corr averaged over {len(photos)} photos\n"
    )
    print("| what | s / image | x one forward (same backend) | corr with exact |")
    print("|---|---:|---:|---:|")
    for name, seconds, corr in rows:
        base = ort_forward if "ONNX" in name else forward
        print(f"| {name} | {seconds:.3f} | {seconds / base:.0f} | {'' if corr is None else f'{corr:.3f}'} |")


if __name__ == "__main__":
    main()
