"""``sam-triton serve``: run Triton on a model repository in the foreground."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

_BANNER_WIDTH = 78


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run tritonserver on a model repository (foreground, Ctrl-C stops it)",
        description="Start Triton Inference Server on REPOSITORY: a tritonserver on PATH, else the one "
        "bundled in the nvidia-pytriton wheel. Waits for readiness, forwards SIGINT/SIGTERM and exits "
        "with Triton's status.",
    )
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on")
    parser.add_argument("--ready-timeout", type=float, default=600.0, help="seconds to wait for all models")
    parser.add_argument("--log-verbose", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="do not echo Triton's log")
    from sam_triton_server.replicas_cli import register_options

    register_options(parser)
    parser.set_defaults(handler=run)


def read_manifest(repository: Path) -> dict[str, Any] | None:
    """What the exporter recorded about the weights (sam_encoder/export.json), if anything."""
    path = repository / "sam_encoder" / "export.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def random_seed(manifest: dict[str, Any] | None) -> int | None:
    """The seed of randomly initialised weights, or None for a real checkpoint (or no manifest)."""
    weights = (manifest or {}).get("weights")
    if not isinstance(weights, dict) or weights.get("random_seed") is None:
        return None
    return int(weights["random_seed"])


def random_weights_banner(manifest: dict[str, Any], seed: int) -> str:
    lines = [
        "RANDOM WEIGHTS - MASKS ARE MEANINGLESS",
        f"model {manifest.get('model_type', '?')} was exported from randomly initialised weights",
        f"(seed {seed}), not from a SAM checkpoint. Serve real weights with:",
        "make serve CHECKPOINT=/path/sam_vit_b_01ec64.pth MODEL=vit_b",
    ]
    bar = "!" * _BANNER_WIDTH
    body = [f"!!  {line.ljust(_BANNER_WIDTH - 8)}  !!" for line in lines]
    return "\n".join([bar, *body, bar])


def _say(message: str) -> None:
    print(f"[sam-triton] {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from sam_triton_server.installation import TritonNotFoundError
    from sam_triton_server.process import ServerOptions, TritonProcess, TritonStartError, echo

    repository = args.repository.resolve()
    if not repository.is_dir():
        _say(f"model repository {repository} does not exist; run `sam-triton export` first")
        return 2
    manifest = read_manifest(repository)
    seed = random_seed(manifest)
    banner = random_weights_banner(manifest or {}, seed) if seed is not None else None
    if banner:
        print(banner, file=sys.stderr, flush=True)

    options = ServerOptions(
        repository=repository,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        host=args.host,
        log_verbose=args.log_verbose,
    )
    if args.replicas > 1:
        from sam_triton_server.replicas_cli import run_replicas

        return run_replicas(args, options)
    try:
        server = TritonProcess(options, log_sink=None if args.quiet else echo)
    except TritonNotFoundError as error:
        _say(str(error))
        return 2
    _say(f"starting {server.installation.binary} on gRPC :{args.grpc_port}, HTTP :{args.http_port}")

    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:  # a second Ctrl-C: do not wait for a graceful unload
            server.send_signal(signal.SIGKILL)
            return
        stopping = True
        _say(f"{signal.Signals(signum).name} received, stopping tritonserver")
        server.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)

    server.start()
    try:
        server.wait_ready(args.ready_timeout)
    except TritonStartError as error:
        if stopping:  # stopped on request while models were still loading
            return server.stop() or 0
        _say("tritonserver failed to start:")
        for line in error.error_lines:
            print(line, file=sys.stderr, flush=True)
        server.stop()
        return error.returncode or 1
    if stopping:
        return server.stop() or 0
    _say(f"READY: gRPC 127.0.0.1:{args.grpc_port} (models: sam_encoder, sam_decoder, sam, ...)")
    if banner:  # again after Triton's long start-up log, where it cannot be missed
        print(banner, file=sys.stderr, flush=True)
    code = server.wait()
    server.stop()
    _say(f"tritonserver exited with status {code}")
    # Triton exits 0 after a requested shutdown; report a signal stop the shell's way.
    return code if code >= 0 else 128 - code
