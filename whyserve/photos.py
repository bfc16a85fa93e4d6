"""Real photos that ship inside installed wheels (no network): for tests and demos."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_PHOTOS = {
    "chelsea": ("skimage", "data/chelsea.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "motorcycle": ("skimage", "data/motorcycle_left.png"),
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
}


def photo_path(name: str) -> Path:
    """Path of a bundled photo; raises ``FileNotFoundError`` naming the package to install."""
    if name not in _PHOTOS:
        raise KeyError(f"unknown photo {name!r}; known: {sorted(_PHOTOS)}")
    package, relative = _PHOTOS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"photo {name!r} ships with the {package!r} package, which is not installed")
    return Path(spec.origin).parent / relative


def available_photos() -> list[str]:
    return sorted(_PHOTOS)
