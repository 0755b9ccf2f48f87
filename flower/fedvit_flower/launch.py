"""Start, run and stop the processes of a Flower federation on this machine, every one by its PID.

Flower 1.42 frictions handled here: connections live in $FLWR_HOME/config.toml (written per run folder,
never ~/.flwr); the SuperLink's `uv sync` of the app per run is switched off (the checkout is installed);
`flwr run` exits 0 even when the run failed (the status is read back with `flwr ls`); a SuperNode on a
shared machine needs its own Runtime API port; and stopping a SuperLink or SuperNode can leave children
behind, so every process started carries a marker in its environment and `Cluster.stop` ends each one
still carrying it, by PID. SuperNodes are Flower's own unless `fast_nodes` (fedvit_flower.fast_nodes).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent.parent  # flower/: the Flower app (pyproject.toml)
SHIMS = APP_DIR / "shims"
MARK = "FEDVIT_FLOWER_CLUSTER"
BIN = Path(sys.executable).parent
FAST_NODES_FLOWER = "1.42."  # the Flower whose internals fedvit_flower.fast_nodes uses


class RunFailed(RuntimeError):
    """A Flower run did not finish as completed; the message names its status and where the logs are."""


def flower_version() -> str:
    """The installed Flower's version."""
    return importlib.metadata.version("flwr")


def use_fast_nodes(requested: bool) -> bool:
    """Whether SuperNodes get --fast-nodes: only if asked and on Flower 1.42.*; else one line why, public path."""
    if not requested:
        return False
    if flower_version().startswith(FAST_NODES_FLOWER):
        return True
    print(f"[flower] --fast-nodes is written for flwr {FAST_NODES_FLOWER}*, this is {flower_version()}: "
          f"SuperNodes run Flower's own flower-supernode", flush=True)
    return False


def flower_env(home: Path, mark: str = "", idle_poll: float | None = None) -> dict[str, str]:
    """Environment of Flower's processes: own config home, no telemetry, no runtime installs, Ray quiet;
    with `idle_poll` (fast nodes only) also the SuperNodes' idle poll and the SuperExec's task poll."""
    env = dict(os.environ)
    env.update({
        "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "RAY_DISABLE_USAGE_STATS": "1",
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
        "PYTHONPATH": os.pathsep.join(p for p in (str(SHIMS), env.get("PYTHONPATH", "")) if p),
        "PYTHONUNBUFFERED": "1", "PATH": os.pathsep.join((str(BIN), env.get("PATH", ""))),
    })
    if idle_poll is not None:
        env.update({"FEDVIT_FLOWER_IDLE_POLL": str(idle_poll), "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1"})
    if mark:
        env[MARK] = mark
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Wait until something accepts connections on 127.0.0.1:`port` (or `proc` exits, or `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args[0]} exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            s.settimeout(1.0)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


def toml_config(values: dict) -> str:
    """A --run-config string: strings as TOML literals, booleans lower case, numbers as they are."""
    def one(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return "'" + v.replace("'", "") + "'"
        return repr(v)

    return " ".join(f"{k}={one(v)}" for k, v in values.items())


class Cluster:
    """The Flower processes of one run on this machine; a `with` block stops every one of them by PID."""

    def __init__(self, folder: str | os.PathLike, fast_nodes: bool = False, idle_poll: float = 0.2) -> None:
        self.folder = Path(folder).resolve()
        self.home = self.folder / "flwr-home"
        self.logs = self.folder / "logs"
        self.mark = uuid.uuid4().hex
        self.fast_nodes = use_fast_nodes(fast_nodes)
        self.env = flower_env(self.home, self.mark, idle_poll if self.fast_nodes else None)
        self.procs: dict[str, subprocess.Popen] = {}
        self.link_port: int | None = None

    def __enter__(self) -> Cluster:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        """Start `argv` in its own session (so a signal to its group reaches its children); output to logs/."""
        with open(self.logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(argv, env={**self.env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs[name] = proc
        return proc

    def superlink(self, simulation: bool = False, timeout: float = 120.0) -> str:
        """Start a SuperLink on a free loopback port and make it the default connection; returns host:port."""
        self.link_port = free_port()
        argv = [str(BIN / "flower-superlink"), "--insecure", "--disable-runtime-dependency-installation",
                "--host", "127.0.0.1", "--port", str(self.link_port)] + (["--simulation"] if simulation else [])
        proc = self.start("superlink", argv)
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "fedvit"\n\n[superlink.fedvit]\naddress = "127.0.0.1:{self.link_port}"\n'
            f"insecure = true\n")
        wait_port(self.link_port, timeout, proc)
        return f"127.0.0.1:{self.link_port}"

    def supernode(self, client: int, data: str | None = None, keys_dir: str | None = None,
                  superlink: str | None = None, env: dict | None = None) -> subprocess.Popen:
        """A SuperNode serving partition `client` (fast nodes: and its warm executor); `superlink` overrides the
        address it dials, `env` adds to its environment and its children's (tests inject faults with it)."""
        port, config = free_port(), {"partition-id": client, "data": data or "", "keys-dir": keys_dir or ""}
        flags = ["--insecure", "--superlink", superlink or f"127.0.0.1:{self.link_port}", "--host", "127.0.0.1",
                 "--port", str(port), "--node-config", toml_config(config)]
        if not self.fast_nodes:
            return self.start(f"supernode{client}", [str(BIN / "flower-supernode"), *flags], env)
        fast = [sys.executable, "-m", "fedvit_flower.fast_nodes"]
        node = self.start(f"supernode{client}", [*fast, "supernode", *flags, "--isolation", "process"], env)
        self.start(f"executor{client}", [*fast, "executor", "--runtime-api-address", f"127.0.0.1:{port}",
                                         "--insecure", "--parent-pid", str(node.pid)], env)
        return node

    def run(self, run_config: dict, federation_config: str | None = None, timeout: float = 3600.0,
            echo: bool = True) -> dict:
        """`flwr run` the app, streaming its log, then read the run's status back; returns `flwr ls`'s record."""
        argv = [str(BIN / "flwr"), "run", str(APP_DIR), "fedvit", "--stream", "--run-config", toml_config(run_config)]
        if federation_config:
            argv += ["--federation-config", federation_config]
        with open(self.logs / "flwr-run.log", "w") as log:
            proc = subprocess.Popen(argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    cwd=self.folder, start_new_session=True)
            self.procs["flwr-run"] = proc
            deadline = time.monotonic() + timeout
            for line in proc.stdout:
                log.write(line)
                if echo:
                    print(line, end="", flush=True)
                if time.monotonic() > deadline:
                    raise RunFailed(f"the run took longer than {timeout:g} s; logs in {self.logs}")
            proc.wait()
        return self.status()

    def status(self) -> dict:
        """The newest run's record from `flwr ls` (status is e.g. 'finished:completed' or 'finished:failed')."""
        res = subprocess.run([str(BIN / "flwr"), "ls", "fedvit", "--format", "json"], env=self.env, text=True,
                             capture_output=True, timeout=120, cwd=self.folder)
        try:
            runs = json.loads(res.stdout).get("runs", [])
        except json.JSONDecodeError as exc:
            raise RunFailed(f"`flwr ls` gave no JSON ({res.stdout[-300:]!r} {res.stderr[-300:]!r})") from exc
        if not runs:
            raise RunFailed(f"the SuperLink knows no run; logs in {self.logs}")
        record = max(runs, key=lambda r: str(r.get("created-at", "")))
        if record.get("status") != "finished:completed":
            raise RunFailed(f"run {record.get('run-id')} ended as {record.get('status')!r}; logs in {self.logs}")
        return record

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the process group of one process (fault injection: a crashed node)."""
        os.killpg(self.procs[name].pid, sig)

    def marked_pids(self) -> list[int]:
        """PIDs of live processes carrying this cluster's marker (children that left their group included)."""
        needle = f"{MARK}={self.mark}".encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    if needle in (entry / "environ").read_bytes().split(b"\0"):
                        pids.append(int(entry.name))
                except OSError:
                    continue
        return pids

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM every process started (SuperNodes first), wait, then SIGKILL whatever of ours is left."""
        order = sorted(self.procs, key=lambda n: (n == "superlink", n))
        for name in order:
            _signal(self.procs[name].pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for name in order:
            try:
                self.procs[name].wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for pid in {p.pid for p in self.procs.values()} | set(self.marked_pids()):
            _signal(pid, signal.SIGKILL)
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 10
        while (left := self.marked_pids()) and time.monotonic() < deadline:
            for pid in left:
                _signal(pid, signal.SIGKILL)
            time.sleep(0.2)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
