"""The ``whyserve`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from whyserve.engine import ExplainRequest, Explainer
from whyserve.errors import InvalidOption
from whyserve.methods import METHODS
from whyserve.methods.scorecam import WEIGHTINGS
from whyserve.models import available_models, load_model
from whyserve.photos import available_photos, photo_path
from whyserve.render import encode, heatmap_image, overlay, with_colorbar


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="whyserve", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    explain = commands.add_parser("explain", help="predict and explain images in-process")
    explain.add_argument("images", nargs="+", help=f"image files, or bundled photos: {', '.join(available_photos())}")
    explain.add_argument("--model", default="efficientnet_lite0", choices=available_models())
    explain.add_argument("--weights", help="state-dict file for the model (default: its bundled weights)")
    explain.add_argument("--method", default="gradcam", choices=METHODS)
    explain.add_argument("--target", help="class index or label to explain (default: top-1)")
    explain.add_argument("--contrast", help="contrastive only: the class Q in 'why P, rather than Q?'")
    explain.add_argument("--weighting", default="probability", choices=WEIGHTINGS, help="Score-CAM weighting")
    explain.add_argument("--layer", help="target layer (module name; default: the last spatial feature layer)")
    explain.add_argument("--topk", type=int, default=5)
    explain.add_argument("--out", type=Path, default=Path("out"), help="folder for the PNGs (default: ./out)")
    explain.set_defaults(run=_explain)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except InvalidOption as error:
        valid = f" (valid: {', '.join(map(str, error.valid))})" if error.valid else ""
        print(f"whyserve: {error}{valid}", file=sys.stderr)
        return 2


def _explain(args: argparse.Namespace) -> int:
    spec = load_model(args.model, args.weights)
    explainer = Explainer(spec, layer=args.layer)
    request = ExplainRequest(args.method, args.target, args.contrast, args.weighting)
    explainer.validate(request)
    args.out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for name in tqdm(args.images, unit="image", disable=len(args.images) < 2, file=sys.stderr):
        path = _resolve_image(name)
        try:
            view = spec.view(Image.open(path).convert("RGB"))
        except (OSError, UnidentifiedImageError) as error:
            tqdm.write(f"{name}: cannot read image ({error})", file=sys.stderr)
            failures += 1
            continue
        result = explainer.explain(spec.normalize(view)[None], [request])
        explanation = result.explanations[0]
        lines = [f"{name}:"]
        for p in result.topk(0, args.topk, spec.class_names):
            lines.append(f"  {p['probability']:7.2%}  {p['index']:>4}  {p['label']}")
        what = _describe(explanation, spec.class_names)
        stem = args.out / Path(path).stem
        heatmap_image(explanation.heatmap).save(f"{stem}_heatmap.png")
        picture = with_colorbar(overlay(view, explanation.heatmap), what)
        Path(f"{stem}_overlay.png").write_bytes(encode(picture))
        lines.append(f"  {what}: {stem}_overlay.png, {stem}_heatmap.png")
        tqdm.write("\n".join(lines))
    return 1 if failures else 0


def _describe(explanation, class_names) -> str:
    def label(index):
        return class_names[index] if class_names and isinstance(index, int) else str(index)

    text = f"{explanation.method}: why {label(explanation.target)}"
    if explanation.contrast is not None:
        text += f", rather than {label(explanation.contrast)}"
    return text + "?"


def _resolve_image(name: str) -> Path:
    path = Path(name)
    if not path.exists() and name in available_photos():
        return photo_path(name)
    return path


if __name__ == "__main__":
    sys.exit(main())
