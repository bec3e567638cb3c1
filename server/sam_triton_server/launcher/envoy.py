"""The Envoy routing configuration in front of Triton replicas: one renderer, two users.

``sam-triton serve --replicas N`` renders it with one endpoint per local replica;
``deploy/base/envoy.json`` (the Kubernetes ConfigMap) is the same renderer's output for the
headless Service, and a test fails when the committed file drifts from it.

Routing: every KServe call is the same gRPC method, so the route is chosen by the
``sam-session-id`` header that the SDK sends on each ``sam_session`` call and each ``sam_video``
stream (and only there; in a repository of several models, each ``NAME.sam_session``'s too, so
no route names a model). Calls that carry it go to a ring-hash cluster keyed on it, so a
session's clicks reach the replica holding its embedding, a video stream the replica holding
its tracking state; everything else is balanced round-robin.

Envoy retries only what was never computed (no connection, a refused stream, or Triton's answer
that it is stopping or unloading): every other answer, overloaded, deadline and API key
included, reaches the SDK, whose own policy knows the caller's deadline.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sam_triton_common.contract import SESSION_HEADER, SESSION_MODEL

SESSION_CLUSTER = "triton_sessions"
STATELESS_CLUSTER = "triton_stateless"
HEALTH_PATH = "/healthz"  # Envoy's own liveness on the gRPC port (HTTP/1.1 or 2)
# Envoy's default; the simulation in deploy/README.md ("Scaling") uses the same size.
MIN_RING_SIZE = 1024
UNHEALTHY_THRESHOLD = 3
# What a stopping Triton answers before its gRPC port closes (trailers-only, so the status and
# message are response headers Envoy can match): the scheduler has stopped accepting
# requests, then the model is unloaded. Neither computed anything, so another replica may.
STOPPING_MESSAGES = ("Server is stopping", "has no available versions")
SAFE_RETRY_ON = "connect-failure,refused-stream,reset-before-request,retriable-headers"


@dataclass(frozen=True)
class Upstream:
    """A Triton address: gRPC for traffic, HTTP for the readiness health check.

    ``host`` may be a DNS name resolving to several pods (a headless Service): with
    STRICT_DNS every A record becomes its own host in the ring.
    """

    host: str
    grpc_port: int = 8001
    http_port: int = 8000


@dataclass(frozen=True)
class EnvoySettings:
    upstreams: Sequence[Upstream]
    listen_address: str = "0.0.0.0"
    listen_port: int = 8001
    admin_address: str = "127.0.0.1"
    admin_port: int = 9901
    # A dead or draining replica (its connection refused or closed at once) leaves rotation
    # after unhealthy_threshold failed checks, ~3 intervals; a live one busy on two cores gets
    # 2 s to answer each, so a slow spell does not empty the cluster. A restarted one rejoins
    # after one good check. Checks are a GET on localhost or the pod network: cheap.
    health_interval_s: float = 0.5
    health_timeout_s: float = 2.0
    dns_refresh_s: float = 5.0
    # Envoy cuts a stream that sends nothing for 300 s unless told otherwise, a long automask
    # included (the route's timeout does not cover it). 0: off; the caller's gRPC deadline
    # bounds each call. Tests set a short one to show the knob is the one that matters.
    stream_idle_timeout_s: float = 0.0

    @property
    def drain_notice_s(self) -> float:
        """Seconds after a replica starts refusing health checks by which every Envoy worker
        has stopped sending it work: a check already in flight may take its whole timeout (a
        replica busy on shared cores answers late), the host leaves after UNHEALTHY_THRESHOLD
        failed checks an interval apart, and workers get the new host set a moment later
        (1 s allowed). A draining replica keeps serving this long."""
        return self.health_timeout_s + UNHEALTHY_THRESHOLD * self.health_interval_s + 1.0


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _cluster(name: str, settings: EnvoySettings, lb_policy: str) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        # STRICT_DNS (every address its own host), as the DNS cluster extension: the Cluster
        # fields dns_refresh_rate & co. are deprecated and Envoy warned at every start.
        "cluster_type": {
            "name": "envoy.clusters.dns",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.clusters.dns.v3.DnsCluster",
                "dns_lookup_family": "V4_ONLY",
                "dns_refresh_rate": _seconds(settings.dns_refresh_s),
                # Re-resolve every dns_refresh_rate, whatever the record's TTL: a new pod joins
                # (and a deleted one leaves) the ring within seconds.
                "respect_dns_ttl": False,
            },
        },
        "lb_policy": lb_policy,
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": up.host, "port_value": up.grpc_port}
                                },
                                # Triton implements no gRPC health service; its HTTP port
                                # answers /v2/health/ready only when every model is loaded.
                                "health_check_config": {"port_value": up.http_port},
                            }
                        }
                        for up in settings.upstreams
                    ]
                }
            ],
        },
        "health_checks": [
            {
                "timeout": _seconds(settings.health_timeout_s),
                "interval": _seconds(settings.health_interval_s),
                "unhealthy_threshold": UNHEALTHY_THRESHOLD,
                "healthy_threshold": 1,
                "no_traffic_interval": _seconds(settings.health_interval_s),
                # A new connection per check: a draining Triton refuses new HTTP connections at
                # once but keeps answering "ready" on open ones (and waits for them to close
                # before it stops), so a kept-alive check would see it ready to the end.
                "reuse_connection": False,
                "http_health_check": {"path": "/v2/health/ready", "codec_client_type": "HTTP1"},
            }
        ],
        # A pod that left the headless Service's DNS (it is terminating) leaves the ring at the
        # next resolution, even while its health check still passes.
        "ignore_health_on_host_removal": True,
        # No outlier detection: each Envoy would eject on what its own traffic saw, so Envoy
        # replicas' rings would disagree and sessions move back and forth; and the 5xx it
        # counts are mostly answers here (overloaded, deadline, API key), not a sick replica.
        # Active health checks are the one shared view; a dead replica's connect failures
        # are retried on another host meanwhile.
        # Without it a cluster whose hosts are all unhealthy still routes to them; with it,
        # only healthy hosts count when computing the ring.
        "common_lb_config": {"healthy_panic_threshold": {"value": 0}},
        # Retries happen only for calls that were never computed, so they cannot multiply
        # load; Envoy's default cap of 3 retries in flight would fail most calls of a replica
        # lost under load instead of retrying them.
        "circuit_breakers": {"thresholds": [{"max_retries": 1024}]},
    }
    if lb_policy == "RING_HASH":
        cluster["ring_hash_lb_config"] = {"minimum_ring_size": MIN_RING_SIZE}
    return cluster


def _retry_policy() -> dict[str, Any]:
    """Retry on another host what no replica computed; every call the SDK makes is idempotent
    (models are pure functions, embeddings are named by content), so that is always safe.

    Not retried: resets after the request was sent (a minutes-long automask may have run),
    and UNAVAILABLE in general, which Triton also answers for a full queue, an expired
    deadline and a wrong API key: answers, which the SDK handles within the caller's deadline.
    """
    return {
        "retry_on": SAFE_RETRY_ON,
        "retriable_headers": [
            {"name": "grpc-message", "string_match": {"contains": message}} for message in STOPPING_MESSAGES
        ],
        "num_retries": 2,
        # Each retry to a host not tried yet: for a session, the next host on the ring, which
        # answers NOT_FOUND, and the SDK re-embeds there once. The ring hash looks for it one
        # ring entry further per selection attempt, and a host holds runs of neighbouring
        # entries: with 3 attempts (as once here) a session whose next entries were its own
        # host's was retried on that same stopping host (seen); 32 leave practically none.
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": "type.googleapis.com/"
                    "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                },
            }
        ],
        "host_selection_retry_max_attempts": 32,
    }


def _routes() -> list[dict[str, Any]]:
    # No route timeout: the client's gRPC deadline (grpc-timeout header) bounds each call,
    # and automatic mask generation on a large model legitimately takes many seconds.
    timing = {"timeout": "0s", "max_stream_duration": {"grpc_timeout_header_max": "0s"}}
    return [
        {
            "name": SESSION_MODEL,
            "match": {"prefix": "/", "headers": [{"name": SESSION_HEADER, "present_match": True}]},
            "route": {
                "cluster": SESSION_CLUSTER,
                "hash_policy": [{"header": {"header_name": SESSION_HEADER}}],
                **timing,
                "retry_policy": _retry_policy(),
            },
        },
        {
            "name": "stateless",
            "match": {"prefix": "/"},
            "route": {"cluster": STATELESS_CLUSTER, **timing, "retry_policy": _retry_policy()},
        },
    ]


def render(settings: EnvoySettings) -> dict[str, Any]:
    """The bootstrap configuration as a dict (Envoy reads it as JSON)."""
    connection_manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "sam_triton",
        "codec_type": "AUTO",
        "stream_idle_timeout": _seconds(settings.stream_idle_timeout_s),
        "route_config": {
            "name": "sam_triton",
            "virtual_hosts": [{"name": "triton", "domains": ["*"], "routes": _routes()}],
        },
        "http_filters": [
            # Answers the kubelet's probe on the traffic port, so the admin interface
            # (which can stop Envoy) never has to listen beyond localhost.
            {
                "name": "envoy.filters.http.health_check",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck",
                    "pass_through_mode": False,
                    "headers": [{"name": ":path", "string_match": {"exact": HEALTH_PATH}}],
                },
            },
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            },
        ],
    }
    listener = {
        "name": "grpc",
        "address": {
            "socket_address": {"address": settings.listen_address, "port_value": settings.listen_port}
        },
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": connection_manager,
                    }
                ]
            }
        ],
    }
    return {
        "admin": {
            "address": {
                "socket_address": {"address": settings.admin_address, "port_value": settings.admin_port}
            }
        },
        "static_resources": {
            "listeners": [listener],
            "clusters": [
                _cluster(SESSION_CLUSTER, settings, "RING_HASH"),
                _cluster(STATELESS_CLUSTER, settings, "ROUND_ROBIN"),
            ],
        },
    }


def render_json(settings: EnvoySettings) -> str:
    return json.dumps(render(settings), indent=2) + "\n"


# The Kubernetes ConfigMap: the headless Service's name resolves to every ready Triton pod.
KUBERNETES = EnvoySettings(upstreams=(Upstream("sam-triton-replicas"),))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Print the Envoy configuration of deploy/base/envoy.json (the Kubernetes one)"
    )
    parser.parse_args(argv)
    sys.stdout.write(render_json(KUBERNETES))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
