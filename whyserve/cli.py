"""The ``whyserve`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from whyserve import vebi_fit
from whyserve.engine import Explainer, ExplainRequest
from whyserve.errors import InvalidOption, ModelLoadError
from whyserve.health import add_arguments as add_health_arguments
from whyserve.methods import all_methods, method_names
from whyserve.models import available_models, load_model
from whyserve.options import Declared, declared, describe_default, options_table
from whyserve.photos import available_photos, photo_path
from whyserve.render import encode, heatmap_image, overlay, with_colorbar
from whyserve.serving import archive_command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="whyserve", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    adders = (_add_explain, _add_client, _add_demo, _add_export, _add_eval, _add_serve_kserve, _add_healthcheck, _add_options)
    for add in (*adders, vebi_fit.add_parser, archive_command.add_parser):
        add(commands)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except InvalidOption as error:
        valid = f" (valid: {', '.join(map(str, error.valid))})" if error.valid else ""
        print(f"whyserve: {error}{valid}", file=sys.stderr)
        return 2
    except ModelLoadError as error:
        print(f"whyserve: {error}", file=sys.stderr)
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
    explain.add_argument("--layer", help="target layer (module name; default: the last spatial feature layer)")
    _add_method_options(explain)
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
    _add_method_options(client)
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
    evaluate.add_argument(
        "--grids", type=int, default=16, help="2x2 mixed-class grids (x4 cells; as many fair-grid cells); 0 skips (default: 16)"
    )
    evaluate.add_argument(
        "--seed",
        type=int,
        default=100,
        help="seed of the flowers, grids and bootstrap (training used 1 and 2; any other is unseen)",
    )
    evaluate.add_argument("--models", nargs="+", default=["flowers_cnn", "flowers_bcos"], choices=["flowers_cnn", "flowers_bcos"])
    evaluate.add_argument("--steps", type=int, default=32, help="pixel chunks of the deletion/insertion curves (default: 32)")
    evaluate.add_argument("--no-photos", action="store_true", help="skip EfficientNet-Lite0 on the bundled photos")
    evaluate.add_argument(
        "--no-onnx", action="store_true", help="every pass in PyTorch (default: plain passes on ONNX Runtime; same maps, slower)"
    )
    evaluate.add_argument("--figure", type=Path, default=Path("out/eval.png"), help="PNG figure (default: out/eval.png)")
    evaluate.set_defaults(run=_eval)


def _add_healthcheck(commands) -> None:
    health = commands.add_parser("healthcheck", help="exit 0 only when every model has a READY worker (an exec probe)")
    add_health_arguments(health)
    health.set_defaults(run=_healthcheck)


def _healthcheck(args: argparse.Namespace) -> int:
    from whyserve import health

    return health.main(args.management, args.key_file, args.models, args.timeout)


def _add_serve_kserve(commands) -> None:
    kserve = commands.add_parser("serve-kserve", help="serve a model with KServe's model server (v1, v2, raw), no TorchServe")
    kserve.add_argument("--model", help="model name (default: the config's handler.model, or the archive's name)")
    kserve.add_argument("--config", type=Path, help="a model-config.yaml (archives/<model>/): its handler section and batching")
    kserve.add_argument(
        "--archive", type=Path, help="a .mar (whyserve archive, archives/build.py): served as TorchServe serves it"
    )
    kserve.add_argument("--http-port", type=int, default=8080)
    kserve.add_argument("--grpc-port", type=int, help="also serve KServe's gRPC v2 on this port (default: off)")
    kserve.add_argument("--batch-size", type=int, help="most requests per batch (default: the config's batchSize, else 8)")
    kserve.add_argument("--max-batch-delay", type=float, help="ms to wait for a batch to fill (default: the config's, else 10)")
    kserve.set_defaults(run=_serve_kserve)


def _serve_kserve(args: argparse.Namespace) -> int:
    import tempfile

    import yaml

    from whyserve.serving.archive import settings_from_archive, unpack
    from whyserve.serving.kserve import serve
    from whyserve.serving.service import ServingConfig

    if args.archive and args.config:
        print("whyserve serve-kserve: give --config or --archive, not both", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as unpacked:
        if args.archive:
            settings, manifest = unpack(args.archive, unpacked)
            handler = dict(settings.get("handler") or {})
            handler.update({"model": args.model} if args.model else {})
            handler = settings_from_archive(handler, unpacked, manifest)
        else:
            settings = yaml.safe_load(args.config.read_text()) if args.config else {}
            handler = dict(settings.get("handler") or {})
            handler["model"] = args.model or handler.get("model")
        if not handler["model"]:
            print("whyserve serve-kserve: give --model, an --archive or a --config with handler.model", file=sys.stderr)
            return 2
        batch_size = args.batch_size or settings.get("batchSize", 8)
        delay = args.max_batch_delay if args.max_batch_delay is not None else settings.get("maxBatchDelay", 10)
        serve(handler["model"], ServingConfig.from_dict(handler), args.http_port, args.grpc_port, batch_size, delay)
    return 0


def _explain(args: argparse.Namespace) -> int:
    spec = load_model(args.model, args.weights)
    explainer = Explainer(spec, layer=args.layer)
    request = explainer.resolve(ExplainRequest(args.method, args.target, args.contrast, **_given_options(args)))
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
        if "explanation_image" in explanation.artifacts:  # FGVis: the explanation image e, a valid model input
            Image.fromarray(explanation.artifacts["explanation_image"]).save(f"{stem}_explanation.png")
        Path(f"{stem}_overlay.png").write_bytes(encode(with_colorbar(overlay(view, explanation.heatmap), what)))
        shown = f"{what}: {stem}_overlay.png, {stem}_heatmap.png" + _features(explanation.artifacts.get("features"))
        tqdm.write(_report(name, result.predictions(0, spec, args.topk), shown))
    return 1 if failures else 0


def _client(args: argparse.Namespace) -> int:
    import urllib.error

    from whyserve.client import Client, ServerError

    path = _resolve_image(args.image)
    options = {k: getattr(args, k) for k in ("method", "target", "contrast")} | _given_options(args)
    try:
        result = Client(args.url, token=args.token, timeout=args.timeout).explain(path, topk=args.topk, **options)
    except ServerError as error:
        print(f"whyserve: {error}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as error:
        print(f"whyserve: cannot reach {args.url}: {error}", file=sys.stderr)
        return 1
    predictions = [vars(p) for p in result.predictions]
    if not result.method:
        print(_report(args.image, predictions))
        return 0
    contrast = result.contrast or {}
    what = _describe(result.method, result.target["label"], contrast.get("label", contrast.get("value")))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / Path(path).stem
    Path(f"{stem}_heatmap.png").write_bytes(encode(heatmap_image(result.heatmap)))
    Path(f"{stem}_overlay.png").write_bytes(encode(with_colorbar(result.overlay.convert("RGB"), what)))
    timing = ", ".join(f"{k} {v:.0f} ms" for k, v in result.timing_ms.items())
    print(_report(args.image, predictions, f"{what}: {stem}_overlay.png, {stem}_heatmap.png ({timing})"))
    return 0


def _add_demo(commands) -> None:
    demo = commands.add_parser("demo", help="a web page on 127.0.0.1 that asks a running server and shows the maps")
    demo.add_argument("--url", default="http://127.0.0.1:8080", help="inference API of the server (default: %(default)s)")
    demo.add_argument("--management", default="http://127.0.0.1:8081", help="management API, for the served models")
    demo.add_argument("--port", type=int, default=8000, help="port of the page on 127.0.0.1 (0: a free one)")
    demo.add_argument("--token", help="inference key when token auth is on (stays in the demo, never in the page)")
    demo.add_argument("--management-token", help="management key when token auth is on")
    demo.add_argument("--token-file", type=Path, help="TorchServe's key_file.json (both keys)")
    demo.add_argument("--timeout", type=float, default=300.0, help="seconds per forwarded request")
    demo.set_defaults(run=_demo)


def _demo(args: argparse.Namespace) -> int:
    from whyserve.demo import Upstream, make_server, read_token_file

    token, management_token = read_token_file(args.token_file) if args.token_file else (None, None)
    upstream = Upstream(
        args.url.rstrip("/"),
        args.management.rstrip("/") if args.management else None,
        args.token or token,
        args.management_token or management_token,
        args.timeout,
    )
    server = make_server(upstream, args.port)
    print(f"whyserve demo: http://127.0.0.1:{server.server_address[1]}/ (asks {upstream.url}; Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _export_onnx(args: argparse.Namespace) -> int:
    from whyserve.backends.onnx.runtime import create_session, export_onnx

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
        onnx=not args.no_onnx,
    )
    print(report.markdown())
    print("\nWall time per part (s):\n\n" + report.timing_markdown())
    print(f"\nfigure: {args.figure}")
    return 0


def _add_method_options(parser: argparse.ArgumentParser) -> None:
    """One flag per method option (``whyserve.options``), from the methods' declarations; an
    omitted one takes the model's or the method's default, one the method does not take is refused."""
    by_name: dict[str, tuple[Declared, list[str]]] = {}
    for method in all_methods():
        for d in declared(method.options):
            by_name.setdefault(d.name, (d, []))[1].append(method.name)
    for name, (d, methods) in by_name.items():
        choices = d.info.choices if d.kind is str else ("on", "off") if d.kind is bool else None
        values = "" if choices else f"{'; '.join(d.valid())}; "
        text = f"{', '.join(methods)}: {d.info.help} ({values}default {describe_default(d)})"
        metavar = None if choices else "N" if d.kind is int else "X"
        parser.add_argument(f"--{name}", dest=f"option_{name}", choices=choices, metavar=metavar, help=text.replace("%", "%%"))


def _given_options(args: argparse.Namespace) -> dict[str, object]:
    """The method options given on the command line, by name (parsed by the method)."""
    prefix = "option_"
    return {k.removeprefix(prefix): v for k, v in vars(args).items() if k.startswith(prefix) and v is not None}


def _add_options(commands) -> None:
    listing = commands.add_parser("options", help="every method option: values, default and what it does (Markdown)")
    listing.set_defaults(run=lambda args: print(options_table({m.name: m.options for m in all_methods()}), end="") or 0)


def _features(features: list[dict] | None) -> str:
    """VEBI's features shown, one line each (nothing for other methods)."""
    rows = [f"\n    feature {f['layer']}:{f['channel']}  relevance {f['relevance']:.4f}" for f in features or []]
    return "".join(rows)


def _label(index: int | float | None, class_names: tuple[str, ...] | None) -> str | None:
    if index is None:
        return None
    return class_names[index] if class_names and isinstance(index, int) else str(index)


def _describe(method: str, target: str, contrast: str | float | None) -> str:
    """``gradcam: why tabby?``, ``contrastive: why tabby, rather than Egyptian cat?``"""
    return f"{method}: why {target}" + (f", rather than {contrast}" if contrast is not None else "") + "?"


def _score(prediction: dict) -> str:
    """A class's probability, or a regression output's value."""
    value = prediction.get("value")
    return f"{value:7.3f}" if value is not None else f"{prediction['probability']:7.2%}"


def _report(name: str, predictions: list[dict], explained: str | None = None) -> str:
    """What both ``explain`` and ``client`` print for one image: the top-k, then the files."""
    lines = [f"{name}:"] + [f"  {_score(p)}  {p['index']:>4}  {p['label']}" for p in predictions]
    return "\n".join(lines + ([f"  {explained}"] if explained else []))


def _resolve_image(name: str) -> Path:
    path = Path(name)
    if not path.exists() and name in available_photos():
        return photo_path(name)
    return path


if __name__ == "__main__":
    sys.exit(main())
