"""Model registry: every servable model is a ``ModelSpec`` built by a named factory (the
factories live in this package's modules and register themselves when first needed)."""

from __future__ import annotations

from pathlib import Path

from whyserve.errors import InvalidOption
from whyserve.models.spec import FACTORIES, WEIGHT_FILES, ModelFactory, ModelSpec, load_state_dict_file, register

__all__ = ["ModelFactory", "ModelSpec", "available_models", "load_model", "load_state_dict_file", "register", "weights_file"]


def weights_file(name: str) -> Path | None:
    """The weights file a serving archive of model ``name`` must carry (None: none needed)."""
    _import_builtin()
    return WEIGHT_FILES[name]() if name in WEIGHT_FILES else None


def available_models() -> list[str]:
    _import_builtin()
    return sorted(FACTORIES)


def load_model(name: str, weights: str | Path | None = None) -> ModelSpec:
    """Build a registered model in eval mode; ``weights`` is an optional state-dict file."""
    _import_builtin()
    if name not in FACTORIES:
        raise InvalidOption("model", f"unknown model {name!r}", sorted(FACTORIES))
    spec = FACTORIES[name](weights=weights)
    spec.module.eval()
    return spec


def _import_builtin() -> None:
    # Imported lazily so that registering stays cheap and free of import cycles.
    from whyserve.models import efficientnet_lite, flowers, quality, torchvision_models  # noqa: F401
