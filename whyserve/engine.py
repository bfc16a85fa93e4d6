"""One forward pass per batch gives the predictions and feeds every explanation in it.

A request is resolved once (``Explainer.resolve``: method, target, contrast and the method's
options checked and turned into indices / values); ``explain`` then runs the shared forward on
the backend and hands each method the rows that asked for it (``Method.compute``).
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from whyserve.backends import Backend
from whyserve.backends.torch_backend import TorchBackend
from whyserve.errors import InvalidOption
from whyserve.methods import Explanation, Method, MethodBatch, Needs, ResolvedRequest, all_methods
from whyserve.methods.registry import methods_for, parse_method_options, requirement_of
from whyserve.models import ModelSpec
from whyserve.targets import resolve_class


@dataclass(init=False)
class ExplainRequest:
    """What one image asks for. ``target``/``contrast`` take an index or a label;
    ``target=None`` means the top-1 class; for regression models ``contrast`` is a value.
    Keyword arguments beyond these are the method's options (e.g. Score-CAM ``weighting``)."""

    method: str
    target: int | str | None
    contrast: int | str | float | None
    options: dict[str, object]

    def __init__(
        self,
        method: str = "gradcam",
        target: int | str | None = None,
        contrast: int | str | float | None = None,
        **options: object,
    ) -> None:
        self.method, self.target, self.contrast = method, target, contrast
        self.options = {k: v for k, v in options.items() if v is not None}


@dataclass
class BatchResult:
    logits: torch.Tensor  # (B, outputs), detached
    explanations: list[Explanation | None]
    timing_ms: dict[str, float] = field(default_factory=dict)
    backend: str = "torch"

    def topk(self, index: int, k: int, class_names: tuple[str, ...] | None) -> list[dict[str, object]]:
        probs = torch.softmax(self.logits[index].float(), dim=0)
        values, indices = probs.topk(min(k, probs.numel()))
        return [
            {"index": int(i), "label": class_names[i] if class_names else str(int(i)), "probability": float(p)}
            for p, i in zip(values.tolist(), indices.tolist())
        ]

    def predictions(self, index: int, spec: ModelSpec, k: int) -> list[dict[str, object]]:
        """What a reply lists: a regression model's values, else the top-``k`` classes."""
        return self.values(index, spec.class_names) if spec.task == "regression" else self.topk(index, k, spec.class_names)

    def values(self, index: int, output_names: tuple[str, ...] | None) -> list[dict[str, object]]:
        """A regression model's outputs as they are, in output order: [{index, label, value}]."""
        return [
            {"index": i, "label": output_names[i] if output_names else str(i), "value": float(v)}
            for i, v in enumerate(self.logits[index].float().tolist())
        ]


class Explainer:
    """Predictions and explanations of a ``ModelSpec``'s model on a backend (default: PyTorch,
    target layer ``layer`` or the spec's); ``scorecam_chunk``: extra images per forward."""

    def __init__(
        self, spec: ModelSpec, layer: str | None = None, scorecam_chunk: int = 16, backend: Backend | None = None
    ) -> None:
        if scorecam_chunk < 1:
            raise InvalidOption("scorecam_chunk", "must be at least 1", ["a positive integer"])
        self.spec = spec
        self.backend = backend if backend is not None else TorchBackend(spec, layer)
        self.layer_name = self.backend.layer_name
        self.scorecam_chunk = scorecam_chunk
        self.methods: dict[str, Method] = {m.name: m for m in methods_for(spec) if m.needs in self.backend.provides}

    @property
    def device(self) -> torch.device:
        return self.backend.device

    @property
    def num_outputs(self) -> int:
        if self.spec.class_names is not None:
            return len(self.spec.class_names)
        return self.spec.num_outputs

    def why_unsupported(self, name: object) -> str:
        """ "; <why>" when the backend cannot run a method this model otherwise supports, else ""."""
        method = next((m for m in methods_for(self.spec) if m.name == name), None)
        return self.backend.why_not(method.needs) if method is not None else ""

    def resolve(self, request: ExplainRequest) -> ResolvedRequest:
        """Check ``request`` and resolve it (indices, values, parsed options), before any work;
        raise ``InvalidOption`` naming what this model cannot answer."""
        method = self.methods.get(request.method)
        if method is None:
            why = requirement_of(request.method) + self.why_unsupported(request.method)
            raise InvalidOption(
                "method", f"{request.method!r} is not supported by model {self.spec.name!r}{why}", tuple(self.methods)
            )
        target = None if request.target is None else self._class(request.target, "target")
        contrast = self._contrast(method, request.contrast)
        if contrast is not None and contrast == target and self.spec.task == "classification":
            raise InvalidOption(
                "contrast",
                f"equals the target; omit contrast to ask for {method.omitted_contrast}",
                ["a class other than the target", "no contrast"],
            )
        resolved = ResolvedRequest(method, target, contrast, parse_method_options(method, request.options))
        method.check(resolved, self.spec)
        return resolved

    def cost(self, request: ResolvedRequest) -> float:
        """A request's rough cost in single-image forward passes (the shared forward included)."""
        return 1.0 + request.method.cost(request, self.layer_channels, self.scorecam_chunk)

    @property
    def layer_channels(self) -> int:
        if not hasattr(self, "_layer_channels"):
            with self.backend.running():
                size = (1, 3, *self.spec.input_size)
                self._layer_channels = int(self.backend.forward(torch.zeros(size, device=self.device), graph=False)[1].shape[1])
        return self._layer_channels

    def explain(self, images: torch.Tensor, requests: list[ExplainRequest | ResolvedRequest | None]) -> BatchResult:
        """``images`` (B, C, H, W); ``requests[i] is None`` means prediction only for image i.
        Requests not yet resolved are resolved here."""
        if len(requests) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(requests)} requests")
        resolved = [r if r is None or isinstance(r, ResolvedRequest) else self.resolve(r) for r in requests]
        images = images.detach().to(self.device)
        with self.backend.running():
            start = time.perf_counter()
            wants_grad = any(r is not None and r.method.needs is Needs.LAYER_GRADIENT for r in resolved)
            output, activations = self.backend.forward(images, graph=wants_grad)
            predict_ms = (time.perf_counter() - start) * 1e3
            targets = [int(output[i].argmax()) if r is None or r.target is None else r.target for i, r in enumerate(resolved)]
            explanations = self._compute(images, output, activations, resolved, targets)
        for explanation in explanations:
            if explanation is not None:
                explanation.timing_ms = {"predict": predict_ms, **explanation.timing_ms}
        return BatchResult(output.detach(), explanations, {"predict": predict_ms}, self.backend.name)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Logits only: a plain forward with no hooks and no graph."""
        return self.backend.predict(images)

    def _compute(
        self,
        images: torch.Tensor,
        output: torch.Tensor,
        activations: torch.Tensor,
        requests: list[ResolvedRequest | None],
        targets: list[int],
    ) -> list[Explanation | None]:
        """Each group of methods computes its rows; gradient groups first, while the graph is there."""
        groups: dict[str, list[tuple[int, ResolvedRequest]]] = {}
        for i, request in enumerate(requests):
            if request is not None:
                groups.setdefault(request.method.group or request.method.name, []).append((i, request))
        order = sorted(groups.values(), key=lambda group: group[0][1].method.needs is not Needs.LAYER_GRADIENT)
        explanations: list[Explanation | None] = [None] * len(requests)
        for group in order:
            rows = [i for i, _ in group]
            method = group[0][1].method
            graph = method.needs is Needs.LAYER_GRADIENT
            batch = MethodBatch(
                rows,
                [request for _, request in group],
                [targets[i] for i in rows],
                images,
                output if graph else output.detach(),
                activations if graph else activations.detach(),
                self.backend,
                self.spec,
                self.scorecam_chunk,
            )
            start = time.perf_counter()
            # The capture hook turned grad mode on for the shared forward: off again for the others.
            with nullcontext() if graph else torch.no_grad():
                done = method.compute(batch)
            elapsed = (time.perf_counter() - start) * 1e3
            for i, explanation in zip(rows, done):
                explanation.timing_ms.setdefault("explain", elapsed)
                explanations[i] = explanation
        return explanations

    def _class(self, value: int | str | float, option: str) -> int:
        return resolve_class(value, option, self.num_outputs, self.spec.class_names)

    def _contrast(self, method: Method, contrast: int | str | float | None) -> int | float | None:
        if contrast is None:
            return None
        if not method.takes_contrast:
            valid = [f"method={m.name}" for m in all_methods() if m.takes_contrast]
            raise InvalidOption("contrast", f"method {method.name!r} takes no contrast", valid)
        if self.spec.task == "regression":
            return self._value(contrast)
        return self._class(contrast, "contrast")

    def _value(self, contrast: int | str | float) -> float:
        """A regression contrast: a finite number, inside the model's output range if it has one."""
        low, high = self.spec.value_range or (-math.inf, math.inf)
        valid = ["a real number" if self.spec.value_range is None else f"a number from {low:g} to {high:g}"]
        try:
            value = float(contrast)
        except (TypeError, ValueError, OverflowError):
            raise InvalidOption("contrast", f"{contrast!r} is not a number", valid) from None
        if not math.isfinite(value):
            raise InvalidOption("contrast", f"{contrast!r} is not a finite number", valid)
        if not low <= value <= high:
            raise InvalidOption("contrast", f"{value:g} is outside the model's output range [{low:g}, {high:g}]", valid)
        return value
