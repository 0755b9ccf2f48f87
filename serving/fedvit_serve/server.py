"""Running the service: a local Ray instance of its own, Serve's HTTP proxy on loopback, the app, a clean stop.

`serve_forever` is what `make serve` runs. `LocalService` starts that command as a child process (own process
group, own Ray temp folder), waits until ``/healthz`` answers, and stops it by PID: SIGINT first (Serve and Ray shut
down their own processes), then SIGKILL to the group if it does not go in time. Tests, the demo and notebook 08 use it.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

LOOPBACK = "127.0.0.1"
URL_PATTERN = re.compile(r"listening on (http://[0-9.]+:\d+)")
AGENT_PORTS = ("metrics_agent_port", "metrics_export_port", "runtime_env_agent_port", "dashboard_agent_listen_port")
OBJECT_STORE_BYTES = 512 << 20  # Ray's shared-memory store; request bodies pass through it (ViT-B: 344 MB)


def free_port(host: str = LOOPBACK) -> int:
    """A port that was free a moment ago (Serve's proxy needs a number; port 0 is not passed through)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start(store: str | os.PathLike, host: str = LOOPBACK, port: int = 0, temp_dir: str | None = None,
          num_cpus: int | None = None, **app_settings) -> str:
    """Start Ray (local, no dashboard), Serve's proxy on host:port and the app; returns the service's URL."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no calls home
    # Ray's single-machine mode: its own ports (GCS, raylet, object manager) bind to loopback, not the node's
    # address. Read when Ray is imported, so before the import below.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # Ray's metrics module (started even without the dashboard) gets 30 s by default: too short on a busy machine.
    os.environ.setdefault("RAY_DASHBOARD_SUBPROCESS_MODULE_WAIT_READY_TIMEOUT", "300")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # Ray's FutureWarning about GPU variables
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # Serve's start-up INFO lines; errors still show
    import ray
    from ray import serve

    from .app import build_app

    port = port or free_port(host)
    _fixed_agent_ports()
    replicas = app_settings.get("replicas", 1)
    # address="local": a Ray of its own. Without it ray.init joins the newest Ray already running on this machine
    # (another server, a Flower simulation) and serve.run would replace that cluster's app with this one.
    ray.init(address="local", num_cpus=num_cpus or max(os.cpu_count() or 1, replicas + 1), include_dashboard=False,
             _temp_dir=temp_dir, object_store_memory=OBJECT_STORE_BYTES, log_to_driver=False,
             logging_level="ERROR", namespace="fedvit-serve")
    serve.start(http_options={"host": host, "port": port},
                logging_config={"enable_access_log": False, "log_level": "WARNING"})
    serve.run(build_app(str(Path(store).expanduser().resolve()), **app_settings), name="fedvit", route_prefix="/",
              blocking=False)
    return f"http://{host}:{port}"


def _fixed_agent_ports() -> None:
    """Give Ray's agents ports up front instead of letting the raylet wait for them to report theirs.

    With port 0 the raylet waits about 30 s for each agent's port file and aborts after that (a busy machine sees
    it), and the dashboard agent's listen port defaults to a fixed 52365, which two servers on one machine would
    share. `ray.init` takes neither setting, so its `RayParams` gets them here (Ray is pinned: requirements-serve.txt).
    """
    from ray._private import parameter

    if getattr(parameter.RayParams.__init__, "fedvit_ports", False):
        return
    original = parameter.RayParams.__init__

    def init(self, *args, **kwargs) -> None:
        original(self, *args, **kwargs)
        for name in AGENT_PORTS:
            if name == "dashboard_agent_listen_port" or not getattr(self, name, None):
                setattr(self, name, free_port())

    init.fedvit_ports = True
    parameter.RayParams.__init__ = init


def stop() -> None:
    """Shut down Serve and Ray (every process they started)."""
    import ray
    from ray import serve

    try:
        serve.shutdown()
    finally:
        ray.shutdown()


def serve_forever(store: str | os.PathLike, **settings) -> None:
    """Start the service, print its address, and stop cleanly on Ctrl-C (SIGINT) or SIGTERM."""
    temp_dir = tempfile.mkdtemp(prefix="fvs-", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    done, started = threading.Event(), threading.Event()

    def on_signal(*_: object) -> None:
        if not started.is_set():  # still starting (Ray can take minutes on a busy machine): stop now
            raise KeyboardInterrupt
        done.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    try:
        t0 = time.monotonic()
        url = _start_with_retries(store, temp_dir, settings)
        from .store import ModelStore

        count = len(ModelStore(store).ids())
        started.set()
        print(f"[serve] listening on {url} ({count} models in {Path(store).resolve()}; started in "
              f"{time.monotonic() - t0:.0f} s); Ctrl-C stops", flush=True)
        done.wait()
        print("[serve] stopping", flush=True)
    finally:
        stop()
        shutil.rmtree(temp_dir, ignore_errors=True)
        print("[serve] stopped", flush=True)


def _start_with_retries(store: str | os.PathLike, temp_dir: str, settings: dict, attempts: int = 3) -> str:
    """`start`, tried again when Ray gives up its own start-up: its raylet aborts when an agent takes over 15 s to
    report its port (a busy machine sees it; a later try finds the agent's imports cached)."""
    for attempt in range(1, attempts + 1):
        try:
            return start(store, temp_dir=temp_dir, **settings)
        except Exception as exc:  # Ray raises plain Exception for a node that did not come up
            stop()
            if attempt == attempts:
                raise
            print(f"[serve] Ray did not start ({str(exc)[:120]}); trying again ({attempt + 1}/{attempts})",
                  flush=True)
    raise AssertionError("unreachable")


class ServiceFailed(RuntimeError):
    """The service process exited or did not answer in time; the message holds the end of its log."""


class LocalService:
    """`python -m fedvit_serve serve` as a child process on loopback, stopped by PID (a `with` block)."""

    def __init__(self, store: str | os.PathLike, log: str | os.PathLike | None = None, timeout: float = 240.0,
                 **settings) -> None:
        self.store = Path(store)
        self.log = Path(log) if log else self.store.parent / "serve.log"
        self.timeout = timeout
        self.args = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None

    def start(self, attempts: int = 3) -> str:
        """Start the process, wait for its address and a healthy answer; returns the URL.

        Ray gives its agents 15 s to report their ports (not configurable); under heavy load that can pass and the
        process exits before printing an address (it retries itself first). Such a start is tried again.
        """
        for attempt in range(1, attempts + 1):
            try:
                return self._start_once()
            except ServiceFailed:
                if attempt == attempts or self.url is not None:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self) -> str:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "fedvit_serve", "serve", "--store", str(self.store), *self.args]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.timeout
        while self.url is None:
            found = URL_PATTERN.search(self.log.read_text(errors="replace"))
            if found:
                self.url = found.group(1)
            elif self.proc.poll() is not None or time.monotonic() > deadline:
                self._fail("did not start")
            else:
                time.sleep(0.2)
        while not self.healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self._fail("did not answer /healthz")
            time.sleep(0.2)
        return self.url

    def healthy(self) -> bool:
        """True when /healthz answers 200."""
        try:
            return requests.get(f"{self.url}/healthz", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def _fail(self, what: str) -> None:
        tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
        self.stop(grace=10.0)
        raise ServiceFailed(f"the model server {what} within {self.timeout:.0f} s; end of {self.log}:\n{tail}")

    def stop(self, grace: float = 60.0) -> None:
        """SIGINT (clean shutdown of Serve and Ray), then SIGKILL to its process group after `grace` seconds."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGINT)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the group it leads: anything Ray left behind
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()

    def __enter__(self) -> LocalService:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
