"""Bring-your-own-model speed: Grad-CAM against a plain forward, with pytorch-grad-cam in the same
run, on a torchvision ResNet-50, a timm ViT-S/16 and a timm Swin-T (random weights, loaded as
``whyserve archive`` loads them), and fast Score-CAM (64 channels) on the ViT.

Prints a markdown table. Rows are measured in interleaved rounds (median of the rounds), so a
busy neighbour slows every row alike and the ratios stay meaningful. CPU only: whyserve's
PyTorch backend does not place models on a GPU yet.

    .venv/bin/python benchmarks/own_model_speed.py [--rounds 15]
"""

from __future__ import annotations

import argparse

import torch
from engine_speed import interleaved_medians  # this folder: the script's path
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from whyserve import Explainer, ExplainRequest
from whyserve.models.sources import load_source
from whyserve.photos import photo_path


def vit_grid(tokens: torch.Tensor) -> torch.Tensor:
    return tokens[:, 1:].unflatten(1, (14, 14)).permute(0, 3, 1, 2)


MODELS = {  # source, layer (None: found), the peer's reshape_transform
    "ResNet-50 (torchvision)": ("torchvision:resnet50", None, None),
    "ViT-S/16 (timm)": ("timm:vit_small_patch16_224", "blocks.11.norm1", vit_grid),
    "Swin-T (timm)": ("timm:swin_tiny_patch4_window7_224", None, lambda t: t.permute(0, 3, 1, 2)),
}


def rows_of(title: str) -> dict[str, object]:
    source, layer, reshape = MODELS[title]
    spec = load_source(title, source, num_classes=10, layer=layer, random_weights=True)
    explainer = Explainer(spec)
    x = spec.preprocess(Image.open(photo_path("chelsea")))[None]
    peer_layer = spec.module.get_submodule(explainer.backend.layer_name)
    peer = GradCAM(model=spec.module, target_layers=[peer_layer], reshape_transform=reshape)
    rows = {
        "plain forward (inference_mode)": lambda: explainer.predict(x),
        "prediction + Grad-CAM": lambda: explainer.explain(x, [ExplainRequest("gradcam")]),
        "pytorch-grad-cam GradCAM": lambda: peer(input_tensor=x, targets=[ClassifierOutputTarget(3)]),
    }
    if title.startswith("ViT"):
        fast_scorecam = ExplainRequest("scorecam", channels=64)
        rows["prediction + fast Score-CAM (64 channels)"] = lambda: explainer.explain(x, [fast_scorecam])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    threads = torch.get_num_threads()
    print(f"1 image of 224 px, random weights, CPU ({threads} threads), median of {args.rounds} rounds\n")
    print("| model | what | ms / image | x plain forward |")
    print("|---|---|---:|---:|")
    for title in MODELS:
        seconds = interleaved_medians(rows_of(title), args.rounds)
        base = seconds["plain forward (inference_mode)"]
        for name, s in seconds.items():
            print(f"| {title} | {name} | {s * 1e3:,.1f} | {s / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
