"""``whyserve archive``: the user's model (a source, its weights, class names, preprocessing) to a
served ``.mar`` in one command. The model is loaded here first, so a misfit is a one-line error
now rather than a worker that never becomes READY; the target layer it finds is written into
the archive's model-config.yaml, so every worker explains the same layer."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import yaml

from whyserve.errors import ModelLoadError
from whyserve.layers import channels_last, find_target_layer, get_layer
from whyserve.models import ModelSpec
from whyserve.models.huggingface_source import model_folder
from whyserve.models.sources import SOURCE_KINDS, load_source
from whyserve.serving.archive import build_archive
from whyserve.vebi.fit import Relevance

EPILOG = """examples:
  whyserve archive --source torchvision:resnet50 --weights resnet50_ft.pth --classes index_to_name.json \\
      --name my_resnet --out model_store/
  whyserve archive --source timm:vit_small_patch16_224 --weights vit.pth --num-classes 10 --layer blocks.11.norm1 \\
      --name my_vit --out model_store/
  whyserve archive --source model_file --model-file my_net.py --weights my_net.pth --name my_net --out model_store/
  whyserve archive --source python:my_package.models:build --weights w.pth --num-classes 10 --name mine --out model_store/
  whyserve archive --source export --weights resnet50.pt2 --classes index_to_name.json --name my_export --out model_store/
  whyserve archive --source huggingface --weights my_vit/ --layer vit.layers.11.layernorm_before --name my_hf_vit \
      --out model_store/
  whyserve archive --source onnx --weights resnet50.onnx --classes labels.txt --name my_onnx --out model_store/
then: torchserve --start --ncs --model-store model_store --models my_resnet=my_resnet.mar"""


def add_parser(commands) -> None:
    archive = commands.add_parser(
        "archive",
        help="build a TorchServe .mar of your own model, served with its explanations",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    archive.add_argument("--source", required=True, help=f"where the nn.Module comes from: {', '.join(SOURCE_KINDS)}")
    archive.add_argument(
        "--weights",
        type=Path,
        help="the state dict (torch.save(model.state_dict(), ...)), a TorchScript file (its state dict), source export's "
        ".pt2, source huggingface's save_pretrained folder, or source onnx's .onnx",
    )
    archive.add_argument("--model-file", type=Path, help="source model_file: a .py defining one nn.Module subclass")
    archive.add_argument("--classes", type=Path, help="index_to_name.json ({'0': 'cat'} or {'0': ['id', 'cat']}) or labels.txt")
    archive.add_argument("--num-classes", type=int, help="the head's size (default: as many as --classes names)")
    archive.add_argument(
        "--layer", help="target layer of the CAM methods: a dotted module name, or source onnx's tensor (default: found)"
    )
    archive.add_argument("--methods", help="comma-separated methods to serve (default: every one the model supports)")
    defaults = "default: timm's data config for timm sources, else"
    archive.add_argument("--resize", type=int, help=f"shorter side in pixels before the crop ({defaults} 256)")
    archive.add_argument("--crop", type=int, help=f"centred square crop in pixels ({defaults} 224)")
    archive.add_argument("--interpolation", help=f"nearest, bilinear or bicubic ({defaults} bilinear)")
    archive.add_argument("--aspect", choices=("keep", "stretch"), help="stretch: resize both sides (default: keep)")
    archive.add_argument("--mean", type=float, nargs=3, help=f"normalisation mean, R G B ({defaults} ImageNet's)")
    archive.add_argument("--std", type=float, nargs=3, help=f"normalisation std, R G B ({defaults} ImageNet's)")
    archive.add_argument(
        "--vebi-relevance", type=Path, help="VEBI's relevance file of this model (`whyserve vebi-fit --archive`): serves vebi"
    )
    archive.add_argument("--random-weights", action="store_true", help="no --weights on purpose: a random network (tests)")
    archive.add_argument(
        "--explain-budget-s", type=float, default=10, help="requests estimated slower get 422 naming what fits (default: 10)"
    )
    archive.add_argument("--batch-size", type=int, default=1, help="TorchServe batchSize (default: 1)")
    archive.add_argument("--workers", type=int, default=1, help="TorchServe minWorkers = maxWorkers (default: 1)")
    archive.add_argument("--name", required=True, help="the archive's and the served model's name")
    archive.add_argument("--out", type=Path, default=Path("model_store"), help="export folder (default: model_store)")
    archive.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    handler = handler_section(args)
    spec = load_source(
        args.name,
        args.source,
        args.weights,
        num_classes=args.num_classes,
        classes=args.classes,
        preprocess=handler.get("preprocess"),
        model_file=args.model_file,
        layer=args.layer,
        random_weights=args.random_weights,
    )
    # source onnx resolves its tensor at load; a named module that does not exist fails here, with candidates
    handler["layer"] = spec.target_layer or find_target_layer(spec.module, spec.input_size)
    if args.source != "onnx":
        get_layer(spec.module, handler["layer"])
        channels_last(spec.module, handler["layer"], spec.input_size)  # refuses a named output that is no map
    if args.vebi_relevance is not None:
        check_relevance(spec, args.vebi_relevance)
    config = {
        "minWorkers": args.workers,
        "maxWorkers": args.workers,
        "batchSize": args.batch_size,
        "maxBatchDelay": 5,
        "startupTimeout": 300,
        "responseTimeout": 300,
        "handler": handler,
    }
    serialized, extras = args.weights, [f for f in (args.classes, args.vebi_relevance) if f]
    if args.source == "huggingface":  # the folder's files lie flat in the archive, the weights beside their config
        folder = model_folder(args.weights)
        serialized = folder / "model.safetensors"
        extras += [folder / name for name in ("config.json", "preprocessor_config.json") if (folder / name).is_file()]
    with tempfile.TemporaryDirectory() as tmp:
        config_file = Path(tmp) / "model-config.yaml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        mar = build_archive(args.name, config_file, args.out, serialized=serialized, model_file=args.model_file, extras=extras)
    print(f"built {mar}: {len(spec.class_names or ())} classes, layer {handler['layer']}")
    return 0


def check_relevance(spec: ModelSpec, path: Path) -> None:
    """A relevance file fitted on this model: its layers exist and it weighs every class."""
    relevance = Relevance.load(path)
    for layer in relevance.index.layers:
        get_layer(spec.module, layer)
    if relevance.weights.shape[0] != len(spec.class_names or ()):
        raise ModelLoadError(
            f"{path.name} weighs {relevance.weights.shape[0]} classes; the model has {len(spec.class_names or ())}"
        )


def handler_section(args: argparse.Namespace) -> dict:
    """model-config.yaml's ``handler:`` for these arguments (files by their names in the archive)."""
    given = {key: getattr(args, key) for key in ("resize", "crop", "interpolation", "aspect", "mean", "std")}
    preprocess = {key: list(value) if isinstance(value, list) else value for key, value in given.items() if value is not None}
    handler: dict = {
        "source": args.source,
        "preprocess": preprocess,
        "explain_budget_s": args.explain_budget_s,
        # fast Score-CAM by default, as the shipped archives: exact is a forward per channel (2,049 on a ResNet-50)
        "method_options": {"scorecam": {"channels": 64}},
    }
    if args.num_classes is not None:
        handler["num_classes"] = args.num_classes
    if args.classes is not None:
        handler["classes"] = args.classes.name
    if args.methods:
        handler["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.random_weights:
        handler["random_weights"] = True
    if args.vebi_relevance is not None:
        handler["vebi_relevance"] = args.vebi_relevance.name
    if args.source == "onnx":
        handler["default_method"] = "scorecam"  # the one method a bare .onnx serves (no autograd)
    return handler
