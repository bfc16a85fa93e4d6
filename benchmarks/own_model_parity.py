"""Bring-your-own-model parity: for each source, the largest difference between whyserve's map
and its reference, on two photos and two targets (random weights, as the tests use):
pytorch-grad-cam's Grad-CAM (with its reshape_transform for token and channels-last layers), or
the eager model the file was exported from (TorchScript weights, torch.export, ONNX Score-CAM).

Prints a markdown table; the tests assert each row's bound (1e-4).

    .venv/bin/python benchmarks/own_model_parity.py
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

from whyserve import Explainer, ExplainRequest
from whyserve.backends import open_backend
from whyserve.models.sources import load_source
from whyserve.photos import photo_path

TARGETS = (3, 8)


def tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
    return tokens[:, 1:].unflatten(1, (14, 14)).permute(0, 3, 1, 2)


def maps(spec, requests: list[ExplainRequest], backend=None) -> np.ndarray:
    x = images(spec)
    explainer = Explainer(spec, backend=backend) if backend else Explainer(spec)
    return np.stack([e.heatmap for e in explainer.explain(x, requests).explanations])


def images(spec) -> torch.Tensor:
    return torch.stack([spec.preprocess(Image.open(photo_path(n))) for n in ("chelsea", "coffee")])


def against_peer(spec, reshape=None) -> float:
    ours = maps(spec, [ExplainRequest("gradcam", t) for t in TARGETS])
    layer = spec.module.get_submodule(Explainer(spec).backend.layer_name)
    cam = GradCAM(model=spec.module, target_layers=[layer], reshape_transform=reshape)
    try:
        peer = cam(input_tensor=images(spec), targets=[ClassifierOutputTarget(t) for t in TARGETS])
    finally:
        cam.activations_and_grads.release()
    return float(np.abs(ours - peer).max())


def main() -> None:
    folder = Path(tempfile.mkdtemp())
    rows: list[tuple[str, str, float]] = []
    torch.manual_seed(1)
    resnet = torchvision.models.resnet50(num_classes=10).eval()
    torch.save(resnet.state_dict(), folder / "r50.pth")
    spec = load_source("r50", "torchvision:resnet50", folder / "r50.pth", num_classes=10)
    peer = "Grad-CAM vs pytorch-grad-cam"
    rows.append(("torchvision:resnet50 (model_file and python: the same loader)", peer, against_peer(spec)))
    for source, layer, reshape in (
        ("timm:vit_small_patch16_224", "blocks.11.norm1", tokens_to_grid),
        ("timm:swin_tiny_patch4_window7_224", None, lambda t: t.permute(0, 3, 1, 2)),
        ("timm:convnext_tiny", "stages.3.blocks.2.norm", lambda t: t.permute(0, 3, 1, 2)),
    ):
        spec = load_source(source, source, num_classes=10, layer=layer, random_weights=True)
        rows.append((f"{source} ({Explainer(spec).backend.layer_name})", peer, against_peer(spec, reshape)))
    config = ViTConfig(hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768, num_labels=10)
    ViTForImageClassification(config).eval().save_pretrained(folder / "hf")
    ViTImageProcessor().save_pretrained(folder / "hf")
    spec = load_source("hf", "huggingface", folder / "hf", layer="vit.layers.3.layernorm_before")
    rows.append(("huggingface (ViT, vit.layers.3.layernorm_before)", peer, against_peer(spec, tokens_to_grid)))

    eager = load_source("r50", "torchvision:resnet50", folder / "r50.pth", num_classes=10)
    asked = [ExplainRequest("gradcam", 3), ExplainRequest("contrastive", 8, 3)]
    reference = maps(eager, asked)
    example = torch.zeros(1, 3, 224, 224)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(resnet, example), folder / "r50_ts.pt")
        batch = ({0: torch.export.Dim("batch")},)
        torch.export.save(torch.export.export(resnet, (example.expand(2, -1, -1, -1),), dynamic_shapes=batch), folder / "r50.pt2")
        torch.onnx.export(resnet, (example,), folder / "r50.onnx", dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "n"}})
    same = "Grad-CAM, contrastive vs the eager model"
    scripted = load_source("ts", "torchvision:resnet50", folder / "r50_ts.pt", num_classes=10)
    rows.append(("TorchScript file as weights", same, float(np.abs(maps(scripted, asked) - reference).max())))
    exported = load_source("ex", "export", folder / "r50.pt2")
    rows.append(("export (.pt2)", same, float(np.abs(maps(exported, asked) - reference).max())))
    spread = [ExplainRequest("scorecam", t, channels=16, ranking="spread") for t in TARGETS]
    onnx = load_source("onnx", "onnx", folder / "r50.onnx", num_classes=10)
    ours = maps(onnx, spread, backend=open_backend("onnxruntime", onnx))
    rows.append(("onnx", "Score-CAM (16 channels, spread) vs the eager model", float(np.abs(ours - maps(eager, spread)).max())))

    print("| source | compared | max abs difference |")
    print("|---|---|---:|")
    for source, compared, difference in rows:
        print(f"| {source} | {compared} | {difference:.1e} |")


if __name__ == "__main__":
    main()
