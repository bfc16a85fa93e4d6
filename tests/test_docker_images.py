"""The container images, built and run for real without a registry (scripts/docker_e2e.py):
whyserve:cpu built from docker/Dockerfile, run as deploy/torchserve/base's Deployment runs it
(read-only root filesystem, uid 1000, emptyDirs), answers real prediction + explanation requests
from its container; whyserve:kserve (docker/Dockerfile.kserve), run as deploy/kserve/native's
InferenceService runs it, answers KServe v1 and v2; docker/Dockerfile.gpu builds (its CUDA provider
needs a GPU: not here).
Minutes on a first run (debootstrap, ~3 GB of wheels, two builds); a rerun reuses podman's cache."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from serving_helpers import ROOT


@pytest.fixture(scope="module")
def summary() -> dict:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "docker_e2e.py")], capture_output=True, text=True, timeout=75 * 60
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("SUMMARY "))
    return json.loads(line.removeprefix("SUMMARY "))


@pytest.mark.slow
def test_cpu_container_answers_prediction_and_explanation(summary):
    cpu = summary["cpu"]
    assert cpu["top1"]["label"] in {"tiger cat", "tabby", "Egyptian cat"}, cpu["top1"]
    assert cpu["method"] == "contrastive" and cpu["contrast"]["label"] == "Egyptian cat"
    assert cpu["heatmap_size"] == [224, 224]
    assert cpu["onnx_backend"] == "onnxruntime:CPUExecutionProvider"
    assert cpu["onnx_top1"] == cpu["top1"]["label"]


@pytest.mark.slow
def test_cpu_container_keeps_the_production_settings(summary):
    cpu = summary["cpu"]
    assert cpu["no_token_status"] == 400  # token auth on: TorchServe 0.12 answers 400 without a token
    assert cpu["bad_input"] == [400, 400]  # whyserve's JSON error from inside the container
    assert cpu["metrics_has_explanation_latency"] is True


@pytest.mark.slow
def test_cpu_image_serves_kserves_torchserve_layout(summary):
    """The image run as deploy/kserve/torchserve's ServingRuntime runs it, with the storageUri layout
    (config/config.properties, model-store/*.mar) at /mnt/models: token auth off there."""
    served = summary["kserve_torchserve"]
    assert served["top1"]["label"] == summary["cpu"]["top1"]["label"]
    assert served["method"] == "contrastive" and served["heatmap_size"] == [224, 224]


@pytest.mark.slow
def test_kserve_image_answers_v1_and_v2_with_explanations(summary):
    """whyserve:kserve as deploy/kserve/native's predictor runs it (uid 1000, read-only root, /tmp tmpfs):
    a v1 :predict with contrastive Grad-CAM and a v2 /infer with Grad-CAM, both with the CPU image's top-1."""
    native = summary["kserve_native"]
    v1, v2 = native["v1"], native["v2"]
    assert v1["top1"]["label"] == v2["top1"]["label"] == summary["cpu"]["top1"]["label"]
    assert v1["method"] == "contrastive" and v1["contrast"]["label"] == "Egyptian cat"
    assert v2["method"] == "gradcam"
    assert v1["heatmap_size"] == v2["heatmap_size"] == [224, 224]


@pytest.mark.slow
def test_gpu_image_builds_with_onnxruntime_gpu_and_cuda_torch(summary):
    gpu = summary["gpu"]
    assert "CUDAExecutionProvider" in gpu["providers"]  # onnxruntime-gpu, not the CPU onnxruntime
    assert gpu["torch_cuda"]  # PyPI's CUDA build of torch
    models = sorted(p.parent.name for p in (ROOT / "archives").glob("*/model-config.yaml"))
    assert gpu["archives"] == [f"{m}.mar" for m in models]
