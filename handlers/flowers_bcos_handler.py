"""TorchServe handler of the flowers_bcos archive (settings: archives/flowers_bcos/model-config.yaml)."""

from whyserve.serving.torchserve import TorchServeHandler


class FlowersBcosHandler(TorchServeHandler):
    model = "flowers_bcos"
