"""Everything ONNX: the export with (logits, activations) outputs and the session on it
(``runtime``), the split of a PyTorch model at its target layer (``split``), and the
backend that runs them (``backend``)."""
