"""Model archives (.mar): built with torch-model-archiver, and read back into the settings of an
``ExplainService`` the same way by every server (TorchServe's worker, the KServe-native runtime).

An archive holds whyserve's handler (``whyserve/serving/handler.py``), its model-config.yaml,
and the files the model needs: ``--serialized-file`` (weights), ``--model-file`` (TorchServe's
convention for a user's ``nn.Module``), and extra files such as ``index_to_name.json``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

HANDLER = Path(__file__).with_name("handler.py")
CLASS_FILES = ("index_to_name.json", "labels.txt")  # found in an archive without handler.classes
FILE_SETTINGS = ("weights", "model_file", "classes", "vebi_relevance")  # paths relative to the archive


def settings_from_archive(handler: Mapping[str, object], model_dir: str | Path, manifest: Mapping | None) -> dict:
    """``handler`` (model-config.yaml's section) with its files found in the unpacked archive
    ``model_dir``: named files are relative to it; otherwise the manifest's serialized file
    (weights) and model file, and an ``index_to_name.json`` or ``labels.txt`` when present."""
    model_dir = Path(model_dir)
    settings = dict(handler)
    entry = dict((manifest or {}).get("model") or {})
    settings.setdefault("model", entry.get("modelName"))
    if not settings.get("model"):
        raise ValueError("model-config.yaml has no handler.model: name the whyserve model to serve")
    for key, manifest_key in (("weights", "serializedFile"), ("model_file", "modelFile")):
        if not settings.get(key) and entry.get(manifest_key):
            settings[key] = entry[manifest_key]
    if settings.get("source") and not settings.get("classes"):
        settings["classes"] = next((name for name in CLASS_FILES if (model_dir / name).is_file()), None)
    for key in FILE_SETTINGS:
        if settings.get(key):
            settings[key] = str(model_dir / str(settings[key]))
    return settings


def unpack(mar: str | Path, folder: str | Path) -> tuple[dict, dict]:
    """Unpack ``mar`` into ``folder``; its model-config.yaml and MANIFEST.json."""
    folder = Path(folder)
    with zipfile.ZipFile(mar) as archive:
        archive.extractall(folder)
    manifest = json.loads((folder / "MAR-INF" / "MANIFEST.json").read_text())
    config_file = manifest.get("model", {}).get("configFile")
    config = yaml.safe_load((folder / config_file).read_text()) if config_file else {}
    return config or {}, manifest


def archiver() -> str:
    """torch-model-archiver beside this Python (a venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "torch-model-archiver"
    return str(beside) if beside.exists() else shutil.which("torch-model-archiver") or "torch-model-archiver"


def build_archive(
    name: str,
    config: Path,
    export_path: Path,
    version: str = "1.0",
    serialized: Path | None = None,
    model_file: Path | None = None,
    extras: Sequence[Path] = (),
) -> Path:
    """``export_path``/``name``.mar from torch-model-archiver, with whyserve's handler."""
    command = [archiver(), "--model-name", name, "--version", version, "--handler", str(HANDLER)]
    command += ["--config-file", str(config), "--export-path", str(export_path), "--force"]
    if serialized is not None:
        command += ["--serialized-file", str(serialized)]
    if model_file is not None:
        command += ["--model-file", str(model_file)]
    if extras:
        command += ["--extra-files", ",".join(str(e) for e in extras)]
    export_path.mkdir(parents=True, exist_ok=True)
    subprocess.run(command, check=True)
    return export_path / f"{name}.mar"
