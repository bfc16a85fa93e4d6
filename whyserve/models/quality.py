"""``flowers_quality``: an image-quality regressor of the noisy-square flowers
(``whyserve.data.quality``), trained by ``scripts/train_flowers.py --model quality`` and shipped
in ``whyserve/models/weights/``.

The ``flowers_cnn`` architecture with one output through a sigmoid: the predicted noise
strength in [0, 1]. ``task="regression"``: ``contrastive`` takes a contrast *value* q and
back-propagates J = (y - q)^2 ("why 0.58, rather than 0.75?"); ``gradcam`` explains the score.
"""

from __future__ import annotations

from pathlib import Path

import torch

from whyserve.data.flowers import SIZE
from whyserve.models.flowers import WIDTHS, FlowersCNN, load_weights, normalize, view
from whyserve.models.spec import ModelSpec, register

OUTPUT_NAME = "noise strength"


class QualityCNN(FlowersCNN):
    def __init__(self, widths: tuple[int, ...] = WIDTHS) -> None:
        super().__init__(widths, classes=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(super().forward(x))


@register("flowers_quality")
def flowers_quality(weights: str | Path | None = None) -> ModelSpec:
    return ModelSpec(
        name="flowers_quality",
        module=load_weights(QualityCNN(), weights, "flowers_quality"),
        view=view,
        normalize=normalize,
        input_size=(SIZE, SIZE),
        target_layer="blocks.3",  # 64 x 12 x 12, the last feature block
        class_names=(OUTPUT_NAME,),  # the one output's name (target 0 or "noise strength")
        task="regression",
        num_outputs=1,
        value_range=(0.0, 1.0),  # the sigmoid's: contrasts outside it are refused
    )
