"""The explanation methods, by the name a request uses."""

from whyserve.methods.base import Explanation, GradientMethod
from whyserve.methods.contrastive import Contrastive
from whyserve.methods.gradcam import GradCAM

# Score-CAM and B-cos are not GradientMethods: the engine calls whyserve.methods.scorecam
# and whyserve.methods.bcos (B-cos models only: ModelSpec.methods says which model has it).
GRADIENT_METHODS: dict[str, GradientMethod] = {m.name: m for m in (GradCAM(), Contrastive())}
METHODS: tuple[str, ...] = ("gradcam", "contrastive", "scorecam", "bcos")
CONTRAST_METHODS: tuple[str, ...] = ("contrastive", "bcos")  # the methods that take a contrast

__all__ = ["CONTRAST_METHODS", "Explanation", "GRADIENT_METHODS", "GradientMethod", "METHODS"]
