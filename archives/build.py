#!/usr/bin/env python
"""Build model archives (.mar) with torch-model-archiver into a git-ignored folder.

    python archives/build.py                        # every model under archives/ -> model_store/
    python archives/build.py efficientnet_lite0 --export-path /tmp/store
    python archives/build.py efficientnet_lite0 --name efficientnet_lite0_b1 --batch-size 1
    python archives/build.py efficientnet_lite0 --name e_2x1 --workers 2 --threads 1   # a worker/thread layout

Each archive holds the one handler (whyserve/serving/handler.py; the model comes from
model-config.yaml's handler.model), its model-config.yaml and the model's weights (from the
model registry, ``whyserve.models.weights_file``; an .onnx export for backend onnxruntime).
The serving environment must have whyserve installed (pip install 'whyserve[serve]'): the
handler imports it. Rebuilds only when an input changed (-f forces).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

from whyserve.models import weights_file
from whyserve.serving.archive import HANDLER, build_archive

ROOT = Path(__file__).resolve().parent.parent
ARCHIVES = ROOT / "archives"
VERSION = "1.0"


def onnx_file(model: str, layer: str | None, folder: Path) -> Path:
    """The model exported to ONNX (outputs logits and activations), for backend onnxruntime."""
    from whyserve.backends.onnx.runtime import export_onnx
    from whyserve.models import load_model

    return export_onnx(load_model(model), folder / f"{model}.onnx", layer)


def handler_settings(archive: str, folder: Path) -> dict:
    """The archive's model-config.yaml ``handler`` section as its worker gets it, for an
    in-process ``ExplainService``: for backend onnxruntime, ``weights`` is the model exported
    into ``folder``/``archive``, and ``vebi_relevance`` is the shipped file."""
    settings = dict(yaml.safe_load((ARCHIVES / archive / "model-config.yaml").read_text())["handler"])
    extras = extra_files(settings)
    if extras:  # the worker finds it in the unpacked archive; in process, where it is shipped
        settings["vebi_relevance"] = str(extras[0])
    if settings.get("backend") == "onnxruntime":
        (folder / archive).mkdir(parents=True, exist_ok=True)
        settings["weights"] = str(onnx_file(settings["model"], settings.get("layer"), folder / archive))
    return settings


def available() -> list[str]:
    return sorted(p.parent.name for p in ARCHIVES.glob("*/model-config.yaml"))


def build(
    model: str,
    export_path: Path,
    name: str | None = None,
    batch_size: int | None = None,
    max_batch_delay: int | None = None,
    force: bool = False,
    workers: int | None = None,
    threads: int | None = None,
) -> Path:
    name = name or model
    config_path = ARCHIVES / model / "model-config.yaml"
    if not config_path.exists():
        raise SystemExit(f"unknown model {model!r}: need {config_path}; known: {available()}")
    config = yaml.safe_load(config_path.read_text())
    overrides = {"batchSize": batch_size, "maxBatchDelay": max_batch_delay, "minWorkers": workers, "maxWorkers": workers}
    config.update({k: v for k, v in overrides.items() if v is not None})
    settings = config.get("handler", {})
    if threads is not None:  # intra-op threads of each worker: torch's, and ONNX Runtime's on that backend
        settings.update(torch_threads=threads, **({"onnx_threads": threads} if settings.get("backend") == "onnxruntime" else {}))
        overrides["handler"] = settings
    source = weights_file(settings.get("model", model))  # from the model registry
    target, stamp = export_path / f"{name}.mar", export_path / f".{name}.inputs"
    extras = extra_files(settings)
    digest = _digest(config, settings, source, extras)
    if target.exists() and not force and stamp.exists() and stamp.read_text() == digest:
        print(f"{target} is up to date")  # checked before any export: exporting takes a while
        return target
    export_path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        weights = source
        if settings.get("backend") == "onnxruntime":
            weights = onnx_file(settings.get("model", model), settings.get("layer"), Path(tmp))
        tmp_config = Path(tmp) / "model-config.yaml"
        if any(v is not None for v in overrides.values()):
            tmp_config.write_text(yaml.safe_dump(config, sort_keys=False))
        else:
            shutil.copy(config_path, tmp_config)  # keeps the comments
        build_archive(name, tmp_config, export_path, VERSION, serialized=weights, extras=extras)
    stamp.write_text(digest)
    print(f"built {target}")
    return target


def extra_files(settings: dict) -> list[Path]:
    """Files the handler reads from the archive besides the weights: VEBI's relevance file
    (``handler.vebi_relevance``, a file name in whyserve/models/weights/, ``whyserve vebi-fit``)."""
    from whyserve.models.flowers import WEIGHTS

    return [WEIGHTS / settings["vebi_relevance"]] if settings.get("vebi_relevance") else []


def _digest(config: dict, settings: dict, weights: Path | None, extras: list[Path]) -> str:
    """What the archive is built from: its config, the handler, the weights (and the engine
    version, for the .onnx an export writes from them)."""
    digest = hashlib.sha256()
    for part in (yaml.safe_dump(config), HANDLER.read_text(), str(weights), str(settings.get("backend")), VERSION):
        digest.update(part.encode())
    if weights is not None:
        digest.update(str(weights.stat().st_mtime_ns).encode())
    for extra in extras:
        digest.update(extra.read_bytes())
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help=f"default: all ({', '.join(available())})")
    parser.add_argument("--export-path", type=Path, default=ROOT / "model_store")
    parser.add_argument("--name", help="archive/model name (one model only; default: the model's)")
    parser.add_argument("--batch-size", type=int, help="override batchSize of model-config.yaml")
    parser.add_argument("--max-batch-delay", type=int, help="override maxBatchDelay (ms) of model-config.yaml")
    parser.add_argument("--workers", type=int, help="override minWorkers and maxWorkers of model-config.yaml")
    parser.add_argument("--threads", type=int, help="override the handler's torch_threads (and onnx_threads)")
    parser.add_argument("-f", "--force", action="store_true")
    args = parser.parse_args(argv)
    models = args.models or available()
    if args.name and len(models) != 1:
        parser.error("--name needs exactly one model")
    for model in models:
        build(model, args.export_path, args.name, args.batch_size, args.max_batch_delay, args.force, args.workers, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
