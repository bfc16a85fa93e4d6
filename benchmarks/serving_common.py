"""What soak.py and fault.py share: a served set of archives (started here, or a running
server on loopback) and the workers' PIDs and memory from the management API."""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.serve_load import percentile  # noqa: E402
from whyserve.serving import launcher  # noqa: E402

__all__ = ["percentile", "run_served", "served", "server_parser", "worker_pids", "worker_rss_mb"]


def server_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options every served benchmark has: --concurrency, --url, --management."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=4, help="client threads")
    parser.add_argument("--url", help="a running server's inference API (loopback); default: start one")
    parser.add_argument("--management", default="http://127.0.0.1:8081", help="with --url: its management API")
    return parser


def run_served(args: argparse.Namespace, models: list[str], work: Callable[[str, str], None]) -> int:
    """``work(inference URL, management URL)`` against ``--url`` or a server started for ``models``."""
    with tempfile.TemporaryDirectory() as tmp, served(args.url, args.management, models, Path(tmp)) as (inference, management):
        work(inference, management)
    return 0


@contextlib.contextmanager
def served(url: str | None, management: str, models: list[str], tmp: Path) -> Iterator[tuple[str, str]]:
    """(inference URL, management URL): of ``url`` when given (loopback only), else of a
    TorchServe started here with ``models`` built by archives/build.py and stopped after."""
    if url:
        if not any(host in url for host in ("127.0.0.1", "localhost", "[::1]")):
            raise SystemExit(f"{url}: loopback only (this sends bad inputs on purpose)")
        yield url.rstrip("/"), management.rstrip("/")
        return
    store = tmp / "store"
    build = [sys.executable, str(ROOT / "archives" / "build.py"), *models, "--export-path", str(store)]
    subprocess.run(build, check=True, capture_output=True)
    server = launcher.start(store, models, ROOT / "configs" / "local.properties", tmp / "ts")
    try:
        server.wait_ready(600)
        print(f"TorchServe 0.12 on {server.inference_url}: {', '.join(models)} (workers: their model-config.yaml)", flush=True)
        yield server.inference_url, server.management_url
    finally:
        server.stop()


def worker_pids(management: str, model: str) -> list[int]:
    """PIDs of the model's READY workers."""
    described = requests.get(f"{management}/models/{model}", timeout=10).json()
    return [w["pid"] for version in described for w in version.get("workers", []) if w.get("status") == "READY"]


def worker_rss_mb(management: str, models: list[str]) -> dict[str, float]:
    """Resident memory (VmRSS, MB) of each model's first READY worker (same machine)."""
    rss = {}
    for model in models:
        pids = worker_pids(management, model)
        status = Path(f"/proc/{pids[0]}/status").read_text() if pids and os.path.exists(f"/proc/{pids[0]}/status") else ""
        values = [int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")]
        rss[model] = values[0] / 1024 if values else float("nan")
    return rss
