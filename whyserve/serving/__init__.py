"""The serving layer: the HTTP protocol (framework-neutral) and the adapters that use it.

``protocol``: parse, validate, build responses (``bodies``: bounded JSON/base64/integers;
``images``: safe decoding); ``cost``: explanation budget and load-time limit checks;
``service``: a batch of requests in, one reply each out; ``torchserve``: the base of the
TorchServe handlers (duck-typed, no TorchServe import); ``launcher``: start/stop a TorchServe and wait until models are READY.
"""

from whyserve.serving.protocol import (
    RequestDefaults,
    ServeOptions,
    ServingError,
    build_response,
    decode_image,
    parse_options,
    parse_payload,
)
from whyserve.serving.service import ExplainService, Reply, ServingConfig

__all__ = [
    "ExplainService",
    "Reply",
    "RequestDefaults",
    "ServeOptions",
    "ServingConfig",
    "ServingError",
    "build_response",
    "decode_image",
    "parse_options",
    "parse_payload",
]
