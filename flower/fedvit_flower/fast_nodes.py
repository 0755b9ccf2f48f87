"""--fast-nodes: a warm executor and a short idle poll for SuperNodes, on Flower 1.42's internals (opt-in).

Everything here uses Flower modules outside its documented API (`flwr.proto`, `flwr.supercore`,
`flwr.supernode.runtime`, the SuperNode's main loop); `launch.use_fast_nodes` allows it on flwr 1.42.* only.
- The warm executor: a Flower 1.42 SuperNode starts a fresh `flwr-clientapp` process per message (torch,
  timm, model and data loaded again every round). With `--isolation process` it instead waits for an
  executor on its Runtime API (`--port`); this one runs every ClientApp task in one long-lived process
  with Flower's task protocol (pull message, context and app bundle; call the node's installed ClientApp;
  push reply and context), answering a ClientApp that raises with Flower's error reply, as
  `flwr-clientapp` does.
- The idle poll: an idle SuperNode sleeps a hard-coded 3 s before asking again, and it asks right after
  replying, before the server has integrated the round. `supernode` runs Flower's SuperNode command with
  that one sleep taken from $FEDVIT_FLOWER_IDLE_POLL (if the loop is not there: says so, runs unchanged).

    python -m fedvit_flower.fast_nodes executor --runtime-api-address 127.0.0.1:9094 --insecure [--parent-pid PID]
    FEDVIT_FLOWER_IDLE_POLL=0.2 python -m fedvit_flower.fast_nodes supernode (flower-supernode's flags)
"""

from __future__ import annotations

import argparse
import inspect
import os
import signal
import sys
import threading
import time
from logging import ERROR, INFO

from flwr.app import Context, Message
from flwr.app.error import Error
from flwr.cli.install import install_from_fab
from flwr.common.constant import ErrorCode, SubStatus
from flwr.proto.runtime_pb2 import AcquireTaskRequest, SendTaskHeartbeatRequest
from flwr.supercore import log
from flwr.supercore.constant import TaskType
from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supercore.tls import validate_and_resolve_root_certificates
from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output

HEARTBEAT_SECONDS = 10.0  # the SuperNode expects a running task to report at least every 30 s


def _client(address: str, insecure: bool, certificates: bytes | None, token: str | None = None) -> RuntimeHttpClient:
    interceptors = [RuntimeVersionHttpInterceptor(component_name="flwr-clientapp" if token else "SuperExec")]
    if token:
        interceptors.append(RuntimeTokenHttpInterceptor(token))
    return RuntimeHttpClient.from_server_address(server_address=address, insecure=insecure,
                                                 root_certificates=certificates, interceptors=interceptors,
                                                 retry_invoker=make_simple_http_retry_invoker())


def _heartbeat(client: RuntimeHttpClient, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_SECONDS):
        try:
            client.SendTaskHeartbeat(SendTaskHeartbeatRequest())
        except Exception:  # noqa: BLE001 - a missed beat is retried; the node decides when a task is lost
            pass


_INSTALLED: set[str] = set()


def run_task(address: str, token: str, insecure: bool, certificates: bytes | None) -> bool:
    """Run one ClientApp task in this process; True if the ClientApp completed."""
    from fedvit_flower.client_app import app as client_app  # the node's installed ClientApp, imported once

    client = _client(address, insecure, certificates, token)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(client, stop), daemon=True)
    message: Message | None = None
    context: Context | None = None
    reply: Message | None = None
    status, details = SubStatus.FAILED, "ClientApp task failed"
    try:
        beat.start()
        message, context, run, fab = pull_task_input(client)
        if fab.hash_str not in _INSTALLED:  # as flwr-clientapp does, so the run's bundle is on the node
            install_from_fab(fab.content, skip_prompt=True)
            _INSTALLED.add(fab.hash_str)
        reply = client_app(message=message, context=context)
        status, details = SubStatus.COMPLETED, ""
    except Exception as exc:  # noqa: BLE001 - reported to the server as flwr-clientapp reports it
        log(ERROR, "ClientApp raised an exception", exc_info=exc)
        details = f"{type(exc)}:<'{exc}'>"
        if message is not None:
            reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=details), reply_to=message)
    finally:
        try:
            if reply is not None and context is not None:
                push_message(client, reply, context)
        finally:
            stop.set()
            push_task_output(client=client, context=context, sub_status=status, details=details)
            client.close()
    return status == SubStatus.COMPLETED


def serve(address: str, insecure: bool, root_certificates: str | None = None, poll: float = 0.05,
          parent_pid: int | None = None) -> None:
    """Acquire and run the node's ClientApp tasks until stopped (SIGTERM/SIGINT) or the parent process is gone."""
    certificates = validate_and_resolve_root_certificates(root_certificates, insecure)
    client = _client(address, insecure, certificates)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    import fedvit_flower.client_app  # noqa: F401 - warm: Flower, torch, timm and fedvit_utils imported up front

    log(INFO, "fedvit warm executor (pid %d) serving ClientApp tasks of %s", os.getpid(), address)
    request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP.value])
    while not stopping.is_set():
        if parent_pid is not None and not _alive(parent_pid):
            break
        try:
            res = client.AcquireTask(request)
        except Exception as exc:  # noqa: BLE001 - the node may still be starting, or restarting
            log(INFO, "SuperNode not reachable yet (%s); retrying", type(exc).__name__)
            stopping.wait(1.0)
            continue
        if res.HasField("task") and res.token:
            try:
                run_task(address, res.token, insecure, certificates)
            except Exception as exc:  # noqa: BLE001 - e.g. the node went away mid-task: serve the next one
                log(ERROR, "task %s could not be completed", res.task.task_id, exc_info=exc)
        else:
            time.sleep(poll)
    client.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


FLOWER_IDLE_SLEEP = 3  # the literal in flwr 1.42's start_client_internal: `time.sleep(3)`


class _Clock:
    """Stand-in for the `time` module inside start_client_internal: only its idle sleep is changed."""

    def __init__(self, idle: float) -> None:
        self.idle = idle

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        """Flower's idle sleep becomes `idle`; every other sleep is left as it is."""
        time.sleep(self.idle if seconds == FLOWER_IDLE_SLEEP else seconds)


def patch_idle_poll(idle: float) -> bool:
    """Shorten the SuperNode's idle poll to `idle` seconds; False (unchanged) if Flower's loop is not there."""
    import flwr.supernode.start_client_internal as loop

    if f"time.sleep({FLOWER_IDLE_SLEEP})" not in inspect.getsource(loop) or loop.time is not time:
        print(f"[fedvit] this Flower's SuperNode has no `time.sleep({FLOWER_IDLE_SLEEP})` idle poll: running it "
              f"unchanged", file=sys.stderr)
        return False
    loop.time = _Clock(idle)
    return True


def main(argv: list[str] | None = None) -> None:
    """`executor` (the warm executor's flags) or `supernode` (flower-supernode's flags, short idle poll)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["supernode"]:
        patch_idle_poll(float(os.environ.get("FEDVIT_FLOWER_IDLE_POLL", FLOWER_IDLE_SLEEP)))
        from flwr.supernode.cli.flower_supernode import flower_supernode

        sys.argv = ["flower-supernode", *argv[1:]]
        flower_supernode()
        return
    ap = argparse.ArgumentParser(prog="python -m fedvit_flower.fast_nodes executor", description=main.__doc__)
    ap.add_argument("--runtime-api-address", default="127.0.0.1:9094", help="the SuperNode's --host:--port")
    ap.add_argument("--insecure", action="store_true", help="plain HTTP to the SuperNode (same machine)")
    ap.add_argument("--root-certificates", default=None, help="CA certificate of the SuperNode's Runtime API TLS")
    ap.add_argument("--poll", type=float, default=0.05, help="seconds between task requests when idle")
    ap.add_argument("--parent-pid", type=int, default=None, help="exit when this process is gone")
    args = ap.parse_args(argv[1:] if argv[:1] == ["executor"] else argv)
    serve(args.runtime_api_address, args.insecure, args.root_certificates, args.poll, args.parent_pid)


if __name__ == "__main__":
    main()
