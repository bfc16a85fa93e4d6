"""What a served model is (``ModelSpec``), the registry its factories add themselves to
(``register``), and the strict state-dict loading every source shares."""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from whyserve.errors import ModelLoadError


@dataclass(frozen=True)
class ModelSpec:
    """A model and everything needed to feed it and to name its outputs.

    ``view`` turns a photo into exactly the pixels the model sees (resized and cropped,
    still RGB), so overlays can be drawn on them; ``normalize`` turns that view into the
    input tensor (C, H, W). ``target_layer`` is the default layer for CAM methods; None
    means the last spatial feature layer, found by ``whyserve.layers.find_target_layer``.
    """

    name: str
    module: nn.Module
    view: Callable[[Image.Image], Image.Image]
    normalize: Callable[[Image.Image], torch.Tensor]
    input_size: tuple[int, int] = (224, 224)
    target_layer: str | None = None
    class_names: tuple[str, ...] | None = None
    task: str = "classification"  # or "regression"
    num_outputs: int = 1  # outputs of a model without class names (e.g. a regression head)
    # Files that came with the model (an archive's extra files), by role; a method reads the
    # ones it needs (VEBI: ``vebi_relevance``, written by ``whyserve vebi-fit``).
    files: Mapping[str, Path] = field(default_factory=dict)
    value_range: tuple[float, float] | None = None  # regression: the outputs' range (contrast values outside it: 400)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.normalize(self.view(image.convert("RGB")))


ModelFactory = Callable[..., ModelSpec]
FACTORIES: dict[str, ModelFactory] = {}
WEIGHT_FILES: dict[str, Callable[[], Path]] = {}


def register(name: str, weights: Callable[[], Path] | None = None) -> Callable[[ModelFactory], ModelFactory]:
    """Register a model factory; ``weights`` gives the state-dict file an archive must carry
    (None: the weights ship inside the whyserve package, or the model is built without any)."""

    def add(factory: ModelFactory) -> ModelFactory:
        FACTORIES[name] = factory
        if weights is not None:
            WEIGHT_FILES[name] = weights
        return factory

    return add


def load_state_dict_file(module: nn.Module, path: str | Path) -> None:
    """A state dict (``torch.save(model.state_dict())``; a ``{"state_dict": ...}`` checkpoint and
    DataParallel's ``module.`` prefix are unwrapped; a TorchScript file's own) loaded strictly; a
    misfit names what differs."""
    path = Path(path)
    try:
        if _is_torchscript(path):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit's own deprecation: not the user's to fix
                state = torch.jit.load(path, map_location="cpu").state_dict()
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ModelLoadError(f"weights {path.name}: not a state dict torch.load can read ({type(error).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"weights {path.name}: not a state dict (name -> tensor)")
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = [
            f"{label} {items[:3]}{' ...' if len(items) > 3 else ''} ({len(items)})"
            for label, items in (("missing", missing), ("unexpected", unexpected), ("shape file vs model", shapes))
            if items
        ]
        raise ModelLoadError(f"weights {path.name} do not fit the architecture: " + "; ".join(parts))
    module.load_state_dict(state, strict=True)


def _is_torchscript(path: Path) -> bool:
    """``torch.jit.save`` writes a zip with the module's code; ``torch.save`` one without."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())
