"""Fast Score-CAM's channel ranking: ``target`` (estimated contribution to the target) vs
``spread`` (spatial standard deviation), EfficientNet-Lite0 on ONNX Runtime, 224 px.

For every bundled photo and three targets (the top-1 class, the 3rd-ranked class, and a class
outside the top-5: balloon, or the 6th-ranked class where balloon is in the top-5), prints the
Pearson correlation of each ranking's fast map (N channels) with the exact map (all 1280).
``--images heldout``: the same on images the ranking was not chosen on (other images from the
installed wheels, and mirrored / cropped bundled photos).

    .venv/bin/python benchmarks/scorecam_ranking.py [--channels 64] [--weighting probability] [--images heldout]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import skimage
import sklearn
import torch
from PIL import Image, ImageOps

from whyserve import Explainer, ExplainRequest, load_model
from whyserve.backends.onnx.backend import OrtBackend
from whyserve.backends.onnx.runtime import create_session, export_onnx
from whyserve.eval.passes import cached_forward
from whyserve.methods.scorecam import RANKINGS, WEIGHTINGS
from whyserve.photos import available_photos, photo_path

BALLOON = 417


class CachedMasks:
    """The backend, with each masked image's logits computed once: a photo's 1280 masked
    images are the same whatever the target, so three targets and two rankings cost one
    exact Score-CAM per photo. Everything else is the wrapped backend's."""

    def __init__(self, backend: OrtBackend) -> None:
        self.backend = backend
        self.cache: dict[bytes, torch.Tensor] = {}

    def __getattr__(self, name: str) -> object:
        return getattr(self.backend, name)

    def masked_forward(self, images: torch.Tensor) -> torch.Tensor:
        return cached_forward(self.cache, images, self.backend.masked_forward)[0]


def _crop(image: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
    width, height = image.size
    return image.crop((int(box[0] * width), int(box[1] * height), int(box[2] * width), int(box[3] * height)))


def images(which: str) -> dict[str, Image.Image]:
    if which == "bundled":
        return {photo: Image.open(photo_path(photo)) for photo in available_photos()}
    wheels = Path(skimage.__file__).parent / "data", Path(sklearn.__file__).parent / "datasets" / "images"
    heldout = {
        "astronaut": Image.open(wheels[0] / "astronaut.png"),
        "camera": Image.open(wheels[0] / "camera.png"),
        "hubble_deep_field": Image.open(wheels[0] / "hubble_deep_field.jpg"),
        "china": Image.open(wheels[1] / "china.jpg"),
        "flower": Image.open(wheels[1] / "flower.jpg"),
        "chelsea, right 80%": _crop(Image.open(photo_path("chelsea")), (0.2, 0.0, 1.0, 1.0)),
        "coffee, mirrored, cropped": _crop(ImageOps.mirror(Image.open(photo_path("coffee"))), (0.0, 0.0, 0.7, 0.8)),
        "motorcycle, mirrored, cropped": _crop(ImageOps.mirror(Image.open(photo_path("motorcycle"))), (0.1, 0.1, 0.9, 0.9)),
    }
    return {name: image.convert("RGB") for name, image in heldout.items()}


def targets(logits: torch.Tensor) -> dict[str, int]:
    order = logits.argsort(descending=True).tolist()
    outside = BALLOON if BALLOON not in order[:5] else order[5]
    return {"top-1": order[0], "3rd": order[2], "non-top-5": outside}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--weighting", default="probability", choices=WEIGHTINGS)
    parser.add_argument("--images", default="bundled", choices=("bundled", "heldout"))
    args = parser.parse_args()
    spec = load_model("efficientnet_lite0")
    with tempfile.TemporaryDirectory() as tmp:
        backend = OrtBackend(create_session(export_onnx(spec, Path(tmp) / "m.onnx")), spec)
    cached = CachedMasks(backend)
    explainer = Explainer(spec, backend=cached)

    def heatmap(x: torch.Tensor, target: int, **options: object) -> np.ndarray:
        request = ExplainRequest("scorecam", target, weighting=args.weighting, **options)
        return explainer.explain(x, [request]).explanations[0].heatmap.ravel()

    corr: dict[tuple[str, str], list[float]] = {}
    print(f"fast Score-CAM ({args.weighting}), N={args.channels} of 1280, corr with exact, ONNX Runtime, {args.images} images\n")
    print("| photo | target | class | " + " | ".join(RANKINGS) + " |")
    print("|---|---|---:|" + "---:|" * len(RANKINGS))
    for photo, image in images(args.images).items():
        x = spec.preprocess(image)[None]
        cached.cache.clear()
        for kind, target in targets(explainer.predict(x)[0]).items():
            exact = heatmap(x, target)
            row = [float(np.corrcoef(heatmap(x, target, channels=args.channels, ranking=r), exact)[0, 1]) for r in RANKINGS]
            for ranking, value in zip(RANKINGS, row):
                corr.setdefault((kind, ranking), []).append(value)
            print(f"| {photo} | {kind} | {target} | " + " | ".join(f"{v:.3f}" for v in row) + " |", flush=True)
    for kind in ("top-1", "3rd", "non-top-5"):
        print(f"| **mean** | {kind} | | " + " | ".join(f"**{np.mean(corr[kind, r]):.3f}**" for r in RANKINGS) + " |")


if __name__ == "__main__":
    main()
