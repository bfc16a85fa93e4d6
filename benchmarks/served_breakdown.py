#!/usr/bin/env python
"""Where one served request's time goes, through a real TorchServe at concurrency 1, for the
PyTorch (efficientnet_lite0) and ONNX Runtime (efficientnet_lite0_onnx) archives as shipped:

- client: what the client measures (requests, loopback);
- TorchServe's own per-request metrics (log mode, ts_metrics.log): ts_inference_latency
  (request in to response out, in the frontend) and ts_queue_latency (waiting for a worker,
  including maxBatchDelay while a batch fills); model_metrics.log: PredictionTime (the
  worker's call of the handler);
- the handler's stages, from the Server-Timing header of each reply: decode, resize + crop,
  normalize, engine (forward + explanation of the batch), encode (PNG + JSON);
- the rests: worker (PredictionTime - stages), frontend (inference - queue - PredictionTime),
  outside TorchServe's timer (client - inference: HTTP parsing, sockets, the client).

Photos: chelsea.png (451x300) and a 4000x3000 JPEG made from it (decoded at 1/8 scale by the
draft path). In the same run and process, in-process decode + preprocess + forward of the same
bytes, and the ratio served prediction-only p50 / that (issue 15: <= 1.5x). Rows interleaved;
then the same ratio back to back (blocks of --block requests, as a steady client sends them).
The in-process services are configured as the archives (1 torch, 1 ONNX Runtime thread).

    .venv/bin/python benchmarks/served_breakdown.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import io
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import requests
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from archives.build import handler_settings  # noqa: E402
from benchmarks.serving_common import served  # noqa: E402
from whyserve.photos import photo_path  # noqa: E402
from whyserve.serving.images import ImageLimits, decode_image  # noqa: E402
from whyserve.serving.service import ExplainService, ServingConfig  # noqa: E402

BACKENDS = {"PyTorch": "efficientnet_lite0", "ONNX": "efficientnet_lite0_onnx"}
MODES = {"pred": "none", "gradcam": "gradcam"}
STAGES = ("decode", "resize", "normalize", "engine", "encode")
WHOLE = ImageLimits(max_pixels=25_000_000, max_resized_pixels=25_000_000)  # no resize rule: no draft


def photos() -> dict[str, bytes]:
    png = Path(photo_path("chelsea")).read_bytes()
    large = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC).save(large, "JPEG", quality=90)
    return {"chelsea.png 451x300": png, "chelsea 4000x3000 JPEG": large.getvalue()}


def in_process(tmp: Path) -> dict[str, ExplainService]:
    """Services configured as the archives' handlers (their model-config.yaml: the same threads
    as a worker, 1 torch and 1 ONNX Runtime thread), so the ratios compare the same work."""
    return {backend: ExplainService(ServingConfig.from_dict(handler_settings(model, tmp))) for backend, model in BACKENDS.items()}


def local_ms(service: ExplainService, data: bytes, draft: bool = True) -> float:
    """Decode + resize/crop + normalize + forward (prediction only), in this process."""
    start = time.perf_counter()
    image = decode_image(data, service.image_limits, service.resized) if draft else decode_image(data, WHOLE)
    service.explainer.predict(service.spec.normalize(service.spec.view(image))[None])
    return (time.perf_counter() - start) * 1e3


def server_timing(header: str) -> dict[str, float]:
    return {m[1]: float(m[2]) for m in re.finditer(r"(\w+);dur=([\d.]+)", header or "")}


def send(session: requests.Session, url: str, data: bytes, method: str) -> dict[str, float]:
    headers = {"Content-Type": "application/octet-stream", "X-Explain-Method": method}
    start = time.perf_counter()
    response = session.post(url, data=data, headers=headers, timeout=300)
    client = (time.perf_counter() - start) * 1e3
    response.raise_for_status()
    return {"client": client, **server_timing(response.headers.get("Server-Timing", ""))}


def torchserve_metrics(logs: Path) -> dict[str, dict[str, list[float]]]:
    """Per model, in request order: inference and queue latency (ms, frontend), PredictionTime
    (ms, worker; one per batch, so one per request at concurrency 1)."""
    found: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    patterns = {
        "inference": (
            logs / "ts_metrics.log",
            r"ts_inference_latency_microseconds\.\w+:([\d.]+)\|#model_name:(\w+)",
            1e-3,
        ),
        "queue": (logs / "ts_metrics.log", r"ts_queue_latency_microseconds\.\w+:([\d.]+)\|#model_name:(\w+)", 1e-3),
        "handler": (logs / "model_metrics.log", r"PredictionTime\.ms:([\d.]+)\|#ModelName:(\w+)", 1.0),
    }
    for name, (path, pattern, scale) in patterns.items():
        for match in re.finditer(pattern, path.read_text() if path.exists() else ""):
            found[match[2]][name].append(float(match[1]) * scale)
    return found


def attach(samples: list[dict[str, float]], metrics: dict[str, list[float]]) -> None:
    """Adds TorchServe's figures to the client's samples of one model (same order) and the rests."""
    for name, values in metrics.items():
        if len(values) != len(samples):
            print(f"warning: {len(values)} {name} values in the logs for {len(samples)} requests; left out")
            continue
        for sample, value in zip(samples, values):
            sample[name] = value
    for s in samples:
        if {"inference", "queue", "handler"} <= s.keys():
            s["worker rest"] = s["handler"] - sum(s.get(stage, 0.0) for stage in STAGES)
            s["frontend rest"] = s["inference"] - s["queue"] - s["handler"]
            s["outside TorchServe"] = s["client"] - s["inference"]


ROWS = {
    "client total": "client",
    "TorchServe: request in -> response out (ts_inference_latency)": "inference",
    "  queue, incl. maxBatchDelay (ts_queue_latency)": "queue",
    "  worker: the handler call (PredictionTime)": "handler",
    **{f"    {stage}": stage for stage in STAGES},
    "    rest of the worker (socket, unpickling, ...)": "worker rest",
    "  rest of the frontend (to and from the worker)": "frontend rest",
    "outside TorchServe's timer (HTTP, client)": "outside TorchServe",
}


def median(samples: list[dict[str, float]], key: str) -> str:
    values = [s[key] for s in samples if key in s]
    return f"{statistics.median(values):.1f}" if values else "-"


def print_tables(samples: dict[tuple, list[dict[str, float]]], photo_names: list[str]) -> None:
    columns = [(b, m) for b in BACKENDS for m in MODES]
    for photo in photo_names:
        print(f"\n{photo}: median ms per request, concurrency 1\n")
        print("| stage | " + " | ".join(f"{b} {m}" for b, m in columns) + " |")
        print("|---|" + "---:|" * len(columns))
        for label, key in ROWS.items():
            cells = [median(samples[b, photo, m], key) for b, m in columns]
            print(f"| {label} | " + " | ".join(cells) + " |")


def print_ratios(samples: dict[tuple, list[dict[str, float]]], local: dict[tuple, list[float]], photo_names: list[str]) -> None:
    print("\nserved prediction only vs in process (decode + preprocess + forward, same bytes, same run), ms")
    print("interleaved: every request after the other backend's and the in-process calls (cold caches)\n")
    print("| backend | photo | served p50 | in process | served / in process | in process, full decode (no draft) |")
    print("|---|---|---:|---:|---:|---:|")
    for backend in BACKENDS:
        for photo in photo_names:
            served_p50 = statistics.median(s["client"] for s in samples[backend, photo, "pred"])
            here = statistics.median(local[backend, photo, True])
            full = local.get((backend, photo, False))
            full_text = f"{statistics.median(full):.1f}" if full else "-"
            print(f"| {backend} | {photo} | {served_p50:.1f} | {here:.1f} | {served_p50 / here:.2f}x | {full_text} |")


def back_to_back(
    inference: str, services: dict[str, ExplainService], images: dict[str, bytes], rounds: int, block: int
) -> dict[tuple, list[float]]:
    """Blocks of ``block`` prediction requests one after another (a steady client at
    concurrency 1, as benchmarks/serve_load.py drives it), each followed by a block of the same
    calls in process; the blocks alternate over ``rounds``. The first call of a block is dropped."""
    times: dict[tuple, list[float]] = defaultdict(list)
    session = requests.Session()
    for _ in range(rounds):
        for backend, model in BACKENDS.items():
            for photo, data in images.items():
                served_ms = [send(session, f"{inference}/predictions/{model}", data, "none")["client"] for _ in range(block + 1)]
                local = [local_ms(services[backend], data) for _ in range(block + 1)]
                times[backend, photo, "served"] += served_ms[1:]
                times[backend, photo, "local"] += local[1:]
    return times


def print_back_to_back(times: dict[tuple, list[float]], photo_names: list[str], rounds: int, block: int) -> None:
    print(f"\nback to back: {rounds} rounds of {block} served then {block} in-process calls per backend and photo, ms\n")
    print("| backend | photo | served p50 | in process p50 | served / in process |")
    print("|---|---|---:|---:|---:|")
    for backend in BACKENDS:
        for photo in photo_names:
            served_p50 = statistics.median(times[backend, photo, "served"])
            here = statistics.median(times[backend, photo, "local"])
            print(f"| {backend} | {photo} | {served_p50:.1f} | {here:.1f} | {served_p50 / here:.2f}x |")


def measure(inference: str, services: dict[str, ExplainService], images: dict[str, bytes], rounds: int) -> tuple[dict, dict]:
    samples: dict[tuple, list[dict[str, float]]] = defaultdict(list)
    local: dict[tuple, list[float]] = defaultdict(list)
    session = requests.Session()
    for _round in range(rounds + 1):  # round 0 warms up (kept for the log order, dropped after)
        for backend, model in BACKENDS.items():
            for photo, data in images.items():
                for mode, method in MODES.items():
                    samples[backend, photo, mode].append(send(session, f"{inference}/predictions/{model}", data, method))
                local[backend, photo, True].append(local_ms(services[backend], data))
                if data[:2] == b"\xff\xd8":  # a JPEG: also the full decode, to see what the draft saves
                    local[backend, photo, False].append(local_ms(services[backend], data, draft=False))
    return samples, {key: values[1:] for key, values in local.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--block", type=int, default=10, help="calls per back-to-back block (rounds: --rounds / 4)")
    args = parser.parse_args()
    images = photos()
    with tempfile.TemporaryDirectory() as tmp, served(None, "", list(BACKENDS.values()), Path(tmp)) as (inference, _):
        services = in_process(Path(tmp))
        samples, local = measure(inference, services, images, args.rounds)
        time.sleep(2)  # TorchServe writes its metric logs asynchronously
        metrics = torchserve_metrics(Path(tmp) / "ts" / "logs")  # serving_common.served's workdir
        for backend, model in BACKENDS.items():
            ordered = [samples[key] for key in samples if key[0] == backend]
            in_order = [row[r] for r in range(args.rounds + 1) for row in ordered]
            attach(in_order, metrics[model])
        steady_rounds = max(1, args.rounds // 4)  # after the logs are read: their requests are not in them
        steady = back_to_back(inference, services, images, steady_rounds, args.block)
    samples = {key: values[1:] for key, values in samples.items()}
    print(f"{args.rounds} interleaved rounds; archives as shipped (archives/*/model-config.yaml)")
    print_tables(samples, list(images))
    print_ratios(samples, local, list(images))
    print_back_to_back(steady, list(images), steady_rounds, args.block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
