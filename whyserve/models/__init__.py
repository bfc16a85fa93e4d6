"""Model registry: every servable model is a ``ModelSpec`` built by a named factory."""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from whyserve.errors import InvalidOption, ModelLoadError


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
    bcos_input: str | None = None  # B-cos models: the module whose output is the encoded input
    vebi_relevance: Path | None = None  # VEBI's relevance file (``whyserve vebi-fit``); None: no vebi
    vebi_mu: float | None = None  # the L1 bound ``vebi-fit`` uses for this model (None: 10, the seed code's)
    value_range: tuple[float, float] | None = None  # regression: the outputs' range (contrast values outside it: 400)

    @property
    def methods(self) -> tuple[str, ...]:
        """The registered explanation methods that can explain this model."""
        from whyserve.methods import all_methods

        return tuple(m.name for m in all_methods() if m.supports(self))

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.normalize(self.view(image.convert("RGB")))


ModelFactory = Callable[..., ModelSpec]
_REGISTRY: dict[str, ModelFactory] = {}
_WEIGHTS: dict[str, Callable[[], Path]] = {}


def register(name: str, weights: Callable[[], Path] | None = None) -> Callable[[ModelFactory], ModelFactory]:
    """Register a model factory; ``weights`` gives the state-dict file an archive must carry
    (None: the weights ship inside the whyserve package, or the model is built without any)."""

    def add(factory: ModelFactory) -> ModelFactory:
        _REGISTRY[name] = factory
        if weights is not None:
            _WEIGHTS[name] = weights
        return factory

    return add


def weights_file(name: str) -> Path | None:
    """The weights file a serving archive of model ``name`` must carry (None: none needed)."""
    _import_builtin()
    return _WEIGHTS[name]() if name in _WEIGHTS else None


def available_models() -> list[str]:
    _import_builtin()
    return sorted(_REGISTRY)


def load_model(name: str, weights: str | Path | None = None) -> ModelSpec:
    """Build a registered model in eval mode; ``weights`` is an optional state-dict file."""
    _import_builtin()
    if name not in _REGISTRY:
        raise InvalidOption("model", f"unknown model {name!r}", sorted(_REGISTRY))
    spec = _REGISTRY[name](weights=weights)
    spec.module.eval()
    return spec


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


def _import_builtin() -> None:
    # Imported lazily so that registering stays cheap and free of import cycles.
    from whyserve.models import efficientnet_lite, flowers, quality, torchvision_models  # noqa: F401
