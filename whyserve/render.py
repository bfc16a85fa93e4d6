"""Turning heatmaps into images: PNG for machines, a colour overlay with a legend for people."""

from __future__ import annotations

import io

import matplotlib
import numpy as np
from PIL import Image, ImageDraw

COLORMAP = "jet"


def heatmap_image(heatmap: np.ndarray) -> Image.Image:
    """8-bit greyscale image of a [0, 1] heatmap (the lossless wire format)."""
    return Image.fromarray(np.round(np.clip(heatmap, 0.0, 1.0) * 255.0).astype(np.uint8), mode="L")


def encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) of a [0, 1] heatmap in the colormap."""
    rgba = matplotlib.colormaps[COLORMAP](np.clip(heatmap, 0.0, 1.0))
    return (rgba[..., :3] * 255.0).astype(np.uint8)


def overlay(view: Image.Image, heatmap: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """The heatmap in colour blended over the pixels the model saw (same size)."""
    colored = Image.fromarray(colorize(heatmap)).resize(view.size, Image.BILINEAR)
    return Image.blend(view.convert("RGB"), colored, alpha)


def with_colorbar(image: Image.Image, caption: str = "") -> Image.Image:
    """The image with a vertical colour bar (high = more evidence) and a caption below."""
    width, height = image.size
    bar_w, margin, text_h = max(12, width // 20), 6, 16
    canvas = Image.new("RGB", (width + bar_w + 3 * margin + 30, height + text_h + margin), "white")
    canvas.paste(image, (0, 0))
    ramp = np.linspace(1.0, 0.0, height)[:, None].repeat(bar_w, axis=1)
    canvas.paste(Image.fromarray(colorize(ramp)), (width + margin, 0))
    draw = ImageDraw.Draw(canvas)
    x_text = width + bar_w + 2 * margin
    draw.text((x_text, 0), "high", fill="black")
    draw.text((x_text, height - 12), "low", fill="black")
    draw.text((2, height + 2), caption, fill="black")
    return canvas
