"""TorchServe handler of the efficientnet_lite0 archive (settings: archives/efficientnet_lite0/model-config.yaml)."""

from whyserve.serving.torchserve import TorchServeHandler


class EfficientNetLite0Handler(TorchServeHandler):
    model = "efficientnet_lite0"
