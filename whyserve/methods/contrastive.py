"""Contrastive explanations (Prabhushankar et al., ICIP 2020): why P, rather than Q?

The backward signal is the loss that would turn the prediction into Q: J = CE(logits, Q)
for classifiers, J = MSE(y, q) for regression heads. With Q = P (the contrast omitted) the
map answers "why not P with 100% confidence".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from whyserve.errors import InvalidOption
from whyserve.methods.base import ResolvedRequest
from whyserve.methods.gradient import GradientMethod
from whyserve.methods.registry import register
from whyserve.models import ModelSpec


@register
class Contrastive(GradientMethod):
    name = "contrastive"
    takes_contrast = True
    omitted_contrast = "'why not the target with 100% confidence?'"
    help = "why P, rather than Q? (omitted Q: why not P with 100% confidence)"

    def check(self, request: ResolvedRequest, spec: ModelSpec) -> None:
        if request.contrast is None and spec.task == "regression":
            raise InvalidOption("contrast", "a regression model needs a contrast value", ["a real number"])

    def contrast_for(self, target: int, contrast: int | float | None) -> int | float | None:
        return target if contrast is None else contrast

    def objective(self, output: torch.Tensor, target: int, contrast: int | float | None, task: str) -> torch.Tensor:
        if task == "regression":
            assert contrast is not None, "check() refuses a regression request without a contrast value"
            q = torch.tensor(float(contrast), dtype=output.dtype, device=output.device)
            return F.mse_loss(output[target], q, reduction="sum")
        q = torch.tensor([target if contrast is None else int(contrast)], device=output.device)
        return F.cross_entropy(output[None], q, reduction="sum")
