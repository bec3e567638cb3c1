"""The API key behind Envoy: ``serve --replicas N --api-key`` and deploy/'s topology.

Envoy health-checks keyed replicas without the key (health stays open: with a keyed health check
it would route to none), the key a client sends reaches Triton through Envoy, and a call with a
missing or wrong key is refused once: Triton answers it UNAVAILABLE ("This protocol is
restricted"), the code Envoy must not retry on another replica. One replica keeps it cheap; the
routing of several replicas is tests/test_replicas_e2e.py's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from sam_triton import AuthenticationError, Prediction, Prompt, SamClient

from tests.helpers import free_ports
from tests.test_envoy_drain import envoy_stat

if TYPE_CHECKING:
    from sam_triton_server.launcher.replicas import ReplicaSet

API_KEY = "envoy-test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def keyed_cluster(tiny_repository: Path) -> Iterator[ReplicaSet]:
    from sam_triton_server.launcher.process import ServerOptions
    from sam_triton_server.launcher.replicas import ReplicaPorts, ReplicaSet
    from sam_triton_server.launcher.security import Security

    ports = free_ports(5)
    options = ServerOptions(repository=tiny_repository, host="127.0.0.1", security=Security(api_key=API_KEY))
    cluster = ReplicaSet(options, [ReplicaPorts(*ports[:3])], envoy_port=ports[3], admin_port=ports[4])
    cluster.start(ready_timeout=600)  # returns once Envoy's health checks route to the replica
    try:
        yield cluster
    finally:
        cluster.stop()


def test_the_key_reaches_triton_through_envoy(keyed_cluster: ReplicaSet) -> None:
    """The positive half: Envoy passes the key header on (the refusals below show it is needed)."""
    image = np.random.default_rng(4).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    with SamClient(keyed_cluster.url, api_key=API_KEY, timeout=120) as client:
        answer = client.predict(client.embed(image), Prompt([[20, 12]], [1]))
    assert isinstance(answer, Prediction) and answer.masks.shape[-2:] == (40, 56)


@pytest.mark.parametrize("key", [None, "wrong-key-0123456789abcdef"])
def test_a_call_without_the_key_is_refused_once_and_not_retried(
    keyed_cluster: ReplicaSet, key: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen failing with ``unavailable`` added to Envoy's retry conditions (two retries per
    refused call)."""
    monkeypatch.delenv("SAM_TRITON_API_KEY", raising=False)
    retries = "cluster.triton_stateless.upstream_rq_retry"
    sent = "cluster.triton_stateless.upstream_rq_total"
    before = {name: envoy_stat(keyed_cluster.envoy, name) for name in (retries, sent)}
    with SamClient(keyed_cluster.url, api_key=key, retries=0) as client:
        assert client.server_ready()  # health needs no key, through Envoy too
        with pytest.raises(AuthenticationError) as refused:
            client.model_metadata()
    assert "restricted" in (refused.value.server_message or "")
    assert envoy_stat(keyed_cluster.envoy, retries) == before[retries]
    assert envoy_stat(keyed_cluster.envoy, sent) - before[sent] == 2  # ServerReady, ModelMetadata
