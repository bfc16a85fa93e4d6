#!/usr/bin/env python
"""Soak: a bounded mix of methods, models and bad inputs against a served model, on loopback.

    python benchmarks/soak.py --requests 5000 --concurrency 4       # starts its own TorchServe
    python benchmarks/soak.py --url http://127.0.0.1:8080 --management http://127.0.0.1:8081

Prints status counts and p50/p99 per kind, the workers' RSS at start (after warm-up), middle
and end, and the head-of-line figure: prediction-only p99 at concurrency 4 when idle vs while 3
exact Score-CAM requests run (sent to the budgeted model, which refuses them, and to
efficientnet_lite0_exact, its own worker). Stops at --requests or --seconds, whichever first.
"""

from __future__ import annotations

import base64
import collections
import io
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.serving_common import percentile, run_served, server_parser, worker_rss_mb  # noqa: E402
from whyserve.photos import photo_path  # noqa: E402

MODEL, EXACT, SMALL = "efficientnet_lite0", "efficientnet_lite0_exact", "flowers_cnn"


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def kinds(photo: bytes) -> dict[str, tuple[float, str, dict]]:
    """kind -> (share, model, requests.post keyword arguments)."""
    raw = {"Content-Type": "application/octet-stream"}
    b64 = base64.b64encode(photo).decode()
    return {
        "prediction": (0.35, MODEL, {"data": photo, "headers": raw | {"X-Explain-Method": "none"}}),
        "gradcam": (0.25, MODEL, {"data": photo, "headers": raw | {"X-Explain-Method": "gradcam"}}),
        "contrastive": (0.10, MODEL, {"json": {"image": b64, "method": "contrastive", "contrast": "Egyptian cat"}}),
        "scorecam fast (16)": (
            0.04,
            MODEL,
            {"data": photo, "headers": raw | {"X-Explain-Method": "scorecam", "X-Explain-Channels": "16"}},
        ),
        "flowers gradcam": (0.10, SMALL, {"data": photo, "headers": raw | {"X-Explain-Method": "gradcam"}}),
        "bad: exact over budget": (
            0.02,
            MODEL,
            {"data": photo, "headers": raw | {"X-Explain-Method": "scorecam", "X-Explain-Channels": "all"}},
        ),
        "bad: not an image": (0.04, MODEL, {"data": b"not an image", "headers": raw}),
        "bad: aspect-ratio bomb": (0.03, MODEL, {"data": _png(Image.new("RGB", (20_000, 1))), "headers": raw}),
        "bad: deep JSON": (0.03, MODEL, {"data": b"[" * 10_000 + b"]" * 10_000, "headers": {"Content-Type": "application/json"}}),
        "bad: JSON number": (0.02, MODEL, {"data": b"-1", "headers": {"Content-Type": "application/json"}}),
        "bad: unknown label": (0.02, MODEL, {"json": {"image": b64, "target": "not a class"}}),
    }


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = collections.defaultdict(list)
        self.statuses: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)

    def add(self, kind: str, status: int | str, ms: float) -> None:
        with self.lock:
            self.statuses[kind][status] += 1
            self.latencies[kind].append(ms)


def _post(session: requests.Session, url: str, options: dict, timeout: float = 600) -> tuple[int | str, float]:
    start = time.perf_counter()
    try:
        status: int | str = session.post(url, timeout=timeout, **options).status_code
    except requests.RequestException as error:
        status = type(error).__name__
    return status, (time.perf_counter() - start) * 1e3


def soak(inference: str, management: str, photo: bytes, total: int, seconds: float, concurrency: int, seed: int) -> None:
    table = kinds(photo)
    names = list(table)
    rng = random.Random(seed)
    plan = rng.choices(names, weights=[table[n][0] for n in names], k=total)
    record, local = Recorder(), threading.local()
    deadline = time.monotonic() + seconds
    rss: dict[str, dict[str, float]] = {}

    def one(kind: str) -> None:
        if time.monotonic() > deadline:
            return
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        _, model, options = table[kind]
        status, ms = _post(session, f"{inference}/predictions/{model}", options)
        record.add(kind, status, ms)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, names * 2))  # warm-up, not counted
        record = Recorder()
        rss["start"] = worker_rss_mb(management, [MODEL, SMALL])
        half = len(plan) // 2
        start = time.perf_counter()
        list(pool.map(one, plan[:half]))
        rss["middle"] = worker_rss_mb(management, [MODEL, SMALL])
        list(pool.map(one, plan[half:]))
        wall = time.perf_counter() - start
        rss["end"] = worker_rss_mb(management, [MODEL, SMALL])
    done = sum(len(v) for v in record.latencies.values())
    print(f"\nsoak: {done} requests in {wall:.0f} s ({done / wall:.1f} req/s), concurrency {concurrency}\n")
    print("| kind | requests | statuses | p50 ms | p99 ms |\n|---|---:|---|---:|---:|")
    for kind in names:
        values = record.latencies.get(kind, [])
        if values:
            statuses = ", ".join(f"{s}: {n}" for s, n in sorted(record.statuses[kind].items(), key=str))
            print(f"| {kind} | {len(values)} | {statuses} | {percentile(values, 50):.0f} | {percentile(values, 99):.0f} |")
    overall = collections.Counter()
    for counter in record.statuses.values():
        overall.update(counter)
    errors = sum(n for s, n in overall.items() if str(s).startswith("5"))
    print(f"\nall statuses: {dict(sorted(overall.items(), key=str))}; 5xx: {errors}")
    print("\n| worker | RSS start MB | middle MB | end MB | growth start->end |\n|---|---:|---:|---:|---:|")
    for model in rss["start"]:
        first, middle, last = rss["start"][model], rss["middle"][model], rss["end"][model]
        print(f"| {model} | {first:.0f} | {middle:.0f} | {last:.0f} | {100 * (last - first) / first:+.1f} % |")


def head_of_line(inference: str, photo: bytes, count: int, exact_timeout: float) -> None:
    """Prediction-only p99 (concurrency 4) idle, then with 3 exact Score-CAM requests in flight
    (the client gives up on those after ``exact_timeout`` s; the server keeps computing them)."""
    raw = {"Content-Type": "application/octet-stream"}
    predict = {"data": photo, "headers": raw | {"X-Explain-Method": "none"}}
    exact = {"data": photo, "headers": raw | {"X-Explain-Method": "scorecam", "X-Explain-Channels": "all"}}

    def predictions() -> list[float]:
        session_for = threading.local()

        def one(_):
            session = getattr(session_for, "s", None) or requests.Session()
            session_for.s = session
            status, ms = _post(session, f"{inference}/predictions/{MODEL}", predict)
            assert status == 200, status
            return ms

        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(one, range(count)))

    idle = predictions()
    print(f"\nhead of line: prediction only, concurrency 4, {count} requests per row\n")
    print("| while | p50 ms | p99 ms | p99 / idle p99 | the exact requests got |\n|---|---:|---:|---:|---|")
    print(f"| idle | {percentile(idle, 50):.0f} | {percentile(idle, 99):.0f} | 1.00x | |")
    for target in (MODEL, EXACT):
        with ThreadPoolExecutor(3) as pool:
            heavy = [
                pool.submit(_post, requests.Session(), f"{inference}/predictions/{target}", exact, exact_timeout)
                for _ in range(3)
            ]
            time.sleep(0.5)
            busy = predictions()
            statuses = collections.Counter(str(f.result()[0]) for f in heavy)
            slowest = max(f.result()[1] for f in heavy) / 1e3
        ratio = percentile(busy, 99) / percentile(idle, 99)
        got = ", ".join(f"{s} x{n}" for s, n in statuses.items()) + f" (slowest {slowest:.0f} s)"
        print(
            f"| 3 exact Score-CAM to {target} | {percentile(busy, 50):.0f} | {percentile(busy, 99):.0f} | {ratio:.2f}x | {got} |"
        )


def main() -> int:
    parser = server_parser(__doc__)
    parser.add_argument("--requests", type=int, default=5000, help="at most this many mixed requests (0: head of line only)")
    parser.add_argument("--seconds", type=float, default=1200, help="and at most this long")
    parser.add_argument("--head-of-line", type=int, default=200, help="prediction requests per head-of-line row (0: skip)")
    parser.add_argument("--exact-timeout", type=float, default=600, help="client timeout of the exact requests (s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    photo = Path(photo_path("chelsea")).read_bytes()

    def work(inference: str, management: str) -> None:
        if args.requests:
            soak(inference, management, photo, args.requests, args.seconds, args.concurrency, args.seed)
        if args.head_of_line:
            head_of_line(inference, photo, args.head_of_line, args.exact_timeout)

    return run_served(args, [MODEL, EXACT, SMALL], work)


if __name__ == "__main__":
    sys.exit(main())
