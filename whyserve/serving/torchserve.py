"""The base of the TorchServe handler in ``handlers/whyserve_handler.py``.

TorchServe only needs a class with ``initialize(context)`` and ``handle(data, context)``, so
this base does not subclass ``ts.torch_handler.base_handler.BaseHandler`` and never imports
TorchServe: the context is used through the attributes TorchServe 0.12 gives it. (The base
handler would also run inference under ``torch.inference_mode()``, which gradient methods
must leave anyway.)

Settings come from the ``handler`` section of the archive's model-config.yaml (see
``ServingConfig``); weights from the archive's serialized file when it has one.
"""

from __future__ import annotations

import logging
import os
from http import HTTPStatus

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
        settings.setdefault("model", self.model)
        if not settings["model"]:
            raise ValueError("model-config.yaml has no handler.model: name the whyserve model to serve")
        model_dir = context.system_properties.get("model_dir") or "."
        if settings.get("vebi_relevance"):  # carried in the archive (--extra-files)
            settings["vebi_relevance"] = os.path.join(model_dir, settings["vebi_relevance"])
        if settings.get("weights"):
            settings["weights"] = os.path.join(model_dir, settings["weights"])
        else:
            serialized = ((getattr(context, "manifest", None) or {}).get("model") or {}).get("serializedFile")
            if serialized:
                settings["weights"] = os.path.join(model_dir, serialized)
        self.service = ExplainService(ServingConfig.from_dict(settings))
        logger.info(
            "whyserve: model %s, layer %s, methods %s, default %s",
            settings["model"],
            self.service.explainer.layer_name,
            self.service.methods,
            self.service.config.default_method,
        )
        if self.service.spec.vebi_relevance is not None:
            logger.info("whyserve: VEBI relevance file %s", self.service.spec.vebi_relevance)
        self.initialized = True

    def handle(self, data, context) -> list[str]:
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
            self._metrics(context, index, reply)
        return [reply.body for reply in replies]

    @staticmethod
    def _metrics(context, index: int, reply: Reply) -> None:
        metrics = getattr(context, "metrics", None)
        if metrics is None:
            return
        try:
            if reply.explain_ms is not None:
                metrics.add_time(
                    "ExplanationLatency", round(reply.explain_ms, 2), index, "ms", [_Dimension("Method", reply.method)]
                )
            if reply.error_kind is not None:
                metrics.add_counter("ExplanationErrors", 1, index, [_Dimension("Kind", reply.error_kind)])
        except Exception:  # noqa: BLE001 - metrics never fail a request
            logger.warning("could not record metrics", exc_info=True)
