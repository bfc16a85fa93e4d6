"""Synthetic flowers with pixel-exact ground truth for explanations (after an8Flower,
Oramas et al., ICLR 2019).

Every image shows one flower on a cluttered background. A flower has four parts: petals,
a centre disk, a stem and two leaves. The class is set by the colours of three of them,
each in one of two colours (2 x 2 x 2 = 8 classes)::

    class = 4 * petals + 2 * centre + leaves      (each bit picks one of two colours)

Everything else varies at random and carries no class information: position, scale,
rotation, petal count, leaf placement, the stem colour, and the background (low-saturation
clutter: ellipses, rectangles and lines in random greys and pastels). The class colours
get a small per-image jitter. Parts are drawn without anti-aliasing, stem, leaves, petals,
centre (later parts cover earlier ones), and the same polygons paint a label map, so every
part's mask holds exactly the visible pixels of that part. A light pixel noise
(``NOISE``) is added to the whole image afterwards.

Image ``i`` of seed ``s`` depends only on ``(s, i)``: ``generate(n, seed)`` is
deterministic and its first images do not change with ``n``.

Two classes that differ in exactly one part give the ground truth of "why P, rather than
Q?": that part's mask (``contrast_mask``).
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SIZE = 96
PARTS = ("petals", "centre", "stem", "leaves")
CLASS_PARTS = ("petals", "centre", "leaves")  # bit 2, bit 1, bit 0 of the class index
COLOURS: dict[str, tuple[tuple[str, tuple[int, int, int]], ...]] = {
    "petals": (("red", (215, 35, 40)), ("blue", (45, 75, 215))),
    "centre": (("yellow", (245, 210, 30)), ("purple", (125, 35, 150))),
    "leaves": (("green", (40, 150, 45)), ("orange", (235, 125, 25))),
}
JITTER = 12  # +- per channel on the class colours, per image
NOISE = 6  # +- uniform pixel noise over the whole image
_LABELS = {"background": 0, "petals": 1, "centre": 2, "stem": 3, "leaves": 4}
NUM_CLASSES = 8


def class_bits(label: int) -> dict[str, int]:
    """{part: 0 or 1} of a class index."""
    return {part: (label >> (2 - k)) & 1 for k, part in enumerate(CLASS_PARTS)}


def class_name(label: int) -> str:
    bits = class_bits(label)
    return ", ".join(f"{COLOURS[part][bits[part]][0]} {part}" for part in CLASS_PARTS)


CLASS_NAMES: tuple[str, ...] = tuple(class_name(c) for c in range(NUM_CLASSES))


def differing_part(p: int, q: int) -> str | None:
    """The one part whose colour tells class ``p`` from ``q``; None unless exactly one differs."""
    a, b = class_bits(p), class_bits(q)
    differ = [part for part in CLASS_PARTS if a[part] != b[part]]
    return differ[0] if len(differ) == 1 else None


def one_part_contrasts(label: int) -> list[int]:
    """The three classes that differ from ``label`` in exactly one part."""
    return [label ^ (1 << (2 - k)) for k in range(len(CLASS_PARTS))]


@dataclass
class Flower:
    image: np.ndarray  # (H, W, 3) uint8
    label: int
    masks: dict[str, np.ndarray]  # part -> (H, W) bool: the part's visible pixels
    colours: dict[str, tuple[int, int, int]]  # the flat colour each part was drawn in (before noise)
    evidence_parts: tuple[str, ...] = CLASS_PARTS  # the parts whose colour sets the class

    @property
    def flower_mask(self) -> np.ndarray:
        return np.logical_or.reduce([self.masks[p] for p in PARTS])

    @property
    def evidence_mask(self) -> np.ndarray:
        """Pixels of the class-defining parts (petals, centre, leaves; single-part flowers: one part)."""
        return np.logical_or.reduce([self.masks[p] for p in self.evidence_parts])

    def contrast_mask(self, q: int) -> np.ndarray:
        """Ground truth of "why this class, rather than q?" for a q differing in one part."""
        part = differing_part(self.label, q)
        if part is None:
            raise ValueError(f"classes {self.label} and {q} do not differ in exactly one part")
        return self.masks[part]


def make_flower(seed: int, index: int, label: int | None = None, size: int = SIZE) -> Flower:
    """Image ``index`` of ``seed``; its class is drawn from the same generator unless given."""
    rng = np.random.default_rng([seed, index])
    label, image = _background(rng, NUM_CLASSES, label, size)
    bits = class_bits(label)
    colours = {part: _jitter(COLOURS[part][bits[part]][1], rng) for part in CLASS_PARTS}
    colours["stem"] = _stem_colour(rng)
    return _finish(rng, image, colours, label, CLASS_PARTS, size)


def _background(rng: np.random.Generator, classes: int, label: int | None, size: int) -> tuple[int, Image.Image]:
    """The class (drawn from ``rng`` first, even when given) and the cluttered background."""
    drawn_label = int(rng.integers(classes))
    label = drawn_label if label is None else int(label)
    if not 0 <= label < classes:
        raise ValueError(f"label must be in 0..{classes - 1}")
    image = Image.new("RGB", (size, size), _pastel(rng))
    _clutter(ImageDraw.Draw(image), rng, size)
    return label, image


def _finish(
    rng: np.random.Generator, image: Image.Image, colours: dict, label: int, evidence: tuple[str, ...], size: int
) -> Flower:
    """Draw the flower's parts in ``colours`` on ``image`` (its background), add the noise."""
    s = size / SIZE
    labels = Image.new("L", (size, size), 0)
    paint, mark = ImageDraw.Draw(image), ImageDraw.Draw(labels)

    radius = rng.uniform(13, 20) * s  # flower head
    turn = rng.uniform(-0.6, 0.6)  # rotation of the whole flower (radians), about the head
    stem_len = rng.uniform(2.0, 2.6) * radius
    # Keep the head and most of the stem in frame.
    cx = rng.uniform(radius + 4 * s, size - radius - 4 * s)
    cy = rng.uniform(radius + 4 * s, max(radius + 4 * s, size - 0.55 * stem_len - 4 * s))
    down = np.array([math.sin(-turn), math.cos(turn)])  # stem direction (image y grows down)
    side = np.array([down[1], -down[0]])
    head = np.array([cx, cy])

    def polygon(points: list[tuple[float, float]], part: str) -> None:
        paint.polygon(points, fill=colours[part])
        mark.polygon(points, fill=_LABELS[part])

    # stem: a thick quadrilateral from the head down
    width = rng.uniform(1.6, 2.6) * s
    foot = head + down * stem_len
    polygon(
        [tuple(head + side * width), tuple(foot + side * width), tuple(foot - side * width), tuple(head - side * width)], "stem"
    )
    _leaves_and_petals(polygon, rng, head, down, side, stem_len, radius, s)
    # centre disk
    polygon(_ellipse(head, radius * rng.uniform(0.32, 0.42), None, 0.0), "centre")

    pixels = np.asarray(image, dtype=np.int16)
    pixels = pixels + rng.integers(-NOISE, NOISE + 1, size=pixels.shape, dtype=np.int16)
    label_map = np.asarray(labels)
    masks = {part: label_map == _LABELS[part] for part in PARTS}
    return Flower(np.clip(pixels, 0, 255).astype(np.uint8), label, masks, colours, evidence)


def _leaves_and_petals(polygon, rng, head, down, side, stem_len: float, radius: float, s: float) -> None:
    """Two leaves on the stem, then the petals around the head (in this order: the draws of
    ``rng`` must stay the same for the shipped models' data to stay the same)."""
    # leaves: two ellipses on opposite sides of the stem, pointing outwards and up
    leaf_len = rng.uniform(0.75, 1.0) * radius
    for sign, where in ((1, rng.uniform(0.45, 0.7)), (-1, rng.uniform(0.55, 0.85))):
        base = head + down * stem_len * where
        angle = math.atan2(side[1] * sign, side[0] * sign) - sign * rng.uniform(0.3, 0.7)
        centre = base + np.array([math.cos(angle), math.sin(angle)]) * leaf_len
        polygon(_ellipse(centre, leaf_len, leaf_len * rng.uniform(0.35, 0.5), angle), "leaves")
    # petals: n ellipses around the head
    count = int(rng.integers(5, 10))
    phase = rng.uniform(0, 2 * math.pi)
    petal_len = radius * rng.uniform(0.5, 0.6)
    petal_wid = min(petal_len * rng.uniform(0.45, 0.6), 0.9 * math.pi * radius / count + 2 * s)
    for k in range(count):
        angle = phase + 2 * math.pi * k / count
        centre = head + np.array([math.cos(angle), math.sin(angle)]) * (radius - petal_len)
        polygon(_ellipse(centre, petal_len, petal_wid, angle), "petals")


def generate(n: int, seed: int, labels: list[int] | None = None, size: int = SIZE) -> list[Flower]:
    """``n`` flowers of ``seed``; ``labels`` fixes the classes (else drawn per image)."""
    return [make_flower(seed, i, None if labels is None else labels[i], size) for i in range(n)]


def balanced_labels(n: int, classes: int = NUM_CLASSES) -> list[int]:
    return [i % classes for i in range(n)]


def as_arrays(flowers: list[Flower]) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W, 3) uint8 and labels (N,) int64."""
    return np.stack([f.image for f in flowers]), np.array([f.label for f in flowers], dtype=np.int64)


# -- the single-part variant (after an8Flower-single, Oramas et al. 2019) ---------------
# Six classes, each the colour of exactly one part: red or blue petals, yellow or purple
# centre, green or orange leaves. The two other class parts take a neutral colour that no
# class uses, so every class has exactly one discriminative part (``Flower.evidence_mask``).

SINGLE_CLASSES: tuple[tuple[str, int], ...] = tuple((part, k) for part in CLASS_PARTS for k in range(2))
SINGLE_CLASS_NAMES: tuple[str, ...] = tuple(f"{COLOURS[part][k][0]} {part}" for part, k in SINGLE_CLASSES)
SINGLE_NUM_CLASSES = len(SINGLE_CLASSES)
NEUTRAL: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("white", (235, 235, 230)),
    ("pink", (240, 150, 190)),
    ("cyan", (60, 200, 210)),
    ("brown", (125, 85, 50)),
)


def make_single_part_flower(seed: int, index: int, label: int | None = None, size: int = SIZE) -> Flower:
    """Single-part flower ``index`` of ``seed`` (its own random stream, not ``make_flower``'s)."""
    rng = np.random.default_rng([seed, index, 1])
    label, image = _background(rng, SINGLE_NUM_CLASSES, label, size)
    part, k = SINGLE_CLASSES[label]
    colours = {p: _jitter(NEUTRAL[int(rng.integers(len(NEUTRAL)))][1], rng) for p in CLASS_PARTS}
    colours[part] = _jitter(COLOURS[part][k][1], rng)
    colours["stem"] = _stem_colour(rng)
    return _finish(rng, image, colours, label, (part,), size)


def generate_single_part(n: int, seed: int, labels: list[int] | None = None, size: int = SIZE) -> list[Flower]:
    return [make_single_part_flower(seed, i, None if labels is None else labels[i], size) for i in range(n)]


@dataclass
class Grid:
    """A 2x2 grid of flowers (the B-cos grid pointing game): four different classes
    (``make_grid``), or one class and three of its complement (``make_fair_grid``)."""

    image: np.ndarray  # (2H, 2W, 3) uint8
    labels: tuple[int, int, int, int]  # row-major: top-left, top-right, bottom-left, bottom-right

    def cell_mask(self, cell: int) -> np.ndarray:
        h, w = self.image.shape[0] // 2, self.image.shape[1] // 2
        mask = np.zeros(self.image.shape[:2], dtype=bool)
        r, c = divmod(cell, 2)
        mask[r * h : (r + 1) * h, c * w : (c + 1) * w] = True
        return mask


def make_grid(seed: int, index: int, size: int = SIZE) -> Grid:
    """Grid ``index`` of ``seed``: four flowers of four distinct classes, each at full size."""
    rng = np.random.default_rng([seed, index, 2])
    labels = tuple(int(c) for c in rng.choice(NUM_CLASSES, size=4, replace=False))
    cells = [make_flower(seed, 4 * index + k, labels[k], size).image for k in range(4)]
    image = np.concatenate([np.concatenate(cells[:2], 1), np.concatenate(cells[2:], 1)], 0)
    return Grid(image, labels)


def make_fair_grid(seed: int, index: int, size: int = SIZE) -> tuple[Grid, int]:
    """Fair grid ``index`` of ``seed`` and its target cell: class c = index mod 8 in a cell drawn
    at random, the three other cells hold flowers of class 7 - c, the only class that shares
    no class-defining part colour with c (every bit differs). Evidence for c in another cell
    is then evidence the model invented, not a colour the classes share."""
    rng = np.random.default_rng([seed, index, 3])
    target, cell = index % NUM_CLASSES, int(rng.integers(4))
    labels = tuple(target if k == cell else NUM_CLASSES - 1 - target for k in range(4))
    cells = [make_flower(seed, 4 * index + k, labels[k], size).image for k in range(4)]
    image = np.concatenate([np.concatenate(cells[:2], 1), np.concatenate(cells[2:], 1)], 0)
    return Grid(image, labels), cell  # type: ignore[arg-type]


# -- drawing helpers -------------------------------------------------------------------


def _ellipse(centre: np.ndarray, a: float, b: float | None, angle: float, points: int = 28) -> list[tuple[float, float]]:
    b = a if b is None else b
    t = np.linspace(0, 2 * math.pi, points, endpoint=False)
    x, y = a * np.cos(t), b * np.sin(t)
    ca, sa = math.cos(angle), math.sin(angle)
    return [(float(centre[0] + ca * u - sa * v), float(centre[1] + sa * u + ca * v)) for u, v in zip(x, y)]


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return round(r * 255), round(g * 255), round(b * 255)


def _pastel(rng: np.random.Generator) -> tuple[int, int, int]:
    return _hsv(rng.uniform(), rng.uniform(0.0, 0.3), rng.uniform(0.35, 0.95))


def _stem_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    # browns, olives and greys: the stem's colour carries no class information
    return _hsv(rng.uniform(0.05, 0.2), rng.uniform(0.1, 0.45), rng.uniform(0.25, 0.6))


def _jitter(colour: tuple[int, int, int], rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-JITTER, JITTER + 1), 0, 255)) for c in colour)  # type: ignore[return-value]


def _clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int) -> None:
    for _ in range(int(rng.integers(12, 22))):
        colour = _pastel(rng)
        x, y = rng.uniform(-10, size + 10, 2)
        w, h = rng.uniform(4, 30, 2) * size / SIZE
        kind = rng.integers(3)
        if kind == 0:
            draw.ellipse([x - w, y - h, x + w, y + h], fill=colour)
        elif kind == 1:
            draw.rectangle([x - w, y - h, x + w, y + h], fill=colour)
        else:
            x2, y2 = rng.uniform(-10, size + 10, 2)
            draw.line([x, y, x2, y2], fill=colour, width=int(rng.integers(1, 5)))
