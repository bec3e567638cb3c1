"""Service metrics on the real server's metrics port: each kind of request moves exactly its series.

The session server is shared with other tests, so the checks are on deltas between two scrapes
around a known sequence of requests. Also checks that every metric the Grafana dashboard
queries is one this server exposes.
"""

from __future__ import annotations

import json
import re
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from sam_triton import (
    AmgParams,
    EmbeddingNotFoundError,
    ImageEmbedding,
    InvalidInputError,
    Prompt,
    SamClient,
    errors,
)
from sam_triton._tensors import build_infer_request
from sam_triton.proto.inference_pb2_grpc import GRPCInferenceServiceStub
from sam_triton_common.contract import AUTOMASK_MODEL, CACHE_HIT, SESSION_ID, SESSION_MODEL
from sam_triton_server.backend import metrics

DASHBOARD = Path(__file__).parents[1] / "docker" / "grafana" / "sam-triton-dashboard.json"
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as reply:
        text = reply.read().decode()
    samples: Samples = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match and not line.startswith("#"):
            name, labels, value = match.groups()
            samples[name, frozenset(LABEL.findall(labels or ""))] = float(value)
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum over the series of ``name`` whose labels include ``labels`` (0 when none)."""
    return sum(v for (n, have), v in samples.items() if n == name and set(labels.items()) <= have)


@pytest.fixture(scope="module")
def client(triton_server: Any) -> Iterator[SamClient]:
    with SamClient(triton_server.grpc_url, timeout=300) as c:
        c.wait_until_ready(timeout=300)
        yield c


def test_each_request_moves_its_series(client: SamClient, triton_server: Any) -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    session = f"metrics-{uuid.uuid4()}"
    before = scrape(triton_server.metrics_port)

    embedding = client.embed(image, session_id=session)  # a miss (the id is new), then encoded
    client.predict(embedding, Prompt([[10, 20]], [1]))  # a click: a hit
    assert client.has_embedding(session)  # a lookup: a hit
    unknown = ImageEmbedding(None, (48, 64), (768, 1024), f"metrics-unknown-{uuid.uuid4()}")
    with pytest.raises(EmbeddingNotFoundError):
        client.predict(unknown, Prompt([[10, 20]], [1]))  # a miss answered NOT_FOUND
    stub = GRPCInferenceServiceStub(grpc.insecure_channel(triton_server.grpc_url))
    too_long = np.array([[b"y" * 300]], dtype=object)  # refused by the model, before any lookup
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(build_infer_request(SESSION_MODEL, {SESSION_ID: too_long}, [CACHE_HIT]), timeout=60)
    assert isinstance(errors.from_rpc_error(info.value), InvalidInputError)
    masks = client.automask(image, AmgParams(points_per_side=4, crop_n_layers=0)).records

    after = scrape(triton_server.metrics_port)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    session_model = {"model": SESSION_MODEL}
    assert delta("sam_cache_hits_total", **session_model) == 2
    assert delta("sam_cache_misses_total", **session_model) == 2
    assert delta("sam_embed_duration_seconds_count", **session_model) == 1
    assert delta("sam_click_duration_seconds_count", **session_model) == 1
    assert delta("sam_click_duration_seconds_sum", **session_model) > 0
    assert delta("sam_embed_duration_seconds_bucket", le="+Inf", **session_model) == 1
    evicted = delta("sam_cache_evictions_total", **session_model)
    assert delta("sam_cache_entries", **session_model) == 1 - evicted
    assert value(after, "sam_cache_bytes", **session_model) > 0
    assert value(after, "sam_embed_pending", **session_model) == 0
    rejected = {
        r: delta("sam_rejections_total", reason=r, **session_model) for r in metrics.REJECTION_REASONS
    }
    assert rejected == {"invalid": 1, "not_found": 1, "overloaded": 0, "expired": 0, "internal": 0}
    automask = {"model": AUTOMASK_MODEL}
    assert delta("sam_automask_duration_seconds_count", **automask) == 1
    assert delta("sam_automask_masks_total", **automask) == len(masks)
    # Triton counts all five sam_session requests as successes: sam_session answers through
    # response senders, and Triton cannot see an error sent that way; sam_rejections_total can.
    assert delta("nv_inference_request_success", **session_model) == 5
    assert delta("nv_inference_request_failure", **session_model) == 0


def test_the_dashboard_queries_only_metrics_the_server_exposes(triton_server: Any) -> None:
    exposed = {name for name, _ in scrape(triton_server.metrics_port)}
    queried = dashboard_metric_names()
    assert queried and queried <= exposed, sorted(queried - exposed)
    ours = {re.sub(r"_(bucket|sum|count)$", "", name) for name in metrics.EXPORTED}
    shown = {re.sub(r"_(bucket|sum|count)$", "", name) for name in queried}
    assert ours <= shown, sorted(ours - shown)  # the dashboard shows every series we export


def dashboard_metric_names() -> set[str]:
    """Every ``sam_*``/``nv_*`` metric name in the dashboard's PromQL expressions (label values,
    quoted, such as model="sam_session", are not names)."""
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    unquoted = [re.sub(r'"[^"]*"', '""', expr) for expr in expressions]
    return {name for expr in unquoted for name in re.findall(r"\b((?:sam|nv)_[a-z0-9_]+)\b", expr)}
