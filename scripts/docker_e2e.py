"""Build whyserve's container images without a registry and ask each for a real prediction +
explanation from its container (run by tests/test_docker_images.py; CI has no registry either).

    .venv/bin/python scripts/docker_e2e.py            # base, wheels, CPU + KServe + GPU builds, container requests
    .venv/bin/python scripts/docker_e2e.py --no-gpu   # skip the GPU image's build

1. Base image: `debootstrap --variant=minbase bookworm` from the Debian mirror apt uses, plus the
   host's CA bundle, imported with `podman import` as debian:bookworm-slim (what the Dockerfiles'
   FROM names; bookworm's python3 is 3.11, as CI's).
2. $WHYSERVE_DOCKER_CACHE/wheels (default /var/tmp/whyserve-docker/wheels): every wheel the
   images install, `pip download`ed by the host's pip at requirements/ci.txt's versions (torch
   2.14.1, PyPI's CUDA build, from this machine's local index; this machine's CPU torch 2.13.0
   cannot load PyPI's torchvision, whose _C.so needs libtorch_cuda.so). The builds see them at
   /wheels (podman build -v) and use only them. The torch layer is ~6 GB and podman needs twice
   that while it commits it: the script refuses to build with less than MIN_FREE_GB free, or
   MIN_FREE_GB_CACHED where podman's store already holds that layer (only the later, small layers
   are built then).
   The wheels of requirements/kserve.txt join them (their own stamp; most are already there).
3. `podman build` docker/Dockerfile (whyserve:cpu), docker/Dockerfile.kserve (whyserve:kserve) and
   docker/Dockerfile.gpu on the same base (whyserve:gpu-build: the CUDA base image and a GPU are
   not here); the three share the torch layer. Layers and the base stay in podman's store: a rerun
   rebuilds only what changed.
4. Runs whyserve:cpu the way deploy/torchserve/base's Deployment runs it (its args, env, working
   dir and ConfigMap, read-only root filesystem, emptyDirs as tmpfs, uid 1000), published on
   127.0.0.1 only, waits until every model's worker is READY and sends real requests; runs
   whyserve:kserve the way deploy/kserve/native's InferenceService runs it and sends a v1 :predict
   and a v2 /infer request.

Podman needs docker/podman/containers.conf here (runc; explicit nofile/nproc limits).
WHYSERVE_PODMAN_ROOT=<dir> gives every podman call a store of its own (--root <dir>/storage
--runroot <dir>/run): with a new WHYSERVE_DOCKER_CACHE, the whole cold path without touching
the machine's store.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import yaml
from PIL import Image

from whyserve.photos import photo_path
from whyserve.serving.envelopes import Output, v2_response
from whyserve.serving.launcher import free_port

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("WHYSERVE_DOCKER_CACHE", "/var/tmp/whyserve-docker"))
WHEELS = CACHE / "wheels"  # shared by every checkout on the machine (~3 GB)
BASE = "debian:bookworm-slim"
PACKAGES = {"podman": "podman", "runc": "runc", "debootstrap": "debootstrap"}
ENV = dict(os.environ, CONTAINERS_CONF=str(ROOT / "docker" / "podman" / "containers.conf"))
# A store of its own (WHYSERVE_PODMAN_ROOT) runs the whole cold path without touching the machine's.
STORE = os.environ.get("WHYSERVE_PODMAN_ROOT")
PODMAN = ["podman", *(["--root", f"{STORE}/storage", "--runroot", f"{STORE}/run"] if STORE else [])]
MIN_FREE_GB = 16
MIN_FREE_GB_CACHED = 4  # the later layers of the three images: ~1.5 GB
MODELS = sorted(p.parent.name for p in (ROOT / "archives").glob("*/model-config.yaml"))


def run(*command: str, **options) -> subprocess.CompletedProcess:
    print("+", " ".join(command), flush=True)
    return subprocess.run(command, check=True, env=ENV, **options)


def podman(*args: str, **options) -> subprocess.CompletedProcess:
    return run(*PODMAN, *args, **options)


def podman_quiet(*args: str, **options) -> subprocess.CompletedProcess:
    """A podman call whose failure is an answer, not an error (not echoed)."""
    return subprocess.run([*PODMAN, *args], env=ENV, **options)


def ensure_tools() -> None:
    missing = [pkg for tool, pkg in PACKAGES.items() if shutil.which(tool) is None]
    if missing:
        if os.geteuid() != 0:
            raise SystemExit(f"needs {missing} (apt-get install {' '.join(missing)})")
        # a new machine may have no package lists yet (apt-get install then finds nothing)
        run("apt-get", "update", "-qq", stdout=subprocess.DEVNULL)
        run("apt-get", "install", "-y", "--no-install-recommends", *missing, stdout=subprocess.DEVNULL)


def debian_mirror(apt: Path = Path("/etc/apt")) -> str:
    """The Debian mirror the host's apt uses (deb822 .sources or one-line .list files): the only
    one known to answer here, so none found is an error, not a guess."""
    sources = [*sorted(apt.glob("sources.list.d/*.sources")), *sorted(apt.glob("sources.list.d/*.list")), apt / "sources.list"]
    for path in sources:
        text = path.read_text() if path.is_file() else ""
        for match in re.finditer(r"^(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s+)?)(\S+/debian)/?\s", text, re.M):
            return match.group(1)
    raise SystemExit(
        f"no Debian mirror in {apt}/sources.list or {apt}/sources.list.d/*.sources|*.list "
        "(a 'URIs: <url>/debian' or 'deb <url>/debian bookworm main' line): debootstrap needs one"
    )


def add_host_certificates(rootfs: Path, bundle: Path = Path("/etc/ssl/certs/ca-certificates.crt")) -> Path:
    """HTTPS from inside a build needs the certificates this network uses: the host's bundle.
    minbase installs no ca-certificates package, so not even its directory exists."""
    certs = rootfs / "etc" / "ssl" / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(bundle, certs / "ca-certificates.crt"))


def make_base() -> None:
    if podman_quiet("image", "exists", BASE).returncode == 0:
        return
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        rootfs = Path(tmp) / "rootfs"
        run("debootstrap", "--variant=minbase", "bookworm", str(rootfs), debian_mirror(), stdout=subprocess.DEVNULL)
        add_host_certificates(rootfs)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        podman("import", "-", BASE, stdin=tar.stdout, stdout=subprocess.DEVNULL)
        tar.wait()
    # `FROM debian:bookworm-slim` resolves to the local image under either name.
    podman("tag", BASE, f"docker.io/library/{BASE}")


def fill_wheels() -> None:
    """Every wheel both images install, once per change of the pins."""
    wanted = hashlib.sha256((ROOT / "requirements" / "ci.txt").read_bytes() + (ROOT / "pyproject.toml").read_bytes()).hexdigest()
    stamp = WHEELS / ".stamp"
    if stamp.exists() and stamp.read_text() == wanted:
        return
    for old in [*WHEELS.glob("*.whl"), WHEELS / ".stamp-kserve"]:
        old.unlink(missing_ok=True)
    WHEELS.mkdir(exist_ok=True)
    run(
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "-d",
        str(WHEELS),
        "-c",
        str(ROOT / "requirements" / "ci.txt"),
        "torch==2.14.1",
        "torchvision==0.29.1",
        f"{ROOT}[serve,onnx]",
        "onnxruntime-gpu==1.31.1",
        "setuptools",
    )
    stamp.write_text(wanted)


def fill_kserve_wheels() -> None:
    """The wheels of the KServe runtime's lock file, added to the others (pip skips those already there)."""
    lock = ROOT / "requirements" / "kserve.txt"
    stamp = WHEELS / ".stamp-kserve"
    wanted = hashlib.sha256(lock.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == wanted:
        return
    run(sys.executable, "-m", "pip", "download", "--quiet", "-d", str(WHEELS), "-r", str(lock))
    stamp.write_text(wanted)


def torch_layer_in_store(dockerfile: str) -> bool:
    """Whether podman's store holds the torch layer this Dockerfile would build: a whyserve image
    on the current base whose history has the Dockerfile's steps up to the torch install (what
    `podman build --layers` keys its cache on; the build arguments are the same in every build)."""
    lines = re.sub(r"\\\n", "", (ROOT / "docker" / dockerfile).read_text()).splitlines()
    steps = [" ".join(line[4:].split()) for line in lines if line.startswith("RUN ")]
    upto = steps[: next(i for i, step in enumerate(steps) if "torch==" in step) + 1]
    base = podman("image", "inspect", "--format", "{{.Id}}", BASE, capture_output=True, text=True).stdout.strip()
    listed = podman("images", "--format", "{{.Repository}}:{{.Tag}}", "localhost/whyserve", capture_output=True, text=True)
    for image in listed.stdout.split():
        layers = ("image", "history", "--no-trunc", "--format", "{{.ID}}|{{.CreatedBy}}", image)
        history = podman(*layers, capture_output=True, text=True)
        entries = [line.split("|", 1) for line in history.stdout.splitlines()]
        commands = [" ".join(created_by.split()) for _, created_by in entries]
        if entries[-1][0] == base and all(any(c.endswith("/bin/sh -c " + step) for c in commands) for step in upto):
            return True
    return False


def build(dockerfile: str, tag: str, *build_args: str) -> float:
    start = time.monotonic()
    args = [arg for pair in build_args for arg in ("--build-arg", pair)]
    store = Path(f"{STORE}/storage" if STORE else "/var/lib/containers")
    free_gb = shutil.disk_usage(next(p for p in (store, *store.parents) if p.is_dir())).free / 2**30
    needed = MIN_FREE_GB_CACHED if torch_layer_in_store(dockerfile) else MIN_FREE_GB
    if free_gb < needed:
        raise SystemExit(f"{free_gb:.1f} GB free: building {dockerfile} needs {needed} GB (the torch layer is ~6 GB)")
    # the same TORCH_INDEX for both images (ignored with PIP_NO_INDEX=1): their torch layers are one
    local = [
        "--volume",
        f"{WHEELS}:/wheels:ro",
        "--build-arg",
        "PIP_NO_INDEX=1",
        "--build-arg",
        "TORCH_INDEX=https://pypi.org/simple",
    ]
    # --layers: keep intermediate layers, so a rerun rebuilds from the first changed step only
    podman(
        "build",
        "--pull=never",
        "--layers",
        "--network=host",
        "-f",
        f"docker/{dockerfile}",
        *local,
        *args,
        "-t",
        tag,
        ".",
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    # drop what the new build superseded (untagged leaves); the cache of this build stays
    podman("image", "prune", "--force", stdout=subprocess.DEVNULL)
    return time.monotonic() - start


def gpu_image_facts(image: str) -> dict:
    """What the GPU image holds: onnxruntime-gpu's providers (CUDA listed; it runs only on a GPU),
    torch's CUDA build, and the archives."""
    probe = (
        "import glob, json, onnxruntime, torch; print(json.dumps({"
        "'providers': onnxruntime.get_available_providers(), 'torch_cuda': torch.version.cuda, "
        "'archives': sorted(glob.glob('*.mar', root_dir='/home/model-server/model-store'))}))"
    )
    return json.loads(podman("run", "--rm", image, "python", "-c", probe, capture_output=True, text=True).stdout)


def rendered(directory: str) -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(ROOT / "deploy" / directory)], check=True, capture_output=True, text=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def pod_of_deployment() -> tuple[dict, dict, dict[str, str]]:
    """deploy/torchserve/base as kubectl renders it: the container, its pod, the ConfigMap's files."""
    docs = rendered("torchserve/base")
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    user = pod["securityContext"]
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    return pod["containers"][0], {"volumes": pod["volumes"], "user": user}, config


def pod_of_serving_runtime() -> tuple[dict, dict]:
    """deploy/kserve/torchserve's ServingRuntime: its container and volumes."""
    runtime = next(d for d in rendered("kserve/torchserve") if d["kind"] == "ServingRuntime")["spec"]
    container = runtime["containers"][0]
    return container, {"volumes": runtime["volumes"], "user": container["securityContext"]}


def pod_of_inference_service() -> tuple[dict, dict]:
    """deploy/kserve/native's InferenceService: its predictor's container and volumes."""
    predictor = next(d for d in rendered("kserve/native") if d["kind"] == "InferenceService")["spec"]["predictor"]
    return predictor["containers"][0], {"volumes": predictor["volumes"], "user": predictor["securityContext"]}


def run_flags(container: dict, pod: dict, files: dict[str, str], files_dir: Path) -> list[str]:
    """podman run flags that give the container what its pod gives it (a ConfigMap volume gets ``files``)."""
    user = pod["user"]
    flags = [
        "--user",
        f"{user['runAsUser']}:{user.get('runAsGroup', user['runAsUser'])}",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        *(["-w", container["workingDir"]] if "workingDir" in container else []),
        "--memory",
        container["resources"]["limits"]["memory"].replace("Gi", "g"),
    ]
    if container["securityContext"]["readOnlyRootFilesystem"]:
        flags.append("--read-only")
    # KServe renders {{.Labels.serviceEnvelope}} from the InferenceService's labels: none here
    flags += [f"--env={e['name']}={re.sub(r'{{.*?}}', '', e['value'])}" for e in container["env"]]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        if "emptyDir" in volumes[mount["name"]]:  # writable, exec allowed, any uid may write
            flags.append(f"--tmpfs={mount['mountPath']}:rw,exec,mode=1777")
        else:
            for name, text in files.items():
                (files_dir / name).write_text(text)
            flags.append(f"--volume={files_dir}:{mount['mountPath']}:ro")
    return flags


def wait_ready(name: str, workdir: str, timeout: float = 600) -> float:
    """Every model's worker READY, asked inside the container (the management API is on its loopback)."""
    start = time.monotonic()
    check = (
        "from pathlib import Path; from whyserve.serving.launcher import TorchServe; "
        f"TorchServe(Path({workdir!r}), '', 'http://127.0.0.1:8081', '', {MODELS!r}).wait_ready({timeout})"
    )
    podman("exec", name, "python", "-c", check, stdout=subprocess.DEVNULL)
    return time.monotonic() - start


def explain(url: str, headers: dict[str, str]) -> dict:
    """A real request: chelsea, contrastive Grad-CAM against "Egyptian cat"; the answer's essentials."""
    answer = requests.post(
        f"{url}/predictions/efficientnet_lite0",
        data=photo_path("chelsea").read_bytes(),
        timeout=120,
        headers={
            **headers,
            "Content-Type": "application/octet-stream",
            "X-Explain-Method": "contrastive",
            "X-Explain-Contrast": "Egyptian cat",
        },
    )
    answer.raise_for_status()
    return essentials(answer.json())


def essentials(body: dict) -> dict:
    """whyserve's response in brief: top-1, the method, its contrast class, the heatmap's size as decoded."""
    heatmap = Image.open(io.BytesIO(base64.b64decode(body["explanation"]["heatmap"]["data"])))
    return {
        "top1": body["predictions"][0],
        "method": body["explanation"]["method"],
        "contrast": body["explanation"].get("contrast"),
        "heatmap_size": list(heatmap.size),
    }


def ask(url: str, key: str) -> dict:
    """Real requests to the production container: explanations (PyTorch and ONNX Runtime), token auth, a bad input."""
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/octet-stream"}
    photo = photo_path("chelsea").read_bytes()
    onnx = requests.post(
        f"{url}/predictions/efficientnet_lite0_onnx",
        data=photo,
        timeout=120,
        headers={**auth, "X-Explain-Method": "scorecam", "X-Explain-Channels": "8"},
    )
    onnx.raise_for_status()
    no_token = requests.post(
        f"{url}/predictions/efficientnet_lite0", data=photo, timeout=60, headers={"Content-Type": "application/octet-stream"}
    )
    bad = requests.post(f"{url}/predictions/efficientnet_lite0", data=b"not an image", headers=auth, timeout=60)
    return {
        **explain(url, {"Authorization": f"Bearer {key}"}),
        "onnx_backend": onnx.json()["explanation"]["backend"],
        "onnx_top1": onnx.json()["predictions"][0]["label"],
        "no_token_status": no_token.status_code,
        "bad_input": [bad.status_code, bad.json()["error"]["code"]],
    }


def started(image: str, flags: list[str], args: list[str]) -> tuple[str, int, int]:
    name = f"whyserve-e2e-{os.getpid()}-{free_port()}"
    port, metrics = free_port(), free_port()
    podman(
        "run",
        "-d",
        "--name",
        name,
        "-p",
        f"127.0.0.1:{port}:8080",
        "-p",
        f"127.0.0.1:{metrics}:8082",
        *flags,
        image,
        *args,
        stdout=subprocess.DEVNULL,
    )
    return name, port, metrics


def removed(name: str, failed: bool) -> None:
    if failed:
        podman_quiet("logs", "--tail", "60", name)
    podman_quiet("rm", "-f", "-t", "5", name, capture_output=True)


def serve_as_deployment(image: str) -> dict:
    """Run ``image`` as deploy/torchserve/base's Deployment runs it, on loopback ports, and ask it."""
    container, pod, config = pod_of_deployment()
    with tempfile.TemporaryDirectory() as config_dir:
        os.chmod(config_dir, 0o755)
        name, port, metrics = started(image, run_flags(container, pod, config, Path(config_dir)), container["args"])
        failed = True
        try:
            ready_s = wait_ready(name, container["workingDir"])
            keys = json.loads(podman("exec", name, "cat", f"{container['workingDir']}/key_file.json", capture_output=True).stdout)
            result = ask(f"http://127.0.0.1:{port}", keys["inference"]["key"])
            result["metrics_has_explanation_latency"] = (
                "ExplanationLatency" in requests.get(f"http://127.0.0.1:{metrics}/metrics", timeout=30).text
            )
            result["ready_s"] = round(ready_s, 1)
            failed = False
            return result
        finally:
            removed(name, failed)


def serve_as_kserve_runtime(image: str) -> dict:
    """Run ``image`` as KServe runs deploy/kserve/torchserve's ServingRuntime: the storageUri's
    layout (config/config.properties, model-store/*.mar) mounted at /mnt/models, as the storage
    initializer leaves it; the archives are the image's own."""
    container, pod = pod_of_serving_runtime()
    with tempfile.TemporaryDirectory() as store:
        os.chmod(store, 0o755)
        (Path(store) / "config").mkdir()
        shutil.copy(ROOT / "deploy" / "kserve" / "torchserve" / "config.properties", Path(store) / "config")
        podman("run", "--rm", "-v", f"{store}:/out", "--user", "0", image, "cp", "-r", "/home/model-server/model-store", "/out/")
        flags = [*run_flags(container, pod, {}, Path(store)), f"--volume={store}:/mnt/models:ro"]
        name, port, _ = started(image, flags, container["args"])
        failed = True
        try:
            ready_s = wait_ready(name, container["workingDir"])
            result = {**explain(f"http://127.0.0.1:{port}", {}), "ready_s": round(ready_s, 1)}
            failed = False
            return result
        finally:
            removed(name, failed)


def wait_http(url: str, name: str, timeout: float = 600) -> float:
    """Until ``url`` answers 200 (the readiness probe's request), failing early if the container stopped."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if requests.get(url, timeout=5).status_code == 200:
                return time.monotonic() - start
        except requests.ConnectionError:
            pass
        state = podman_quiet("inspect", "--format", "{{.State.Running}}", name, capture_output=True, text=True)
        if state.stdout.strip() != "true":
            raise RuntimeError(f"container {name} stopped before {url} answered")
        time.sleep(2)
    raise TimeoutError(f"{url} not ready after {timeout} s")


def ask_kserve(url: str, model: str) -> dict:
    """A v1 :predict with a contrastive explanation and a v2 /infer with Grad-CAM, chelsea both times."""
    photo = base64.b64encode(photo_path("chelsea").read_bytes()).decode("ascii")
    instance = {"image": {"b64": photo}, "method": "contrastive", "contrast": "Egyptian cat"}
    v1 = requests.post(f"{url}/v1/models/{model}:predict", json={"instances": [instance]}, timeout=120)
    v1.raise_for_status()
    tensor = {"name": "image", "datatype": "BYTES", "shape": [1], "data": [photo]}
    body = {"id": "e2e", "inputs": [tensor], "parameters": {"method": "gradcam"}}
    v2 = requests.post(f"{url}/v2/models/{model}/infer", json=body, timeout=120)
    v2.raise_for_status()
    outputs = [Output(o["name"], o["datatype"], tuple(o["shape"]), o["data"]) for o in v2.json()["outputs"]]
    return {"v1": essentials(v1.json()["predictions"][0]), "v2": essentials(v2_response(outputs))}


def serve_as_inference_service(image: str) -> dict:
    """Run ``image`` as deploy/kserve/native's InferenceService runs its predictor, and ask it in both protocols."""
    container, pod = pod_of_inference_service()
    name, port, _ = started(image, run_flags(container, pod, {}, Path()), container["args"])
    failed = True
    try:
        url = f"http://127.0.0.1:{port}"
        ready_s = wait_http(url + container["readinessProbe"]["httpGet"]["path"], name)
        result = {**ask_kserve(url, container["args"][container["args"].index("--model") + 1]), "ready_s": round(ready_s, 1)}
        failed = False
        return result
    finally:
        removed(name, failed)


def image_gb(image: str) -> float:
    return round(int(podman("image", "inspect", "--format", "{{.Size}}", image, capture_output=True, text=True).stdout) / 1e9, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-gpu", action="store_true", help="skip the GPU image's build")
    args = parser.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    ensure_tools()
    make_base()
    fill_wheels()
    fill_kserve_wheels()
    summary = {"cpu": {"build_s": round(build("Dockerfile", "whyserve:cpu"), 1)}}
    summary["cpu"].update(serve_as_deployment("whyserve:cpu"))
    summary["kserve_torchserve"] = serve_as_kserve_runtime("whyserve:cpu")
    summary["kserve_native"] = {
        "build_s": round(build("Dockerfile.kserve", "whyserve:kserve"), 1),
        "image_gb": image_gb("whyserve:kserve"),
    }
    summary["kserve_native"].update(serve_as_inference_service("whyserve:kserve"))
    if not args.no_gpu:
        summary["gpu"] = {"build_s": round(build("Dockerfile.gpu", "whyserve:gpu-build", f"BASE={BASE}"), 1)}
        summary["gpu"].update(gpu_image_facts("whyserve:gpu-build"))
    print("SUMMARY " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
