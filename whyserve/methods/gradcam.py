"""Grad-CAM (Selvaraju et al., ICCV 2017): why did the model say P?"""

from __future__ import annotations

import torch

from whyserve.methods.gradient import GradientMethod
from whyserve.methods.registry import register


@register
class GradCAM(GradientMethod):
    name = "gradcam"
    help = "why P? Same numbers as pytorch-grad-cam's GradCAM"

    def objective(self, output: torch.Tensor, target: int, contrast: int | float | None, task: str) -> torch.Tensor:
        return output[target]
