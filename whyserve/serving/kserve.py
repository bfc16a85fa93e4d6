"""The KServe-native runtime: a ``kserve.Model`` over ``ExplainService``, no TorchServe.

``whyserve serve-kserve --model efficientnet_lite0 --http-port 8080`` starts kserve's
ModelServer with it. It answers KServe v1 (``/v1/models/<m>:predict`` and ``:explain``), v2
(``/v2/models/<m>/infer``) through ``whyserve.serving.envelopes`` (the bodies TorchServe's
envelopes give), raw image bytes with ``X-Explain-*`` headers and whyserve's JSON on the v1
routes (whyserve's own response), liveness and readiness at KServe's routes. whyserve's
4xx keep their status (kserve would make them 500). Requests that arrive together go through
the engine as one batch (``whyserve.serving.batcher``): kserve itself does not batch.

Needs the ``kserve`` package (``requirements/kserve.txt``, its own venv: its pins conflict
with requirements/ci.txt's); the rest of whyserve never imports this module.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Mapping

from whyserve.serving import envelopes
from whyserve.serving.batcher import Batcher
from whyserve.serving.service import ExplainService, ServingConfig

_argv, sys.argv = sys.argv, sys.argv[:1]  # kserve.model_server parses sys.argv when imported
try:
    import kserve
    from fastapi.responses import JSONResponse
    from kserve.model_server import app
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
finally:
    sys.argv = _argv


class Answer(Exception):
    """A whole response with a status other than 200: kserve's routes only return 200 bodies."""

    def __init__(self, status: int, body: dict) -> None:
        super().__init__(f"{status}")
        self.status, self.body = status, body


async def _answer_response(_request, answer: Answer) -> JSONResponse:
    return JSONResponse(status_code=answer.status, content=answer.body)


class WhyserveModel(kserve.Model):
    def __init__(self, name: str, config: ServingConfig, max_batch_size: int = 8, max_batch_delay_ms: float = 10) -> None:
        super().__init__(name)
        self.config = config
        self.max_batch_size, self.max_batch_delay_ms = max_batch_size, max_batch_delay_ms
        self.batcher: Batcher | None = None

    def load(self) -> bool:
        service = ExplainService(self.config)
        self.batcher = Batcher(service, self.max_batch_size, self.max_batch_delay_ms / 1000)
        self.ready = True
        return self.ready

    async def predict(self, payload, headers: Mapping[str, str] | None = None):
        return await self._respond(payload, dict(headers or {}), explain=False)

    async def explain(self, payload, headers: Mapping[str, str] | None = None):
        return await self._respond(payload, dict(headers or {}), explain=True)

    async def _respond(self, payload, headers: dict, explain: bool):
        if isinstance(payload, InferRequest):
            return await self._v2(payload)
        if isinstance(payload, Mapping) and "instances" in payload:
            replies = await self.batcher.submit(envelopes.v1_requests(payload))
            return _checked(envelopes.status(replies), envelopes.v1_body(replies, explain))
        # raw bytes (any non-JSON Content-Type) or whyserve's JSON: whyserve's own response
        (reply,) = await self.batcher.submit([({"body": payload}, headers)])
        return _checked(reply.status, reply.body)

    async def _v2(self, request: InferRequest) -> InferResponse:
        inputs = [_input_dict(i) for i in request.inputs]
        (reply,) = await self.batcher.submit([envelopes.v2_request(inputs, _plain(request.parameters))])
        outputs = envelopes.v2_outputs(reply)
        request_id = request.id or str(uuid.uuid4())  # the v2 response needs an id; requests may omit theirs
        if reply.status != 200:
            body = {"id": request_id, "model_name": self.name, "outputs": [o.to_dict() for o in outputs]}
            raise Answer(reply.status, body)
        infer_outputs = [InferOutput(o.name, list(o.shape), o.datatype, o.data) for o in outputs]
        return InferResponse(request_id, self.name, infer_outputs)


def _checked(status: int, body: dict) -> dict:
    if status != 200:
        raise Answer(status, body)
    return body


def _input_dict(tensor) -> dict:
    data = tensor._raw_data if tensor.data is None else tensor.data  # binary extension: raw bytes
    return {
        "name": tensor.name,
        "datatype": tensor.datatype,
        "shape": tensor.shape,
        "data": data,
        "parameters": _plain(tensor.parameters),
    }


def _plain(parameters) -> dict:
    """v2 parameters as plain values (kserve keeps them as pydantic models or protobuf maps)."""
    if not parameters:
        return {}
    if hasattr(parameters, "model_dump"):
        parameters = parameters.model_dump(exclude_none=True)
    return {k: getattr(v, "value", v) for k, v in dict(parameters).items()}


def serve(
    name: str, config: ServingConfig, http_port: int, grpc_port: int | None, batch_size: int, batch_delay_ms: float
) -> None:
    """Load the model (readiness follows), then run kserve's ModelServer until stopped."""
    model = WhyserveModel(name, config, batch_size, batch_delay_ms)
    model.load()
    app.add_exception_handler(Answer, _answer_response)
    server = kserve.ModelServer(http_port=http_port, grpc_port=grpc_port or 0, enable_grpc=grpc_port is not None, workers=1)
    server.start([model])
