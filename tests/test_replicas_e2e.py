"""Two real tritonserver replicas behind the real Envoy of ``sam-triton serve --replicas``.

One module-scoped replica set on the tiny-test model, routed by the same configuration as the
Kubernetes manifests (``sam_triton_server.launcher.envoy``). Per-replica evidence comes from each
replica's own HTTP statistics endpoint (``/v2/models/<model>/stats``) and from asking a replica
directly whether it holds an embedding. The last test kills a replica and restarts it, so it
stays last in the file.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pytest
from sam_triton import Prompt, RemoteAutomaticMaskGenerator, SamClient
from sam_triton.results import Prediction

from tests.helpers import free_ports, pid_alive, process_group, wait_until

if TYPE_CHECKING:
    from sam_triton import ImageEmbedding
    from sam_triton_server.launcher.envoy import EnvoySettings
    from sam_triton_server.launcher.replicas import ReplicaPorts, ReplicaSet

CLICK = Prompt(point_coords=[[40, 30]], point_labels=[1])
TAKEOUT_SLACK_S = 5.0
N_SESSIONS = 8
CLICKS = 3


def serve_two_replicas(repository: Path) -> Iterator[ReplicaSet]:
    """A module's replica set: two replicas of ``repository`` behind Envoy, on free ports."""
    from sam_triton_server.launcher.process import ServerOptions
    from sam_triton_server.launcher.replicas import ReplicaPorts, ReplicaSet

    ports = free_ports(8)
    replica_ports = [ReplicaPorts(*ports[0:3]), ReplicaPorts(*ports[3:6])]
    options = ServerOptions(repository=repository, host="127.0.0.1")
    cluster = ReplicaSet(options, replica_ports, envoy_port=ports[6], admin_port=ports[7])
    # No retry: a start that fails says why (a replica that never got ready names the models
    # it was still loading). The suite's usual ready timeout: on a busy 2-core machine one
    # replica took 17-53 s to load, the pair up to 103 s.
    cluster.start(ready_timeout=600)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def replica_set(tiny_repository: Path) -> Iterator[ReplicaSet]:
    yield from serve_two_replicas(tiny_repository)


def success_count(http_port: int, model: str) -> int:
    url = f"http://127.0.0.1:{http_port}/v2/models/{model}/stats"
    with urllib.request.urlopen(url, timeout=5) as response:
        stats = json.load(response)["model_stats"][0]
    return int(stats["inference_stats"]["success"]["count"])


def settled_encodes(ports: ReplicaPorts, expected: int) -> int:
    """How many sam_encoder calls the replica had answered before one more sent now, so that a
    shortfall or an excess shows without waiting for "anything beyond it": the calls this
    test made have all returned, and Triton records each just after its reply, so once the
    one sent last is counted, so is every one before it."""
    with SamClient(f"127.0.0.1:{ports.grpc}", server_embeddings=False) as direct:
        direct.embed(image(999))
    wait_until(lambda: success_count(ports.http, "sam_encoder") >= expected + 1, timeout=30)
    return success_count(ports.http, "sam_encoder") - 1


def takeout_window(settings: EnvoySettings) -> float:
    """How long Envoy may take to route around a replica that stopped answering its health
    checks: a check in flight may run its whole timeout, then UNHEALTHY_THRESHOLD failed ones
    an interval apart, the workers' new host set a moment later (1 s, as in
    ``drain_notice_s``), and slack for a machine busy with other work."""
    from sam_triton_server.launcher.envoy import UNHEALTHY_THRESHOLD

    checks = UNHEALTHY_THRESHOLD * settings.health_interval_s + settings.health_timeout_s
    return checks + 1.0 + TAKEOUT_SLACK_S


def counts(cluster: ReplicaSet, model: str) -> list[int]:
    return [success_count(p.http, model) for p in cluster.ports]


def settled_counts(cluster: ReplicaSet, model: str, total: int) -> list[int]:
    """Per-replica counts once their sum reaches ``total`` (Triton records a success just after replying)."""
    wait_until(lambda: sum(counts(cluster, model)) >= total, timeout=5)
    return counts(cluster, model)


def image(seed: int) -> npt.NDArray[np.uint8]:
    return np.random.default_rng(seed).integers(0, 256, (96, 128, 3), dtype=np.uint8)


def holders(cluster: ReplicaSet, session_id: str) -> list[int]:
    """The live replicas that hold ``session_id``, asked directly (not through Envoy)."""
    found = []
    for index, ports in enumerate(cluster.ports):
        if index in cluster.exited():
            continue
        with SamClient(f"127.0.0.1:{ports.grpc}") as direct:
            if direct.has_embedding(session_id):
                found.append(index)
    return found


def click(client: SamClient, embedding: ImageEmbedding) -> Prediction:
    prediction = client.predict(embedding, CLICK, low_res_logits=True)
    assert isinstance(prediction, Prediction)
    return prediction


def assert_same_prediction(a: Prediction, b: Prediction) -> None:
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)
    np.testing.assert_allclose(a.low_res_logits, b.low_res_logits, atol=1e-5)


def test_each_session_stays_on_one_replica(replica_set: ReplicaSet) -> None:
    owners = []
    # Every sam_session call this test makes, counted, so each reading waits for all of them.
    total = sum(counts(replica_set, "sam_session"))
    with SamClient(replica_set.url) as client:
        for seed in range(N_SESSIONS):
            before = settled_counts(replica_set, "sam_session", total)
            embedding = client.embed(image(seed))
            for _ in range(CLICKS):
                click(client, embedding)
            # embed = a lookup and an upload, then one call per click: all on one replica.
            total += 2 + CLICKS
            after = settled_counts(replica_set, "sam_session", total)
            deltas = [a - b for a, b in zip(after, before, strict=True)]
            assert sorted(deltas) == [0, 2 + CLICKS], (seed, before, after)
            owner = deltas.index(2 + CLICKS)
            assert embedding.session_id is not None
            assert holders(replica_set, embedding.session_id) == [owner]
            total += len(replica_set.ports)  # holders() asked each replica once
            owners.append(owner)
    # Eight content ids spread over both replicas (fixed images, so a fixed outcome).
    assert set(owners) == {0, 1}, owners


def test_stateless_models_and_automask_through_envoy(replica_set: ReplicaSet) -> None:
    direct_url = f"127.0.0.1:{replica_set.ports[0].grpc}"
    picture = image(100)
    params: dict[str, Any] = dict(
        points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, output_mode="uncompressed_rle"
    )
    before = counts(replica_set, "sam_encoder")
    with SamClient(replica_set.url, server_embeddings=False) as proxied, SamClient(direct_url) as direct:
        for _ in range(4):  # round-robin: the encoder runs on both replicas
            assert_same_prediction(
                click(proxied, proxied.embed(picture)),
                click(direct, direct.embed(picture)),
            )
        proxied_trip, direct_trip = proxied.segment(picture, CLICK), direct.segment(picture, CLICK)
        assert isinstance(proxied_trip, Prediction) and isinstance(direct_trip, Prediction)
        assert_same_prediction(proxied_trip, direct_trip)
        records = RemoteAutomaticMaskGenerator(proxied, **params).generate(picture)
        assert records and records == RemoteAutomaticMaskGenerator(direct, **params).generate(picture)
    deltas = [a - b for a, b in zip(counts(replica_set, "sam_encoder"), before, strict=True)]
    assert all(d > 0 for d in deltas), deltas


def test_replica_loss_costs_one_reembed_and_a_restart_rejoins(replica_set: ReplicaSet) -> None:
    from sam_triton_server.launcher.envoy import SESSION_CLUSTER, STATELESS_CLUSTER

    cluster = replica_set
    envoy = cluster.envoy
    survivor = f"127.0.0.1:{cluster.ports[1].grpc}"
    with SamClient(cluster.url) as client:
        embeddings = [client.embed(image(200 + seed)) for seed in range(N_SESSIONS)]
        before = [click(client, e) for e in embeddings]
        owner = {e.session_id: holders(cluster, e.session_id or "") for e in embeddings}
        moved = [e for e in embeddings if owner[e.session_id] == [0]]
        stayed = [e for e in embeddings if owner[e.session_id] == [1]]
        assert moved and stayed and len(moved) + len(stayed) == N_SESSIONS, owner

        dead_pid = cluster.replicas[0].pid
        assert dead_pid is not None
        killed_at = time.monotonic()
        cluster.kill(0)
        assert not pid_alive(dead_pid)
        # Its Python backend stubs too (a busy one outlives a killed tritonserver for good:
        # test_drain.py shows it; the launcher stops the server's whole process group).
        assert wait_until(lambda: process_group(dead_pid) == [], timeout=10), process_group(dead_pid)
        # Straight after the crash Envoy still lists the replica: the connect failure is
        # retried on the next host of the ring, which misses, and the SDK re-embeds.
        encodes = success_count(cluster.ports[1].http, "sam_encoder")
        assert_same_prediction(click(client, moved[0]), before[embeddings.index(moved[0])])
        # Active health checks take it out of both clusters within their arithmetic.
        assert wait_until(
            lambda: all(
                envoy.healthy_upstreams(c) == {survivor} for c in (SESSION_CLUSTER, STATELESS_CLUSTER)
            ),
            timeout=takeout_window(envoy.settings),
        ), "envoy kept routing to the dead replica"
        print(f"dead replica out of rotation after {time.monotonic() - killed_at:.1f} s")

        after = [click(client, e) for e in embeddings]
        for old, new in zip(before, after, strict=True):
            assert_same_prediction(old, new)
        # Exactly one encode per moved session; the survivor's own sessions were not touched.
        assert settled_encodes(cluster.ports[1], encodes + len(moved)) == encodes + len(moved)
        assert all(holders(cluster, e.session_id or "") == [1] for e in embeddings)
        # The stateless models and automatic mask generation carry on on the survivor.
        with SamClient(cluster.url, server_embeddings=False) as stateless:
            assert_same_prediction(click(stateless, stateless.embed(image(200))), before[0])
        assert RemoteAutomaticMaskGenerator(
            client, points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0
        ).generate(image(1))

        cluster.restart(0)
        cluster.wait_routed(2, timeout=10)
        # The ring is the same again: the first replica's sessions return to it (an empty
        # cache, so one more re-embed each) and the masks do not change.
        encodes = success_count(cluster.ports[0].http, "sam_encoder")
        again = [click(client, e) for e in embeddings]
        for old, new in zip(before, again, strict=True):
            assert_same_prediction(old, new)
        assert settled_encodes(cluster.ports[0], encodes + len(moved)) == encodes + len(moved)
        assert all(0 in holders(cluster, e.session_id or "") for e in moved)
