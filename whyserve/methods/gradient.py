"""The template of Grad-CAM-like methods: weights are the spatial mean of dJ/dA.

A subclass only says what J is for one image (``objective``). Every row of every gradient
method in a batch is computed by one ``compute`` call: the objectives are summed, so one
backward pass (from the logits down to the target layer only) serves them all.
"""

from __future__ import annotations

from typing import cast

import torch

from whyserve.methods.base import Explanation, Method, MethodBatch, Needs, cam_explanations, weighted_cam


class GradientMethod(Method):
    needs = Needs.LAYER_GRADIENT
    group = "layer_gradient"

    def objective(self, output: torch.Tensor, target: int, contrast: int | float | None, task: str) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def channel_weights(grads: torch.Tensor) -> torch.Tensor:
        return grads.mean(dim=(2, 3))

    def compute(self, batch: MethodBatch) -> list[Explanation]:
        rows, task = batch.rows, batch.spec.task
        methods = [cast(GradientMethod, request.method) for request in batch.requests]  # the group's methods
        with torch.enable_grad():
            objective = cast(
                torch.Tensor,
                sum(
                    method.objective(batch.logits[i], batch.targets[k], batch.contrast(k), task)
                    for k, (i, method) in enumerate(zip(rows, methods))
                ),
            )
            (grads,) = torch.autograd.grad(objective, batch.activations)
        weights = torch.stack([method.channel_weights(grads[i : i + 1])[0] for i, method in zip(rows, methods)])
        return cam_explanations(batch, weighted_cam(weights, batch.activations.detach()[rows]))
