"""TorchServe handler of the efficientnet_lite0_onnx archive (settings: archives/efficientnet_lite0_onnx/model-config.yaml)."""

from whyserve.serving.torchserve import TorchServeHandler


class EfficientNetLite0OnnxHandler(TorchServeHandler):
    model = "efficientnet_lite0"
