#!/usr/bin/env python
"""Load on a served model: requests/s and p50/p99 latency, prediction only vs + Grad-CAM vs
+ contrastive, with batchSize 1 and 8, from this process (a second process to the server).

    python benchmarks/serve_load.py                       # builds _b1/_b8 archives, starts its own TorchServe
    python benchmarks/serve_load.py --url http://127.0.0.1:8080 --models efficientnet_lite0

The server runs the workers of the model-config.yaml (2 for each EfficientNet-Lite0 archive);
only one model is loaded with requests at a time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from whyserve.photos import photo_path  # noqa: E402
from whyserve.serving import launcher  # noqa: E402

MODES = {
    "prediction only": {"X-Explain-Method": "none"},
    "+ gradcam": {"X-Explain-Method": "gradcam"},
    "+ contrastive": {"X-Explain-Method": "contrastive", "X-Explain-Contrast": "Egyptian cat"},
}


def drive(url: str, image: bytes, headers: dict, concurrency: int, total: int) -> tuple[float, list[float]]:
    """``total`` requests from ``concurrency`` threads; (requests/s, latencies in ms)."""
    headers = {"Content-Type": "application/octet-stream", **headers}
    local = threading.local()
    latencies: list[float] = []

    def one(_):
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        start = time.perf_counter()
        response = session.post(url, data=image, headers=headers, timeout=300)
        elapsed = (time.perf_counter() - start) * 1e3
        response.raise_for_status()
        latencies.append(elapsed)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(concurrency)))  # warm-up: connections, worker caches
        latencies.clear()
        start = time.perf_counter()
        list(pool.map(one, range(total)))
        wall = time.perf_counter() - start
    return total / wall, latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def run(inference_url: str, models: list[tuple[str, str]], concurrency: list[int], total: int) -> None:
    image = Path(photo_path("chelsea")).read_bytes()
    header = f"{'batchSize':>9}  {'conc':>4}  {'mode':<16} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'p50 / pred':>10}"
    print(header)
    print("-" * len(header))
    for label, model in models:
        url = f"{inference_url}/predictions/{model}"
        for n in concurrency:
            base = None
            for mode, headers in MODES.items():
                rate, latencies = drive(url, image, headers, n, total)
                p50 = statistics.median(latencies)
                base = base or p50
                print(
                    f"{label:>9}  {n:>4}  {mode:<16} {rate:7.1f} {p50:8.1f} {percentile(latencies, 99):8.1f} {p50 / base:9.2f}x",
                    flush=True,
                )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="inference address of a running server (default: start one)")
    parser.add_argument("--models", nargs="+", help="with --url: model names to drive")
    parser.add_argument("--concurrency", default="1,8", help="comma-separated (default: 1,8)")
    parser.add_argument("--requests", type=int, default=48, help="timed requests per cell")
    parser.add_argument("--model", default="efficientnet_lite0", help="archive to build when starting a server")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS of the started server (default: torch's)")
    args = parser.parse_args()
    concurrency = [int(c) for c in args.concurrency.split(",")]
    if args.url:
        run(args.url.rstrip("/"), [(m, m) for m in args.models or [args.model]], concurrency, args.requests)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        names = []
        for batch in (1, 8):
            name = f"{args.model}_b{batch}"
            subprocess.run(
                [
                    sys.executable,
                    str(ROOT / "archives" / "build.py"),
                    args.model,
                    "--export-path",
                    str(store),
                    "--name",
                    name,
                    "--batch-size",
                    str(batch),
                ],
                check=True,
                capture_output=True,
            )
            names.append((str(batch), name))
        if args.threads:
            os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the workers
        server = launcher.start(store, [n for _, n in names], ROOT / "configs" / "local.properties", Path(tmp) / "ts")
        try:
            server.wait_ready(300)
            threads = args.threads or "default"
            print(
                f"TorchServe 0.12 on {server.inference_url}; worker threads: {threads}; "
                f"{args.requests} requests per row; chelsea.png (451x300)\n"
            )
            run(server.inference_url, names, concurrency, args.requests)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
