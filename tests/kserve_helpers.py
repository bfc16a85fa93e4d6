"""KServe v1/v2 request bodies and the comparison with whyserve's own protocol, shared by the
TorchServe-envelope tests and the KServe-native runtime tests."""

from __future__ import annotations

import base64
import io
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import requests
import yaml
from PIL import Image

from whyserve.serving.envelopes import Output, v2_response
from whyserve.serving.launcher import free_port
from whyserve.serving.service import ExplainService, ServingConfig

ROOT = Path(__file__).resolve().parent.parent
MODEL_CONFIG = ROOT / "archives" / "efficientnet_lite0" / "model-config.yaml"


def b64(image: bytes) -> str:
    return base64.b64encode(image).decode("ascii")


def v1_instance(image: bytes, **options) -> dict:
    return {"image": {"b64": b64(image)}, **options}


def v2_body(image: bytes, parameters: dict | None = None, input_parameters: dict | None = None) -> dict:
    image_input = {"name": "image", "datatype": "BYTES", "shape": [1], "data": [b64(image)]}
    if input_parameters:
        image_input["parameters"] = input_parameters
    body = {"id": "req-1", "inputs": [image_input]}
    if parameters:
        body["parameters"] = parameters
    return body


def from_v2(body: dict) -> dict:
    """whyserve's response from a v2 body, checking the outputs' declared datatypes and shapes."""
    outputs = []
    for output in body["outputs"]:
        assert list(output["shape"]) == [len(output["data"])], output["name"]
        assert output["datatype"] == {"topk_index": "INT64", "topk_probability": "FP32"}.get(output["name"], "BYTES")
        outputs.append(Output(output["name"], output["datatype"], tuple(output["shape"]), output["data"]))
    return v2_response(outputs)


def reference_service() -> ExplainService:
    """whyserve's own protocol in-process, with the archive's settings: the answers to match."""
    return ExplainService(ServingConfig.from_dict(yaml.safe_load(MODEL_CONFIG.read_text())["handler"]))


def native_answer(service: ExplainService, image: bytes, **options) -> tuple[int, dict]:
    (reply,) = service.handle([({"body": {"image": b64(image), **options}}, {})])
    return reply.status, reply.body


def heatmap(body: dict) -> np.ndarray:
    png = Image.open(io.BytesIO(base64.b64decode(body["explanation"]["heatmap"]["data"])))
    return np.asarray(png, dtype=np.float64) / 255.0


def assert_same_answer(got: dict, expected: dict) -> None:
    """Equal up to encoding: the same classes and explanation fields, probabilities to float32
    rounding, the heatmap to one grey level (the batch can differ, so can the last float bits)."""
    assert [(p["index"], p["label"]) for p in got["predictions"]] == [(p["index"], p["label"]) for p in expected["predictions"]]
    np.testing.assert_allclose(
        [p["probability"] for p in got["predictions"]], [p["probability"] for p in expected["predictions"]], rtol=1e-4, atol=1e-6
    )
    if expected["explanation"] is None:
        assert got["explanation"] is None
        return
    ignore = {"timing_ms", "heatmap"}
    assert {k: v for k, v in got["explanation"].items() if k not in ignore} == {
        k: v for k, v in expected["explanation"].items() if k not in ignore
    }
    assert {k: v for k, v in got["explanation"]["heatmap"].items() if k != "data"} == {
        k: v for k, v in expected["explanation"]["heatmap"].items() if k != "data"
    }
    assert np.abs(heatmap(got) - heatmap(expected)).max() <= 1 / 255 + 1e-9


@contextmanager
def native_server(args: list[str], model: str, folder: Path) -> Iterator[str]:
    """``whyserve serve-kserve *args`` as a real process from .venv-kserve (scripts/setup-kserve:
    kserve's pins conflict with .venv's) on a free port, until ``model`` is ready; its base URL."""
    subprocess.run([str(ROOT / "scripts" / "setup-kserve")], check=True, capture_output=True)
    port = free_port()
    log = folder / "server.log"
    command = [str(ROOT / ".venv-kserve" / "bin" / "whyserve"), "serve-kserve", *args, "--http-port", str(port)]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=folder)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(process, f"{base}/v1/models/{model}", log)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(process: subprocess.Popen, ready_url: str, log, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"serve-kserve exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if requests.get(ready_url, timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"serve-kserve not ready after {timeout} s:\n{log.read_text()[-4000:]}")
