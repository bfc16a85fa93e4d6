"""Grad-CAM (Selvaraju et al., ICCV 2017): why did the model say P?"""

from __future__ import annotations

import torch

from whyserve.methods.base import GradientMethod


class GradCAM(GradientMethod):
    name = "gradcam"

    def objective(self, output: torch.Tensor, target: int, contrast: int | float | None, task: str) -> torch.Tensor:
        return output[target]
