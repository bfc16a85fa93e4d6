"""whyserve: an image model's prediction and its visual explanation, from one forward pass."""

from __future__ import annotations

import importlib

# Imported on first use, so that light commands (``whyserve healthcheck``, an exec probe that
# must answer within seconds) do not pay for importing torch.
_EXPORTS = {
    "BatchResult": "whyserve.engine",
    "ExplainRequest": "whyserve.engine",
    "Explainer": "whyserve.engine",
    "InvalidOption": "whyserve.errors",
    "Explanation": "whyserve.methods",
    "Method": "whyserve.methods",
    "ResolvedRequest": "whyserve.methods",
    "register": "whyserve.methods",
    "ModelSpec": "whyserve.models",
    "available_models": "whyserve.models",
    "load_model": "whyserve.models",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'whyserve' has no attribute {name!r}")
