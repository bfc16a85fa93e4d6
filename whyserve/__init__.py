"""whyserve: an image model's prediction and its visual explanation, from one forward pass."""

from whyserve.engine import BatchResult, Explainer, ExplainRequest
from whyserve.errors import InvalidOption
from whyserve.methods import METHODS, Explanation, Method, ResolvedRequest, register
from whyserve.models import ModelSpec, available_models, load_model

__all__ = [
    "BatchResult",
    "ExplainRequest",
    "Explainer",
    "Explanation",
    "InvalidOption",
    "METHODS",
    "Method",
    "ModelSpec",
    "ResolvedRequest",
    "available_models",
    "load_model",
    "register",
]
