"""Image-quality ground truth: generated flowers with Gaussian noise added inside one square.

Every image is a flower of ``whyserve.data.flowers`` (seed, index) with additive Gaussian
pixel noise of standard deviation ``strength * MAX_SIGMA`` inside one ``REGION`` x ``REGION``
square at a random position (a quarter of the 96 x 96 image), nothing outside it. The label is
the strength in [0, 1]; the square's mask is the ground truth of where the evidence is.

Why noise, not blur or JPEG: noise leaves its trace in every pixel of the square whatever lies
under it, so the mask is exactly where the evidence is. Blur changes nothing on the flat
parts of the clutter, and JPEG works on 8 x 8 blocks that a free square would cut and
leaves flat blocks nearly intact, so part of their "distorted region" would carry no evidence.

Image ``i`` of seed ``s`` depends only on ``(s, i)`` (the flower on its own stream, the
square and the noise on a second one), like the flowers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from whyserve.data.flowers import SIZE, make_flower

MAX_SIGMA = 48.0  # noise standard deviation at strength 1, in 8-bit levels
REGION = SIZE // 2  # side of the noisy square: a quarter of the image
_STREAM = 0x9A11  # keeps the square and the noise apart from the flower's own draws


@dataclass
class Distorted:
    image: np.ndarray  # (H, W, 3) uint8
    strength: float  # the label, in [0, 1]
    mask: np.ndarray  # (H, W) bool: the noisy square

    @property
    def area(self) -> float:
        """The square's share of the image: a map spread at random puts this much energy in it."""
        return float(self.mask.mean())


def make_distorted(seed: int, index: int, strength: float | None = None, low: float = 0.0, high: float = 1.0) -> Distorted:
    """Image ``index`` of ``seed``; the strength is drawn uniformly from [low, high] unless given."""
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError("need 0 <= low <= high <= 1")
    rng = np.random.default_rng([seed, index, _STREAM])
    drawn = float(rng.uniform(low, high))
    strength = drawn if strength is None else float(strength)
    if not 0.0 <= strength <= 1.0:
        raise ValueError("strength must be in [0, 1]")
    top, left = (int(v) for v in rng.integers(0, SIZE - REGION + 1, size=2))
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[top : top + REGION, left : left + REGION] = True
    pixels = make_flower(seed, index).image.astype(np.float64)
    noise = rng.normal(0.0, strength * MAX_SIGMA, size=(REGION, REGION, 3))
    pixels[top : top + REGION, left : left + REGION] += noise
    return Distorted(np.clip(np.round(pixels), 0, 255).astype(np.uint8), strength, mask)


def generate(n: int, seed: int, low: float = 0.0, high: float = 1.0) -> list[Distorted]:
    return [make_distorted(seed, i, low=low, high=high) for i in range(n)]


def as_arrays(items: list[Distorted]) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W, 3) uint8 and strengths (N,) float32."""
    return np.stack([d.image for d in items]), np.array([d.strength for d in items], dtype=np.float32)
