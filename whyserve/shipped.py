"""Files that ship inside the whyserve package (the demo models' weights and VEBI relevance
files), found through ``importlib.resources`` so that an installed wheel finds them too."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

RELEVANCE_SUFFIX = ".vebi.json"  # ``whyserve vebi-fit`` writes <model>.vebi.json


def weights_folder() -> Path:
    """The folder of shipped weights (``<model>.pt``) and relevance files (``<model>.vebi.json``)."""
    return Path(str(resources.files("whyserve").joinpath("models", "weights")))
