"""``whyserve vebi-fit MODEL``: fit VEBI's relevant features and write the relevance file;
``whyserve eval-vebi``: VEBI against its paper's comparisons on the flowers' ground truth.

    .venv/bin/whyserve vebi-fit flowers_cnn             # -> whyserve/models/weights/flowers_cnn.vebi.json
    .venv/bin/whyserve vebi-fit flowers_part --images 600 --out /tmp/part.vebi.json
    .venv/bin/whyserve vebi-fit --archive model_store/my_net.mar --image-folder train/ --out my_net.vebi.json
    .venv/bin/whyserve eval-vebi --images 48
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from whyserve.data.flowers import as_arrays, balanced_labels, generate, generate_single_part
from whyserve.models import ModelSpec, load_model
from whyserve.serving.service import archived_spec
from whyserve.vebi.fit import FIT_SEED, Relevance, fit, overlap, relevance_path, summary

# The generated flowers each model was trained on (its training distribution), by model.
TRAINING_DATA = {"flowers_cnn": generate, "flowers_bcos": generate, "flowers_part": generate_single_part}
DEFAULT_MU = 10.0  # the seed code's mu; a model with a relevance file keeps the mu it was fitted with


def add_parser(commands) -> None:
    parser = commands.add_parser("vebi-fit", help="fit VEBI's relevant features of a model (relevance file)")
    parser.add_argument("model", nargs="?", choices=sorted(TRAINING_DATA), help="a flowers model (or --archive)")
    parser.add_argument("--archive", type=Path, help="your own model: its .mar from `whyserve archive`")
    parser.add_argument(
        "--image-folder",
        type=Path,
        help="with --archive: labelled images, one sub-folder per class named by its label (or its index)",
    )
    parser.add_argument("--images", type=int, default=800, help="generated training flowers, balanced classes (default: 800)")
    parser.add_argument("--seed", type=int, default=FIT_SEED, help=f"generator seed (default: {FIT_SEED}; no evaluation uses it)")
    parser.add_argument("--mu", type=float, help="L1 bound of each class's weights (default: its relevance file's, else 10)")
    parser.add_argument("--layers", nargs="+", help="layer names (default: every conv layer, after its ReLU)")
    parser.add_argument("--iterations", type=int, default=3000, help="projected-gradient iterations (default: 3000)")
    parser.add_argument("--out", type=Path, help="relevance file (default: beside the model's weights)")
    parser.add_argument("--figure", type=Path, help="interpretation figure PNG (default: out/vebi_MODEL.png)")
    parser.set_defaults(run=run)

    evaluate = commands.add_parser("eval-vebi", help="VEBI vs Grad-CAM, guided backprop, ... on both flowers variants")
    evaluate.add_argument("--images", type=int, default=48, help="generated flowers per variant for the maps (default: 48)")
    evaluate.add_argument("--ablation-images", type=int, default=240, help="flowers per variant for the ablation (default: 240)")
    evaluate.add_argument(
        "--seed", type=int, default=100, help="generator seed (default: 100; fitting used 11, training 1 and 2)"
    )
    evaluate.set_defaults(run=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from whyserve.eval.vebi import run as evaluate

    print(evaluate(args.images, args.ablation_images, args.seed).markdown())
    return 0


def training_images(model: str, n: int, seed: int, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = as_arrays(TRAINING_DATA[model](n, seed, labels=balanced_labels(n, classes)))
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0, torch.from_numpy(labels)


def folder_images(spec: ModelSpec, folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image under ``folder``/<label or index>/, preprocessed as the model sees it, and its class."""
    names = spec.class_names or ()
    images, labels = [], []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        label = names.index(sub.name) if sub.name in names else int(sub.name) if sub.name.isdigit() else None
        if label is None or label >= len(names):
            raise SystemExit(f"vebi-fit: folder {sub.name!r} is not one of the model's classes {list(names)[:10]} (or an index)")
        for file in sorted(f for f in sub.iterdir() if f.is_file()):
            with Image.open(file) as image:
                images.append(spec.preprocess(image))
            labels.append(label)
    if len(set(labels)) < 2:
        raise SystemExit(
            f"vebi-fit: {folder} holds images of {len(set(labels))} class(es); VEBI fits one class against the others"
        )
    return torch.stack(images), torch.tensor(labels)


def run(args: argparse.Namespace) -> int:
    if (args.model is None) == (args.archive is None) or (args.archive is None) != (args.image_folder is None):
        print("whyserve vebi-fit: give a flowers model, or --archive with --image-folder", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as unpacked:
        spec = archived_spec(args.archive, Path(unpacked)) if args.archive else load_model(args.model)
        fitted = spec.files.get("vebi_relevance")
        mu = args.mu if args.mu is not None else Relevance.load(fitted).mu if fitted else DEFAULT_MU
        start = time.perf_counter()
        if args.archive:
            x, y = folder_images(spec, args.image_folder)
            data = {"data": str(args.image_folder)}
        else:
            x, y = training_images(args.model, args.images, args.seed, len(spec.class_names))
            data = {"seed": args.seed, "data": TRAINING_DATA[args.model].__name__}
        relevance = fit(spec, x, y, mu, tuple(args.layers) if args.layers else None, args.iterations)
    relevance.meta |= data
    path = relevance.save(args.out or (relevance_path(args.model) if args.model else Path(f"{spec.name}.vebi.json")))
    jaccard = overlap(relevance)
    off = jaccard[~torch.eye(len(jaccard), dtype=torch.bool).numpy()]
    print(
        f"{spec.name}: {len(x)} images ({data['data']}), mu {mu:g}, {relevance.index.size} features "
        f"over {len(relevance.index.layers)} layers; {time.perf_counter() - start:.0f} s"
    )
    print(summary(relevance, spec.class_names))
    print(f"class-specificity: mean Jaccard overlap of two classes' relevant sets {off.mean():.3f} (max {off.max():.3f})")
    print(f"argmax of X^T W on the fitting images: {relevance.meta['train_accuracy_of_fit']:.1%}")
    if args.archive and args.figure is None:  # the figure shows 96-px flowers crops: for the flowers models
        print(f"wrote {path}", file=sys.stderr)
        return 0
    from whyserve.vebi.figure import write

    figure = write(args.figure or Path(f"out/vebi_{args.model}.png"), spec.module, relevance, x, spec.class_names)
    print(f"wrote {path} and {figure}", file=sys.stderr)
    return 0
