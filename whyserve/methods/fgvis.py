"""FGVis (Wagner et al., CVPR 2019): fine-grained explanations by optimising a mask at input
resolution, per pixel and colour channel.

The explanation image e = m * x + (1 - m) * r (m in [0, 1]^(3 x H x W), r the reference:
the preprocessed black image by default) is itself a model input. Two games:

- ``preservation``: the smallest mask that keeps the class,
  min  CE(f(e), c) + lambda * ||m||_1           heatmap = m
- ``deletion``: the smallest deletion that removes it,
  min  softmax(f(e))_c + lambda * ||1 - m||_1    heatmap = 1 - m

m starts at ones; each step is SGD with the gradient divided by its largest absolute value
(per image), then m is clamped to [0, 1]. A row stops early when its target is no longer
the top-1 class (deletion, if it was top-1 on x) or its loss has stalled. With the defense
(``whyserve.methods.fgvis_defense``) the class term's gradient is filtered at every
nonlinearity; the regulariser's gradient is computed separately and never filtered.

All rows of a batch are optimised together, each with its own target, game and options;
only the mask requires gradients (the model's parameters are frozen during the loop and
given back their flags after).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.transforms.v2 import functional as TF

from whyserve.layers import eval_mode
from whyserve.methods.base import Explanation, Method, MethodBatch, Needs, Output, OutputKind, ResolvedRequest
from whyserve.methods.fgvis_defense import GateActivations, RecordActivations
from whyserve.methods.registry import register
from whyserve.options import option

if TYPE_CHECKING:
    from whyserve.models import ModelSpec

NAME = "fgvis"
GAMES = ("deletion", "preservation")
REFERENCES = ("black", "blur", "mean")
MAX_ITERATIONS = 2000
STALL_PATIENCE = 20  # iterations without a relative loss improvement of STALL_TOLERANCE
STALL_TOLERANCE = 1e-3
# lambda per game when a request names none: deletion needs it below the class gradient
# (else the regulariser pins m at 1), preservation above it (else m barely shrinks).
# Chosen on flowers_cnn (benchmarks/fgvis_speed.py); models may set their own.
DEFAULT_LAMBDA = {"deletion": 1e-5, "preservation": 1e-4}


@dataclass(frozen=True)
class FGVisOptions:
    game: str = option(
        "deletion",
        "deletion: the smallest deletion that removes the class (heatmap 1 - m); "
        "preservation: the smallest mask that keeps it (heatmap m)",
        choices=GAMES,
    )
    iterations: int = option(
        100, "the most optimisation steps (a row stops early when done or stalled)", low=1, high=MAX_ITERATIONS
    )
    lr: float = option(0.1, "step size of the mask", low=1e-6, high=10.0)
    lam: float | None = option(
        None,
        "weight of the L1 term (a sum over the 3 x H x W mask)",
        low=0.0,
        high=10.0,
        name="lambda",
        default_text=f"{DEFAULT_LAMBDA['deletion']:g} (deletion), {DEFAULT_LAMBDA['preservation']:g} (preservation)",
    )
    defense: bool = option(True, "the paper's gradient filter against adversarial evidence")
    reference: str = option(
        "black", "what a deleted pixel becomes: black, the image blurred, or its mean colour", choices=REFERENCES
    )

    @property
    def weight(self) -> float:
        return DEFAULT_LAMBDA[self.game] if self.lam is None else self.lam


@dataclass
class FGVisResult:
    masks: torch.Tensor  # (B, 3, H, W) in [0, 1]
    explanations: torch.Tensor  # (B, C, H, W): e, preprocessed like the input
    heatmaps: torch.Tensor  # (B, H, W): 1 - m (deletion) or m (preservation), channel mean
    probabilities: torch.Tensor  # (B,): the target's softmax probability on e
    iterations: list[int]  # optimisation steps run per row


def references(kind: list[str], images: torch.Tensor, black: torch.Tensor) -> torch.Tensor:
    """r per row: ``black`` (the preprocessed black image, (C, H, W)), ``blur`` (the image
    blurred, sigma = 1/20 of its width, as the insertion metric's baseline) or ``mean``
    (each channel's mean)."""
    out = black.to(images).expand_as(images).clone()
    for i, k in enumerate(kind):
        if k == "blur":
            sigma = max(images.shape[-1] / 20, 1.0)
            size = 2 * int(3 * sigma) + 1
            out[i] = TF.gaussian_blur(images[i : i + 1], [size, size], [sigma, sigma])[0]
        elif k == "mean":
            out[i] = images[i].mean(dim=(1, 2), keepdim=True).expand_as(images[i])
    return out


def to_pixels(explanations: torch.Tensor, black: torch.Tensor, white: torch.Tensor) -> np.ndarray:
    """e (B, C, H, W) back to 8-bit RGB (B, H, W, 3), for a per-channel affine preprocessing
    whose images of all-black and all-white pixels are ``black`` and ``white`` (C, H, W)."""
    low, high = black.to(explanations)[:, :1, :1], white.to(explanations)[:, :1, :1]
    pixels = (explanations - low) / (high - low) * 255
    return pixels.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Parameters off autograd (only the mask needs gradients); their flags given back."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def optimise(
    model: nn.Module, images: torch.Tensor, targets: list[int], options: list[FGVisOptions], black: torch.Tensor
) -> FGVisResult:
    """FGVis for a batch; ``black`` is the model's preprocessed all-black image (C, H, W).

    Works inside ``torch.inference_mode()``; the model is left as found.
    """
    if not (len(targets) == len(options) == images.shape[0]):
        raise ValueError(f"{images.shape[0]} images, {len(targets)} targets, {len(options)} options")
    with eval_mode(model), _frozen(model), torch.inference_mode(False), torch.no_grad():
        x = images.detach().clone()
        return _Loop(model, x, targets, options, references([o.reference for o in options], x, black)).run()


class _Loop:
    """The batched optimisation; rows that stop early leave the batch."""

    def __init__(
        self, model: nn.Module, x: torch.Tensor, targets: list[int], options: list[FGVisOptions], reference: torch.Tensor
    ) -> None:
        self.model, self.x, self.r = model, x, reference
        n, dev = x.shape[0], x.device
        self.t = torch.tensor(targets, device=dev)
        self.deletion = torch.tensor([o.game == "deletion" for o in options], device=dev)
        self.lr = torch.tensor([o.lr for o in options], device=dev, dtype=x.dtype).view(-1, 1, 1, 1)
        self.lam = torch.tensor([o.weight for o in options], device=dev, dtype=x.dtype).view(-1, 1, 1, 1)
        self.budget = [o.iterations for o in options]
        self.defense = torch.tensor([o.defense for o in options], device=dev)
        self.masks = torch.ones(n, 3, *x.shape[-2:], device=dev, dtype=x.dtype)
        self.steps = [0] * n
        self.best = [float("inf")] * n
        self.since_best = [0] * n
        self.clean: list[torch.Tensor] = []
        logits = self._record()
        # Deletion stops once the target is not top-1, if it was top-1 on x to begin with.
        self.stop_on_flip = self.deletion & (logits.argmax(1) == self.t)

    def _record(self) -> torch.Tensor:
        if not bool(self.defense.any()):
            return self.model(self.x)
        recorder = RecordActivations()
        with recorder:
            logits = self.model(self.x)
        self.clean = recorder.outputs
        return logits

    def run(self) -> FGVisResult:
        active = [i for i in range(len(self.steps)) if self.budget[i] > 0]
        while active:
            active = self._step(torch.tensor(active, device=self.x.device))
        with torch.no_grad():
            e = self._explanation(self.masks, torch.arange(len(self.steps), device=self.x.device))
            probs = torch.softmax(self.model(e).float(), 1).gather(1, self.t[:, None])[:, 0]
        heat = torch.where(self.deletion.view(-1, 1, 1, 1), 1 - self.masks, self.masks).mean(1)
        return FGVisResult(self.masks, e, heat, probs, list(self.steps))

    def _explanation(self, m: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return m * self.x[rows] + (1 - m) * self.r[rows]

    def _step(self, rows: torch.Tensor) -> list[int]:
        """One SGD step for ``rows``; returns the rows that go on."""
        m = self.masks[rows].clone().requires_grad_(True)
        deletion, t = self.deletion[rows], self.t[rows]
        gate = GateActivations(self.clean, rows, self.defense) if self.clean else None
        with torch.enable_grad():
            with gate or nullcontext():
                logits = self.model(self._explanation(m, rows))
            if gate is not None:
                gate.check_complete()
            logp = torch.log_softmax(logits.float(), 1).gather(1, t[:, None])[:, 0]
            class_term = torch.where(deletion, logp.exp(), -logp)
            l1 = torch.where(deletion.view(-1, 1, 1, 1), 1 - m, m).flatten(1).sum(1)
            reg_term = self.lam[rows].flatten() * l1
            (g_class,) = torch.autograd.grad(class_term.sum(), m)  # through the (gated) network
            (g_reg,) = torch.autograd.grad(reg_term.sum(), m)  # never gated
        grad = g_class + g_reg
        grad = grad / grad.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
        flipped = (logits.argmax(1) != t) & self.stop_on_flip[rows]
        loss = (class_term + reg_term).detach()
        keep = []
        for j, i in enumerate(rows.tolist()):
            if bool(flipped[j]):  # the current mask already deletes the class: keep it
                continue
            self.masks[i] = (m[j].detach() - self.lr[i] * grad[j]).clamp_(0, 1)
            self.steps[i] += 1
            if self.steps[i] < self.budget[i] and not self._stalled(i, float(loss[j])):
                keep.append(i)
        return keep

    def _stalled(self, i: int, loss: float) -> bool:
        best = self.best[i]
        if best == float("inf") or loss < best - STALL_TOLERANCE * abs(best):
            self.best[i], self.since_best[i] = loss, 0
            return False
        self.since_best[i] += 1
        return self.since_best[i] >= STALL_PATIENCE


def _constant_image(spec: ModelSpec, value: int) -> torch.Tensor:
    """The model's input for an image whose every pixel is (value, value, value)."""
    return spec.normalize(Image.new("RGB", spec.input_size[::-1], (value, value, value)))


@register
class FGVis(Method):
    """FGVis on PyTorch models (the ONNX Runtime backend has no gradients)."""

    name = NAME
    needs = Needs.OPTIMISATION
    options = FGVisOptions
    outputs: ClassVar[Mapping[str, Output]] = {
        "explanation_image": Output(OutputKind.IMAGE, "the explanation image e, itself a valid model input (RGB PNG)")
    }
    help = (
        "why P? a per-pixel, per-colour mask at input resolution, optimised (Wagner et al. 2019); "
        "game deletion|preservation, iterations, lr, lambda, defense on|off, reference black|blur|mean"
    )

    def cost(self, request: ResolvedRequest, layer_channels: int, chunk: int) -> float:
        # a forward and a backward (~2 forwards) per iteration, the clean pass and the final one
        return 3.0 * request.options.iterations + 2.0

    def compute(self, batch: MethodBatch) -> list[Explanation]:
        black, white = _constant_image(batch.spec, 0), _constant_image(batch.spec, 255)
        options = [r.options for r in batch.requests]
        model = batch.backend.model
        assert model is not None, "needs OPTIMISATION: only a PyTorch backend provides it"
        result = optimise(model, batch.images[batch.rows], batch.targets, options, black)
        pixels = to_pixels(result.explanations, black, white)
        explanations = []
        for k, (target, o) in enumerate(zip(batch.targets, options)):
            heatmap = result.heatmaps[k].float().cpu().numpy()
            details = {
                "game": o.game,
                "defense": o.defense,
                "reference": o.reference,
                "lambda": o.weight,
                "iterations": result.iterations[k],
                "probability": round(float(result.probabilities[k]), 6),
            }
            explanation = Explanation(NAME, target, None, "input", heatmap, heatmap, details=details)
            explanation.artifacts["explanation_image"] = pixels[k]
            explanations.append(explanation)
        return explanations
