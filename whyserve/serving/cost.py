"""What an explanation costs, and a per-model budget that keeps slow methods out of a worker
that also answers fast requests (README, "Cost control").

Cost is counted in forward-equivalents (one forward pass of one image; ``Explainer.cost`` from
each method's own estimate in the registry) and turned into seconds
with the per-image forward time measured when the model loads. A request whose estimate is over
the model's ``explain_budget_s`` is refused with a 422 that names the cheaper option (Score-CAM
with fewer channels) or the archive that serves exact methods with its own worker.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from whyserve.engine import Explainer
from whyserve.methods import ResolvedRequest
from whyserve.serving.errors import ServingError

logger = logging.getLogger(__name__)

TIMEOUT_SHARE = 0.8  # of responseTimeout that a full batch of the slowest accepted requests may take


@dataclass(frozen=True)
class Calibration:
    forward_s: float  # seconds per image per forward pass, measured in batches like Score-CAM's


def calibrate(explainer: Explainer, chunk: int, repeats: int = 3) -> Calibration:
    """Times the model's forward pass on batches like Score-CAM's masked ones (``chunk``
    images, at most 8 to keep loading quick): the fastest of ``repeats`` after one warm-up,
    since other processes only ever add time."""
    images = torch.zeros(min(chunk, 8), 3, *explainer.spec.input_size, device=explainer.device)
    times = []
    with explainer.backend.running():  # the backend's own pass, the one Score-CAM repeats
        for _ in range(repeats + 1):
            start = time.perf_counter()
            explainer.backend.masked_forward(images)
            times.append(time.perf_counter() - start)
    calibration = Calibration(min(times[1:]) / len(images))
    logger.info("whyserve: %.2f ms per image forward", calibration.forward_s * 1e3)
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
        self.calibration = Calibration(0.8 * self.calibration.forward_s + 0.2 * forward_s)

    def check(self, request: ResolvedRequest, forwards: float) -> None:
        """422 when ``request`` (``forwards`` forward passes) is estimated over the budget."""
        if self.seconds is None:
            return
        estimate = forwards * self.calibration.forward_s
        if estimate <= self.seconds:
            return
        channels = getattr(request.options, "channels", False)
        what = f"method {request.method.name}" + ("" if channels is False else f" with channels {channels or 'all'}")
        valid = self.cheaper(channels is not False)
        raise ServingError(
            422,
            f"{what} is estimated at {forwards:,.0f} forward passes = {estimate:.1f} s here; this model's explanation budget is"
            f" {self.seconds:g} s per request (about {self.seconds / self.calibration.forward_s:,.0f} forward passes)",
            valid,
            "over_budget",
        )

    def cheaper(self, has_channels: bool) -> list[str]:
        options = []
        if has_channels:
            # N channels cost N + 2 passes: the shared forward, and the target ranking's pass with a graph
            affordable = int(self.seconds / self.calibration.forward_s) - 2
            if affordable >= 1:
                options.append(f"channels: {_round_down(affordable)} (fast Score-CAM)")
        if self.heavy_model:
            options.append(f"the model {self.heavy_model} (its own worker and timeout for exact methods)")
        return options or ["method gradcam"]

    def worst_s(self, forwards: list[float]) -> float:
        """The slowest request this worker can accept: the budget, or the costliest of ``forwards``."""
        costliest = max(forwards) * self.calibration.forward_s
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


def check_timeout(budget: Budget, forwards: list[float], server: ServerLimits) -> None:
    """Fails the load (ValueError) when a full batch of the slowest accepted requests could
    outlast TorchServe's ``responseTimeout``: TorchServe would then kill the worker and every
    request of the batch would get 500 "Worker died". A fifth of the timeout is kept as margin
    (the estimate is an upper bound: exact Score-CAM scores identical masks once)."""
    response_timeout_s, batch_size = server.response_timeout_s, server.batch_size
    if response_timeout_s is None or not forwards:
        return
    worst = budget.worst_s(forwards) * batch_size
    if worst > response_timeout_s * TIMEOUT_SHARE:
        raise ValueError(
            f"a batch of {batch_size} of the slowest requests this model accepts is estimated at {worst:.0f} s"
            f" ({budget.calibration.forward_s * 1e3:.1f} ms per forward here), over {TIMEOUT_SHARE:.0%} of its responseTimeout"
            f" of {response_timeout_s:g} s: set handler.explain_budget_s <="
            f" {response_timeout_s * TIMEOUT_SHARE / batch_size:.1f},"
            " a smaller batchSize or a longer responseTimeout"
        )
