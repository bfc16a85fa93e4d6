"""Contrastive explanations (Prabhushankar et al., ICIP 2020): why P, rather than Q?

The backward signal is the loss that would turn the prediction into Q: J = CE(logits, Q)
for classifiers, J = MSE(y, q) for regression heads. With Q = P the map answers "why not
P with 100% confidence".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from whyserve.methods.base import GradientMethod


class Contrastive(GradientMethod):
    name = "contrastive"

    def objective(self, output: torch.Tensor, target: int, contrast: int | float | None, task: str) -> torch.Tensor:
        if task == "regression":
            q = torch.tensor(float(contrast), dtype=output.dtype, device=output.device)
            return F.mse_loss(output[target], q, reduction="sum")
        q = torch.tensor([target if contrast is None else int(contrast)], device=output.device)
        return F.cross_entropy(output[None], q, reduction="sum")
