"""The base of the TorchServe handler in ``whyserve/serving/handler.py``.

TorchServe only needs a class with ``initialize(context)`` and ``handle(data, context)``, so
this base does not subclass ``ts.torch_handler.base_handler.BaseHandler`` and never imports
TorchServe: the context is used through the attributes TorchServe 0.12 gives it. (The base
handler would also run inference under ``torch.inference_mode()``, which gradient methods
must leave anyway.)

With TorchServe's KServe envelopes (``service_envelope=kserve`` / ``kservev2``) the handler gets
the envelope's instances / inputs instead of raw requests; ``whyserve.serving.envelopes``
translates them, and the envelope wraps what ``handle`` returns.

Settings come from the ``handler`` section of the archive's model-config.yaml (see
``ServingConfig``); weights from the archive's serialized file when it has one.
"""

from __future__ import annotations

import inspect
import logging
from http import HTTPStatus

import numpy as np

from whyserve.serving import envelopes
from whyserve.serving.archive import settings_from_archive
from whyserve.serving.cost import ServerLimits
from whyserve.serving.service import ExplainService, Reply, ServingConfig

logger = logging.getLogger(__name__)


class _Dimension:
    """Duck-types ``ts.metrics.dimension.Dimension`` (name, value)."""

    def __init__(self, name: str, value: str) -> None:
        self.name, self.value = name, value

    def __str__(self) -> str:
        return f"{self.name}:{self.value}"

    def to_dict(self) -> dict:
        return {"Name": self.name, "Value": self.value}


DEFAULT_MAX_RESPONSE_SIZE = 6_553_500  # TorchServe 0.12's default max_response_size


class TorchServeHandler:
    """Subclassed in a file of its own (TorchServe wants one class per handler file); the model
    is model-config.yaml's ``handler.model`` (or a subclass's ``model``)."""

    model: str | None = None

    def __init__(self) -> None:
        self.service: ExplainService | None = None
        self.initialized = False

    def initialize(self, context) -> None:
        yaml_config = getattr(context, "model_yaml_config", None) or {}
        settings = dict(yaml_config.get("handler") or {})
        if self.model:
            settings.setdefault("model", self.model)
        model_dir = context.system_properties.get("model_dir") or "."
        settings = settings_from_archive(settings, model_dir, getattr(context, "manifest", None))
        config = ServingConfig.from_dict(settings)
        self.service = ExplainService(config, self._server_limits(yaml_config, config))
        logger.info(
            "whyserve: model %s (%s), layer %s, methods %s, default %s",
            settings["model"],
            settings.get("source") or "registered",
            self.service.explainer.layer_name,
            self.service.methods,
            self.service.config.default_method,
        )
        if "vebi_relevance" in self.service.spec.files:
            logger.info("whyserve: VEBI relevance file %s", self.service.spec.files["vebi_relevance"])
        self.initialized = True

    @staticmethod
    def _server_limits(yaml_config: dict, config: ServingConfig) -> ServerLimits:
        """TorchServe's limits this model must fit: batchSize and responseTimeout from the
        model-config; max_response_size is not given to workers, so the handler section says it
        (``server_max_response_size``, TorchServe's default 6553500 when absent)."""
        return ServerLimits(
            batch_size=int(yaml_config.get("batchSize", 1)),
            response_timeout_s=float(yaml_config.get("responseTimeout", 120)),
            max_response_size=config.server_max_response_size or DEFAULT_MAX_RESPONSE_SIZE,
        )

    def handle(self, data, context) -> list:
        envelope = _envelope(data, context)
        if envelope == envelopes.V1:
            return self._kserve_v1(data, context)
        if envelope == envelopes.V2:
            return self._kserve_v2(data, context)
        requests = []
        for index, row in enumerate(data):
            try:
                headers = dict(context.get_all_request_header(index))
            except Exception:  # noqa: BLE001 - no per-request headers (e.g. a unit-test context)
                headers = {}
            requests.append((row if isinstance(row, dict) else {"body": row}, headers))
        replies = self.service.handle(requests)
        for index, reply in enumerate(replies):
            context.set_response_content_type(index, "application/json")
            if reply.status != 200:
                context.set_response_status(reply.status, HTTPStatus(reply.status).phrase, index)
            if reply.stages_ms and hasattr(context, "set_response_header"):
                context.set_response_header(index, "Server-Timing", server_timing(reply.stages_ms))
            self._metrics(context, index, reply)
        return [reply.text for reply in replies]

    def _kserve_v1(self, instances, context) -> list[dict]:
        """The instances of one v1 request; the envelope wraps the list in predictions/explanations."""
        replies = envelopes.answer(self.service, envelopes.v1_requests({"instances": instances}))
        self._respond(context, envelopes.status(replies), replies)
        return envelopes.v1_items(replies)

    def _kserve_v2(self, inputs, context) -> list[np.ndarray]:
        """One v2 request. TorchServe 0.12's envelope names each returned array after the input
        at its position (``context.input_names``) and drops request-level parameters."""
        reply = envelopes.answer(self.service, [envelopes.v2_request(inputs)])[0]
        outputs = envelopes.v2_outputs(reply)
        context.input_names = [output.name for output in outputs]
        self._respond(context, reply.status, [reply])
        return [np.asarray(output.data, dtype=_NUMPY[output.datatype]) for output in outputs]

    def _respond(self, context, status: int, replies: list[Reply]) -> None:
        """Status and metrics of the envelope's one HTTP request (index 0)."""
        context.set_response_content_type(0, "application/json")
        if status != 200:
            context.set_response_status(status, HTTPStatus(status).phrase, 0)
        for reply in replies:
            self._metrics(context, 0, reply)

    @staticmethod
    def _metrics(context, index: int, reply: Reply) -> None:
        metrics = getattr(context, "metrics", None)
        if metrics is None:
            return
        try:
            if reply.explain_ms is not None:
                # A Prometheus histogram; TorchServe 0.12 gives it the client's default buckets
                # (5 ms to 10 s), so the value is in seconds.
                metrics.add_metric(
                    "ExplanationLatency",
                    round(reply.explain_ms / 1e3, 4),
                    "s",
                    index,
                    [_Dimension("Method", reply.method)],
                    metric_type=_histogram_type(metrics),
                )
            if reply.error_kind is not None:
                metrics.add_counter("ExplanationErrors", 1, index, [_Dimension("Kind", reply.error_kind)])
        except Exception:
            logger.warning("could not record metrics", exc_info=True)


def server_timing(stages_ms: dict[str, float]) -> str:
    """The W3C ``Server-Timing`` header value: ``decode;dur=3.1, resize;dur=1.2, ...`` (ms)."""
    return ", ".join(f"{name};dur={ms:g}" for name, ms in stages_ms.items())


def _histogram_type(metrics) -> object:
    """``ts.metrics.metric_type_enum.MetricTypes.HISTOGRAM`` without importing TorchServe: the
    enum class is the type of ``add_time``'s default ``metric_type``."""
    default = inspect.signature(metrics.add_time).parameters["metric_type"].default
    return type(default)("histogram")


_NUMPY = {"INT64": np.int64, "FP32": np.float32, "BYTES": np.str_}


def _envelope(data, context) -> str | None:
    """Which KServe envelope TorchServe ran (server-wide, not told to handlers): the v2 envelope
    leaves ``input_names`` on the context; without an envelope every row is TorchServe's own
    (a ``body``/``data`` key, or multipart fields with bytes values), never a v1 instance."""
    if hasattr(context, "input_names"):
        return envelopes.V2
    if not data or not all(_torchserve_row(row) for row in data):
        return envelopes.V1
    return None


def _torchserve_row(row: object) -> bool:
    return isinstance(row, dict) and (
        "body" in row or "data" in row or any(isinstance(v, (bytes, bytearray)) for v in row.values())
    )
