"""The TorchServe handler of every whyserve archive (torch-model-archiver ``--handler`` is this
file: TorchServe wants a file defining one class). The model, its target layer and the rest
come from the archive's model-config.yaml (``handler:`` section, see ``ServingConfig``) and
its files (``whyserve.serving.archive.settings_from_archive``)."""

from whyserve.serving.torchserve import TorchServeHandler


class WhyserveHandler(TorchServeHandler):
    pass
