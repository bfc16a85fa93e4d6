"""One forward pass per batch gives the predictions and feeds every explanation in it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from whyserve.errors import InvalidOption
from whyserve.layers import LayerCapture, eval_mode, find_target_layer, get_layer
from whyserve.methods import CONTRAST_METHODS, GRADIENT_METHODS, Explanation
from whyserve.methods import bcos as bcos_method
from whyserve.methods.base import scale_cams, weighted_cam
from whyserve.methods.scorecam import WEIGHTINGS, authors_map, scorecam_weights
from whyserve.models import ModelSpec
from whyserve.targets import resolve_class


@dataclass
class ExplainRequest:
    """What one image asks for. ``target``/``contrast`` take an index or a label;
    ``target=None`` means the top-1 class; for regression models ``contrast`` is a value."""

    method: str = "gradcam"
    target: int | str | None = None
    contrast: int | str | float | None = None
    weighting: str = "probability"  # Score-CAM only
    channels: int | None = None  # Score-CAM only: None = exact, N = the N most varying channels


@dataclass
class BatchResult:
    logits: torch.Tensor  # (B, outputs), detached
    explanations: list[Explanation | None]
    timing_ms: dict[str, float] = field(default_factory=dict)
    backend: str = "torch"

    def topk(self, index: int, k: int, class_names: tuple[str, ...] | None) -> list[dict]:
        probs = torch.softmax(self.logits[index].float(), dim=0)
        values, indices = probs.topk(min(k, probs.numel()))
        return [
            {"index": int(i), "label": class_names[i] if class_names else str(int(i)), "probability": float(p)}
            for p, i in zip(values.tolist(), indices.tolist())
        ]


class Explainer:
    """Runs a ``ModelSpec``'s model for predictions and explanations.

    The model is left as found: train/eval flags, hooks, requires_grad and the caller's
    grad mode (inference mode included) are the same afterwards.
    """

    def __init__(self, spec: ModelSpec, layer: str | None = None, scorecam_chunk: int = 16) -> None:
        self.spec = spec
        self.model = spec.module
        self.layer_name = layer or spec.target_layer or find_target_layer(self.model, spec.input_size)
        self.layer = get_layer(self.model, self.layer_name)
        if scorecam_chunk < 1:
            raise InvalidOption("scorecam_chunk", "must be at least 1", ["a positive integer"])
        self.scorecam_chunk = scorecam_chunk

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def validate(self, request: ExplainRequest) -> None:
        """Raise ``InvalidOption`` for a request this model cannot answer (before any work)."""
        spec = self.spec
        if request.method not in spec.methods:
            raise InvalidOption("method", f"{request.method!r} is not supported by model {spec.name!r}", spec.methods)
        if request.target is not None:
            resolve_class(request.target, "target", self.num_outputs, spec.class_names)
        if request.contrast is not None:
            self._resolve_contrast(request)
        elif request.method == "contrastive" and spec.task == "regression":
            raise InvalidOption("contrast", "a regression model needs a contrast value", ["a real number"])
        if request.method == "scorecam" and request.weighting not in WEIGHTINGS:
            raise InvalidOption("weighting", f"unknown Score-CAM weighting {request.weighting!r}", WEIGHTINGS)
        if request.channels is not None and (
            isinstance(request.channels, bool) or not isinstance(request.channels, int) or request.channels < 1
        ):
            raise InvalidOption("channels", f"{request.channels!r} is not a positive integer", ["all", "a positive integer"])

    def explain(self, images: torch.Tensor, requests: list[ExplainRequest | None]) -> BatchResult:
        """``images`` (B, C, H, W); ``requests[i] is None`` means prediction only for image i."""
        if len(requests) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(requests)} requests")
        for request in requests:
            if request is not None:
                self.validate(request)
        images = images.detach().to(self.device)
        wants_grad = any(r is not None and r.method in GRADIENT_METHODS for r in requests)

        with self._running():
            start = time.perf_counter()
            output, activations = self._forward(images, graph=wants_grad)
            predict_ms = (time.perf_counter() - start) * 1e3
            targets = [self._target(r, output[i]) for i, r in enumerate(requests)]

            cams: dict[int, torch.Tensor] = {}
            scaled: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # (layer map, heatmap)
            timing: dict[int, float] = {}
            if wants_grad:
                start = time.perf_counter()
                cams.update(self._gradient_cams(output, activations, requests, targets))
                elapsed = (time.perf_counter() - start) * 1e3
                timing.update({i: elapsed for i in cams})
            activations = activations.detach()
            for i, request in enumerate(requests):
                if request is not None and request.method == "scorecam":
                    start = time.perf_counter()
                    weights = scorecam_weights(
                        self._masked_forward,
                        images[i],
                        activations[i],
                        targets[i],
                        request.weighting,
                        self.scorecam_chunk,
                        request.channels,
                    )
                    if request.weighting == "probability":  # the authors' map, scaled at input size
                        scaled[i] = authors_map(weights, activations[i], tuple(images.shape[-2:]))
                    else:
                        cams[i] = weighted_cam(weights[None], activations[i : i + 1])[0]
                    timing[i] = (time.perf_counter() - start) * 1e3
            bcos = self._bcos_explanations(images, requests, targets, predict_ms)

        explanations: list[Explanation | None] = [bcos.get(i) for i in range(len(requests))]
        if cams:
            order = sorted(cams)
            layer_maps, heatmaps = scale_cams(torch.stack([cams[i] for i in order]), tuple(images.shape[-2:]))
            scaled.update({i: (layer_maps[row], heatmaps[row]) for row, i in enumerate(order)})
        for i, (layer_map, heatmap) in scaled.items():
            request = requests[i]
            explanations[i] = Explanation(
                method=request.method,
                target=targets[i],
                contrast=self._contrast(request, targets[i]),
                layer=self.layer_name,
                heatmap=heatmap.cpu().numpy(),
                layer_heatmap=layer_map.cpu().numpy(),
                timing_ms={"predict": predict_ms, "explain": timing[i]},
            )
        return BatchResult(
            logits=output.detach(), explanations=explanations, timing_ms={"predict": predict_ms}, backend=self.backend
        )

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Logits only: a plain forward with no hooks and no graph."""
        with eval_mode(self.model), torch.inference_mode():
            return self.model(images.to(self.device))

    # -- the backend: PyTorch here; whyserve.onnx_runtime overrides these four ------------

    @property
    def backend(self) -> str:
        return f"torch:{self.device.type}"

    @contextmanager
    def _running(self) -> Iterator[None]:
        # Out of inference mode (TorchServe's) so a graph can be built; no graph by default.
        with eval_mode(self.model), torch.inference_mode(False), torch.no_grad():
            yield

    def _forward(self, images: torch.Tensor, graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and target-layer activations of one pass; with ``graph`` autograd runs
        from the target layer up (the activations are then the leaf to differentiate by)."""
        capture = LayerCapture(self.layer, self.layer_name, graph=graph)
        try:
            output = self.model(images.clone() if images.is_inference() else images)
        finally:
            capture.remove()
        assert capture.activations is not None, "the target layer did not run"
        return output, capture.activations

    def _masked_forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)  # the capture hook is already removed

    # -- helpers -----------------------------------------------------------------------

    @property
    def num_outputs(self) -> int:
        if self.spec.class_names is not None:
            return len(self.spec.class_names)
        return int(self.spec.extra.get("num_outputs", 1))

    def _target(self, request: ExplainRequest | None, output: torch.Tensor) -> int:
        if request is None or request.target is None:
            return int(output.argmax())
        return resolve_class(request.target, "target", output.numel(), self.spec.class_names)

    def _resolve_contrast(self, request: ExplainRequest) -> int | float:
        if request.method not in CONTRAST_METHODS:
            raise InvalidOption("contrast", f"method {request.method!r} takes no contrast", CONTRAST_METHODS)
        if self.spec.task == "regression":
            try:
                return float(request.contrast)
            except (TypeError, ValueError):
                raise InvalidOption("contrast", f"{request.contrast!r} is not a number", ["a real number"]) from None
        return resolve_class(request.contrast, "contrast", self.num_outputs, self.spec.class_names)

    def _contrast(self, request: ExplainRequest, target: int) -> int | float | None:
        if request.method == "bcos":  # no contrast: plain B-cos of the target
            return None if request.contrast is None else self._resolve_contrast(request)
        if request.method != "contrastive":
            return None
        if request.contrast is None:
            return target  # validate() has refused this for regression models
        return self._resolve_contrast(request)

    def _gradient_cams(
        self,
        output: torch.Tensor,
        activations: torch.Tensor,
        requests: list[ExplainRequest | None],
        targets: list[int],
    ) -> dict[int, torch.Tensor]:
        rows = [i for i, r in enumerate(requests) if r is not None and r.method in GRADIENT_METHODS]
        with torch.enable_grad():
            objective = sum(
                GRADIENT_METHODS[requests[i].method].objective(
                    output[i], targets[i], self._contrast(requests[i], targets[i]), self.spec.task
                )
                for i in rows
            )
            (grads,) = torch.autograd.grad(objective, activations)
        acts = activations.detach()[rows]
        weights = torch.stack([GRADIENT_METHODS[requests[i].method].channel_weights(grads[i : i + 1])[0] for i in rows])
        cams = weighted_cam(weights, acts)
        return {i: cams[row] for row, i in enumerate(rows)}

    def _bcos_explanations(
        self, images: torch.Tensor, requests: list[ExplainRequest | None], targets: list[int], predict_ms: float
    ) -> dict[int, Explanation]:
        """B-cos contribution maps (whyserve.methods.bcos): a forward in explanation mode with
        autograd from the encoded input (ModelSpec.extra["bcos_input"]), for these rows only."""
        rows = [i for i, r in enumerate(requests) if r is not None and r.method == "bcos"]
        if not rows:
            return {}
        start = time.perf_counter()
        done = bcos_method.explain(
            self.model,
            self.spec.extra["bcos_input"],
            images[rows],
            [targets[i] for i in rows],
            [self._contrast(requests[i], targets[i]) for i in rows],
        )
        elapsed = (time.perf_counter() - start) * 1e3
        for explanation in done:
            explanation.timing_ms = {"predict": predict_ms, "explain": elapsed}
        return dict(zip(rows, done))
