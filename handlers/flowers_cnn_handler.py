"""TorchServe handler of the flowers_cnn archive (settings: archives/flowers_cnn/model-config.yaml)."""

from whyserve.serving.torchserve import TorchServeHandler


class FlowersCnnHandler(TorchServeHandler):
    model = "flowers_cnn"
