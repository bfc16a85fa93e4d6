"""What the user's files say about a model besides its weights: its class names
(``index_to_name.json``, labels.txt) and its preprocessing (model-config.yaml's
``handler.preprocess``), read and checked strictly."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from whyserve.errors import ModelLoadError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = {
    "nearest": v2.InterpolationMode.NEAREST,
    "bilinear": v2.InterpolationMode.BILINEAR,
    "bicubic": v2.InterpolationMode.BICUBIC,
}
ASPECTS = ("keep", "stretch")


@dataclass(frozen=True)
class Preprocess:
    """Shorter side to ``resize``, a centred ``crop`` square, then (x - mean) / std on [0, 1]
    RGB: torchvision's and timm's ImageNet convention, the defaults. ``aspect: stretch`` resizes
    both sides to ``resize`` instead (Hugging Face's ViT processor)."""

    resize: int = 256
    crop: int = 224
    interpolation: str = "bilinear"
    aspect: str = "keep"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @classmethod
    def from_dict(cls, values: Mapping[str, object] | None) -> Preprocess:
        values = dict(values or {})
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ModelLoadError(f"preprocess: unknown key(s) {unknown}; known: {known}")
        for key in ("resize", "crop"):
            if key in values and (not isinstance(values[key], int) or isinstance(values[key], bool) or values[key] < 1):
                raise ModelLoadError(f"preprocess.{key}: {values[key]!r} is not a positive integer (pixels)")
        if values.get("interpolation", "bilinear") not in INTERPOLATIONS:
            raise ModelLoadError(f"preprocess.interpolation: {values['interpolation']!r}; known: {sorted(INTERPOLATIONS)}")
        if values.get("aspect", "keep") not in ASPECTS:
            raise ModelLoadError(f"preprocess.aspect: {values['aspect']!r}; known: {list(ASPECTS)}")
        for key in ("mean", "std"):
            if key in values:
                triple = values[key]
                if not (isinstance(triple, Sequence) and len(triple) == 3 and all(isinstance(v, (int, float)) for v in triple)):
                    raise ModelLoadError(f"preprocess.{key}: {triple!r} is not three numbers (R, G, B)")
                if key == "std" and min(triple) <= 0:
                    raise ModelLoadError(f"preprocess.std: {triple!r} must be positive")
                values[key] = tuple(float(v) for v in triple)
        preprocess = cls(**values)  # type: ignore[arg-type]
        if preprocess.crop > preprocess.resize:
            raise ModelLoadError(f"preprocess: crop {preprocess.crop} is larger than resize {preprocess.resize}")
        return preprocess

    def view(self) -> v2.Compose:
        size = self.resize if self.aspect == "keep" else (self.resize, self.resize)
        return v2.Compose([v2.Resize(size, interpolation=INTERPOLATIONS[self.interpolation]), v2.CenterCrop(self.crop)])

    def normalize(self, view: Image.Image) -> torch.Tensor:
        return TF.normalize(TF.to_dtype(TF.pil_to_tensor(view), torch.float32, scale=True), list(self.mean), list(self.std))


def read_class_names(path: str | Path) -> tuple[str, ...]:
    """Class names from TorchServe's ``index_to_name.json`` (``{"0": "cat"}`` or
    ``{"0": ["n02123045", "cat"]}``: the last item is the name) or a text file, one per line."""
    path = Path(path)
    if path.suffix != ".json":
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not names:
            raise ModelLoadError(f"class names {path.name}: no labels (one per line)")
        return tuple(names)
    try:
        mapping = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ModelLoadError(f"class names {path.name}: not JSON ({error})") from None
    if not isinstance(mapping, dict) or not mapping:
        raise ModelLoadError(f'class names {path.name}: expected {{"0": "label", ...}} (TorchServe\'s index_to_name.json)')
    names: dict[int, str] = {}
    for key, value in mapping.items():
        label = value[-1] if isinstance(value, list) and value else value
        if not (isinstance(key, str) and key.isdigit()) or not isinstance(label, str):
            raise ModelLoadError(f"class names {path.name}: entry {key!r}: {value!r} is not index -> label (or [id, label])")
        names[int(key)] = label
    if sorted(names) != list(range(len(names))):
        missing = sorted(set(range(max(names) + 1)) - set(names))[:5]
        raise ModelLoadError(f"class names {path.name}: indices must be 0..{len(names) - 1}; missing {missing}")
    return tuple(names[i] for i in range(len(names)))
