"""Two small classifiers of the synthetic flowers (``whyserve.data.flowers``), trained by
``scripts/train_flowers.py`` and shipped in ``whyserve/models/weights/``.

- ``flowers_cnn``: a standard CNN (conv-BN-ReLU blocks, global average pooling, linear head).
- ``flowers_part``: the same CNN with 6 classes, trained on the single-part variant (every
  class is the colour of exactly one part; ``whyserve.data.flowers.make_single_part_flower``).
- ``flowers_bcos``: a B-cos CNN as in B-cos v2 (Böhle et al.): B = 2 ``BcosConv2d`` layers
  from the ``bcos`` package, input [r, g, b, 1-r, 1-g, 1-b], no biases anywhere, uncentred
  batch norm without bias (``BatchNormUncentered2d``, bias removed), average pooling. In
  explanation mode (``model.explanation_mode()``) the dynamic weights are detached, so every
  logit is exactly W(x) . x of the six-channel input, the output of the ``add_inverse`` module.

Both take RGB in [0, 1] at 96 x 96 (any size works: they are fully convolutional).
"""

from __future__ import annotations

from pathlib import Path

import torch
from bcos.common import BcosUtilMixin
from bcos.modules import BcosConv2d
from bcos.modules.norms import BatchNormUncentered2d
from PIL import Image
from torch import nn
from torchvision.transforms.v2 import functional as TF

from whyserve.data.flowers import CLASS_NAMES, NUM_CLASSES, SINGLE_CLASS_NAMES, SINGLE_NUM_CLASSES, SIZE
from whyserve.models.spec import ModelSpec, load_state_dict_file, register
from whyserve.shipped import weights_folder

WEIGHTS = weights_folder()
WIDTHS = (16, 32, 64, 64)


class FlowersCNN(nn.Module):
    def __init__(self, widths: tuple[int, ...] = WIDTHS, classes: int = NUM_CLASSES) -> None:
        super().__init__()
        blocks, c = [], 3
        for w in widths:
            blocks.append(nn.Sequential(nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()))
            c = w
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for k, block in enumerate(self.blocks):
            x = block(x)
            if k < len(self.blocks) - 1:
                x = self.pool(x)
        return self.fc(x.mean(dim=(2, 3)))


class AddInverse(nn.Module):
    """[r, g, b] -> [r, g, b, 1-r, 1-g, 1-b]: the B-cos input encoding."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, 1 - x], dim=1)


def _bcos_norm(channels: int) -> BatchNormUncentered2d:
    norm = BatchNormUncentered2d(channels)
    norm.bias = None  # no biases: the logit is exactly W(x) . x
    return norm


class FlowersBcos(BcosUtilMixin, nn.Module):
    bcos_input = "add_inverse"  # the module whose output is the six-channel input the B-cos layers see (whyserve.methods.bcos)

    def __init__(self, widths: tuple[int, ...] = WIDTHS, classes: int = NUM_CLASSES, b: float = 2.0) -> None:
        super().__init__()
        self.add_inverse = AddInverse()
        blocks, c = [], 6
        for w in widths:
            blocks.append(nn.Sequential(BcosConv2d(c, w, 3, padding=1, b=b), _bcos_norm(w)))
            c = w
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.AvgPool2d(2)
        self.classifier = BcosConv2d(c, classes, 1, b=b)
        self.scale = 10.0  # a fixed logit scale (linear, so contributions still sum to the logit)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.add_inverse(x)
        for k, block in enumerate(self.blocks):
            x = block(x)
            if k < len(self.blocks) - 1:
                x = self.pool(x)
        return self.classifier(x).mean(dim=(2, 3)) * self.scale


def view(image: Image.Image) -> Image.Image:
    """The whole image, resized to 96 x 96 (the flowers are generated at that size)."""
    image = image.convert("RGB")
    return image if image.size == (SIZE, SIZE) else image.resize((SIZE, SIZE), Image.Resampling.BILINEAR)


def normalize(image: Image.Image) -> torch.Tensor:
    """RGB in [0, 1] (the B-cos encoding needs it; the CNN learns its own scale)."""
    return TF.pil_to_tensor(image).float() / 255.0


def load_weights(module: nn.Module, weights: str | Path | None, name: str) -> nn.Module:
    path = Path(weights) if weights else WEIGHTS / f"{name}.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path}: train it with scripts/train_flowers.py")
    load_state_dict_file(module, path)
    return module


def _relevance(name: str) -> Path | None:
    """The model's VEBI relevance file (``whyserve vebi-fit``), if one ships."""
    path = WEIGHTS / f"{name}.vebi.json"
    return path if path.exists() else None


def _spec(
    name: str,
    module: nn.Module,
    weights: str | Path | None,
    class_names: tuple[str, ...] = CLASS_NAMES,
) -> ModelSpec:
    return ModelSpec(
        name=name,
        module=load_weights(module, weights, name),
        view=view,
        normalize=normalize,
        input_size=(SIZE, SIZE),
        target_layer="blocks.3",  # 64 x 12 x 12, the last feature block
        class_names=class_names,
        files={"vebi_relevance": path} if (path := _relevance(name)) else {},
    )


@register("flowers_cnn")
def flowers_cnn(weights: str | Path | None = None) -> ModelSpec:
    return _spec("flowers_cnn", FlowersCNN(), weights)


@register("flowers_part")
def flowers_part(weights: str | Path | None = None) -> ModelSpec:
    module = FlowersCNN(classes=SINGLE_NUM_CLASSES)
    return _spec("flowers_part", module, weights, class_names=SINGLE_CLASS_NAMES)


@register("flowers_bcos")
def flowers_bcos(weights: str | Path | None = None) -> ModelSpec:
    return _spec("flowers_bcos", FlowersBcos(), weights)
