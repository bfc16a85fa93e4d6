"""torchvision classifiers with random (seeded) or user-supplied ImageNet-shaped weights.

No pretrained torchvision weights can be downloaded here, so ``weights=None`` gives a
seeded random network: useful for parity tests, not for predictions.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torchvision import models
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from whyserve.models.imagenet import IMAGENET_CLASSES, resize_crop
from whyserve.models.spec import ModelSpec, load_state_dict_file, register

_MEAN = [0.485, 0.456, 0.406]
_STD = [0.229, 0.224, 0.225]


def _normalize(view: Image.Image) -> torch.Tensor:
    return TF.normalize(TF.to_dtype(TF.pil_to_tensor(view), torch.float32, scale=True), _MEAN, _STD)


def _torchvision(name: str, weights: str | Path | None) -> ModelSpec:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        module = getattr(models, name)(weights=None)
    if weights is not None:
        load_state_dict_file(module, weights)
    return ModelSpec(
        name=name,
        module=module,
        view=resize_crop(256, 224, v2.InterpolationMode.BILINEAR),
        normalize=_normalize,
        class_names=IMAGENET_CLASSES,
    )


@register("resnet18")
def resnet18(weights: str | Path | None = None) -> ModelSpec:
    return _torchvision("resnet18", weights)


@register("mobilenet_v3_small")
def mobilenet_v3_small(weights: str | Path | None = None) -> ModelSpec:
    return _torchvision("mobilenet_v3_small", weights)
