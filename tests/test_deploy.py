"""The Kubernetes manifests of deploy/, checked offline (no cluster can run here): every overlay
renders with `kubectl kustomize`, every core resource passes kubernetes-validate --strict, every
KServe resource the strict schema derived from the kserve package, the sources pass yamllint,
and the resources refer to each other. Each check is shown to fail on a broken manifest."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest

from deploy_checks import (
    DEPLOY,
    KSERVE_SCHEMA,
    OVERLAYS,
    ROOT,
    by_kind,
    reference_problems,
    render,
    source_yaml_files,
    validate,
    validate_core,
    validate_kserve,
    yamllint_problems,
)

RENDERED = {overlay: render(overlay) for overlay in OVERLAYS}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_resource_validates_strictly(overlay):
    docs = RENDERED[overlay]
    assert docs, overlay
    for doc in docs:
        validate(doc)
    assert reference_problems(docs) == []


def test_the_overlays_hold_what_the_issue_asks_for():
    kinds = {overlay: sorted(d["kind"] for d in docs) for overlay, docs in RENDERED.items()}
    core = ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"]
    assert kinds["torchserve/base"] == core
    assert kinds["torchserve/overlays/gpu"] == core
    assert kinds["kserve/torchserve"] == ["InferenceService", "ServingRuntime"]
    assert kinds["kserve/native"] == ["InferenceService"]
    hpa = by_kind(RENDERED["torchserve/base"], "HorizontalPodAutoscaler")[0]
    assert hpa["apiVersion"] == "autoscaling/v2"


def pod_container(overlay: str) -> tuple[dict, dict]:
    pod = by_kind(RENDERED[overlay], "Deployment")[0]["spec"]["template"]["spec"]
    return pod, pod["containers"][0]


def test_the_pod_is_hardened_and_ready_only_when_every_worker_is():
    pod, container = pod_container("torchserve/base")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    env = {e["name"]: e["value"] for e in container["env"]}
    # TorchServe's writable places are emptyDirs: TEMP (its launcher's pid file and unpacked
    # archives), TMPDIR, the working dir (key_file.json, logs)
    assert mounts[env["TEMP"]] in empty_dirs and mounts[env["TMPDIR"]] in empty_dirs
    assert mounts[container["workingDir"]] in empty_dirs
    assert env["LOG_LOCATION"].startswith(container["workingDir"])
    probe = container["readinessProbe"]["exec"]["command"]
    assert probe[:2] == ["whyserve", "healthcheck"]
    assert probe[probe.index("--key-file") + 1] == f"{container['workingDir']}/key_file.json"
    assert "livenessProbe" in container and "limits" in container["resources"]


def test_the_gpu_overlay_asks_for_a_gpu_and_the_gpu_image():
    _, container = pod_container("torchserve/overlays/gpu")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"] == "whyserve:gpu"
    assert pod_container("torchserve/base")[1]["image"] == "whyserve:cpu"


def test_the_configmap_is_the_production_config():
    """The production config, but for the metrics address: in the pod it is exposed on purpose (for
    Prometheus); configs/production.properties keeps it on loopback."""
    config = by_kind(RENDERED["torchserve/base"], "ConfigMap")[0]["data"]["config.properties"]
    production = (ROOT / "configs" / "production.properties").read_text()
    assert "metrics_address=http://127.0.0.1:8082\n" in production
    exposed = [line for line in config.splitlines() if not line.startswith("#")]
    expected = [line for line in production.splitlines() if not line.startswith("#")]
    assert exposed == [line.replace("127.0.0.1:8082", "0.0.0.0:8082") for line in expected]


def test_kserve_torchserve_runtime_reads_the_layout_kserve_mounts():
    runtime = by_kind(RENDERED["kserve/torchserve"], "ServingRuntime")[0]
    args = runtime["spec"]["containers"][0]["args"]
    assert "--model-store=/mnt/models/model-store" in args
    assert "--ts-config=/mnt/models/config/config.properties" in args
    config = (DEPLOY / "kserve" / "torchserve" / "config.properties").read_text().splitlines()
    assert "model_store=/mnt/models/model-store" in config
    assert "enable_envvars_config=true" in config  # TS_SERVICE_ENVELOPE from the runtime's env
    container = runtime["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    empty_dirs = {v["name"] for v in runtime["spec"]["volumes"] if "emptyDir" in v}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert mounts[env["TEMP"]] in empty_dirs and mounts[container["workingDir"]] in empty_dirs
    isvc = by_kind(RENDERED["kserve/torchserve"], "InferenceService")[0]
    assert isvc["spec"]["predictor"]["model"]["storageUri"].startswith("gs://")


def test_kserve_native_runs_serve_kserve_on_the_port_it_exposes():
    container = by_kind(RENDERED["kserve/native"], "InferenceService")[0]["spec"]["predictor"]["containers"][0]
    args = container["args"]
    assert args[:2] == ["whyserve", "serve-kserve"]
    port = int(args[args.index("--http-port") + 1])
    assert container["ports"][0]["containerPort"] == port == container["readinessProbe"]["httpGet"]["port"]
    # the image's own command, so that `docker run whyserve:kserve` and the InferenceService serve alike
    dockerfile = (ROOT / "docker" / "Dockerfile.kserve").read_text().splitlines()
    assert json.loads(next(line for line in dockerfile if line.startswith("CMD ")).removeprefix("CMD ")) == args
    assert f"EXPOSE {port}" in dockerfile


@pytest.mark.parametrize("path", source_yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_sources_pass_yamllint(path):
    assert yamllint_problems(path.read_text(), str(path)) == []


# --- each check fails on a broken manifest -------------------------------------------------------


def broken(overlay: str, kind: str, edit) -> dict:
    doc = copy.deepcopy(by_kind(RENDERED[overlay], kind)[0])
    edit(doc)
    return doc


def container_of(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]["containers"][0]


CORE_BREAKS = {
    "unknown container field": lambda d: container_of(d).update(imagePullPolicyy="Always"),
    "replicas as a string": lambda d: d["spec"].update(replicas="two"),
    "probe port as a list": lambda d: container_of(d)["livenessProbe"]["tcpSocket"].update(port=[8080]),
    "container without a name": lambda d: container_of(d).pop("name"),
}


@pytest.mark.parametrize("what", CORE_BREAKS)
def test_kubernetes_validate_rejects_a_broken_deployment(what):
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_core(broken("torchserve/base", "Deployment", CORE_BREAKS[what]))


KSERVE_BREAKS = {
    ("kserve/torchserve", "InferenceService", "misspelt storageUri"): lambda d: d["spec"]["predictor"]["model"].update(
        storageURI=d["spec"]["predictor"]["model"].pop("storageUri")
    ),
    ("kserve/torchserve", "InferenceService", "minReplicas as a string"): lambda d: d["spec"]["predictor"].update(
        minReplicas="1"
    ),
    ("kserve/torchserve", "InferenceService", "no modelFormat"): lambda d: d["spec"]["predictor"]["model"].pop("modelFormat"),
    ("kserve/torchserve", "ServingRuntime", "autoSelect as a string"): lambda d: d["spec"]["supportedModelFormats"][0].update(
        autoSelect="no"
    ),
    ("kserve/torchserve", "ServingRuntime", "unknown container field (Kubernetes type inside KServe)"): lambda d: d["spec"][
        "containers"
    ][0].update(readinesProbe={}),
    ("kserve/torchserve", "ServingRuntime", "wrong kind"): lambda d: d.update(apiVersion="serving.kserve.io/v1beta1"),
    ("kserve/native", "InferenceService", "unknown predictor field"): lambda d: d["spec"]["predictor"].update(replicas=2),
    ("kserve/native", "InferenceService", "port as a string"): lambda d: d["spec"]["predictor"]["containers"][0]["ports"][
        0
    ].update(containerPort="8080"),
}


@pytest.mark.parametrize("key", KSERVE_BREAKS, ids=lambda k: f"{k[0]}:{k[1]}:{k[2]}")
def test_kserve_schema_rejects_a_broken_resource(key):
    overlay, kind, _ = key
    with pytest.raises((jsonschema.ValidationError, KeyError)):
        validate_kserve(broken(overlay, kind, KSERVE_BREAKS[key]))


def test_reference_check_sees_a_selector_that_selects_nothing():
    docs = copy.deepcopy(RENDERED["torchserve/base"])
    by_kind(docs, "Service")[0]["spec"]["selector"]["app.kubernetes.io/name"] = "whyserv"
    by_kind(docs, "HorizontalPodAutoscaler")[0]["spec"]["scaleTargetRef"]["name"] = "other"
    problems = reference_problems(docs)
    assert len(problems) == 2 and "Service/whyserve" in problems[0] and "other" in problems[1]


@pytest.mark.parametrize("added, rule", [("  type: NodePort\n", "key-duplicates"), ("   ports: []\n", "syntax")])
def test_yamllint_rejects_a_duplicate_key_and_bad_indentation(added, rule):
    text = (DEPLOY / "torchserve" / "base" / "service.yaml").read_text()
    assert yamllint_problems(text) == []
    problems = yamllint_problems(text.replace("  type: ClusterIP\n", "  type: ClusterIP\n" + added))
    assert len(problems) == 1 and rule in problems[0], problems


def test_kustomize_fails_on_a_missing_resource(tmp_path):
    overlay = tmp_path / "overlay"
    shutil.copytree(DEPLOY / "torchserve" / "base", overlay)
    (overlay / "pdb.yaml").unlink()
    with pytest.raises(subprocess.CalledProcessError):
        render(overlay)


def test_committed_kserve_schema_is_what_the_script_derives(tmp_path):
    """scripts/kserve_schema.py regenerates deploy/schemas/ from the pinned kserve wheel (no deps)."""
    out = tmp_path / "schema.json"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "kserve_schema.py"), "--out", str(out)], check=True)
    assert json.loads(out.read_text()) == json.loads(KSERVE_SCHEMA.read_text())


def test_schema_is_strict_about_kserve_and_kubernetes_types():
    defs = json.loads(Path(KSERVE_SCHEMA).read_text())["$defs"]
    assert defs["V1beta1PredictorSpec"]["additionalProperties"] is False
    assert defs["io.k8s.api.core.v1.Container"]["additionalProperties"] is False
    assert "modelFormat" in defs["V1beta1ModelSpec"]["required"]
