"""Run one tritonserver process: start, wait for readiness, stop, never orphan it."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from sam_triton_server.launcher.installation import (
    TritonInstallation,
    find_triton,
    prepare_backend_directory,
    server_environment,
)
from sam_triton_server.launcher.security import Security

_PR_SET_PDEATHSIG = 1
SHM_DIRECTORY = Path("/dev/shm")
# After its exit timeout, how long a stopping Triton may take to unload before it is killed.
UNLOAD_GRACE_S = 15.0
_SHM_PREFIX = "sam_triton_"
STUB_BINARY = "triton_python_backend_stub"


class TritonStartError(RuntimeError):
    """tritonserver exited or did not become ready; carries Triton's own error lines."""

    def __init__(self, message: str, error_lines: Sequence[str] = (), returncode: int | None = None):
        details = "\n".join(error_lines)
        super().__init__(f"{message}\n{details}" if details else message)
        self.error_lines = list(error_lines)
        self.returncode = returncode


@dataclass
class ServerOptions:
    repository: Path
    grpc_port: int = 8001
    http_port: int = 8000
    metrics_port: int = 8002
    host: str = "127.0.0.1"
    log_verbose: int = 0
    security: Security = field(default_factory=Security)
    exit_timeout: int = 30
    """Seconds Triton waits for in-flight requests after SIGTERM before it exits anyway."""
    drain_delay: float = 0.0
    """Seconds Triton keeps serving after SIGTERM while its readiness already fails, so a
    balancer that polls it stops sending work before Triton refuses any (see DrainHold)."""
    # The Python backend grows its shared-memory pool in steps; a 3 MB image per request
    # would otherwise start with several growths.
    python_shm_bytes: int = 64 * 1024 * 1024
    extra_args: Sequence[str] = field(default_factory=tuple)

    def arguments(self, backend_directory: Path | None, shm_prefix: str | None = None) -> list[str]:
        args = [
            f"--model-repository={self.repository}",
            f"--grpc-port={self.grpc_port}",
            f"--http-port={self.http_port}",
            f"--metrics-port={self.metrics_port}",
            f"--grpc-address={self.host}",
            f"--http-address={self.http_host}",
            f"--metrics-address={self.host}",
            f"--log-verbose={self.log_verbose}",
            "--exit-on-error=true",
            "--strict-readiness=true",
            # Explicit although it is Triton's default: nobody loads or unloads models via the API.
            "--model-control-mode=none",
            f"--exit-timeout-secs={self.exit_timeout}",
            f"--backend-config=python,shm-default-byte-size={self.python_shm_bytes}",
            f"--backend-config=python,shm-growth-byte-size={self.python_shm_bytes // 4}",
        ]
        if backend_directory is not None:
            args.append(f"--backend-directory={backend_directory}")
        if shm_prefix is not None:
            args.append(f"--backend-config=python,shm-region-prefix-name={shm_prefix}")
        return [*args, *self.security.arguments(), *self.extra_args]

    @property
    def http_host(self) -> str:
        """Triton's HTTP endpoint has no TLS: with TLS on it only serves this machine."""
        return "127.0.0.1" if self.security.tls is not None else self.host

    @property
    def probe_host(self) -> str:
        """Where this machine reaches the HTTP endpoint (readiness probes)."""
        return "127.0.0.1" if self.http_host in ("0.0.0.0", "::", "") else self.http_host


def _pid_namespace() -> int:
    return os.stat("/proc/self/ns/pid").st_ino


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def shm_region_prefix() -> str:
    """A prefix for one server's Python-backend regions that names its launcher: this
    process's pid and pid namespace (the same pid means another process in another one)."""
    return f"{_SHM_PREFIX}{_pid_namespace()}_{os.getpid()}_{uuid.uuid4().hex[:8]}_"


def _launcher_died(region_name: str) -> bool:
    """Whether ``region_name`` (see :func:`shm_region_prefix`) names a launcher of this pid
    namespace that is no longer alive."""
    if not region_name.startswith(_SHM_PREFIX):
        return False
    owner_namespace, _, rest = region_name[len(_SHM_PREFIX) :].partition("_")
    owner_pid = rest.partition("_")[0]
    return owner_namespace == str(_pid_namespace()) and owner_pid.isdigit() and not _pid_alive(int(owner_pid))


def remove_stale_shm_regions(directory: Path = SHM_DIRECTORY) -> list[Path]:
    """Unlink the regions whose launcher has died (in this pid namespace): a launcher killed
    outright takes its tritonserver along (PR_SET_PDEATHSIG) but cannot remove the regions."""
    removed = []
    for region in directory.glob(f"{_SHM_PREFIX}*_*_*"):
        if _launcher_died(region.name):
            try:
                region.unlink()
            except OSError:  # removed meanwhile, or not ours to remove
                continue
            removed.append(region)
    return removed


def kill_orphaned_stubs(proc: Path = Path("/proc")) -> list[int]:
    """SIGKILL the Python backend stubs whose launcher has died (their third argument is their
    shared-memory region's name). A stub busy in a call when its tritonserver died with a
    launcher killed outright never notices and holds its model's memory for good (seen: a
    sam_automask stub waiting on its encode, 90 minutes after its test run had ended)."""
    killed = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if len(argv) < 3 or not argv[0].endswith(STUB_BINARY.encode()):
            continue
        if _launcher_died(argv[2].decode(errors="replace")):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
    return killed


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel kills it when the launcher dies, however."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def launch_child(
    command: Sequence[str], on_line: Callable[[str], None], name: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], threading.Thread]:
    """Start a server process of ours (tritonserver, Envoy) and a thread handing each line of
    its combined output to ``on_line``. Own process group: a terminal's Ctrl-C reaches the
    launcher, which forwards it once; the death signal covers a launcher killed outright."""
    process = subprocess.Popen(
        list(command),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )

    def pump() -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            on_line(raw.rstrip("\n"))

    reader = threading.Thread(target=pump, name=name, daemon=True)
    reader.start()
    return process, reader


def _is_error_line(line: str) -> bool:
    # Triton's glog format: "E1128 03:40:00.123 ..." for errors; model load failures also
    # appear in the final status table as "UNAVAILABLE: ...".
    if HAS_GPU is False and is_gpu_noise(line):
        return False
    return line.startswith("E") and line[1:5].isdigit() or "failed to load" in line or "UNAVAILABLE:" in line


# What every start of a GPU-enabled Triton build logs on a machine without a GPU (some of it as
# errors, "E..."): it then serves on the CPU. Lower-case substrings.
_GPU_NOISE = (
    "cudadriverhelper has not been initialized",
    "cuda driver version is insufficient",
    "failed to initialize nvml",
    "dcgm unable to start",
    "pinned system memory",
    "cuda memory pool disabled",
)

HAS_GPU = any(Path("/dev").glob("nvidia[0-9]*"))
"""Whether this machine has an NVIDIA device. Only without one are the lines above noise: on a
GPU machine the same words mean a broken driver and stay errors."""


def is_gpu_noise(line: str) -> bool:
    """A CUDA/NVML/DCGM start-up line that only says this machine has no GPU."""
    lowered = line.lower()
    return any(needle in lowered for needle in _GPU_NOISE)


class PortInUseError(TritonStartError):
    """A port the server needs is taken: found before Triton spends seconds loading models."""


def check_ports_free(options: ServerOptions) -> None:
    """Bind each port as Triton will, and release it; PortInUseError names the first taken one.

    Triton learns of a taken gRPC port only after loading every model, and the readiness probe
    would meanwhile ask whichever server owns the HTTP port (and could call that one ready).
    """
    wanted = (
        ("gRPC", "--grpc-port", options.host, options.grpc_port),
        ("HTTP", "--http-port", options.http_host, options.http_port),
        ("metrics", "--metrics-port", options.host, options.metrics_port),
    )
    for what, flag, host, port in wanted:
        check_port_free(what, flag, host, port)


def check_port_free(what: str, flag: str, host: str, port: int) -> None:
    """PortInUseError, naming ``what`` and the ``flag`` that moves it, unless ``host:port`` binds."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR: a port only lingering in TIME_WAIT is free for Triton too.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise PortInUseError(
                f"{what} port {host}:{port} is not free ({error.strerror}): another server is "
                f"listening there (an earlier `sam-triton serve`?). Stop it, or pick another "
                f"port with {flag}."
            ) from None


# Triton prints this (stdout, unconditionally) when SIGINT or SIGTERM starts its shutdown.
_SIGNAL_LINE = re.compile(r"^Signal \((2|15)\) received\.")
# And these (INFO, at every log level) as each model starts and ends loading.
_LOADING_LINE = re.compile(r'"loading: ([^":]+):\d+"')
_LOADED_LINE = re.compile(r"successfully loaded '([^']+)'")


class DrainHold:
    """Keeps a stopping Triton serving for ``delay`` seconds after its shutdown starts.

    On SIGTERM Triton first closes its HTTP endpoint to new connections (readiness probes and
    health checks fail from then on) but waits, up to its exit timeout, for open HTTP
    connections to close before it refuses inference requests and unloads its models. This
    holds one idle connection open from readiness on and closes it ``delay`` seconds after
    Triton logs the signal, however the signal came (the launcher, kill, a kubelet): a
    balancer that checks readiness on new connections has routed elsewhere by then.
    """

    def __init__(self, host: str, port: int, delay: float) -> None:
        self._address = (host, port)
        self._delay = delay
        self._socket: socket.socket | None = None
        self._released = False
        self._lock = threading.Lock()

    def hold(self) -> None:
        """Open the connection (Triton counts it at accept; it never carries a request)."""
        with self._lock:
            if self._socket is None and not self._released:
                try:
                    self._socket = socket.create_connection(self._address, timeout=5)
                except OSError:  # not reachable now: Triton then stops without the delay
                    self._socket = None

    def on_signal(self) -> None:
        timer = threading.Timer(self._delay, self.release)
        timer.daemon = True
        timer.start()

    def release(self) -> None:
        """Let Triton go on with its shutdown now (also when it exits or is stopped)."""
        with self._lock:
            self._released = True
            if self._socket is not None:
                self._socket.close()
                self._socket = None


class TritonProcess:
    """A tritonserver child process with its log echoed (or captured) line by line."""

    def __init__(
        self,
        options: ServerOptions,
        installation: TritonInstallation | None = None,
        log_sink: Callable[[str], None] | None = None,
    ) -> None:
        self.options = options
        self.installation = installation or find_triton()
        self._log_sink = log_sink
        self._workdir = tempfile.TemporaryDirectory(prefix="sam-triton-")
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._stop_requested_at: float | None = None
        self.error_lines: deque[str] = deque(maxlen=50)
        self.log_tail: deque[str] = deque(maxlen=400)
        self.loading: set[str] = set()
        """Models Triton has started and not yet finished loading (from its log)."""
        # The Python backend's shared-memory regions (64 MiB and up per model instance) outlive
        # a killed server; a prefix of our own lets stop() remove exactly this server's, and a
        # later start those of launchers that were killed themselves.
        self.shm_prefix = shm_region_prefix()
        self.drain_hold = (
            DrainHold(options.probe_host, options.http_port, options.drain_delay)
            if options.drain_delay > 0
            else None
        )

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def returncode(self) -> int | None:
        return self._process.poll() if self._process else None

    def start(self) -> None:
        check_ports_free(self.options)
        kill_orphaned_stubs()
        remove_stale_shm_regions()
        backend_dir = prepare_backend_directory(self.installation, Path(self._workdir.name))
        command = [str(self.installation.binary), *self.options.arguments(backend_dir, self.shm_prefix)]
        self._process, self._reader = launch_child(
            command, self._on_log_line, "tritonserver-log", server_environment(self.installation)
        )

    def _on_log_line(self, line: str) -> None:
        if self.drain_hold is not None and _SIGNAL_LINE.match(line):
            self.drain_hold.on_signal()
        if loading := _LOADING_LINE.search(line):
            self.loading.add(loading.group(1))
        elif loaded := _LOADED_LINE.search(line):
            self.loading.discard(loaded.group(1))
        self.log_tail.append(line)
        if _is_error_line(line):
            self.error_lines.append(line)
        if self._log_sink is not None:
            self._log_sink(line)

    def is_ready(self) -> bool:
        host = self.options.probe_host
        url = f"http://{f'[{host}]' if ':' in host else host}:{self.options.http_port}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def wait_ready(self, timeout: float = 300.0) -> None:
        """Block until every model is loaded and the server is ready, or raise with Triton's errors."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.returncode
            if code is not None:
                self._join_reader()
                self._remove_shm_regions()
                raise TritonStartError(
                    f"tritonserver exited with status {code} before it was ready",
                    list(self.error_lines),
                    code,
                )
            if self.is_ready():
                if self.drain_hold is not None:
                    self.drain_hold.hold()
                return
            time.sleep(0.25)
        errors = list(self.error_lines)
        loading = ", ".join(sorted(self.loading)) or "none"
        self.stop()
        raise TritonStartError(
            f"tritonserver was not ready within {timeout:.0f} s (still loading: {loading})", errors
        )

    def send_signal(self, signum: int) -> None:
        if self._process is not None and self._process.poll() is None:
            if signum in (signal.SIGTERM, signal.SIGINT) and self._stop_requested_at is None:
                self._stop_requested_at = time.monotonic()
            self._process.send_signal(signum)

    def wait(self, timeout: float | None = None) -> int:
        assert self._process is not None
        code = self._process.wait(timeout)
        self._join_reader()
        return code

    @property
    def stop_grace(self) -> float:
        """How long a stopping Triton may take: its exit timeout, then the unload."""
        return self.options.exit_timeout + UNLOAD_GRACE_S

    def wait_exit(self, on_overdue: Callable[[float], None] | None = None) -> int:
        """Wait until Triton exits; once asked to stop (:meth:`send_signal`), at most
        :attr:`stop_grace` seconds, then SIGKILL. A Triton whose exit timeout cut a call still
        running in a Python model can crash on its way out and hang in its own crash handler,
        its gRPC port open (seen: SIGSEGV, SIGABRT, then minutes until clients' deadlines)."""
        assert self._process is not None
        killed = False
        while True:
            try:
                return self.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
            if killed or self._stop_requested_at is None:
                continue
            waited = time.monotonic() - self._stop_requested_at
            if waited > self.stop_grace:
                if on_overdue is not None:
                    on_overdue(waited)
                self._process.kill()
                killed = True

    def stop(self, grace: float | None = None) -> int | None:
        """SIGTERM (Triton drains and unloads models, then exits), then SIGKILL after ``grace``
        seconds (default: :attr:`stop_grace`)."""
        if self._process is None:
            return None
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(self.stop_grace if grace is None else grace)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._kill_leftover_stubs()
        if self.drain_hold is not None:
            self.drain_hold.release()
        self._join_reader()
        self._workdir.cleanup()
        self._remove_shm_regions()
        return self._process.returncode

    def _kill_leftover_stubs(self) -> None:
        """SIGKILL whatever is left of the server's process group (its own, see
        :func:`launch_child`). Python backend stubs outlive a tritonserver that was killed or
        stopped waiting for them, each holding its model's memory for good (seen: every stub of
        a SIGKILLed replica; a stub busy in a call when Triton's exit timeout ran out). The
        group id stays reserved while any member lives, so no stranger shares it."""
        assert self._process is not None
        with contextlib.suppress(ProcessLookupError):  # the usual case: Triton stopped them itself
            os.killpg(self._process.pid, signal.SIGKILL)

    def _remove_shm_regions(self) -> None:
        """Unlink this server's leftover regions (none after a clean exit; all after SIGKILL)."""
        for region in SHM_DIRECTORY.glob(f"{self.shm_prefix}*"):
            region.unlink(missing_ok=True)

    def _join_reader(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=5)

    def __enter__(self) -> TritonProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def echo(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
