"""configs/production.properties in a real TorchServe: token auth on, model API off,
Prometheus metrics with whyserve's ExplanationLatency / ExplanationErrors."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import requests

from serving_helpers import MODEL, ROOT, encoded, start_server
from whyserve.serving import launcher

pytestmark = pytest.mark.slow
BROKEN = "broken_model"  # its worker cannot load: the health check must say so


def test_production_config_says_what_the_issue_asks():
    properties = launcher.read_properties(ROOT / "configs" / "production.properties")
    assert properties["disable_token_authorization"] == "false" and properties["enable_model_api"] == "false"
    assert int(properties["max_request_size"]) > 0 and int(properties["max_response_size"]) > 0
    assert properties["metrics_mode"] == "prometheus"
    assert "0.0.0.0" not in properties["metrics_address"] and "0.0.0.0" not in properties["management_address"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    metrics = {"metrics_config": str(ROOT / "configs" / "metrics.yaml")}  # the config names the Docker path
    ts = start_server(tmp_path_factory, "production.properties", unready=(BROKEN,), overrides=metrics)
    yield ts
    ts.stop()


def test_token_auth_metrics_and_model_api(server, photos):
    url = f"{server.inference_url}/predictions/{MODEL}"
    image = {"data": encoded(photos["chelsea"]), "headers": {"Content-Type": "image/png"}}
    refused = requests.post(url, timeout=60, **image)
    assert refused.status_code in (400, 401) and "Token Authorization failed" in refused.text
    token = server.auth_headers("inference")
    answered = requests.post(url, data=image["data"], headers=image["headers"] | token, timeout=60)
    assert answered.status_code == 200, answered.text
    assert answered.json()["explanation"]["method"] == "gradcam"
    bad = requests.post(url, data=b"not an image", headers=image["headers"] | token, timeout=60)
    assert bad.status_code == 400

    management = server.auth_headers("management")
    assert (
        requests.post(f"{server.management_url}/models", params={"url": "x.mar"}, headers=management, timeout=10).status_code
        == 405
    )

    deadline = time.monotonic() + 30
    while True:
        metrics = requests.get(f"{server.metrics_url}/metrics", timeout=10).text
        if 'ExplanationErrors{Kind="not_an_image"' in metrics or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert 'ExplanationLatency_bucket{Method="gradcam",ModelName="efficientnet_lite0"' in metrics  # a histogram
    assert 'ExplanationLatency_count{Method="gradcam",ModelName="efficientnet_lite0"' in metrics
    assert 'ExplanationErrors{Kind="not_an_image",ModelName="efficientnet_lite0"' in metrics


def healthcheck(server, *options: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "whyserve.entry", "healthcheck", "--management", server.management_url, *options]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_healthcheck_needs_the_management_key_and_every_worker_ready(server):
    key_file = str(server.workdir / "key_file.json")
    failing = healthcheck(server, "--key-file", key_file)
    assert failing.returncode == 1, failing.stdout
    assert f"model {BROKEN}: no READY worker" in failing.stdout and f"model {MODEL}" not in failing.stdout
    without_key = healthcheck(server, "--key-file", str(server.workdir / "absent.json"))
    assert without_key.returncode == 1 and "did not answer" in without_key.stdout  # 401 without the key
    inference_token = requests.get(f"{server.inference_url}/ping", headers=server.auth_headers("inference"), timeout=10)
    assert inference_token.status_code == 200  # /ping says Healthy although a model has no worker
