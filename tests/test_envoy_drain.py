"""Draining and retries behind the real Envoy of ``sam-triton serve --replicas``.

Two tiny-test replicas behind Envoy, routed by the configuration the Kubernetes manifests use.
A replica that gets SIGTERM under continuous clicks costs no caller error, one re-embed per
session that moves, exact masks, and is gone well inside its exit timeout; SIGKILL the same
(nothing drains: Envoy retries the failed connection on the next host). Envoy itself: a call
longer than a stream idle timeout survives, an overloaded or late answer is not retried, and
Envoy's own drain (locally, and the Kubernetes preStop script) lets a call in flight finish.

In this copy of the repository sam_decoder holds a lone request in its queue for HELD_S
seconds (a call of known length) and queues one request per priority level (the next is
refused at once: an overloaded answer). Session clicks never reach sam_decoder.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sam_triton import (
    DeadlineExceededError,
    ImageEmbedding,
    Prediction,
    Prompt,
    SamClient,
    SamTritonError,
    ServerOverloadedError,
)

from tests.helpers import free_ports, in_background, wait_until
from tests.test_deploy import DEPLOY, OVERLAYS, one, rendered, triton_pod
from tests.test_drain import hold_decoder_requests
from tests.test_replicas_e2e import (
    assert_same_prediction,
    click,
    holders,
    image,
    serve_two_replicas,
    settled_encodes,
    success_count,
    takeout_window,
)

if TYPE_CHECKING:
    from sam_triton_server.launcher.replicas import EnvoyProcess, ReplicaSet

HELD_S = 3.0
PROMPT = Prompt(point_coords=[[20, 30]], point_labels=[1])
N_SESSIONS = 10
USERS = 3
DRAIN_SCRIPT = DEPLOY / "base" / "envoy-drain.sh"


@pytest.fixture(scope="module")
def held_repository(tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sam_triton_server.launcher.queues import overlay_repository

    into = tmp_path_factory.mktemp("held") / "repo"
    repository = overlay_repository(tiny_repository, {"sam_decoder": 1}, into)
    hold_decoder_requests(repository, int(HELD_S * 1e6))  # its own config.pbtxt, not a link
    return repository


@pytest.fixture(scope="module")
def cluster(held_repository: Path) -> Iterator[ReplicaSet]:
    yield from serve_two_replicas(held_repository)


def retry_on(route: dict[str, Any]) -> set[str]:
    return set(route["route"]["retry_policy"]["retry_on"].split(","))


def test_envoy_retries_only_what_was_never_computed_and_drains_on_kubernetes() -> None:
    from sam_triton_server.launcher.cli import register
    from sam_triton_server.launcher.envoy import KUBERNETES, STOPPING_MESSAGES, render

    config = render(KUBERNETES)
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    # Long calls: Envoy's 300 s stream idle timeout is off (the caller's deadline bounds a call).
    assert manager["stream_idle_timeout"] == "0s"
    for route in manager["route_config"]["virtual_hosts"][0]["routes"]:
        # No "unavailable" (overloaded, deadline and API-key answers), no "reset" (a call that
        # ran for minutes), no 5xx: only calls no replica computed.
        assert retry_on(route) == {
            "connect-failure",
            "refused-stream",
            "reset-before-request",
            "retriable-headers",
        }
        headers = route["route"]["retry_policy"]["retriable_headers"]
        assert [h["string_match"]["contains"] for h in headers] == list(STOPPING_MESSAGES)
        assert route["route"]["timeout"] == "0s"
    for cluster_config in config["static_resources"]["clusters"]:
        # A draining Triton keeps kept-alive connections answering "ready": check on new ones.
        assert cluster_config["health_checks"][0]["reuse_connection"] is False
        assert cluster_config["ignore_health_on_host_removal"] is True
        # Per-Envoy ejection would split Envoy replicas' rings: none.
        assert "outlier_detection" not in cluster_config

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    for overlay in OVERLAYS:
        docs = rendered(overlay)
        args = parser.parse_args(["serve", *triton_pod(docs)["spec"]["containers"][0]["args"]])
        # Triton pods serve on after SIGTERM exactly as long as the Envoys need to notice.
        assert args.drain_delay == KUBERNETES.drain_notice_s
        envoy_pod = one(docs, "Deployment", "sam-triton-envoy")["spec"]["template"]["spec"]
        envoy = envoy_pod["containers"][0]
        hook = envoy["lifecycle"]["preStop"]["exec"]["command"]
        assert hook[:2] == ["/bin/bash", "/etc/envoy/envoy-drain.sh"]
        admin_port, min_s, max_s = (int(v) for v in hook[2:])
        assert admin_port == KUBERNETES.admin_port
        assert f"--drain-time-s={min_s}" in envoy["args"] and "--drain-strategy=immediate" in envoy["args"]
        assert max_s + 10 <= envoy_pod["terminationGracePeriodSeconds"]
        scripts = one(docs, "ConfigMap", "sam-triton-envoy")["data"]
        assert scripts["envoy-drain.sh"] == DRAIN_SCRIPT.read_text()


def envoy_beside(cluster: ReplicaSet, **changes: Any) -> EnvoyProcess:
    """Another Envoy in front of the same replicas (the cluster's settings with ``changes``),
    routing to both."""
    from sam_triton_server.launcher.envoy import STATELESS_CLUSTER
    from sam_triton_server.launcher.replicas import EnvoyProcess

    listen, admin = free_ports(2)
    envoy = EnvoyProcess(replace(cluster.envoy.settings, listen_port=listen, admin_port=admin, **changes))
    envoy.start()
    try:
        envoy.wait_ready()
        assert wait_until(lambda: len(envoy.healthy_upstreams(STATELESS_CLUSTER)) == 2, timeout=10)
        time.sleep(1.0)  # the workers' view follows the admin's a moment later
    except BaseException:
        envoy.stop()
        raise
    return envoy


def stateless(url: str, **options: Any) -> SamClient:
    return SamClient(url, server_embeddings=False, retries=0, **options)


def replica_metric(cluster: ReplicaSet, pattern: str) -> int:
    """A Prometheus series summed over the replicas (``pattern``: the line's regex, value as group)."""
    total = 0
    for ports in cluster.ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{ports.metrics}/metrics", timeout=5) as reply:
            total += sum(int(float(v)) for v in re.findall(pattern, reply.read().decode(), re.M))
    return total


def wait_decoder_idle(cluster: ReplicaSet) -> None:
    """Until no sam_decoder call is held anywhere (a cut call stays queued in Triton)."""
    pending = r'^nv_inference_pending_request_count\{model="sam_decoder".*\} (\S+)$'
    assert wait_until(lambda: replica_metric(cluster, pending) == 0, timeout=HELD_S * 3)


def held_embedding(cluster: ReplicaSet) -> ImageEmbedding:
    """An embedding for held sam_decoder calls, once no earlier call is held anywhere."""
    wait_decoder_idle(cluster)
    with stateless(cluster.url) as client:
        return client.embed(image(7))


def held_call_through(
    envoy: EnvoyProcess, cluster: ReplicaSet, client: SamClient, embedding: ImageEmbedding
) -> tuple[threading.Thread, list[Any]]:
    """A click through ``envoy`` in the background, returned once it is held in a replica's
    queue. (Envoy's count of calls in flight alone is not enough: a new client's first call
    asks for the model's metadata, and a drain between the two calls rightly finds none.)"""
    pending = r'^nv_inference_pending_request_count\{model="sam_decoder".*\} (\S+)$'
    thread, outcome = in_background(lambda: client.predict(embedding, PROMPT))
    assert wait_until(lambda: replica_metric(cluster, pending) == 1, timeout=10)
    assert envoy.active_requests() == 1
    return thread, outcome


def test_a_call_longer_than_a_stream_idle_timeout_survives(cluster: ReplicaSet) -> None:
    embedding = held_embedding(cluster)
    # The knob: with a 1 s stream idle timeout Envoy cuts the held call.
    short = envoy_beside(cluster, stream_idle_timeout_s=1.0)
    try:
        with stateless(short.url) as client:
            started = time.monotonic()
            with pytest.raises(SamTritonError, match="stream timeout"):
                client.predict(embedding, PROMPT)
            assert time.monotonic() - started < HELD_S
    finally:
        short.stop()
    # The configuration every user runs has it off (so Envoy's default of 300 s does not
    # apply either): the same call is answered after HELD_S.
    wait_decoder_idle(cluster)
    with urllib.request.urlopen(f"{cluster.envoy.admin_url}/config_dump", timeout=5) as reply:
        assert '"stream_idle_timeout": "0s"' in reply.read().decode()
    with stateless(cluster.url) as client:
        started = time.monotonic()
        assert isinstance(client.predict(embedding, PROMPT), Prediction)
        assert time.monotonic() - started >= HELD_S * 0.9


def envoy_stat(envoy: EnvoyProcess, name: str) -> int:
    with urllib.request.urlopen(f"{envoy.admin_url}/stats?filter={name}", timeout=5) as reply:
        text = reply.read().decode()
    match = re.search(rf"^{re.escape(name)}: (\d+)$", text, re.M)
    return int(match.group(1)) if match else 0


def test_overloaded_and_late_answers_are_not_retried_by_envoy(cluster: ReplicaSet) -> None:
    embedding = held_embedding(cluster)
    upstream = "cluster.triton_stateless.upstream_rq_total"
    retries = "cluster.triton_stateless.upstream_rq_retry"
    before = {name: envoy_stat(cluster.envoy, name) for name in (upstream, retries)}
    sent: list[str] = []  # every RPC attempt of the SDK (it retries none here: retries=0)

    def observe(method: str, *_: int) -> None:
        sent.append(method)

    with stateless(cluster.url, rpc_observer=observe) as client:
        calls = [in_background(lambda: client.predict(embedding, PROMPT)) for _ in range(4)]
        for thread, _ in calls:
            thread.join(timeout=60)
        outcomes = [outcome[0] for _, outcome in calls]
        refused = [o for o in outcomes if isinstance(o, ServerOverloadedError)]
        answered = [o for o in outcomes if isinstance(o, Prediction)]
        # Each replica queues one call; the others are refused.
        assert refused and len(refused) + len(answered) == len(outcomes), outcomes
    # A call whose deadline passes in the queue is not sent again either.
    wait_decoder_idle(cluster)
    with (
        stateless(cluster.url, timeout=1.0, rpc_observer=observe) as late,
        pytest.raises(DeadlineExceededError),
    ):
        late.predict(embedding, PROMPT)
    # One upstream request per call: Envoy sent none of them again.
    assert envoy_stat(cluster.envoy, upstream) - before[upstream] == len(sent)
    assert envoy_stat(cluster.envoy, retries) == before[retries]


def test_envoy_drains_before_it_exits_and_a_call_in_flight_finishes(cluster: ReplicaSet) -> None:
    embedding = held_embedding(cluster)
    envoy = envoy_beside(cluster)
    with stateless(envoy.url) as client:
        thread, outcome = held_call_through(envoy, cluster, client, embedding)
        started = time.monotonic()
        assert envoy.stop(drain_timeout=30) == 0
        # It waited for the call (held HELD_S in Triton's queue), which was answered.
        assert time.monotonic() - started >= HELD_S * 0.5
        thread.join(timeout=30)
    assert isinstance(outcome[0], Prediction), outcome
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", envoy.settings.listen_port), timeout=2).close()


def test_the_kubernetes_prestop_script_drains_envoy(cluster: ReplicaSet) -> None:
    from sam_triton_server.launcher.envoy import HEALTH_PATH

    embedding = held_embedding(cluster)
    envoy = envoy_beside(cluster)
    try:
        with stateless(envoy.url) as client:
            thread, outcome = held_call_through(envoy, cluster, client, embedding)
            hook = subprocess.run(
                ["bash", str(DRAIN_SCRIPT), str(envoy.settings.admin_port), "0", "60"],
                capture_output=True,
                text=True,
                timeout=90,
            )
            assert hook.returncode == 0, hook.stderr
            # The hook returned only once the call was answered, and the pod's probe fails.
            assert envoy.active_requests() == 0
            thread.join(timeout=30)
            assert isinstance(outcome[0], Prediction), outcome
            health = f"http://127.0.0.1:{envoy.settings.listen_port}{HEALTH_PATH}"
            with pytest.raises(OSError):  # 503, or the listener already closed
                urllib.request.urlopen(health, timeout=2)
    finally:
        envoy.stop()


def drain_under_clicks(
    cluster: ReplicaSet, signum: int, seeds: int, hold: bool = True
) -> tuple[float, float | None]:
    """Users click on every session (images ``seeds``, ``seeds + 1``...) without pause while
    replica 0 gets ``signum`` (``hold``: it serves on for its drain delay). Returns (seconds
    until it was gone, seconds until Envoy routed around it)."""
    from sam_triton_server.launcher.envoy import SESSION_CLUSTER, STATELESS_CLUSTER

    # A click stuck somewhere fails (and is reported) well before the wait below gives up.
    with SamClient(cluster.url, timeout=20) as client:
        embeddings = [client.embed(image(seeds + seed)) for seed in range(N_SESSIONS)]
        expected = [click(client, e) for e in embeddings]
        owners = [holders(cluster, e.session_id or "") for e in embeddings]
        moved = [i for i, owner in enumerate(owners) if owner == [0]]
        assert moved and len(moved) < N_SESSIONS and all(o in ([0], [1]) for o in owners), owners
        encodes = success_count(cluster.ports[1].http, "sam_encoder")

        errors: list[str] = []
        after: Counter[int | str] = Counter()
        gone = threading.Event()
        stop = threading.Event()

        def user(first: int) -> None:
            turn = first
            while not stop.is_set():
                index = turn % N_SESSIONS
                try:
                    assert_same_prediction(click(client, embeddings[index]), expected[index])
                    after["total"] += 1
                    if gone.is_set():
                        after[index] += 1
                except Exception as error:  # the assertions below report every one
                    errors.append(f"{time.monotonic() - signalled:.1f} s, session {index}: {error!r}")
                turn += 1

        users = [threading.Thread(target=user, args=(u * N_SESSIONS // USERS,)) for u in range(USERS)]
        signalled = time.monotonic()
        for thread in users:
            thread.start()
        try:
            replica = cluster.replicas[0]
            assert replica.pid is not None
            assert wait_until(lambda: after["total"] >= N_SESSIONS, timeout=60)  # clicking is under way
            if not hold and replica.drain_hold is not None:
                replica.drain_hold.release()
            signalled = time.monotonic()
            os.kill(replica.pid, signum)
            survivor = {f"127.0.0.1:{cluster.ports[1].grpc}"}
            routed: float | None = None
            exited: float | None = None
            # Until the replica is gone and Envoy has routed around it, or its take-out window
            # (the health checks' arithmetic) has passed.
            takeout = takeout_window(cluster.envoy.settings)
            while time.monotonic() - signalled < 60:
                now = time.monotonic() - signalled
                if routed is None and all(
                    cluster.envoy.healthy_upstreams(c) == survivor
                    for c in (SESSION_CLUSTER, STATELESS_CLUSTER)
                ):
                    routed = now
                if exited is None and replica.returncode is not None:
                    exited = now
                    gone.set()
                if exited is not None and (routed is not None or now > takeout):
                    break
                time.sleep(0.05)
            gone_s = exited if exited is not None else time.monotonic() - signalled
            gone.set()
            # Every session clicked twice more after the replica was gone.
            # A plain string: pytest would shorten a tuple's repr to its first lines.
            assert wait_until(lambda: all(after[i] >= 2 for i in range(N_SESSIONS)), timeout=60), "\n".join(
                [
                    f"gone after {gone_s:.1f} s; clicks answered {dict(after)}; {len(errors)} errors:",
                    *errors[:3],
                    "...",
                    *errors[-3:],
                    cluster_view(cluster),
                    "replica 0's log:",
                    *list(replica.log_tail)[-15:],
                    "replica 1's log:",
                    *list(cluster.replicas[1].log_tail)[-30:],
                ]
            )
        finally:
            stop.set()
            for thread in users:
                thread.join(timeout=60)
        assert errors == [], (errors[:5], f"gone after {gone_s:.1f} s, routed around after {routed} s")
        # One encode per session that moved, none for those that stayed.
        assert settled_encodes(cluster.ports[1], encodes + len(moved)) == encodes + len(moved)
        assert all(holders(cluster, e.session_id or "") == [1] for e in embeddings)
    print(f"{signal.Signals(signum).name}: replica gone after {gone_s:.1f} s, routed around after {routed} s")
    return gone_s, routed


def cluster_view(cluster: ReplicaSet) -> str:
    """Each replica's exit status and answer to Triton's readiness probe, and the hosts Envoy
    routes to: what a failure report needs to tell a dead replica from a routing fault."""
    from sam_triton_server.launcher.envoy import SESSION_CLUSTER, STATELESS_CLUSTER

    seen = []
    for index, (replica, ports) in enumerate(zip(cluster.replicas, cluster.ports, strict=True)):
        try:
            url = f"http://127.0.0.1:{ports.http}/v2/health/ready"
            with urllib.request.urlopen(url, timeout=2) as response:
                ready: object = response.status
        except OSError as error:
            ready = error
        seen.append(f"replica {index}: status {replica.returncode}, ready probe {ready!r}")
    routed = {c: sorted(cluster.envoy.healthy_upstreams(c)) for c in (SESSION_CLUSTER, STATELESS_CLUSTER)}
    return "; ".join([*seen, f"Envoy routes to {routed}"])


def two_replicas(cluster: ReplicaSet) -> None:
    """Both replicas running and routed to again, whatever an earlier test left."""
    exited = cluster.exited()
    for index in exited:
        cluster.restart(index)
    if exited:
        cluster.wait_routed(2, timeout=10)


def test_sigterm_under_continuous_clicks_loses_no_click(cluster: ReplicaSet) -> None:
    two_replicas(cluster)
    replica = cluster.replicas[0]
    assert replica.options.exit_timeout == 30 and replica.drain_hold is not None
    gone_s, routed = drain_under_clicks(cluster, signal.SIGTERM, seeds=300)
    assert replica.returncode == 0
    # Envoy routed around it within its take-out window (by design while it was still there,
    # within its drain delay, which a starved machine may overrun: then the retries of the next
    # test's case take over), and it left well inside its exit timeout.
    assert routed is not None and routed <= takeout_window(cluster.envoy.settings) and gone_s < 10


def test_a_stopping_replicas_answers_are_retried_elsewhere(cluster: ReplicaSet) -> None:
    """Without the drain delay Triton refuses clicks ("Server is stopping"), then unloads
    ("... has no available versions") while Envoy still routes to it: Envoy retries those on
    the next host of the ring, the SDK whatever is left, so still no click fails. A run is
    judged on its retries only if a click reached the stopping replica before Envoy routed
    around it, and made again otherwise (on a busy machine the users' clicks once all went
    elsewhere in that window: nothing was refused, so nothing needed a retry)."""
    retried = "cluster.triton_sessions.upstream_rq_retry"
    for attempt in range(3):
        two_replicas(cluster)
        retries = envoy_stat(cluster.envoy, retried)
        gone_s, _ = drain_under_clicks(cluster, signal.SIGTERM, seeds=350 + 20 * attempt, hold=False)
        assert cluster.replicas[0].returncode == 0 and gone_s < 10
        if envoy_stat(cluster.envoy, retried) > retries:
            return
    pytest.fail("in 3 runs no click reached the stopping replica: Envoy retried none")


def test_sigkill_under_continuous_clicks_loses_no_click(cluster: ReplicaSet) -> None:
    two_replicas(cluster)
    drain_under_clicks(cluster, signal.SIGKILL, seeds=400)
    assert cluster.replicas[0].returncode == -signal.SIGKILL
