"""The TorchServe handler of every whyserve archive: the model, its target layer and the rest
come from the archive's model-config.yaml (``handler:`` section, see ``ServingConfig``)."""

from whyserve.serving.torchserve import TorchServeHandler


class WhyserveHandler(TorchServeHandler):
    pass
