"""TLS, mutual TLS and the API key against a real tritonserver, through the SDK and raw gRPC.

Certificates are made at test time (trustme). One SAM server runs with TLS and an API key
(the SDK's real calls); mutual TLS and the launcher's safety checks run `sam-triton serve`
on the one-model repository of test_serve, which starts in seconds.
"""

from __future__ import annotations

import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import trustme
from PIL import Image
from sam_triton import (
    AuthenticationError,
    Prompt,
    RetryPolicy,
    SamClient,
    SamTritonError,
    ServerUnavailableError,
    TlsConfig,
)
from sam_triton.errors import from_status
from sam_triton.proto import inference_pb2 as pb
from sam_triton.proto import inference_pb2_grpc as pb_grpc
from sam_triton_common.contract import API_KEY_METADATA
from sam_triton_server.launcher.process import ServerOptions
from sam_triton_server.launcher.security import Security, SecurityConfigError, ServerTls

from tests.conftest import ServedTriton, start_triton
from tests.test_serve import read_until, start_serve, write_repository

API_KEY = "test-key-0123456789abcdef"
READY = "[sam-triton] READY"


@dataclass(frozen=True)
class Pki:
    """A server certificate (and key) from one CA, a client certificate from another."""

    ca: Path
    cert: Path
    key: Path
    client_ca: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    server_ca, client_ca, other_ca = trustme.CA(), trustme.CA(), trustme.CA()
    server = server_ca.issue_cert("localhost", "127.0.0.1")
    client = client_ca.issue_cert("client.example")
    paths = {name: folder / f"{name}.pem" for name in Pki.__dataclass_fields__}
    server_ca.cert_pem.write_to_path(str(paths["ca"]))
    client_ca.cert_pem.write_to_path(str(paths["client_ca"]))
    other_ca.cert_pem.write_to_path(str(paths["other_ca"]))
    for blob_owner, cert_name, key_name in ((server, "cert", "key"), (client, "client_cert", "client_key")):
        for i, blob in enumerate(blob_owner.cert_chain_pems):
            blob.write_to_path(str(paths[cert_name]), append=i > 0)
        blob_owner.private_key_pem.write_to_path(str(paths[key_name]))
    return Pki(**paths)


@pytest.fixture(scope="module")
def secured(tiny_repository: Path, pki: Pki) -> Iterator[ServedTriton]:
    """The SAM models behind TLS and an API key."""
    security = Security(tls=ServerTls(pki.cert, pki.key), api_key=API_KEY)
    served = start_triton(tiny_repository, security=security)
    try:
        yield served
    finally:
        served.process.stop()


def tls(pki: Pki, ca: Path | None = None, client: bool = False) -> TlsConfig:
    return TlsConfig(
        root_certificates=ca or pki.ca,
        private_key=pki.client_key if client else None,
        certificate_chain=pki.client_cert if client else None,
    )


def doubler_request() -> pb.ModelInferRequest:
    return pb.ModelInferRequest(
        model_name="doubler",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[1, 2])],
        raw_input_contents=[np.array([[1.5, -2.0]], np.float32).tobytes()],
    )


def refused(url: str, tls_config: TlsConfig | None) -> SamTritonError:
    """The error of a client the server does not let in (no retries: refusals are final)."""
    with (
        SamClient(url, tls=tls_config, api_key=API_KEY, retries=0, timeout=10) as client,
        pytest.raises(SamTritonError) as info,
    ):
        client.server_live()
    return info.value


def http_status(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return error.code


# -- the SDK against TLS + API key ------------------------------------------------------------


def test_sdk_with_ca_and_key_segments_like_a_plain_server(
    secured: ServedTriton, triton_server: ServedTriton, pki: Pki
) -> None:
    image = np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    prompt = Prompt(point_coords=[[20, 30]], point_labels=[1])
    with SamClient(secured.grpc_url, tls=tls(pki), api_key=API_KEY) as client:
        client.wait_until_ready(60)
        secure = client.predict(client.embed(image), prompt)
    with SamClient(triton_server.grpc_url) as client:
        plain = client.predict(client.embed(image), prompt)
    assert not isinstance(secure, list) and not isinstance(plain, list)
    np.testing.assert_array_equal(secure.masks, plain.masks)
    np.testing.assert_array_equal(secure.scores, plain.scores)


def test_api_key_from_the_environment(
    secured: ServedTriton, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAM_TRITON_API_KEY", API_KEY)
    with SamClient(secured.grpc_url, tls=tls(pki)) as client:
        assert client.model_metadata().name == "sam_decoder"


@pytest.mark.parametrize("key", [None, "wrong-key-0123456789abcdef"])
def test_missing_or_wrong_key_is_an_authentication_error_but_health_answers(
    secured: ServedTriton, pki: Pki, key: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SAM_TRITON_API_KEY", raising=False)
    image = np.zeros((16, 16, 3), np.uint8)
    with SamClient(secured.grpc_url, tls=tls(pki), api_key=key, retries=3, backoff=30.0) as client:
        # Probes need no key: a load balancer or kubelet checks health without secrets.
        assert client.server_live() and client.server_ready() and client.model_ready()
        with pytest.raises(AuthenticationError) as info:
            client.embed(image)  # a 30 s backoff would time the test out if it were retried
        with pytest.raises(AuthenticationError):
            client.model_metadata()
    assert info.value.code == "UNAVAILABLE"
    assert "restricted" in (info.value.server_message or "")


def test_authentication_errors_are_never_retried() -> None:
    error = from_status("UNAVAILABLE", "This protocol is restricted, expecting header 'x'")
    assert isinstance(error, AuthenticationError) and not isinstance(error, ServerUnavailableError)
    assert RetryPolicy(retries=5).delay(error, attempt=0, remaining=None) is None
    assert isinstance(from_status("UNAUTHENTICATED", "no token"), AuthenticationError)


def test_wrong_ca_fails_with_a_clear_error(secured: ServedTriton, pki: Pki) -> None:
    error = refused(secured.grpc_url, tls(pki, ca=pki.other_ca))
    assert isinstance(error, ServerUnavailableError) and error.code == "UNAVAILABLE"
    assert "CERTIFICATE_VERIFY_FAILED" in str(error), str(error)


def test_plaintext_client_cannot_talk_to_a_tls_server(secured: ServedTriton) -> None:
    assert isinstance(refused(secured.grpc_url, None), ServerUnavailableError)


# -- raw gRPC and HTTP -------------------------------------------------------------------------


def test_raw_grpc_needs_the_key_header_except_for_health(secured: ServedTriton, pki: Pki) -> None:
    credentials = grpc.ssl_channel_credentials(pki.ca.read_bytes())
    with grpc.secure_channel(secured.grpc_url, credentials) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
        assert stub.ModelReady(pb.ModelReadyRequest(name="sam_session"), timeout=10).ready
        request = pb.ModelMetadataRequest(name="sam_decoder")
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelMetadata(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert API_KEY_METADATA in (info.value.details() or "")
        reply = stub.ModelMetadata(request, timeout=10, metadata=((API_KEY_METADATA, API_KEY),))
        assert reply.name == "sam_decoder"
        # The repository index (model-repository protocol) is guarded too.
        with pytest.raises(grpc.RpcError):
            stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=10)


def test_http_serves_this_machine_with_health_open_and_the_rest_keyed(secured: ServedTriton) -> None:
    base = f"http://127.0.0.1:{secured.http_port}"
    assert http_status(f"{base}/v2/health/ready") == 200
    assert http_status(f"{base}/v2/models/sam_decoder") == 403
    assert http_status(f"{base}/v2/models/sam_decoder", {"sam-api-key": API_KEY}) == 200


# -- mutual TLS and the launcher ---------------------------------------------------------------


def test_serve_with_mutual_tls_refuses_clients_without_a_certificate(tmp_path: Path, pki: Pki) -> None:
    repository = write_repository(tmp_path / "repo")
    process, grpc_port = start_serve(
        repository,
        *("--tls-cert", str(pki.cert), "--tls-key", str(pki.key), "--tls-client-ca", str(pki.client_ca)),
        *("--api-key", API_KEY),
    )
    try:
        output = read_until(process, READY)
        assert READY in output and "mutual TLS, API key" in output, output
        url = f"127.0.0.1:{grpc_port}"
        assert isinstance(refused(url, tls(pki)), ServerUnavailableError)
        with SamClient(url, tls=tls(pki, client=True), api_key=API_KEY, retries=0) as client:
            assert client.server_live()
            assert client.model_metadata("doubler").name == "doubler"
        # A certificate from a CA the server does not trust is refused like none at all.
        stranger = TlsConfig(pki.ca, private_key=pki.key, certificate_chain=pki.cert)
        assert isinstance(refused(url, stranger), ServerUnavailableError)
        credentials = grpc.ssl_channel_credentials(
            pki.ca.read_bytes(), pki.client_key.read_bytes(), pki.client_cert.read_bytes()
        )
        with grpc.secure_channel(url, credentials) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            reply = stub.ModelInfer(doubler_request(), timeout=30, metadata=((API_KEY_METADATA, API_KEY),))
            assert np.frombuffer(reply.raw_output_contents[0], np.float32).tolist() == [3.0, -4.0]
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--host", "0.0.0.0"), "refusing to start: listening on 0.0.0.0 without TLS and an API key"),
        (("--host", "0.0.0.0", "--api-key", API_KEY), "without TLS"),
        (("--api-key", "short"), "at least 16 characters"),
        (("--tls-cert", "/nonexistent.pem"), "--tls-cert and --tls-key go together"),
        (("--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.pem"), "does not exist"),
    ],
)
def test_serve_refuses_unsafe_or_broken_settings(
    tmp_path: Path, extra: tuple[str, ...], message: str
) -> None:
    process, _ = start_serve(write_repository(tmp_path / "repo"), *extra)
    assert process.wait(timeout=60) == 2
    assert process.stdout is not None
    assert message in process.stdout.read()


def test_serve_on_all_interfaces_with_allow_insecure_warns(tmp_path: Path) -> None:
    repository = write_repository(tmp_path / "repo")
    process, grpc_port = start_serve(repository, "--host", "0.0.0.0", "--allow-insecure")
    try:
        output = read_until(process, READY)
        assert "WARNING: listening on 0.0.0.0 without TLS and an API key" in output, output
        assert READY in output, output
        with SamClient(f"127.0.0.1:{grpc_port}") as client:
            assert client.model_metadata("doubler").name == "doubler"
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)


def test_server_options_keep_http_local_under_tls_and_model_control_off(pki: Pki) -> None:
    options = ServerOptions(Path("repo"), host="0.0.0.0", security=Security(ServerTls(pki.cert, pki.key)))
    args = options.arguments(None)
    assert "--grpc-address=0.0.0.0" in args and "--http-address=127.0.0.1" in args
    assert "--model-control-mode=none" in args and "--grpc-use-ssl=true" in args
    assert "--grpc-use-ssl-mutual=true" not in args
    assert ServerOptions(Path("repo")).host == "127.0.0.1"
    with pytest.raises(SecurityConfigError):
        Security(api_key="has:colon-0123456789").arguments()


# -- the CLI's connection options ----------------------------------------------------------------


def test_segment_cli_connects_with_ca_and_key(
    secured: ServedTriton, pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sam_triton.cli import main

    image = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(image)
    base = ["segment", str(image), "--url", secured.grpc_url, "--point", "10,10", "--tls-ca", str(pki.ca)]
    assert main([*base, "--api-key", API_KEY, "--output", str(tmp_path / "ok.png")]) == 0
    assert (tmp_path / "ok.png").is_file()
    assert main([*base, "--api-key", "wrong-key-0123456789abcdef", "--output", str(tmp_path / "no.png")]) == 1
    assert "restricted" in capsys.readouterr().err
    assert not (tmp_path / "no.png").exists()


def test_bench_reports_never_hold_the_key() -> None:
    from sam_triton.cli.connection import REDACTED, redact_arguments, redact_argv

    argv = ["bench", "--api-key", "k" * 20, "--url", "x"]
    assert redact_argv(argv) == ["bench", "--api-key", REDACTED, "--url", "x"]
    assert redact_argv(["bench", f"--api-key={'k' * 20}"]) == ["bench", f"--api-key={REDACTED}"]
    assert redact_arguments({"api_key": "k" * 20, "url": "x"}) == {"api_key": REDACTED, "url": "x"}
    assert redact_arguments({"api_key": None}) == {"api_key": None}
