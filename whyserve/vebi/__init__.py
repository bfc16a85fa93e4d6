"""VEBI (Oramas et al., ICLR 2019, "Visual Explanation by Interpretation"): the few internal
features relevant for each class, selected once by sparse regression (``fit``), shown where
they fire in an image by propagating each feature's activation back to the pixels
(``propagation``). The method itself is ``whyserve.methods.vebi``."""
