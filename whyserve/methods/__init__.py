"""The explanation methods, by the name a request uses."""

from whyserve.methods.base import Explanation, GradientMethod
from whyserve.methods.contrastive import Contrastive
from whyserve.methods.gradcam import GradCAM

# Score-CAM is not a GradientMethod: the engine calls whyserve.methods.scorecam for it.
GRADIENT_METHODS: dict[str, GradientMethod] = {m.name: m for m in (GradCAM(), Contrastive())}
METHODS: tuple[str, ...] = ("gradcam", "contrastive", "scorecam")

__all__ = ["Explanation", "GRADIENT_METHODS", "GradientMethod", "METHODS"]
