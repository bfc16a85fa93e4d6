#!/usr/bin/env python
"""Fault: kill -9 a model's worker in the middle of traffic; how long until a new worker is
READY and answers, and how many requests failed meanwhile.

    python benchmarks/fault.py                      # starts its own TorchServe (efficientnet_lite0)
    python benchmarks/fault.py --url http://127.0.0.1:8080 --management http://127.0.0.1:8081
"""

from __future__ import annotations

import collections
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.serving_common import run_served, server_parser, worker_pids  # noqa: E402
from whyserve.photos import photo_path  # noqa: E402

MODEL = "efficientnet_lite0"


def traffic(url: str, photo: bytes, stop: threading.Event, log: list, concurrency: int) -> None:
    """Gradcam requests from ``concurrency`` threads until ``stop``; log (sent, done, status)."""
    headers = {"Content-Type": "application/octet-stream", "X-Explain-Method": "gradcam"}

    def loop(_):
        session = requests.Session()
        while not stop.is_set():
            sent = time.monotonic()
            try:
                status: int | str = session.post(url, data=photo, headers=headers, timeout=120).status_code
            except requests.RequestException as error:
                status = type(error).__name__
            log.append((sent, time.monotonic(), status))

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(loop, range(concurrency)))


def fault(inference: str, management: str, photo: bytes, before: float, after: float, concurrency: int) -> None:
    url = f"{inference}/predictions/{MODEL}"
    log: list = []
    stop = threading.Event()
    driver = threading.Thread(target=traffic, args=(url, photo, stop, log, concurrency))
    driver.start()
    time.sleep(before)
    before_pids = worker_pids(management, MODEL)
    victim = before_pids[0]  # one of the workers: the others keep serving
    killed = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    ready = None
    while time.monotonic() - killed < 300:
        pids = worker_pids(management, MODEL)
        if len(pids) == len(before_pids) and victim not in pids:
            ready = time.monotonic()
            break
        time.sleep(0.1)
    time.sleep(after)
    stop.set()
    driver.join()
    first_ok = min((done for sent, done, status in log if sent > killed and status == 200), default=None)
    during = collections.Counter(
        str(status) for sent, done, status in log if done >= killed and (first_ok is None or sent < first_ok)
    )
    total = collections.Counter(str(status) for _, _, status in log)
    workers = f"worker {victim} (of {len(before_pids)})"
    print(f"\nkill -9 of {workers} after {before:.0f} s of gradcam traffic at concurrency {concurrency}\n")
    print("| figure | value |\n|---|---|")
    print(
        f"| new worker READY (management API) after | {ready - killed:.1f} s |"
        if ready
        else "| new worker READY | not within 300 s |"
    )
    print(
        f"| first 200 sent after the kill, answered after | {first_ok - killed:.1f} s |"
        if first_ok
        else "| first 200 after the kill | none |"
    )
    print(f"| requests answered between the kill and that 200 | {dict(during)} |")
    print(f"| all requests | {dict(total)} |")
    print(f"| failed requests (not 200) | {sum(n for s, n in total.items() if s != '200')} |")


def main() -> int:
    parser = server_parser(__doc__)
    parser.add_argument("--before", type=float, default=10, help="seconds of traffic before the kill")
    parser.add_argument("--after", type=float, default=10, help="seconds of traffic after the new worker is READY")
    args = parser.parse_args()
    photo = Path(photo_path("chelsea")).read_bytes()
    return run_served(
        args,
        [MODEL],
        lambda inference, management: fault(inference, management, photo, args.before, args.after, args.concurrency),
    )


if __name__ == "__main__":
    sys.exit(main())
