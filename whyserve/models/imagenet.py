"""ImageNet-1k class names and the standard crop, shared by ImageNet models."""

from __future__ import annotations

from torchvision.models._meta import _IMAGENET_CATEGORIES
from torchvision.transforms import v2

IMAGENET_CLASSES: tuple[str, ...] = tuple(_IMAGENET_CATEGORIES)


def resize_crop(resize: int, crop: int, interpolation: v2.InterpolationMode) -> v2.Compose:
    """Shorter side to ``resize``, then a centred ``crop`` square (PIL in, PIL out)."""
    return v2.Compose([v2.Resize(resize, interpolation=interpolation), v2.CenterCrop(crop)])
