"""A long-lived ClientApp process for a SuperNode in Flower's `process` isolation mode.

By default (`--isolation subprocess`) a SuperNode starts Flower's SuperExec, which starts a fresh
`flwr-clientapp` process for every message: each imports torch and transformers, rebuilds the
client's data and reloads its model, several seconds per message on a small CPU. Flower 1.42 has no
ClientApp process that outlives a message (its warm executors are Kubernetes pods, used once).
With `flower-supernode --isolation process` the SuperNode starts nothing and waits for a process
outside it to take its ClientApp tasks from its Runtime API; this module is that process, for the
fedlada app only. It plays SuperExec and `flwr-clientapp` in one: it acquires each task with
Flower's own client of the Runtime API, pulls the message and context, calls fedlada's `client_app`
in this process, and pushes the reply and the task's status, exactly as `flwr-clientapp` does
(`flwr.supernode.runtime.run_clientapp`), but without exiting after it. So imports are paid once,
and `apps.client_main` keeps the node's `Node`, with its loaded model, for the next message.

The node's state directory stays the source of truth (node.py): every message still ends with the
state saved, and the kept model is used only while the directory holds what this process saved.
Killing this process loses nothing but the time to load the model again.

Only the fedlada ClientApp is served (the FAB is not installed or loaded: the installed `fedlada`
package is the app, as with `--disable-runtime-dependency-installation`). It uses Flower internals
that `flwr-clientapp` uses; `fedlada[flower]` pins flwr to 1.42.x for that reason.

    flower-supernode --isolation process --port 9094 ...    # the SuperNode, as usual otherwise
    fedlada flower clientapp --runtime-api-address 127.0.0.1:9094
"""

from __future__ import annotations

import argparse
import signal
import sys
import time


def _heartbeat_fn(client):
    """Flower's task heartbeat, except that a refused one does not SIGINT this whole process (Flower's
    does: right for a process per task, wrong for one serving many)."""
    import httpx
    from flwr.proto.runtime_pb2 import SendTaskHeartbeatRequest  # noqa: E0611

    req = SendTaskHeartbeatRequest()

    def fn() -> bool:
        try:
            return bool(client.SendTaskHeartbeat(req).success)
        except httpx.HTTPError:
            return False

    return fn


def run_task(address: str, token: str, insecure: bool, certificates: bytes | None) -> str:
    """Serve one ClientApp task (one message) in this process; returns its final sub-status."""
    from flwr.app import Message
    from flwr.app.error import Error
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.supercore.heartbeat import HeartbeatSender
    from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output

    from fedlada.federation.flower.apps import client_app

    retry = make_simple_http_retry_invoker()
    client = RuntimeHttpClient.from_server_address(
        server_address=address, insecure=insecure, root_certificates=certificates, retry_invoker=retry,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"), RuntimeTokenHttpInterceptor(token)],
    )
    heartbeat = HeartbeatSender(_heartbeat_fn(client))
    heartbeat.start()
    message = context = reply = None
    status, details = SubStatus.FAILED, "ClientApp task failed due to unknown reason"
    try:
        message, context, _run, _fab = pull_task_input(client)
        reply = client_app(message=message, context=context)
        status, details = SubStatus.COMPLETED, ""
    except Exception as ex:  # as flwr-clientapp: the server gets an error reply, the process goes on
        reason = f"{type(ex)}:<'{ex}'>"
        print(f"{time.strftime('%H:%M:%S')} ClientApp raised {reason}", file=sys.stderr, flush=True)
        details = reason
        if message is not None:
            reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=message)
    finally:
        try:
            if reply is not None and context is not None:
                push_message(client, reply, context)
        finally:
            retry.max_tries = 1
            push_task_output(client=client, context=context, sub_status=status, details=details)
            if heartbeat.is_running:
                heartbeat.stop()
            client.close()
    return status


def serve(address: str, insecure: bool = True, root_certificates: str | None = None, parent_pid: int | None = None,
          poll: tuple[float, float] = (0.02, 0.25)) -> None:
    """Take the SuperNode's ClientApp tasks, one after another, until stopped (SIGTERM/SIGINT, or the
    SuperNode `parent_pid` exiting).

    Between tasks it asks again after `poll[0]` s, then less and less often, up to every `poll[1]` s:
    each ask costs this process and the SuperNode CPU, which on a small machine the models need (asking
    every 0.05 s, three idle nodes took a fifth of two cores); the SuperNode itself polls the SuperLink
    only every 3 s when idle, so a quarter of a second more does not show."""
    from flwr.proto.runtime_pb2 import AcquireTaskRequest  # noqa: E0611
    from flwr.supercore.app_utils import start_parent_process_monitor
    from flwr.supercore.constant import TaskType
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supercore.tls import validate_and_resolve_root_certificates

    import fedlada.federation.flower.apps  # noqa: F401  (torch, transformers and the app: once, up front)

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    if parent_pid is not None:  # raises SIGINT here when the SuperNode is gone
        start_parent_process_monitor(parent_pid)
    certificates = validate_and_resolve_root_certificates(root_certificates, insecure)
    acquirer = RuntimeHttpClient.from_server_address(
        server_address=address, insecure=insecure, root_certificates=certificates,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
        retry_invoker=make_simple_http_retry_invoker(),
    )
    print(f"{time.strftime('%H:%M:%S')} fedlada ClientApp worker: serving {address}", file=sys.stderr, flush=True)
    pause = poll[0]
    try:
        while True:
            res = acquirer.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
            if res.HasField("task") and res.token:
                try:
                    run_task(address, res.token, insecure, certificates)
                except Exception as err:  # e.g. the reply could not be pushed: that task is lost, not this process
                    print(f"{time.strftime('%H:%M:%S')} task failed outside the ClientApp: {type(err).__name__}: {err}",
                          file=sys.stderr, flush=True)
                pause = poll[0]
            else:
                time.sleep(pause)
                pause = min(pause * 1.5, poll[1])
    except KeyboardInterrupt:
        pass
    finally:
        acquirer.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runtime-api-address", default="127.0.0.1:9094", help="the SuperNode's Runtime API (its --port)")
    p.add_argument("--root-certificates", default=None, help="CA of the Runtime API's TLS certificate (else insecure)")
    p.add_argument("--parent-pid", type=int, default=None, help="exit when this process (the SuperNode) exits")
    a = p.parse_args(argv)
    serve(a.runtime_api_address, insecure=a.root_certificates is None, root_certificates=a.root_certificates,
          parent_pid=a.parent_pid)


if __name__ == "__main__":
    main()
