"""``sam-triton serve --replicas N``: N replicas behind Envoy in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType
from typing import Any

from sam_triton_server.launcher.process import (
    PortInUseError,
    ServerOptions,
    TritonStartError,
    check_port_free,
)
from sam_triton_server.launcher.replicas import (
    EnvoyNotFoundError,
    EnvoyStartError,
    ReplicaSet,
    allocate_ports,
)


def _replica_count(text: str) -> int:
    count = int(text)
    if count < 1:
        raise argparse.ArgumentTypeError(f"needs at least one replica, got {count}")
    return count


def register_options(parser: Any) -> None:
    parser.add_argument(
        "--replicas",
        type=_replica_count,
        default=1,
        help="run N tritonserver replicas behind a local Envoy that listens on --grpc-port and "
        "routes sam_session by the sam-session-id header (the Kubernetes routing; --http-port and "
        "--metrics-port are then unused, each replica has its own); default 1 (no Envoy)",
    )
    parser.add_argument(
        "--replica-base-port",
        type=int,
        default=8100,
        help="with --replicas: replica i uses ports BASE+3i (gRPC), +1 (HTTP), +2 (metrics)",
    )
    parser.add_argument(
        "--envoy-admin-port", type=int, default=9901, help="with --replicas: Envoy's admin port"
    )


def _say(message: str) -> None:
    print(f"[sam-triton] {message}", file=sys.stderr, flush=True)


def run_replicas(args: argparse.Namespace, options: ServerOptions) -> int:
    """Start the replica set, serve until SIGINT/SIGTERM or a replica dies, stop everything."""
    from sam_triton_server.launcher.cli import _log_sink  # every replica's log filtered as one server's

    ports = allocate_ports(args.replicas, args.replica_base_port)
    try:  # all at once, before any replica loads models (Envoy's own error would come last)
        check_port_free("Envoy gRPC", "--grpc-port", options.host, args.grpc_port)
        check_port_free("Envoy admin", "--envoy-admin-port", "127.0.0.1", args.envoy_admin_port)
        for i, port in enumerate(ports):
            for what, number in (("gRPC", port.grpc), ("HTTP", port.http), ("metrics", port.metrics)):
                check_port_free(f"replica {i} {what}", "--replica-base-port", "127.0.0.1", number)
    except PortInUseError as error:
        _say(f"cannot start: {error}")
        return 2
    try:
        cluster = ReplicaSet(
            options,
            ports,
            envoy_port=args.grpc_port,
            admin_port=args.envoy_admin_port,
            listen_address=options.host,
            log_sink=None if args.quiet else _log_sink(args.log_verbose),
        )
    except EnvoyNotFoundError as error:
        _say(str(error))
        return 2
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():  # a second Ctrl-C: no graceful unload
            for replica in cluster.replicas:
                replica.send_signal(signal.SIGKILL)
            return
        _say(f"{signal.Signals(signum).name} received, stopping Envoy and {args.replicas} replicas")
        stop.set()
        # Replicas still loading models give up at once; ready ones drain in stop().
        for replica in cluster.replicas:
            replica.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    for i, port in enumerate(ports):
        _say(f"replica {i}: gRPC :{port.grpc}, HTTP :{port.http}, metrics :{port.metrics}")
    try:
        cluster.start(args.ready_timeout)
    except (TritonStartError, EnvoyStartError) as error:
        if stop.is_set():
            return 0
        _say(f"replica set failed to start: {error}")
        return 1
    _say(
        f"READY: gRPC {options.host}:{args.grpc_port} through Envoy to {args.replicas} replicas "
        f"(admin http://127.0.0.1:{args.envoy_admin_port}/clusters)"
    )
    try:
        # A replica that dies on its own is not restarted here (that is a supervisor's job,
        # Kubernetes' locally absent): report it and keep serving on the others.
        reported: set[int] = set()
        while not stop.wait(1.0):
            if cluster.envoy.returncode is not None:
                _say(f"envoy exited with status {cluster.envoy.returncode}")
                return 1
            for index in set(cluster.exited()) - reported:
                _say(f"replica {index} exited; Envoy routes around it")
                reported.add(index)
            if len(reported) == len(cluster.replicas):
                _say("every replica exited")
                return 1
        return 0
    finally:
        cluster.stop()
        _say(f"stopped: Envoy and {args.replicas} replicas have exited")
