"""``sam-triton serve``: run Triton on a model repository in the foreground."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sam_triton_server.launcher.security import Security

from sam_triton_common.contract import (
    API_KEY_ENV,
    DECODER_MODEL,
    ENCODER_MODEL,
    ENSEMBLE_MODEL,
    exported_models,
    read_export_info,
)

_BANNER_WIDTH = 78


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run tritonserver on a model repository (foreground, Ctrl-C stops it)",
        description="Start Triton Inference Server on REPOSITORY: a tritonserver on PATH, else the one "
        "bundled in the nvidia-pytriton wheel. Waits for readiness, forwards SIGINT/SIGTERM and exits "
        "with Triton's status.",
    )
    parser.add_argument(
        "--repository",
        type=Path,
        default=Path("model_repository"),
        help="the model repository `sam-triton export` wrote",
    )
    parser.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (the SDK and CLI talk to it)")
    parser.add_argument("--http-port", type=int, default=8000, help="HTTP port (health probes, REST)")
    parser.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics port")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address gRPC and metrics listen on (default %(default)s: this machine only; 0.0.0.0: all)",
    )
    parser.add_argument("--ready-timeout", type=float, default=600.0, help="seconds to wait for all models")
    parser.add_argument("--log-verbose", type=int, default=0, help="Triton's log verbosity (0: info, errors)")
    parser.add_argument("--quiet", action="store_true", help="do not echo Triton's log")
    parser.add_argument(
        "--queue",
        action="append",
        default=[],
        metavar="NAME=N",
        help="override a queue bound for this run without touching the repository (repeatable): "
        "sam_encoder, sam_decoder or sam_automask = requests waiting per priority level; "
        "sam_session = its clicks and lookups running or waiting; "
        "embed_workers / embed_queue = sam_session's encodes at once / running or waiting; "
        "sam_video = SAM 2 tracking requests running or waiting, video_sessions = its sessions at once; "
        "in a repository of several models (export --name) a bare NAME applies to every model, "
        "MODEL.NAME (e.g. sam2.1-tiny.sam_encoder=8) to one",
    )
    parser.add_argument(
        "--exit-timeout",
        type=int,
        default=30,
        help="seconds in-flight requests may take to finish after SIGTERM (default %(default)s)",
    )
    parser.add_argument(
        "--drain-delay",
        type=float,
        default=0.0,
        help="behind a load balancer: seconds Triton keeps serving after SIGTERM while its "
        "readiness already fails, so the balancer routes elsewhere before Triton refuses "
        "anything; counts against --exit-timeout (default %(default)s: none)",
    )
    security = parser.add_argument_group(
        "security", "TLS covers gRPC; with TLS on, Triton's HTTP endpoint (no TLS) listens on 127.0.0.1 only."
    )
    security.add_argument("--tls-cert", type=Path, metavar="PEM", help="server certificate (chain): gRPC TLS")
    security.add_argument("--tls-key", type=Path, metavar="PEM", help="server private key")
    security.add_argument(
        "--tls-client-ca", type=Path, metavar="PEM", help="mutual TLS: accept only clients signed by this CA"
    )
    security.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV) or None,
        help="require this key (header sam-api-key) on every call but health "
        "(default: the SAM_TRITON_API_KEY environment variable)",
    )
    security.add_argument(
        "--allow-insecure",
        action="store_true",
        help="listen on a non-loopback --host without TLS and an API key (prints a warning)",
    )
    from sam_triton_server.launcher.replicas_cli import register_options

    register_options(parser)
    parser.set_defaults(handler=run)


def server_security(args: argparse.Namespace) -> Security:
    """The TLS and API-key settings of the command line; SecurityConfigError when incomplete."""
    from sam_triton_server.launcher.security import Security, SecurityConfigError, ServerTls

    if (args.tls_cert is None) != (args.tls_key is None):
        raise SecurityConfigError("--tls-cert and --tls-key go together")
    if args.tls_client_ca is not None and args.tls_cert is None:
        raise SecurityConfigError("--tls-client-ca needs --tls-cert and --tls-key")
    tls = None
    if args.tls_cert is not None:
        client_ca = args.tls_client_ca.resolve() if args.tls_client_ca is not None else None
        tls = ServerTls(args.tls_cert.resolve(), args.tls_key.resolve(), client_ca)
    security = Security(tls=tls, api_key=args.api_key)
    security.arguments()  # validates the files and the key now, with a message of ours
    return security


def random_seed(manifest: dict[str, Any] | None) -> int | None:
    """The seed of randomly initialised weights, or None for a real checkpoint (or no manifest)."""
    weights = (manifest or {}).get("weights")
    if not isinstance(weights, dict) or weights.get("random_seed") is None:
        return None
    return int(weights["random_seed"])


def _started_by_make() -> bool:
    """`make serve` execs this command, so make is the parent process."""
    try:
        return Path(f"/proc/{os.getppid()}/comm").read_text().strip() == "make"
    except OSError:
        return False


def random_weights_banner(
    manifest: dict[str, Any],
    seed: int,
    repository: Path | None = None,
    via_make: bool | None = None,
    model: str | None = None,
) -> str:
    lines = [
        "RANDOM WEIGHTS - MASKS ARE MEANINGLESS",
        *([f"in the model served as {model!r} (export --name):"] if model else []),
        f"model {manifest.get('model_type', '?')} was exported from randomly initialised weights",
        f"(seed {seed}), not from a SAM checkpoint. Serve real weights with:",
    ]
    # The next step in the words of the command the user typed.
    if via_make if via_make is not None else _started_by_make():
        lines.append("make serve CHECKPOINT=/path/sam_vit_b_01ec64.pth MODEL=vit_b")
    else:
        lines += [
            f"sam-triton export --model-type vit_b --repository {repository or 'REPOSITORY'} \\",
            "    --checkpoint /path/sam_vit_b_01ec64.pth   (then serve it again)",
        ]
    bar = "!" * _BANNER_WIDTH
    body = [f"!!  {line.ljust(_BANNER_WIDTH - 8)}  !!" for line in lines]
    return "\n".join([bar, *body, bar])


def repository_problem(given: Path) -> str | None:
    """Why ``given`` cannot be served, in one line with the next step; None when it holds models.
    Triton itself would start, poll the folder and log a page of errors about each entry."""
    repository = given.resolve()
    export = f"`sam-triton export --model-type vit_b --checkpoint PATH --repository {given}`"
    export += " (or --random-weights)"
    if not repository.exists():
        return f"model repository {repository} does not exist; write one with {export}"
    if not repository.is_dir():
        return f"--repository {given} is a file; give the folder `sam-triton export` wrote"
    if any(repository.glob("*/config.pbtxt")):
        return None
    inner = sorted({config.parent.parent for config in repository.glob("*/*/config.pbtxt")})
    if inner:  # one level too high, e.g. the project folder instead of model_repository/
        return f"{repository} holds no model itself, but {inner[0]} does: --repository {inner[0]}?"
    return (
        f"{repository} is not a Triton model repository (no <model>/config.pbtxt in it); write one "
        f"with {export}, or point --repository at one"
    )


def _say(message: str) -> None:
    print(f"[sam-triton] {message}", file=sys.stderr, flush=True)


def _log_sink(log_verbose: int) -> Callable[[str], None]:
    """Triton's log echoed, but for the CUDA/NVML/DCGM lines any start without a GPU prints
    (some as errors): said once in our words instead. Shown as they are with --log-verbose,
    and always on a machine with an NVIDIA device, where they mean a broken driver."""
    from sam_triton_server.launcher.process import HAS_GPU, echo, is_gpu_noise

    if HAS_GPU or log_verbose > 0:
        return echo
    explained = False

    def sink(line: str) -> None:
        nonlocal explained
        if not is_gpu_noise(line):
            echo(line)
        elif not explained:
            explained = True
            _say(
                "no GPU on this machine: serving on the CPU (Triton's CUDA, NVML and DCGM "
                "start-up messages about it are not shown; --log-verbose 1 shows them)"
            )

    return sink


def run(args: argparse.Namespace) -> int:
    from sam_triton_server.launcher.security import SecurityConfigError

    repository = args.repository.resolve()
    problem = repository_problem(args.repository)
    if problem is not None:
        _say(problem)
        return 2
    from sam_triton_server.launcher.plans import stale_plans_reason

    if (stale := stale_plans_reason(repository)) is not None:  # Triton would fail to load them
        _say(stale)
        return 2
    try:
        security = server_security(args)
    except SecurityConfigError as error:
        _say(str(error))
        return 2
    exposure = security.exposure_warning(args.host)
    if exposure is not None:
        if not args.allow_insecure:
            _say(f"refusing to start: {exposure}; add --tls-cert/--tls-key and --api-key or --allow-insecure")
            return 2
        _say(f"WARNING: {exposure} (--allow-insecure)")
    if not args.queue:
        return _serve(args, repository, repository, security)
    from sam_triton_server.launcher.queues import overlay_repository, parse_queue_overrides

    with tempfile.TemporaryDirectory(prefix="sam-triton-overlay-") as scratch:
        try:
            overrides = parse_queue_overrides(args.queue, named=True)
            served = overlay_repository(repository, overrides, Path(scratch) / "repo")
        except ValueError as error:
            _say(str(error))
            return 2
        _say(f"queue overrides {', '.join(args.queue)}: serving an overlay of {repository}")
        return _serve(args, repository, served, security)


def _serve(args: argparse.Namespace, repository: Path, served: Path, security: Security) -> int:
    from sam_triton_server.launcher.installation import TritonNotFoundError
    from sam_triton_server.launcher.process import (
        PortInUseError,
        ServerOptions,
        TritonProcess,
        TritonStartError,
    )

    # Every model of the repository (export --name) says whether its weights are random.
    banners = []
    models = exported_models(repository)
    for model in models:
        manifest = read_export_info(repository, model)
        seed = random_seed(manifest)
        if seed is not None:
            banners.append(random_weights_banner(manifest or {}, seed, args.repository, model=model))
    banner = "\n".join(banners)
    if banner:
        print(banner, file=sys.stderr, flush=True)

    options = ServerOptions(
        repository=served,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        host=args.host,
        log_verbose=args.log_verbose,
        security=security,
        exit_timeout=args.exit_timeout,
        drain_delay=args.drain_delay,
    )
    if args.replicas > 1:
        from sam_triton_server.launcher.replicas_cli import run_replicas

        if security.tls is not None:
            # Envoy would have to terminate TLS and the replicas speak plaintext behind it.
            _say("--replicas with --tls-cert is not supported locally: terminate TLS at the proxy")
            return 2
        return run_replicas(args, options)
    try:
        server = TritonProcess(options, log_sink=None if args.quiet else _log_sink(args.log_verbose))
    except TritonNotFoundError as error:
        _say(str(error))
        return 2
    _say(
        f"starting {server.installation.binary}: gRPC {args.host}:{args.grpc_port} ({security.describe()}), "
        f"HTTP {options.http_host}:{args.http_port}, metrics {args.host}:{args.metrics_port}"
    )

    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:  # a second Ctrl-C: do not wait for a graceful unload
            server.send_signal(signal.SIGKILL)
            return
        stopping = True
        _say(
            f"{signal.Signals(signum).name} received, stopping tritonserver: in-flight requests finish "
            f"(up to {args.exit_timeout} s), new ones are refused"
        )
        server.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)

    try:
        server.start()
    except PortInUseError as error:
        _say(f"cannot start: {error}")
        server.stop()
        return 2
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
    names = f"{ENCODER_MODEL}, {DECODER_MODEL}, {ENSEMBLE_MODEL}, ..."
    if any(model is not None for model in models):  # clients choose with model= / --model
        names = ", ".join("(unnamed)" if model is None else model for model in models)
    _say(f"READY: gRPC {args.host}:{args.grpc_port} (models: {names})")
    if banner:  # again after Triton's long start-up log, where it cannot be missed
        print(banner, file=sys.stderr, flush=True)

    def overdue(waited: float) -> None:
        _say(f"tritonserver has not exited {waited:.0f} s after the signal: killing it")

    code = server.wait_exit(on_overdue=overdue)
    server.stop()
    _say(f"tritonserver exited with status {code}")
    # Triton exits 0 after a requested shutdown; report a signal stop the shell's way.
    return code if code >= 0 else 128 - code
