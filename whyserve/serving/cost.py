"""What an explanation costs, and a per-model budget that keeps slow methods out of a worker
that also answers fast requests (README, "Cost control").

Cost is counted in forward-equivalents (one forward pass of one image) and turned into seconds
with the per-image forward time measured when the model loads. A request whose estimate is over
the model's ``explain_budget_s`` is refused with a 422 that names the cheaper option (Score-CAM
with fewer channels) or the archive that serves exact methods with its own worker.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from whyserve.engine import ExplainRequest, Explainer
from whyserve.serving.errors import ServingError

logger = logging.getLogger(__name__)

TIMEOUT_SHARE = 0.8  # of responseTimeout that a full batch of the slowest accepted requests may take
GRADIENT_FORWARDS = 3.0  # one forward and one backward pass (a backward costs about two forwards)


def forward_equivalents(request: ExplainRequest | None, layer_channels: int) -> float:
    """Estimated forward passes of one request (prediction included). Local until the method
    registry gives each method its own estimate."""
    if request is None:
        return 1.0
    if request.method == "scorecam":
        channels = layer_channels if request.channels is None else min(request.channels, layer_channels)
        return 1.0 + channels  # one masked forward per channel
    return GRADIENT_FORWARDS


@dataclass(frozen=True)
class Calibration:
    forward_s: float  # seconds per image per forward pass, measured in batches of ``chunk``
    layer_channels: int  # channels of the target layer (exact Score-CAM masks every one)


def calibrate(explainer: Explainer, chunk: int, repeats: int = 3) -> Calibration:
    """Times the model's forward pass on batches like Score-CAM's masked ones (``chunk``
    images, at most 8 to keep loading quick): the fastest of ``repeats`` after one warm-up,
    since other processes only ever add time."""
    height, width = explainer.spec.input_size
    images = torch.zeros(min(chunk, 8), 3, height, width)
    with explainer._running():  # the backend's own pass, the one Score-CAM repeats
        _, activations = explainer._forward(images[:1], graph=False)
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            explainer._masked_forward(images)
            times.append(time.perf_counter() - start)
    calibration = Calibration(min(times[1:]) / len(images), int(activations.shape[1]))
    logger.info("whyserve: %.2f ms per image forward, %d layer channels", calibration.forward_s * 1e3, calibration.layer_channels)
    return calibration


@dataclass
class Budget:
    """``seconds`` per request (None: no budget); ``heavy_model``: where exact methods are served."""

    seconds: float | None
    calibration: Calibration
    heavy_model: str | None = None

    def observe(self, forward_s: float) -> None:
        """Follows the forward time measured on live batches (moving average, weight 0.2): the
        load-time figure is taken while other workers load, often several times too slow."""
        blended = 0.8 * self.calibration.forward_s + 0.2 * forward_s
        self.calibration = Calibration(blended, self.calibration.layer_channels)

    def estimate_s(self, request: ExplainRequest | None) -> float:
        return forward_equivalents(request, self.calibration.layer_channels) * self.calibration.forward_s

    def check(self, request: ExplainRequest | None) -> None:
        if self.seconds is None or request is None:
            return
        estimate = self.estimate_s(request)
        if estimate <= self.seconds:
            return
        forwards = forward_equivalents(request, self.calibration.layer_channels)
        what = f"method {request.method}" + (f" with channels {request.channels or 'all'}" if request.method == "scorecam" else "")
        valid = self.cheaper(request)
        raise ServingError(
            422,
            f"{what} is estimated at {forwards:,.0f} forward passes = {estimate:.1f} s here; this model's explanation budget is"
            f" {self.seconds:g} s per request (about {self.seconds / self.calibration.forward_s:,.0f} forward passes)",
            valid,
            "over_budget",
        )

    def cheaper(self, request: ExplainRequest) -> list[str]:
        options = []
        if request.method == "scorecam":
            affordable = int(self.seconds / self.calibration.forward_s) - 1
            if affordable >= 1:
                options.append(f"channels: {_round_down(affordable)} (fast Score-CAM)")
        if self.heavy_model:
            options.append(f"the model {self.heavy_model} (its own worker and timeout for exact methods)")
        return options or ["method gradcam"]

    def worst_s(self, requests: list[ExplainRequest]) -> float:
        """The slowest request this worker can accept: the budget, or the costliest of ``requests``."""
        costliest = max(self.estimate_s(request) for request in requests)
        return costliest if self.seconds is None else min(costliest, self.seconds)


def _round_down(channels: int) -> int:
    """A round number to suggest: 64 rather than 291."""
    for step in (512, 256, 128, 64, 32, 16, 8, 4, 2, 1):
        if channels >= step:
            return step
    return 1


@dataclass(frozen=True)
class ServerLimits:
    """The serving framework's own limits, which the model's settings must fit in."""

    batch_size: int = 1
    response_timeout_s: float | None = None  # TorchServe's responseTimeout
    max_response_size: int | None = None  # TorchServe's max_response_size (bytes)


def check_response_size(max_response_bytes: int, server: ServerLimits) -> None:
    """A response over TorchServe's max_response_size kills the worker (500 "Worker died" for the
    whole batch); the handler's own limit must be below it so the client gets a 413 instead."""
    if server.max_response_size is not None and max_response_bytes >= server.max_response_size:
        raise ValueError(
            f"handler.max_response_bytes ({max_response_bytes:,}) must be below TorchServe's max_response_size"
            f" ({server.max_response_size:,}), or an oversized response kills the worker"
        )


def check_timeout(budget: Budget, methods: list[ExplainRequest], server: ServerLimits) -> None:
    """Fails the load (ValueError) when a full batch of the slowest accepted requests could
    outlast TorchServe's ``responseTimeout``: TorchServe would then kill the worker and every
    request of the batch would get 500 "Worker died". A fifth of the timeout is kept as margin
    (the estimate is an upper bound: exact Score-CAM scores identical masks once)."""
    response_timeout_s, batch_size = server.response_timeout_s, server.batch_size
    if response_timeout_s is None or not methods:
        return
    worst = budget.worst_s(methods) * batch_size
    if worst > response_timeout_s * TIMEOUT_SHARE:
        raise ValueError(
            f"a batch of {batch_size} of the slowest requests this model accepts is estimated at {worst:.0f} s"
            f" ({budget.calibration.forward_s * 1e3:.1f} ms per forward here), over {TIMEOUT_SHARE:.0%} of its responseTimeout"
            f" of {response_timeout_s:g} s: set handler.explain_budget_s <= {response_timeout_s * TIMEOUT_SHARE / batch_size:.1f},"
            " a smaller batchSize or a longer responseTimeout"
        )
