"""One batch of HTTP requests in, one reply per request out: what every server adapter calls.

Each request is parsed, validated and decoded on its own, so a bad one fails alone with
its 4xx; the good ones go through the engine together (one forward pass for the batch).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch
from PIL import Image

from whyserve.backends import open_backend
from whyserve.engine import Explainer, ExplainRequest
from whyserve.errors import InvalidOption, ModelLoadError
from whyserve.methods import ResolvedRequest, all_methods
from whyserve.methods.registry import parse_method_options
from whyserve.models import ModelSpec, load_model
from whyserve.models.sources import load_source
from whyserve.serving.archive import settings_from_archive, unpack
from whyserve.serving.cost import Budget, ServerLimits, calibrate, check_response_size, check_timeout
from whyserve.serving.images import (
    DEFAULT_MAX_ASPECT_RATIO,
    DEFAULT_MAX_RESIZED_PIXELS,
    ImageLimits,
    decode_image,
    resize_rule,
)
from whyserve.serving.protocol import (
    DEFAULT_MAX_PIXELS,
    NO_EXPLANATION,
    RequestDefaults,
    ServeOptions,
    ServingError,
    build_response,
    error_body,
    parse_options,
    parse_payload,
)

logger = logging.getLogger(__name__)


@dataclass
class ServingConfig:
    """The ``handler`` section of a model-config.yaml."""

    model: str  # a registered model's name, or the served name of a ``source`` model
    weights: str | None = None
    source: str | None = None  # the user's own model (whyserve.models.sources); None: ``model`` is registered
    num_classes: int | None = None  # source models: the head's size (default: as many as ``classes`` names)
    classes: str | None = None  # source models: index_to_name.json or labels.txt (None: indices)
    preprocess: dict | None = None  # source models: resize, crop, interpolation, mean, std
    model_file: str | None = None  # source model_file: the .py defining the nn.Module (--model-file)
    random_weights: bool = False  # source models: serve without weights, on purpose (tests)
    layer: str | None = None
    default_method: str = "gradcam"
    methods: tuple[str, ...] | None = None  # None: every method the model supports
    topk: int = 5
    scorecam_chunk: int = 16
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    max_resized_pixels: int = DEFAULT_MAX_RESIZED_PIXELS  # after the model's resize (a 20000x1 image is huge then)
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO
    max_response_bytes: int = 1_000_000
    server_max_response_size: int | None = None  # TorchServe's max_response_size (workers are not told it)
    explain_budget_s: float | None = None  # refuse requests estimated slower (whyserve.serving.cost); None: no budget
    heavy_model: str | None = None  # the archive that serves exact methods, named in over-budget errors
    torch_threads: int | None = None  # intra-op threads of this process; None: torch's default
    backend: str = "torch"  # or "onnxruntime": ``weights`` is then an .onnx from `whyserve export-onnx`
    onnx_threads: int | None = None  # ONNX Runtime intra-op threads; None: one per core
    method_options: dict[str, dict] | None = None  # per method: defaults of its own options
    vebi_relevance: str | None = None  # VEBI's relevance file (in an archive: its file name there)

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> ServingConfig:
        known = {f.name for f in fields(cls)}
        gone = sorted(set(values) & set(_GONE))
        if gone:
            raise ValueError(f"handler setting {gone[0]} is gone: set {_GONE[gone[0]]} instead")
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown handler setting(s) {unknown}; known: {sorted(known)}")
        values = dict(values)
        if values.get("methods") is not None:
            values["methods"] = tuple(values["methods"])
        return cls(**values)


# Settings of earlier releases, and what replaces them.
_GONE = {
    "scorecam_weighting": "method_options: {scorecam: {weighting: ...}}",
    "scorecam_channels": "method_options: {scorecam: {channels: ...}}",
}


@dataclass
class Reply:
    """One request's answer as data (``body``) and as the JSON text it was encoded to, once
    (``text``): TorchServe's own path sends the text, the envelopes re-wrap the data."""

    status: int
    body: dict
    text: str
    method: str | None = None
    explain_ms: float | None = None
    error_kind: str | None = None
    stages_ms: dict[str, float] = field(default_factory=dict)  # where the time went (a Server-Timing header)


@dataclass
class _Prepared:
    index: int
    options: ServeOptions
    request: ResolvedRequest | None
    tensor: torch.Tensor
    view: Image.Image | None = field(default=None, repr=False)
    stages_ms: dict[str, float] = field(default_factory=dict)


class _Stopwatch:
    """Milliseconds since the last ``lap``: the stages of one request, cheap enough to always run."""

    def __init__(self) -> None:
        self.last, self.laps = time.perf_counter(), {}

    def lap(self, name: str) -> dict[str, float]:
        now = time.perf_counter()
        self.laps[name], self.last = round((now - self.last) * 1e3, 2), now
        return self.laps


def archived_spec(mar: str | Path, folder: str | Path) -> ModelSpec:
    """The model of the archive ``mar`` as its worker loads it (unpacked into ``folder``)."""
    config, manifest = unpack(mar, folder)
    return load_spec(ServingConfig.from_dict(settings_from_archive(config.get("handler") or {}, folder, manifest)))


def load_spec(config: ServingConfig) -> ModelSpec:
    """The model the config names, registered (``model``) or the user's own (``source``), with
    its VEBI relevance file when the config names one."""
    spec = _model(config)
    if config.vebi_relevance is None:
        return spec
    path = Path(config.vebi_relevance)
    if not path.is_file():
        raise ModelLoadError(f"vebi_relevance {config.vebi_relevance}: no such file (whyserve vebi-fit writes one)")
    return replace(spec, files={**spec.files, "vebi_relevance": path})


def _model(config: ServingConfig) -> ModelSpec:
    if config.source is None:
        return load_model(config.model, config.weights if config.backend == "torch" else None)
    if config.backend != "torch" and config.source != "onnx":
        raise ModelLoadError(f"source {config.source}: backend {config.backend!r} serves whyserve's exports; use backend torch")
    return load_source(
        config.model,
        config.source,
        config.weights,
        num_classes=config.num_classes,
        classes=config.classes,
        preprocess=config.preprocess,
        model_file=config.model_file,
        layer=config.layer,
        random_weights=config.random_weights,
    )


class ExplainService:
    def __init__(self, config: ServingConfig, server: ServerLimits | None = None) -> None:
        self.config = config
        if config.torch_threads:
            # Process-wide. With other busy processes on the same cores, more threads than the
            # cores left make every forward wait on descheduled threads (measured: 40x slower).
            torch.set_num_threads(int(config.torch_threads))
        self.explainer = self._explainer(config)
        self.spec = self.explainer.spec
        methods = config.methods or tuple(self.explainer.methods)
        unsupported = [m for m in methods if m not in self.explainer.methods]
        if unsupported:
            why = "".join(self.explainer.why_unsupported(m) for m in unsupported[:1])
            raise ValueError(
                f"model {config.model!r} does not support {unsupported}{why}; it supports {tuple(self.explainer.methods)}"
            )
        self.methods = tuple(methods)
        if config.default_method not in (*self.methods, NO_EXPLANATION):
            raise ValueError(f"default_method {config.default_method!r} is not one of {self.methods}")
        why_not = {m.name: self.explainer.why_unsupported(m.name) for m in all_methods()}
        why_not = {name: why for name, why in why_not.items() if why}
        self.defaults = RequestDefaults(config.default_method, self.methods, config.topk, self._method_defaults(config), why_not)
        self.image_limits = ImageLimits(config.max_image_pixels, config.max_resized_pixels, config.max_aspect_ratio)
        self.resized = resize_rule(self.spec.view)
        self.budget = self._budget(server or ServerLimits())

    def _budget(self, server: ServerLimits) -> Budget | None:
        """Calibrated at load when there is a budget or a timeout to fit; fails the load when the
        settings do not fit the server's limits."""
        check_response_size(self.config.max_response_bytes, server)
        if self.config.explain_budget_s is None and server.response_timeout_s is None:
            return None
        calibration = calibrate(self.explainer, self.config.scorecam_chunk)
        budget = Budget(self.config.explain_budget_s, calibration, self.config.heavy_model)
        check_timeout(budget, [self.explainer.cost(r) for r in self._slowest_requests()], server)
        return budget

    def _slowest_requests(self) -> list[ResolvedRequest]:
        """Each served method with the model's defaults, Score-CAM exact (what a client may ask)."""
        slowest = []
        for name in self.methods:
            options = {**self.defaults.method_options.get(name, {}), **({"channels": "all"} if name == "scorecam" else {})}
            try:
                slowest.append(self.explainer.resolve(ExplainRequest(name, **options)))
            except InvalidOption:  # e.g. contrastive on a regression model needs a contrast value
                continue
        return slowest

    def _method_defaults(self, config: ServingConfig) -> dict[str, dict[str, object]]:
        """The config's option defaults of the served methods, checked now (a bad one fails at load)."""
        defaults = {name: dict(values) for name, values in (config.method_options or {}).items() if name in self.methods}
        for name, values in defaults.items():
            try:
                parse_method_options(self.explainer.methods[name], values)
            except InvalidOption as error:
                raise ValueError(f"model-config handler setting method_options.{name}: {error}") from None
        return defaults

    @staticmethod
    def _explainer(config: ServingConfig) -> Explainer:
        spec = load_spec(config)
        kind = "onnxruntime" if config.source == "onnx" else config.backend
        backend = open_backend(kind, spec, config.weights, config.layer, config.onnx_threads)
        return Explainer(spec, scorecam_chunk=config.scorecam_chunk, backend=backend)

    def handle(self, requests: list[tuple[Mapping[str, object], Mapping[str, object]]]) -> list[Reply]:
        """``requests``: (fields, headers) per request; returns one ``Reply`` per request."""
        replies: list[Reply | None] = [None] * len(requests)
        prepared: list[_Prepared] = []
        for index, (request_fields, headers) in enumerate(requests):
            try:
                prepared.append(self._prepare(index, request_fields, headers))
            except ServingError as error:
                replies[index] = error_reply(error)
            except Exception as error:
                logger.exception("preparing request %d failed", index)
                replies[index] = error_reply(ServingError(500, f"internal error: {error}", kind="internal"))
        if prepared:
            for item, reply in zip(prepared, self._run(prepared)):
                replies[item.index] = reply
        return replies  # type: ignore[return-value]

    # -- steps -----------------------------------------------------------------------------

    def _prepare(self, index: int, request_fields: Mapping[str, object], headers: Mapping[str, object]) -> _Prepared:
        data, raw = parse_payload(request_fields, headers)
        request, options = parse_options(raw, self.defaults)
        resolved = None if request is None else self._resolve(request)
        if resolved is not None and self.budget is not None:
            self.budget.check(resolved, self.explainer.cost(resolved))
        watch = _Stopwatch()
        image = decode_image(data, self.image_limits, self.resized)
        watch.lap("decode")
        view = self.spec.view(image)
        watch.lap("resize")
        tensor = self.spec.normalize(view)
        stages = watch.lap("normalize")
        return _Prepared(index, options, resolved, tensor, view if "overlay" in options.outputs else None, stages)

    def _resolve(self, request: ExplainRequest) -> ResolvedRequest:
        try:
            return self.explainer.resolve(request)
        except InvalidOption as error:
            raise ServingError(400, str(error), error.valid, "bad_option") from None

    def _run(self, batch: list[_Prepared]) -> list[Reply]:
        try:
            return self._explain(batch)
        except Exception:
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
        watch = _Stopwatch()
        images = torch.stack([item.tensor for item in batch])
        result = self.explainer.explain(images, [item.request for item in batch])
        engine_ms = watch.lap("engine")["engine"]  # the batch's forward + explanations
        if self.budget is not None:
            self.budget.observe(result.timing_ms["predict"] / 1e3 / len(batch))
        replies = []
        for row, item in enumerate(batch):
            explanation = result.explanations[row]
            predictions = result.predictions(row, self.spec, item.options.topk)
            body = build_response(predictions, explanation, item.options, self.spec.class_names, item.view, result.backend)
            text = json.dumps(body, separators=(",", ":"))  # once: its size is the limit's to check
            stages = {**item.stages_ms, "engine": engine_ms, "encode": watch.lap("encode")["encode"]}
            if len(text) > self.config.max_response_bytes:
                replies.append(
                    error_reply(
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
            method = item.request.method.name if item.request else NO_EXPLANATION
            replies.append(Reply(200, body, text, method, explain_ms, stages_ms=stages))
        return replies

    def _failure(self, item: _Prepared) -> Reply:
        logger.exception("explaining request %d failed", item.index)
        return error_reply(ServingError(500, "internal error while explaining this image", kind="internal"))


def error_reply(error: ServingError) -> Reply:
    """The reply of a request refused with ``error``."""
    body = error_body(error)
    return Reply(error.status, body, json.dumps(body), error_kind=error.kind)
