"""Start a TorchServe, wait until its models are READY (management API, not /ping), stop it.

Used by scripts/serve, the end-to-end tests and benchmarks/serve_load.py. Only runs the
``torchserve`` command; never imports TorchServe. ``TMPDIR`` of the server (pid file,
sockets, unpacked models) and its logs go to ``workdir``, so several servers can run side
by side and ``stop`` stops exactly this one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports: the sockets stay bound until all are picked (one
    at a time, the kernel can hand out the same port twice, and TorchServe then fails to bind)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def read_properties(path: str | Path) -> dict[str, str]:
    values = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def torchserve_command() -> str:
    here = Path(sys.executable).parent / "torchserve"
    return str(here) if here.exists() else (shutil.which("torchserve") or "torchserve")


def _all_ready(statuses: list[str]) -> bool:
    return bool(statuses) and all(status == "READY" for status in statuses)


@dataclass
class TorchServe:
    workdir: Path
    inference_url: str
    management_url: str
    metrics_url: str
    models: list[str]

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            TMPDIR=str(self.workdir / "tmp"), LOG_LOCATION=str(self.workdir / "logs"), METRICS_LOCATION=str(self.workdir / "logs")
        )
        return env

    @property
    def pid(self) -> int | None:
        try:
            return int((self.workdir / "tmp" / ".model_server.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def alive(self) -> bool:
        pid = self.pid
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True

    def auth_headers(self, api: str = "inference") -> dict[str, str]:
        """``Authorization`` for ``api`` (inference/management) when token auth is on: TorchServe
        writes the keys to key_file.json in its working directory."""
        try:
            keys = json.loads((self.workdir / "key_file.json").read_text())
        except (OSError, ValueError):
            return {}
        return {"Authorization": f"Bearer {keys[api]['key']}"}

    def model_status(self, name: str) -> list[str]:
        """Worker statuses of a model ('READY', 'UNLOADING', ...), [] when unknown."""
        request = urllib.request.Request(f"{self.management_url}/models/{name}", headers=self.auth_headers("management"))
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                described = json.load(response)
        except (urllib.error.URLError, OSError, ValueError):
            return []
        return [w.get("status", "") for model in described for w in model.get("workers", [])]

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Until every worker of every model is READY: a model with several workers answers once
        one is, but the others would still be loading (and calibrating) beside the first requests."""
        deadline = time.monotonic() + timeout
        pending = list(self.models)
        while pending:
            pending = [name for name in pending if not _all_ready(self.model_status(name))]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"models {pending} not READY after {timeout:.0f} s\n{self.log_tail()}")
            if self.pid is not None and not self.alive():
                raise RuntimeError(f"TorchServe exited before {pending} became READY\n{self.log_tail()}")
            time.sleep(0.5)

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for name in ("torchserve.out", "ts_log.log", "model_log.log"):
            path = self.workdir / "logs" / name
            if path.exists():
                out.append(f"--- {path} ---")
                out.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(out)

    def stop(self, timeout: float = 30.0) -> None:
        pid = self.pid
        subprocess.run([torchserve_command(), "--stop"], env=self.env, cwd=self.workdir, capture_output=True, timeout=timeout)
        if pid is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                return
            time.sleep(0.2)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def served_properties(
    config: str | Path, model_store: str | Path, host: str, ports: tuple[int, int, int], extra: tuple[int, int, int]
) -> dict[str, str]:
    """``config``'s properties with the addresses of ``host``/``ports`` (inference, management,
    metrics) and ``extra`` (gRPC inference, gRPC management, first worker port)."""
    inference, management, metrics = ports
    grpc_inference, grpc_management, worker = extra
    properties = read_properties(config)
    properties.update(
        inference_address=f"http://{host}:{inference}",
        management_address=f"http://{host}:{management}",
        metrics_address=f"http://{host}:{metrics}",
        grpc_inference_port=str(grpc_inference),
        grpc_management_port=str(grpc_management),
        model_store=str(Path(model_store).resolve()),
        # Worker sockets are /tmp/.ts.sock.<port> (java.io.tmpdir, not TMPDIR), numbered from
        # 9000 in every server: a port of our own keeps two servers from sharing a socket.
        initial_worker_port=str(worker),
    )
    properties.pop("load_models", None)
    properties.pop("metrics_config", None)  # a production path; the default config works anywhere
    return properties


def start(
    model_store: str | Path,
    models: list[str],
    config: str | Path,
    workdir: str | Path,
    host: str = "127.0.0.1",
    ports: tuple[int, int, int] | None = None,
    overrides: dict[str, str] | None = None,
) -> TorchServe:
    """Start TorchServe in the background (``torchserve --start``) with ``config`` whose
    addresses are replaced by ``host`` and ``ports`` (default: free ports); returns at once,
    call ``wait_ready``. ``models``: archive names in ``model_store`` (without ``.mar``)."""
    workdir = Path(workdir).resolve()
    for sub in ("tmp", "logs"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    grpc_inference, grpc_management, worker, *http = free_ports(3 if ports else 6)
    inference, management, metrics = ports or http
    properties = served_properties(
        config, model_store, host, (inference, management, metrics), (grpc_inference, grpc_management, worker)
    )
    properties.update(overrides or {})
    config_file = workdir / "config.properties"
    config_file.write_text("".join(f"{k}={v}\n" for k, v in properties.items()))
    server = TorchServe(
        workdir, f"http://{host}:{inference}", f"http://{host}:{management}", f"http://{host}:{metrics}", list(models)
    )
    store = str(Path(model_store).resolve())
    command = [torchserve_command(), "--start", "--ncs", "--ts-config", str(config_file), "--model-store", store]
    command += ["--models", *[f"{name}={name}.mar" for name in models]]
    # The background Java process inherits stdout/stderr: a file, never a pipe we would wait on.
    with open(workdir / "logs" / "torchserve.out", "ab") as out:
        subprocess.run(command, env=server.env, cwd=workdir, check=True, stdout=out, stderr=subprocess.STDOUT, timeout=120)
    return server


def main(argv: list[str] | None = None) -> int:
    """``python -m whyserve.serving.launcher --store model_store --config configs/local.properties
    --workdir .torchserve efficientnet_lite0`` (ports from the config unless --free-ports);
    ``... --stop --workdir .torchserve`` stops it."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m whyserve.serving.launcher", description=main.__doc__)
    parser.add_argument("models", nargs="*")
    parser.add_argument("--store", default="model_store")
    parser.add_argument("--config", default="configs/local.properties")
    parser.add_argument("--workdir", default=".torchserve")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--stop", action="store_true")
    args = parser.parse_args(argv)
    if args.stop:
        server = TorchServe(Path(args.workdir).resolve(), "", "", "", [])
        if not server.alive():
            print("no TorchServe running from", server.workdir)
            return 0
        pid = server.pid
        server.stop()
        print("stopped TorchServe", pid)
        return 0
    properties = read_properties(args.config)
    ports = tuple(int(properties[k].rsplit(":", 1)[1]) for k in ("inference_address", "management_address", "metrics_address"))
    server = TorchServe(Path(args.workdir).resolve(), *(f"http://127.0.0.1:{p}" for p in ports), list(args.models))
    if server.alive():
        print(f"TorchServe already running from {server.workdir} (pid {server.pid}); waiting for READY")
    else:
        server = start(args.store, args.models, args.config, args.workdir, ports=ports)
    try:
        server.wait_ready(args.timeout)
    except (TimeoutError, RuntimeError) as error:
        print(error, file=sys.stderr)
        server.stop()
        return 1
    print(f"READY: {', '.join(args.models)} at {server.inference_url} (pid {server.pid})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
