"""Offline checks of the Kubernetes manifests in deploy/ (no cluster): render with
`kubectl kustomize`, validate core resources with kubernetes-validate --strict for a pinned
Kubernetes version, KServe resources with the strict schema derived from the kserve package
(deploy/schemas/, scripts/kserve_schema.py), lint the sources with yamllint, and check that the
resources refer to each other correctly (selectors, names, paths). Used by tests/test_deploy.py.
"""

from __future__ import annotations

import json
import subprocess
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
# The Kubernetes version the manifests are validated for; the KServe schema's embedded pod types
# are of the same version (scripts/kserve_schema.py K8S_VERSION).
K8S_VERSION = "1.36.0"
KSERVE_SCHEMA = DEPLOY / "schemas" / "kserve-0.21.0.schema.json"
OVERLAYS = ["torchserve/base", "torchserve/overlays/gpu", "kserve/torchserve", "kserve/native"]


def render(overlay: str | Path) -> list[dict]:
    """`kubectl kustomize` of one overlay, as documents; raises CalledProcessError on a bad one."""
    out = subprocess.run(["kubectl", "kustomize", str(DEPLOY / overlay)], capture_output=True, text=True, check=True)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def is_kserve(doc: dict) -> bool:
    return doc["apiVersion"].startswith("serving.kserve.io/")


def validate_core(doc: dict) -> None:
    """kubernetes-validate --strict (unknown fields and wrong types rejected); raises on failure."""
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@cache
def kserve_schema() -> dict:
    return json.loads(KSERVE_SCHEMA.read_text())


def validate_kserve(doc: dict) -> None:
    """The derived strict KServe schema; raises jsonschema.ValidationError (or KeyError: unknown kind)."""
    schema = kserve_schema()
    root = {"$ref": schema["kinds"][f"{doc['apiVersion']}/{doc['kind']}"]["$ref"], "$defs": schema["$defs"]}
    jsonschema.Draft202012Validator(root).validate(doc)


def validate(doc: dict) -> None:
    (validate_kserve if is_kserve(doc) else validate_core)(doc)


def yamllint_problems(text: str, path: str = "manifest.yaml") -> list[str]:
    config = YamlLintConfig(file=str(DEPLOY / ".yamllint"))
    return [f"{path}:{p.line}: {p.desc} ({p.rule})" for p in linter.run(text, config, path)]


def source_yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*.yaml") if p.name != ".yamllint")


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def reference_problems(docs: list[dict]) -> list[str]:
    """What kubernetes-validate cannot see: selectors that select no pod, names that name nothing."""
    problems = []
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in by_kind(docs, "Deployment")]
    for doc in by_kind(docs, "Service") + by_kind(docs, "PodDisruptionBudget"):
        selector = doc["spec"].get("selector", {})
        selector = selector.get("matchLabels", selector) if doc["kind"] == "PodDisruptionBudget" else selector
        if not selector or not any(selector.items() <= labels.items() for labels in pods):
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: selector {selector} selects no pod")
    for hpa in by_kind(docs, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        if (target["kind"], target["name"]) not in names:
            problems.append(f"HorizontalPodAutoscaler/{hpa['metadata']['name']}: no {target['kind']}/{target['name']}")
    for deployment in by_kind(docs, "Deployment"):
        for volume in deployment["spec"]["template"]["spec"].get("volumes", []):
            if "configMap" in volume and ("ConfigMap", volume["configMap"]["name"]) not in names:
                problems.append(f"Deployment/{deployment['metadata']['name']}: no ConfigMap {volume['configMap']['name']}")
    for isvc in by_kind(docs, "InferenceService"):
        runtime = isvc["spec"]["predictor"].get("model", {}).get("runtime")
        if runtime and ("ServingRuntime", runtime) not in names:
            problems.append(f"InferenceService/{isvc['metadata']['name']}: no ServingRuntime {runtime}")
    return problems
