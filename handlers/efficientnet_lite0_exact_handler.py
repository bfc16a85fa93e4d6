"""TorchServe handler of the efficientnet_lite0_exact archive (settings: archives/efficientnet_lite0_exact/model-config.yaml)."""

from whyserve.serving.torchserve import TorchServeHandler


class EfficientNetLite0ExactHandler(TorchServeHandler):
    model = "efficientnet_lite0"
