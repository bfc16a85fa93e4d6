"""Source ``huggingface``: a ``transformers`` image classifier from a local folder, as
``save_pretrained`` writes it (config.json and model.safetensors; preprocessor_config.json
when present). Its class names come from the config's ``id2label`` and its preprocessing from
the image processor's config. transformers is an optional extra; nothing is downloaded."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from whyserve.errors import ModelLoadError

# PIL's resampling numbers, as image processors store them
RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}
CONVNEXT_CROP_BELOW = 384  # ConvNextImageProcessor crops (by crop_pct) only below this size


def model_folder(weights: str | Path | None) -> Path:
    """The folder of ``weights``: the folder itself, or the one holding its model.safetensors
    (inside an archive the files lie flat beside each other)."""
    if weights is None:
        raise ModelLoadError("source huggingface: give the save_pretrained folder (or its model.safetensors) as the weights")
    path = Path(weights)
    folder = path if path.is_dir() else path.parent
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"source huggingface: no config.json beside {path.name} (save_pretrained writes both)")
    if not (folder / "model.safetensors").is_file():
        raise ModelLoadError(
            f"source huggingface: no model.safetensors in {folder.name} (a sharded checkpoint is not read: "
            "save_pretrained with a max_shard_size above the model's size)"
        )
    return folder


def load_huggingface(weights: str | Path | None, sized: bool) -> tuple[nn.Module, tuple[str, ...], dict[str, object]]:
    """The classifier returning plain logits, its ``id2label`` names, and its preprocessing
    (``sized``: the user's config sets resize and crop, so the processor's sizes may be any)."""
    folder = model_folder(weights)
    try:
        from transformers import AutoModelForImageClassification
    except ImportError:
        raise ModelLoadError("source huggingface: needs transformers (pip install transformers)") from None
    try:
        model = AutoModelForImageClassification.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        raise ModelLoadError(f"source huggingface: {folder.name}: {str(error).splitlines()[0]}") from None
    # transformers returns an ImageClassifierOutput; every method reads the logits as a tensor
    model.register_forward_hook(lambda _module, _inputs, output: output.logits)
    names = tuple(model.config.id2label[i] for i in range(model.config.num_labels))
    processor = folder / "preprocessor_config.json"
    return model, names, preprocess_of(json.loads(processor.read_text()), sized) if processor.is_file() else {}


def preprocess_of(processor: dict, sized: bool = False) -> dict[str, object]:
    """whyserve's preprocessing for an image processor's config: a stretch to ``size`` (ViT),
    ConvNeXt's ``crop_pct``, or a shortest edge then ``crop_size`` (BEiT, DeiT, BiT ...)."""
    size, crop = processor.get("size") or {}, processor.get("crop_size") or {}
    resample = processor.get("resample", 2)
    if resample not in RESAMPLE:
        raise ModelLoadError(f"preprocessor_config.json: resample {resample} is not one of {RESAMPLE}; set handler.preprocess")
    rules: dict[str, object] = {"interpolation": RESAMPLE[resample]}
    if processor.get("do_normalize", True):
        rules |= {"mean": list(processor.get("image_mean", (0.5,) * 3)), "std": list(processor.get("image_std", (0.5,) * 3))}
    else:
        rules |= {"mean": [0.0] * 3, "std": [1.0] * 3}
    side = size.get("shortest_edge")
    if size.get("height") and size.get("height") == size.get("width") and not processor.get("do_center_crop"):
        return rules | {"resize": size["height"], "crop": size["height"], "aspect": "stretch"}
    if side and "crop_pct" in processor:
        if side >= CONVNEXT_CROP_BELOW:
            return rules | {"resize": side, "crop": side, "aspect": "stretch"}
        return rules | {"resize": int(side / processor["crop_pct"]), "crop": side}
    if side and processor.get("do_center_crop") and crop.get("height") == crop.get("width") and crop.get("height"):
        return rules | {"resize": side, "crop": crop["height"]}
    if sized:
        return rules
    raise ModelLoadError(
        f"preprocessor_config.json: size {size} crop_size {crop} is not a square whyserve can mirror; "
        "set handler.preprocess resize and crop"
    )
