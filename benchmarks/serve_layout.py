#!/usr/bin/env python
"""The worker/thread layout of a served model, from measurements: one table of req/s and
p50/p99 at concurrency 1, 4, 8, prediction only and + Grad-CAM, for

- backend: the PyTorch archive (efficientnet_lite0) and the ONNX Runtime one (efficientnet_lite0_onnx,
  trunk on ONNX Runtime, head in PyTorch);
- layout: 1 worker x 2 threads vs 2 workers x 1 thread (handler torch_threads, and onnx_threads
  for ONNX Runtime's intra-op pool: ``archives/build.py --workers --threads``);
- batchSize (and maxBatchDelay, which a lone request waits out in TorchServe's queue).

One TorchServe (model API on, loopback), each configuration registered, driven and unregistered
in turn, so only one loads the cores at a time; then the best configuration by Grad-CAM req/s at
concurrency 8 and by prediction p50 at concurrency 1. Archives are cached in model_store/layout/.

    .venv/bin/python benchmarks/serve_layout.py                 # 12 configurations (maxBatchDelay 2)
    .venv/bin/python benchmarks/serve_layout.py --delays 10,2   # 20: maxBatchDelay 10 rows too
    .venv/bin/python benchmarks/serve_layout.py --backends onnx --batch-sizes 4,8 --requests 16
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from archives.build import build  # noqa: E402
from benchmarks.serve_load import drive, percentile  # noqa: E402
from whyserve.photos import photo_path  # noqa: E402
from whyserve.serving import launcher  # noqa: E402

ARCHIVES = {"torch": "efficientnet_lite0", "onnx": "efficientnet_lite0_onnx"}
MODES = {"pred": {"X-Explain-Method": "none"}, "gradcam": {"X-Explain-Method": "gradcam"}}
STORE = ROOT / "model_store" / "layout"


@dataclass(frozen=True)
class Layout:
    backend: str
    workers: int
    threads: int
    batch: int
    delay: int

    @property
    def name(self) -> str:
        return f"{self.backend}_w{self.workers}t{self.threads}_b{self.batch}_d{self.delay}"

    def label(self) -> str:
        return f"| {self.backend} | {self.workers} x {self.threads} | {self.batch} | {self.delay} |"


def layouts(args: argparse.Namespace) -> list[Layout]:
    """Every combination asked for; maxBatchDelay varies only where batchSize > 1 (and is 0 at 1)."""
    grid = []
    for backend, layout, batch in itertools.product(args.backends, args.layouts, args.batch_sizes):
        workers, threads = layout
        for delay in args.delays if batch > 1 else [0]:
            grid.append(Layout(backend, workers, threads, batch, delay))
    return grid


def register(server: launcher.TorchServe, layout: Layout) -> None:
    url = f"{server.management_url}/models"
    params = {"url": f"{layout.name}.mar", "initial_workers": layout.workers, "synchronous": "true"}
    requests.post(url, params=params, timeout=600).raise_for_status()
    deadline = time.monotonic() + 600
    while server.model_status(layout.name).count("READY") < layout.workers:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{layout.name}: workers not READY\n{server.log_tail()}")
        time.sleep(0.5)


def measure(server: launcher.TorchServe, layout: Layout, image: bytes, args: argparse.Namespace) -> dict:
    """{(concurrency, mode): (req/s, p50, p99)} of one registered layout."""
    url = f"{server.inference_url}/predictions/{layout.name}"
    cells = {}
    for concurrency in args.concurrency:
        for mode, headers in MODES.items():
            rate, latencies = drive(url, image, headers, concurrency, args.requests)
            cells[concurrency, mode] = (rate, statistics.median(latencies), percentile(latencies, 99))
        cell = cells[concurrency, "pred"], cells[concurrency, "gradcam"]
        values = " | ".join(f"{rate:.1f} | {p50:.0f} | {p99:.0f}" for rate, p50, p99 in cell)
        print(f"{layout.label()} {concurrency} | {values} |", flush=True)
    return cells


def best(results: dict[Layout, dict], concurrency: list[int]) -> None:
    top, low = max(concurrency), min(concurrency)
    print()
    for backend in sorted({layout.backend for layout in results}, reverse=True):
        mine = {layout: cells for layout, cells in results.items() if layout.backend == backend}
        fastest = max(mine, key=lambda layout: mine[layout][top, "gradcam"][0])
        quickest = min(mine, key=lambda layout: mine[layout][low, "pred"][1])
        print(
            f"best {backend}: Grad-CAM at concurrency {top}: {fastest.name} ({mine[fastest][top, 'gradcam'][0]:.1f} req/s); "
            f"prediction p50 at concurrency {low}: {quickest.name} ({mine[quickest][low, 'pred'][1]:.0f} ms)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    numbers = lambda text: [int(v) for v in text.split(",")]  # noqa: E731
    parser.add_argument("--backends", type=lambda text: text.split(","), default=["torch", "onnx"])
    parser.add_argument("--layouts", default="1x2,2x1", type=lambda t: [tuple(map(int, v.split("x"))) for v in t.split(",")])
    parser.add_argument("--batch-sizes", type=numbers, default=[1, 4, 8])
    parser.add_argument("--delays", type=numbers, default=[2], help="maxBatchDelay values (ms) where batchSize > 1")
    parser.add_argument("--concurrency", type=numbers, default=[1, 4, 8])
    parser.add_argument("--requests", type=int, default=32, help="timed requests per cell")
    args = parser.parse_args()
    grid = layouts(args)
    for layout in grid:
        build(ARCHIVES[layout.backend], STORE, layout.name, layout.batch, layout.delay, False, layout.workers, layout.threads)
    image = Path(photo_path("chelsea")).read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        config, overrides = ROOT / "configs" / "local.properties", {"enable_model_api": "true"}  # loopback only
        server = launcher.start(STORE, [grid[0].name], config, tmp, overrides=overrides)
        try:
            server.wait_ready(600)
            print(f"TorchServe 0.12, chelsea.png, {args.requests} requests per cell, configurations one after another\n")
            print("| backend | workers x threads | batchSize | maxBatchDelay ms | concurrency | pred req/s | pred p50 ms | "
                  "pred p99 ms | gradcam req/s | gradcam p50 ms | gradcam p99 ms |")  # fmt: skip
            print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            results = {}
            for index, layout in enumerate(grid):
                if index:  # the first was loaded at start
                    register(server, layout)
                results[layout] = measure(server, layout, image, args)
                requests.delete(f"{server.management_url}/models/{layout.name}", timeout=120).raise_for_status()
        finally:
            server.stop()
    best(results, args.concurrency)
    return 0


if __name__ == "__main__":
    sys.exit(main())
