"""Derive a strict JSON schema for KServe's InferenceService and ServingRuntime from the
``kserve`` package's own generated models, and write it to deploy/schemas/.

    .venv/bin/python scripts/kserve_schema.py            # downloads the pinned kserve wheel (no deps)
    .venv/bin/python scripts/kserve_schema.py --wheel kserve-0.21.0-py3-none-any.whl

The kserve package cannot be installed beside requirements/ci.txt (its pins of protobuf, psutil
and python-dateutil conflict), and need not be: its models (OpenAPI-generated classes, one per
CRD type) are read from the wheel as source with ``ast``, never imported. Each class gives
``openapi_types`` (attribute -> type), ``attribute_map`` (attribute -> JSON key) and its
required attributes (setters that reject None). KServe types become objects with
``additionalProperties: false``; Kubernetes types (V1Container, V1Probe, ...) are taken from
kubernetes-validate's strict definitions of the same Kubernetes version, so the embedded pod
fields are checked as strictly as core resources.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from importlib import resources
from pathlib import Path

KSERVE_VERSION = "0.21.0"
# The Kubernetes version whose types kserve 0.21's models reference (V1PodSchedulingGroup is 1.36's).
K8S_VERSION = "1.36.0"
OUT = Path(__file__).resolve().parent.parent / "deploy" / "schemas" / f"kserve-{KSERVE_VERSION}.schema.json"
ROOTS = {
    "serving.kserve.io/v1beta1/InferenceService": "V1beta1InferenceService",
    "serving.kserve.io/v1alpha1/ServingRuntime": "V1alpha1ServingRuntime",
}
SCALARS = {
    "str": {"type": "string"},
    "int": {"type": "integer"},
    "bool": {"type": "boolean"},
    "float": {"type": "number"},
    "object": {},
    "datetime": {"type": "string"},
}
# Types of other projects (Knative status, KEDA triggers, Go's net/url): status-only or
# pass-through, accepted as they come.
OPAQUE_PREFIXES = ("Knative", "GithubCom", "NetUrl")
# Referenced by the models but not generated in the SDK: MetricQuantity is a resource.Quantity in
# KServe's Go types; v1alpha1's WorkerSpec is v1beta1's (pod fields + pipeline/tensor parallel sizes).
ALIASES = {"V1beta1MetricQuantity": "ResourceQuantity", "V1alpha1WorkerSpec": "V1beta1WorkerSpec"}
REQUIRED = re.compile(r"client_side_validation and (\w+) is None")


def read_models(wheel: Path) -> dict[str, dict]:
    """Class name -> {"types", "keys", "required"} for every model in the wheel's kserve/models."""
    models = {}
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if name.startswith("kserve/models/") and name.endswith(".py"):
                source = zf.read(name).decode()
                for node in ast.parse(source).body:
                    if isinstance(node, ast.ClassDef):
                        models[node.name] = class_model(node, source)
    return models


def class_model(node: ast.ClassDef, source: str) -> dict:
    found = {}
    for item in node.body:
        if (
            isinstance(item, ast.Assign)
            and isinstance(item.targets[0], ast.Name)
            and item.targets[0].id in ("openapi_types", "attribute_map")
        ):
            found[item.targets[0].id] = ast.literal_eval(item.value)
    required = set(REQUIRED.findall(ast.get_source_segment(source, node)))
    return {"types": found["openapi_types"], "keys": found["attribute_map"], "required": sorted(required)}


def k8s_definitions() -> dict[str, dict]:
    root = resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{K8S_VERSION}-local-strict"
    return json.loads((root / "_definitions.json").read_text())["$defs"]


def k8s_name(cls: str, defs: dict[str, dict]) -> str:
    """kubernetes-client class name -> OpenAPI definition name (V1Container -> io.k8s.api.core.v1.Container)."""
    if cls == "ResourceQuantity":
        return "io.k8s.apimachinery.pkg.api.resource.Quantity"
    if cls.startswith("K8sIo"):  # K8sIoApiAppsV1DeploymentStrategy -> io.k8s.api.apps.v1.DeploymentStrategy
        parts = re.findall(r"[A-Z][a-z0-9]*", cls[5:])
        version = next(i for i, p in enumerate(parts) if re.fullmatch(r"V\d+\w*", p))
        return "io.k8s." + ".".join(p.lower() for p in parts[: version + 1]) + "." + "".join(parts[version + 1 :])
    version, kind = re.fullmatch(r"(V\d+(?:alpha\d+|beta\d+)?)(\w+)", cls).groups()
    suffix = f".{version.lower()}.{kind}"
    hits = sorted(d for d in defs if d.endswith(suffix))
    for prefix in ("io.k8s.api.core.", "io.k8s.apimachinery.pkg.apis.meta."):
        preferred = [d for d in hits if d.startswith(prefix)]
        if preferred:
            return preferred[0]
    if len(hits) != 1:
        raise SystemExit(f"no single Kubernetes definition for {cls}: {hits}")
    return hits[0]


class Builder:
    def __init__(self, models: dict[str, dict], k8s: dict[str, dict]):
        self.models, self.k8s, self.defs = models, k8s, {}

    def type_schema(self, spec: str) -> dict:
        if spec.startswith("list["):
            return {"type": "array", "items": self.type_schema(spec[5:-1])}
        if spec.startswith("dict("):
            return {"type": "object", "additionalProperties": self.type_schema(spec[5:-1].split(",", 1)[1].strip())}
        spec = ALIASES.get(spec, spec)
        if spec in SCALARS:
            return SCALARS[spec]
        if spec.startswith(OPAQUE_PREFIXES):
            return {}
        if spec in self.models:
            self.add_model(spec)
            return {"$ref": f"#/$defs/{spec}"}
        return {"$ref": f"#/$defs/{self.add_k8s(k8s_name(spec, self.k8s))}"}

    def add_model(self, cls: str) -> None:
        if cls in self.defs:
            return
        self.defs[cls] = {}  # placeholder: recursive types
        model = self.models[cls]
        props = {model["keys"][attr]: self.type_schema(spec) for attr, spec in model["types"].items()}
        schema = {"type": "object", "properties": props, "additionalProperties": False}
        if model["required"]:
            schema["required"] = sorted(model["keys"][a] for a in model["required"])
        self.defs[cls] = schema

    def add_k8s(self, name: str) -> str:
        """Copy a Kubernetes definition and everything it references, refs rewritten to this file."""
        if name not in self.defs:
            text = json.dumps(self.k8s[name])
            text = re.sub(r'"(?:/api/_definitions\.json)?#/\$defs/([^"]+)"', r'"#/$defs/\1"', text)
            self.defs[name] = json.loads(text)
            for ref in re.findall(r'"#/\$defs/([^"]+)"', text):
                self.add_k8s(ref)
        return name


def build(wheel: Path) -> dict:
    builder = Builder(read_models(wheel), k8s_definitions())
    kinds = {}
    for key, cls in ROOTS.items():
        group_version, kind = key.rsplit("/", 1)
        builder.add_model(cls)
        root = builder.defs[cls]
        root["properties"]["apiVersion"] = {"const": group_version}
        root["properties"]["kind"] = {"const": kind}
        root["required"] = sorted(set(root.get("required", [])) | {"apiVersion", "kind", "metadata", "spec"})
        kinds[key] = {"$ref": f"#/$defs/{cls}"}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "description": f"Derived by scripts/kserve_schema.py from kserve {KSERVE_VERSION}'s models "
        f"and Kubernetes {K8S_VERSION} (kubernetes-validate, strict). Do not edit.",
        "kinds": kinds,
        "$defs": dict(sorted(builder.defs.items())),
    }


def download_wheel(into: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "-d",
            str(into),
            f"kserve=={KSERVE_VERSION}",
        ],
        check=True,
    )
    return next(into.glob("kserve-*.whl"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheel", type=Path, help=f"kserve {KSERVE_VERSION} wheel (default: pip download it)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        schema = build(args.wheel or download_wheel(Path(tmp)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(schema, indent=1, sort_keys=False) + "\n")
    print(f"{args.out}: {len(schema['$defs'])} definitions")


if __name__ == "__main__":
    main()
