"""``whyserve healthcheck``: an exec probe for an orchestrator (Kubernetes livenessProbe /
readinessProbe) that needs no inference token.

TorchServe's ``/ping`` wants the inference token when token authorization is on, and says
"Healthy" while a model has no worker. This asks the management API instead (with the
management key from TorchServe's key_file.json, when there is one) and is healthy only when
every registered model, and every model named with ``--models``, has a READY worker.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--management", default="http://127.0.0.1:8081", help="TorchServe management API")
    parser.add_argument("--key-file", default="key_file.json", help="TorchServe's key file (absent: token auth off)")
    parser.add_argument("--models", default="", help="comma-separated models that must be registered and READY")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per management request")


def parser() -> argparse.ArgumentParser:
    made = argparse.ArgumentParser(prog="whyserve healthcheck", description=__doc__)
    add_arguments(made)
    return made


def management_key(key_file: str | Path) -> str | None:
    """The management key TorchServe wrote, or None when the file is absent (token auth off)."""
    path = Path(key_file)
    if not path.exists():
        return None
    return json.loads(path.read_text())["management"]["key"]


def _get(url: str, key: str | None, timeout: float) -> object:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
        return json.load(response)


def problems(management: str, key: str | None, models: list[str], timeout: float) -> list[str]:
    """Why the server is not healthy; [] when it is."""
    management = management.rstrip("/")
    try:
        listed = _get(f"{management}/models?limit=1000", key, timeout)
    except (urllib.error.URLError, OSError, ValueError) as error:
        return [f"management API {management} refused or did not answer: {error}"]
    names = [entry["modelName"] for entry in listed.get("models", [])]
    found = []
    for name in dict.fromkeys([*names, *models]):
        if name not in names:
            found.append(f"model {name}: not registered (registered: {', '.join(names) or 'none'})")
            continue
        try:
            described = _get(f"{management}/models/{urllib.parse.quote(name)}", key, timeout)
        except (urllib.error.URLError, OSError, ValueError) as error:
            found.append(f"model {name}: no description ({error})")
            continue
        statuses = [worker.get("status", "?") for version in described for worker in version.get("workers", [])]
        if "READY" not in statuses:
            found.append(f"model {name}: no READY worker (workers: {', '.join(statuses) or 'none'})")
    return found or ([] if names else ["no model is registered"])


def main(management: str, key_file: str, models: str, timeout: float) -> int:
    """Prints the verdict; 0 when healthy, 1 otherwise."""
    try:
        key = management_key(key_file)
    except (OSError, ValueError, KeyError) as error:
        print(f"unhealthy: cannot read the management key from {key_file}: {error}")
        return 1
    named = [name.strip() for name in models.split(",") if name.strip()]
    found = problems(management, key, named, timeout)
    if found:
        print("unhealthy: " + "; ".join(found))
        return 1
    print("healthy: every model has a READY worker")
    return 0
