"""One batch of HTTP requests in, one reply per request out: what every server adapter calls.

Each request is parsed, validated and decoded on its own, so a bad one fails alone with
its 4xx; the good ones go through the engine together (one forward pass for the batch).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

import torch
from PIL import Image

from whyserve.engine import ExplainRequest, Explainer
from whyserve.errors import InvalidOption
from whyserve.methods import CONTRAST_METHODS
from whyserve.methods.scorecam import WEIGHTINGS
from whyserve.models import load_model
from whyserve.serving.protocol import (
    DEFAULT_MAX_PIXELS,
    ServeOptions,
    ServingError,
    build_response,
    error_body,
    parse_channels,
    parse_options,
    parse_payload,
)
from whyserve.serving.cost import Budget, ServerLimits, calibrate, check_response_size, check_timeout
from whyserve.serving.images import DEFAULT_MAX_ASPECT_RATIO, DEFAULT_MAX_RESIZED_PIXELS, ImageLimits, decode_image, resize_rule
from whyserve.targets import resolve_class

logger = logging.getLogger(__name__)


@dataclass
class ServingConfig:
    """The ``handler`` section of a model-config.yaml."""

    model: str
    weights: str | None = None
    layer: str | None = None
    default_method: str = "gradcam"
    methods: tuple[str, ...] | None = None  # None: every method the model supports
    topk: int = 5
    scorecam_weighting: str = "probability"
    scorecam_channels: int | str | None = None  # "all"/None: exact; N: the N most varying channels
    scorecam_chunk: int = 16
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    max_resized_pixels: int = DEFAULT_MAX_RESIZED_PIXELS  # after the model's resize (a 20000x1 image is huge then)
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO
    max_response_bytes: int = 1_000_000
    explain_budget_s: float | None = None  # refuse requests estimated slower (see whyserve.serving.cost); None: no budget
    heavy_model: str | None = None  # the archive that serves exact methods, named in over-budget errors
    torch_threads: int | None = None  # intra-op threads of this process; None: torch's default
    backend: str = "torch"  # or "onnxruntime": ``weights`` is then an .onnx from `whyserve export-onnx`
    onnx_threads: int | None = None  # ONNX Runtime intra-op threads; None: one per core

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> ServingConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown handler setting(s) {unknown}; known: {sorted(known)}")
        values = dict(values)
        if values.get("methods") is not None:
            values["methods"] = tuple(values["methods"])
        return cls(**values)


@dataclass
class Reply:
    status: int
    body: str  # JSON text
    method: str | None = None
    explain_ms: float | None = None
    error_kind: str | None = None


@dataclass
class _Prepared:
    index: int
    options: ServeOptions
    request: ExplainRequest | None
    tensor: torch.Tensor
    view: Image.Image | None = field(default=None, repr=False)


class ExplainService:
    def __init__(self, config: ServingConfig, server: ServerLimits | None = None) -> None:
        self.config = config
        if config.torch_threads:
            # Process-wide. With other busy processes on the same cores, more threads than the
            # cores left make every forward wait on descheduled threads (measured: 40x slower).
            torch.set_num_threads(int(config.torch_threads))
        self.explainer = self._explainer(config)
        self.spec = self.explainer.spec
        methods = config.methods or self.spec.methods
        unsupported = [m for m in methods if m not in self.spec.methods]
        if unsupported:
            raise ValueError(f"model {config.model!r} does not support {unsupported}; it supports {self.spec.methods}")
        self.methods = tuple(methods)
        self.image_limits = ImageLimits(config.max_image_pixels, config.max_resized_pixels, config.max_aspect_ratio)
        self.resized = resize_rule(self.spec.view)
        self.budget = self._budget(server or ServerLimits())
        parse_channels(config.scorecam_channels)
        if config.scorecam_weighting not in WEIGHTINGS:
            raise ValueError(f"scorecam_weighting {config.scorecam_weighting!r} is not one of {WEIGHTINGS}")
        if config.default_method not in (*self.methods, "none"):
            raise ValueError(f"default_method {config.default_method!r} is not one of {self.methods}")

    @staticmethod
    def _explainer(config: ServingConfig) -> Explainer:
        if config.backend == "torch":
            spec = load_model(config.model, config.weights)
            return Explainer(spec, layer=config.layer, scorecam_chunk=config.scorecam_chunk)
        if config.backend == "onnxruntime":
            from whyserve.onnx_runtime import OrtExplainer, create_session

            if not config.weights:
                raise ValueError("backend onnxruntime needs the .onnx file as the archive's serialized file")
            session = create_session(config.weights, config.onnx_threads)
            # The PyTorch model is only built for its preprocessing and class names.
            return OrtExplainer(load_model(config.model), session, scorecam_chunk=config.scorecam_chunk)
        raise ValueError(f"unknown backend {config.backend!r}; known: torch, onnxruntime")

    def _budget(self, server: ServerLimits) -> Budget | None:
        """Calibrated at load when there is a budget or a timeout to fit; fails the load when the
        settings do not fit the server's limits."""
        check_response_size(self.config.max_response_bytes, server)
        if self.config.explain_budget_s is None and server.response_timeout_s is None:
            return None
        budget = Budget(self.config.explain_budget_s, calibrate(self.explainer, self.config.scorecam_chunk), self.config.heavy_model)
        check_timeout(budget, [ExplainRequest(m) for m in self.methods], server)
        return budget

    def handle(self, requests: list[tuple[Mapping[str, object], Mapping[str, object]]]) -> list[Reply]:
        """``requests``: (fields, headers) per request; returns one ``Reply`` per request."""
        replies: list[Reply | None] = [None] * len(requests)
        prepared: list[_Prepared] = []
        for index, (request_fields, headers) in enumerate(requests):
            try:
                prepared.append(self._prepare(index, request_fields, headers))
            except ServingError as error:
                replies[index] = self._error(error)
            except Exception as error:  # noqa: BLE001 - one request must not fail the batch
                logger.exception("preparing request %d failed", index)
                replies[index] = self._error(ServingError(500, f"internal error: {error}", kind="internal"))
        if prepared:
            for item, reply in zip(prepared, self._run(prepared)):
                replies[item.index] = reply
        return replies  # type: ignore[return-value]

    # -- steps -----------------------------------------------------------------------------

    def _prepare(self, index: int, request_fields: Mapping[str, object], headers: Mapping[str, object]) -> _Prepared:
        data, raw = parse_payload(request_fields, headers)
        options = parse_options(raw, self.config.default_method, self.methods)
        if options.method == "scorecam" and not raw.get("weighting"):
            options.weighting = self.config.scorecam_weighting
        if options.method == "scorecam" and raw.get("channels") in (None, ""):
            options.channels = parse_channels(self.config.scorecam_channels)
        if "topk" not in raw:
            options.topk = self.config.topk
        request = options.engine_request()
        if request is not None:
            self._validate(request)
            if self.budget is not None:
                self.budget.check(request)
        image = decode_image(data, self.image_limits, self.resized)
        view = self.spec.view(image)
        tensor = self.spec.normalize(view)
        return _Prepared(index, options, request, tensor, view if "overlay" in options.outputs else None)

    def _validate(self, request: ExplainRequest) -> None:
        try:
            self.explainer.validate(request)
        except InvalidOption as error:
            raise ServingError(400, str(error), error.valid, "bad_option") from None
        classes = self.spec.task == "classification"
        if classes and request.method in CONTRAST_METHODS and request.target is not None and request.contrast is not None:
            names, n = self.spec.class_names, self.explainer.num_outputs
            if resolve_class(request.target, "target", n, names) == resolve_class(request.contrast, "contrast", n, names):
                omitted = {
                    "contrastive": "'why not the target with 100% confidence?'",
                    "bcos": "the plain B-cos map of the target",
                }[request.method]
                raise ServingError(
                    400,
                    f"contrast: equals the target; omit contrast to ask for {omitted}",
                    ["a class other than the target", "no contrast"],
                    "bad_option",
                )

    def _run(self, batch: list[_Prepared]) -> list[Reply]:
        try:
            return self._explain(batch)
        except Exception:  # noqa: BLE001 - retry one by one so only the culprit fails
            if len(batch) == 1:
                return [self._failure(batch[0])]
            logger.exception("batch of %d failed; retrying one request at a time", len(batch))
            replies = []
            for item in batch:
                try:
                    replies.extend(self._explain([item]))
                except Exception:  # noqa: BLE001
                    replies.append(self._failure(item))
            return replies

    def _explain(self, batch: list[_Prepared]) -> list[Reply]:
        images = torch.stack([item.tensor for item in batch])
        result = self.explainer.explain(images, [item.request for item in batch])
        if self.budget is not None:
            self.budget.observe(result.timing_ms["predict"] / 1e3 / len(batch))
        replies = []
        for row, item in enumerate(batch):
            explanation = result.explanations[row]
            predictions = result.topk(row, item.options.topk, self.spec.class_names)
            body = build_response(
                predictions, explanation, item.options, self.spec.class_names, item.view, result.backend
            )
            text = json.dumps(body, separators=(",", ":"))
            if len(text) > self.config.max_response_bytes:
                replies.append(
                    self._error(
                        ServingError(
                            413,
                            f"the response would be {len(text):,} bytes; the limit is {self.config.max_response_bytes:,}",
                            ["fewer outputs", "a smaller topk"],
                            "response_too_large",
                        )
                    )
                )
                continue
            explain_ms = explanation.timing_ms.get("explain") if explanation is not None else None
            replies.append(Reply(200, text, item.options.method, explain_ms))
        return replies

    def _failure(self, item: _Prepared) -> Reply:
        logger.exception("explaining request %d failed", item.index)
        return self._error(ServingError(500, "internal error while explaining this image", kind="internal"))

    @staticmethod
    def _error(error: ServingError) -> Reply:
        return Reply(error.status, json.dumps(error_body(error)), error_kind=error.kind)

