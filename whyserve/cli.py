"""The ``whyserve`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from whyserve.engine import Explainer, ExplainRequest
from whyserve.errors import InvalidOption
from whyserve.methods import all_methods, method_names
from whyserve.methods.scorecam import WEIGHTINGS, parse_channels
from whyserve.models import available_models, load_model
from whyserve.photos import available_photos, photo_path
from whyserve.render import encode, heatmap_image, overlay, with_colorbar


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="whyserve", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (_add_explain, _add_client, _add_export, _add_eval):
        add(commands)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except InvalidOption as error:
        valid = f" (valid: {', '.join(map(str, error.valid))})" if error.valid else ""
        print(f"whyserve: {error}{valid}", file=sys.stderr)
        return 2


def _methods_help() -> str:
    return "; ".join(f"{m.name}: {m.help}" for m in all_methods()).replace("%", "%%")  # argparse formats help with %


def _add_explain(commands) -> None:
    explain = commands.add_parser("explain", help="predict and explain images in-process")
    explain.add_argument("images", nargs="+", help=f"image files, or bundled photos: {', '.join(available_photos())}")
    explain.add_argument("--model", default="efficientnet_lite0", choices=available_models())
    explain.add_argument("--weights", help="state-dict file for the model (default: its bundled weights)")
    explain.add_argument("--method", default="gradcam", choices=method_names(), help=_methods_help())
    explain.add_argument("--target", help="class index or label to explain (default: top-1)")
    explain.add_argument("--contrast", help="contrastive and bcos: the class Q in 'why P, rather than Q?'")
    explain.add_argument("--weighting", default="probability", choices=WEIGHTINGS, help="Score-CAM weighting")
    explain.add_argument("--layer", help="target layer (module name; default: the last spatial feature layer)")
    explain.add_argument("--channels", type=_channels, help="Score-CAM: 'all' (exact, default) or N (fast; ranked by contribution to the target)")
    explain.add_argument("--topk", type=int, default=5)
    explain.add_argument("--out", type=Path, default=Path("out"), help="folder for the PNGs (default: ./out)")
    explain.set_defaults(run=_explain)


def _add_client(commands) -> None:
    client = commands.add_parser("client", help="ask a running server for a prediction and its explanation")
    client.add_argument("image", help=f"an image file, or a bundled photo: {', '.join(available_photos())}")
    client.add_argument(
        "--url", default="http://127.0.0.1:8080/predictions/efficientnet_lite0", help="prediction URL of the model"
    )
    client.add_argument("--method", help=f"{', '.join(method_names())} or none (default: the model's)")
    client.add_argument("--target", help="class index or label to explain (default: top-1)")
    client.add_argument("--contrast", help="contrastive and bcos: the class Q in 'why P, rather than Q?'")
    client.add_argument("--weighting", choices=WEIGHTINGS, help="Score-CAM weighting")
    client.add_argument("--channels", help="Score-CAM: 'all' (exact) or N channels (default: the model's)")
    client.add_argument("--topk", type=int, default=5)
    client.add_argument("--token", help="inference token (Authorization: Bearer) when token auth is on")
    client.add_argument("--timeout", type=float, default=300.0, help="seconds (exact Score-CAM takes a while on a CPU)")
    client.add_argument("--out", type=Path, default=Path("out"), help="folder for the PNGs (default: ./out)")
    client.set_defaults(run=_client)


def _add_export(commands) -> None:
    export = commands.add_parser("export-onnx", help="write a model as ONNX with (logits, activations) outputs")
    export.add_argument("model", choices=available_models())
    export.add_argument("--weights", help="state-dict file for the model (default: its bundled weights)")
    export.add_argument("--layer", help="target layer whose activations become the second output")
    export.add_argument("--out", type=Path, help="the .onnx file (default: ./MODEL.onnx)")
    export.set_defaults(run=_export_onnx)


def _add_eval(commands) -> None:
    evaluate = commands.add_parser("eval", help="measure every method on the flowers ground truth and real photos")
    evaluate.add_argument("--images", type=int, default=64, help="generated flowers (default: 64)")
    evaluate.add_argument("--grids", type=int, default=16, help="2x2 grids for the grid pointing game (default: 16)")
    evaluate.add_argument("--seed", type=int, default=100, help="generator seed (training used 1 and 2)")
    evaluate.add_argument("--models", nargs="+", default=["flowers_cnn", "flowers_bcos"], choices=["flowers_cnn", "flowers_bcos"])
    evaluate.add_argument("--steps", type=int, default=32, help="pixel chunks of the deletion/insertion curves (default: 32)")
    evaluate.add_argument("--no-photos", action="store_true", help="skip EfficientNet-Lite0 on the bundled photos")
    evaluate.add_argument("--figure", type=Path, default=Path("out/eval.png"), help="PNG figure (default: out/eval.png)")
    evaluate.set_defaults(run=_eval)


def _explain(args: argparse.Namespace) -> int:
    spec = load_model(args.model, args.weights)
    explainer = Explainer(spec, layer=args.layer)
    options = {"weighting": args.weighting, "channels": args.channels} if args.method == "scorecam" else {}
    request = explainer.resolve(ExplainRequest(args.method, args.target, args.contrast, **options))
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
        names = spec.class_names
        what = _describe(explanation.method, _label(explanation.target, names), _label(explanation.contrast, names))
        stem = args.out / Path(path).stem
        heatmap_image(explanation.heatmap).save(f"{stem}_heatmap.png")
        Path(f"{stem}_overlay.png").write_bytes(encode(with_colorbar(overlay(view, explanation.heatmap), what)))
        tqdm.write(_report(name, result.topk(0, args.topk, names), f"{what}: {stem}_overlay.png, {stem}_heatmap.png"))
    return 1 if failures else 0


def _client(args: argparse.Namespace) -> int:
    import base64
    import io

    path = _resolve_image(args.image)
    answer = _post(args, path)
    if answer is None:
        return 1
    explanation = answer.get("explanation")
    if not explanation:
        print(_report(args.image, answer["predictions"]))
        return 0
    contrast = explanation.get("contrast") or {}
    what = _describe(explanation["method"], explanation["target"]["label"], contrast.get("label", contrast.get("value")))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / Path(path).stem
    Path(f"{stem}_heatmap.png").write_bytes(base64.b64decode(explanation["heatmap"]["data"]))
    picture = Image.open(io.BytesIO(base64.b64decode(explanation["overlay"]["data"]))).convert("RGB")
    Path(f"{stem}_overlay.png").write_bytes(encode(with_colorbar(picture, what)))
    timing = ", ".join(f"{k} {v:.0f} ms" for k, v in explanation["timing_ms"].items())
    print(_report(args.image, answer["predictions"], f"{what}: {stem}_overlay.png, {stem}_heatmap.png ({timing})"))
    return 0


def _post(args: argparse.Namespace, path: Path) -> dict | None:
    """The server's answer, or None after printing why there is none."""
    import json
    import urllib.error
    import urllib.request

    headers = {
        "Content-Type": "application/octet-stream",
        "X-Explain-Outputs": "heatmap,overlay",
        "X-Explain-Topk": str(args.topk),
    }
    for option in ("method", "target", "contrast", "weighting", "channels"):
        if getattr(args, option) is not None:
            headers[f"X-Explain-{option.capitalize()}"] = str(getattr(args, option))
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"
    request = urllib.request.Request(args.url, data=Path(path).read_bytes(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        text = error.read().decode("utf-8", errors="replace")
        try:
            detail = json.loads(text)["error"]
            valid = f" (valid: {', '.join(map(str, detail['valid']))})" if detail.get("valid") else ""
            print(f"whyserve: HTTP {error.code}: {detail['message']}{valid}", file=sys.stderr)
        except (ValueError, KeyError, TypeError):
            print(f"whyserve: HTTP {error.code}: {text.strip()}", file=sys.stderr)
    except (urllib.error.URLError, OSError) as error:
        print(f"whyserve: cannot reach {args.url}: {error}", file=sys.stderr)
    return None


def _export_onnx(args: argparse.Namespace) -> int:
    from whyserve.onnx_runtime import create_session, export_onnx

    path = export_onnx(load_model(args.model, args.weights), args.out or Path(f"{args.model}.onnx"), args.layer)
    create_session(path)  # refuses a file whose outputs are not (logits, activations)
    print(f"wrote {path}: outputs logits and activations, checked with onnx.checker")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from whyserve.eval.report import run

    report = run(
        args.images,
        args.grids,
        args.seed,
        photos=not args.no_photos,
        figure=args.figure,
        models=tuple(args.models),
        steps=args.steps,
    )
    print(report.markdown())
    print(f"\nfigure: {args.figure}")
    return 0


def _channels(value: str) -> int | None:
    try:
        return parse_channels(value)
    except InvalidOption as error:
        raise argparse.ArgumentTypeError(error.message) from None


def _label(index: int | float | None, class_names: tuple[str, ...] | None) -> str | None:
    if index is None:
        return None
    return class_names[index] if class_names and isinstance(index, int) else str(index)


def _describe(method: str, target: str, contrast: str | float | None) -> str:
    """``gradcam: why tabby?``, ``contrastive: why tabby, rather than Egyptian cat?``"""
    return f"{method}: why {target}" + (f", rather than {contrast}" if contrast is not None else "") + "?"


def _report(name: str, predictions: list[dict], explained: str | None = None) -> str:
    """What both ``explain`` and ``client`` print for one image: the top-k, then the files."""
    lines = [f"{name}:"] + [f"  {p['probability']:7.2%}  {p['index']:>4}  {p['label']}" for p in predictions]
    return "\n".join(lines + ([f"  {explained}"] if explained else []))


def _resolve_image(name: str) -> Path:
    path = Path(name)
    if not path.exists() and name in available_photos():
        return photo_path(name)
    return path


if __name__ == "__main__":
    sys.exit(main())
