"""Several models in one repository: a SAM 1 and a SAM 2.1 test configuration exported into ONE
repository by two ``sam-triton export --name`` runs (the CLI's code path), served by ONE
tritonserver, each answering exactly as its own reference package with the same seeded weights
(``segment_anything``'s SamPredictor, ``sam2``'s SAM2ImagePredictor). Clients choose a model
with ``model="NAME"`` and learn its family from the server."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sam_triton_common import contract

from tests.conftest import SAM2_MODEL_TYPE as SAM2_TYPE
from tests.conftest import ServedTriton, start_triton

SAM1_NAME, SAM2_NAME = "sam1-test", "sam2.1-test"


def _export(*argv: str) -> int:
    from sam_triton.cli import build_parser

    args = build_parser().parse_args(["export", *argv])
    code: int = args.handler(args)
    return code


def _tree(repository: Path, name: str) -> dict[str, str]:
    """Every file of model ``name``'s folders, by path, with its content's hash and mtime."""
    files = {}
    for folder in repository.glob(f"{name}.*"):
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            files[str(path.relative_to(repository))] = f"{digest} {path.stat().st_mtime_ns}"
    return files


@pytest.fixture(scope="module")
def repository(
    tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path, sam2_checkpoint: Path
) -> dict[str, Any]:
    """The two exports, and what the first model's files were before the second was added (the
    session's SAM 1 and SAM 2 checkpoints, conftest's, as the other modules use)."""
    repo = tmp_path_factory.mktemp("several") / "model_repository"
    common = ["--repository", str(repo), "--no-verify"]  # parity is checked over gRPC below
    sam1 = ["--model-type", "tiny-test", "--checkpoint", str(tiny_checkpoint), "--name", SAM1_NAME]
    assert _export(*sam1, *common) == 0
    before = _tree(repo, SAM1_NAME)
    sam2 = ["--model-type", SAM2_TYPE, "--checkpoint", str(sam2_checkpoint), "--name", SAM2_NAME]
    assert _export(*sam2, *common) == 0
    return {"path": repo, "sam1_before": before}


@pytest.fixture(scope="module")
def server(repository: dict[str, Any]) -> Iterator[ServedTriton]:
    served = start_triton(repository["path"])
    try:
        yield served
    finally:
        served.process.stop()


def test_export_name_adds_a_model_and_leaves_the_others_alone(
    repository: dict[str, Any], tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sam_triton.cli import build_parser

    repo: Path = repository["path"]
    assert _tree(repo, SAM1_NAME) == repository["sam1_before"]
    served = {p.parent.name for p in repo.glob("*/config.pbtxt")}
    roles = {contract.ENCODER_MODEL, contract.DECODER_MODEL, contract.ENSEMBLE_MODEL, contract.SESSION_MODEL}
    assert {f"{SAM1_NAME}.{role}" for role in (*roles, contract.AUTOMASK_MODEL)} <= served
    assert {f"{SAM2_NAME}.{role}" for role in roles} <= served
    assert not any(contract.model_of(name) == (None, contract.ENCODER_MODEL) for name in served)
    # Each model has its own export.json beside its own encoder.
    assert contract.exported_models(repo) == [SAM1_NAME, SAM2_NAME]
    sam1, sam2 = (contract.read_export_info(repo, name) for name in (SAM1_NAME, SAM2_NAME))
    assert sam1 is not None and sam1["model_type"] == "tiny-test"
    assert sam2 is not None and sam2["model_type"] == SAM2_TYPE and sam2["options"]["family"] == "sam2"
    assert contract.read_export_info(repo) is None  # no unnamed model here
    # The served configs point each model at its own encoder and decoder files.
    session = (repo / f"{SAM1_NAME}.sam_session" / "config.pbtxt").read_text()
    assert f'"{SAM1_NAME}.sam_encoder"' in session and f"../../{SAM1_NAME}.sam_decoder/1/" in session
    ensemble = (repo / f"{SAM2_NAME}.sam" / "config.pbtxt").read_text()
    assert f'model_name: "{SAM2_NAME}.sam_encoder"' in ensemble
    # --if-changed is per name: the same export again does nothing to either model.
    sam2_files = _tree(repo, SAM2_NAME)
    capsys.readouterr()
    code = _export("--model-type", "tiny-test", "--checkpoint", str(tiny_checkpoint), "--name", SAM1_NAME,
                   "--repository", str(repo), "--no-verify", "--if-changed")  # fmt: skip
    assert code == 0 and f"(model '{SAM1_NAME}') already holds this export" in capsys.readouterr().out
    assert _tree(repo, SAM1_NAME) == repository["sam1_before"] and _tree(repo, SAM2_NAME) == sam2_files
    # verify --name checks that model's graphs against the reference.
    verify = ["verify", "--model-type", "tiny-test", "--checkpoint", str(tiny_checkpoint)]
    args = build_parser().parse_args([*verify, "--repository", str(repo), "--name", SAM1_NAME])
    assert args.handler(args) == 0


def _close(ours: tuple[Any, ...], ref: tuple[Any, ...]) -> None:
    """docs/serving/export.md's tolerances between (masks, scores, low-res logits) triples."""
    from sam_triton_export.verify import mask_iou

    masks, scores, logits = (np.asarray(x) for x in ours)
    ref_masks, ref_scores, ref_logits = (np.asarray(x) for x in ref)
    assert masks.shape == ref_masks.shape
    assert np.abs(scores - ref_scores).max() <= 1e-3
    assert np.abs(logits - ref_logits).max() <= 1e-3 * (ref_logits.max() - ref_logits.min())
    ious = [mask_iou(a > 0, b > 0) for a, b in zip(masks, ref_masks, strict=True)]
    assert min(ious) >= 0.99 and np.mean(ious) >= 0.995


PROMPTS: list[dict[str, Any]] = [
    {"point_coords": [[40.0, 50.0]], "point_labels": [1]},
    {"point_coords": [[40.0, 50.0], [100.0, 20.0]], "point_labels": [1, 0], "multimask_output": False},
    {"box": [10.0, 20.0, 90.0, 70.0], "multimask_output": False},
    {"box": [10.0, 20.0, 90.0, 70.0], "point_coords": [[50.0, 40.0]], "point_labels": [1]},
]


def test_each_model_answers_exactly_as_its_reference(
    server: ServedTriton, tiny_sam: Any, sam2_checkpoint: Path
) -> None:
    """One server, two families: each drop-in, naming its model, matches its own package."""
    import torch
    from sam2.sam2_image_predictor import SAM2ImagePredictor
    from sam_triton import RemoteSam2ImagePredictor, RemoteSamPredictor
    from sam_triton_export.family_sam2 import build_sam2_model
    from segment_anything import SamPredictor

    image = np.random.default_rng(3).integers(0, 256, (90, 130, 3), dtype=np.uint8)
    image[20:70, 30:100] = (200, 40, 40)
    pairs = [
        (RemoteSamPredictor(server.grpc_url, model=SAM1_NAME, timeout=120), SamPredictor(tiny_sam)),
        (
            RemoteSam2ImagePredictor(server.grpc_url, model=SAM2_NAME, timeout=120),
            SAM2ImagePredictor(build_sam2_model(SAM2_TYPE, sam2_checkpoint)),
        ),
    ]
    for remote, reference in pairs:
        with remote, torch.no_grad():
            remote.set_image(image)
            reference.set_image(image)
            for prompt in PROMPTS:  # SamPredictor takes arrays only
                kwargs = {k: np.asarray(v) if isinstance(v, list) else v for k, v in prompt.items()}
                _close(tuple(remote.predict(**kwargs)), tuple(reference.predict(**kwargs)))


def test_clients_choose_by_name_and_learn_each_family(server: ServedTriton) -> None:
    from sam_triton import InvalidInputError, Prompt, SamClient

    from tests.test_session_e2e import recording

    image = np.random.default_rng(5).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    prompt = Prompt(point_coords=[[30, 20]], point_labels=[1])
    with (
        SamClient(server.grpc_url, model=SAM1_NAME) as sam1,
        SamClient(server.grpc_url, model=SAM2_NAME, server_embeddings=False) as sam2,
    ):
        recorder = recording(sam1)
        handles = {"sam1": sam1.embed(image), "sam2": sam2.embed(image)}
        assert handles["sam1"].server_held and handles["sam1"].model == f"{SAM1_NAME}.sam_encoder"
        assert handles["sam2"].family == "sam2" and handles["sam2"].model == f"{SAM2_NAME}.sam_encoder"
        assert sam1.predict(handles["sam1"], prompt).masks.shape[1:] == (48, 64)
        # Every call went to that model's sam_session with the routing header a proxy in front
        # of several replicas hashes on (deploy/: Envoy routes by it, whatever the model).
        assert recorder.sent and all(
            sent.model == f"{SAM1_NAME}.sam_session" and sent.header == handles["sam1"].session_id
            for sent in recorder.sent
        )
        # A handle of one model is refused by the other (another family here), never decoded.
        with pytest.raises(InvalidInputError, match=f"made by a sam2 model, but '{SAM1_NAME}.sam_encoder'"):
            sam1.predict(handles["sam2"], prompt)
        with pytest.raises(InvalidInputError, match=f"made by a sam1 model, but '{SAM2_NAME}.sam_encoder'"):
            sam2.predict(handles["sam1"], prompt)
        # The one-shot ensemble of each model.
        assert sam2.segment(image, prompt).scores.shape == (3,)
        assert sam1.segment(image, prompt).scores.shape == (3,)


def test_a_handle_of_another_model_of_the_same_family_is_refused() -> None:
    """Same family, other weights: the handle names its model, so it cannot decode into
    another model's wrong masks (checked before anything is sent)."""
    from sam_triton import ImageEmbedding, InvalidInputError
    from sam_triton._core import _embedding_inputs
    from sam_triton.config import make_config

    handle = ImageEmbedding(
        np.zeros((256, 64, 64), np.float32), (10, 10), (1024, 1024), model="vit_b.sam_encoder"
    )
    refused = "made by 'vit_b.sam_encoder', but this client uses 'vit_h.sam_encoder'"
    with pytest.raises(InvalidInputError, match=refused):
        _embedding_inputs(make_config(model="vit_h"), handle, contract.SAM1)
    assert _embedding_inputs(make_config(model="vit_b"), handle, contract.SAM1).model == "vit_b.sam_decoder"


def test_an_unknown_model_lists_what_the_server_has(server: ServedTriton) -> None:
    from sam_triton import ModelNotFoundError, RemoteAutomaticMaskGenerator, SamClient

    image = np.zeros((32, 32, 3), np.uint8)
    for client in (SamClient(server.grpc_url, model="vit_h"), SamClient(server.grpc_url)):
        with client, pytest.raises(ModelNotFoundError) as info:
            client.embed(image)
        assert f"this server serves '{SAM1_NAME}', '{SAM2_NAME}'" in str(info.value)
    listing = f"serves '{SAM1_NAME}', '{SAM2_NAME}'"
    with (
        RemoteAutomaticMaskGenerator(server.grpc_url, model="nope") as generator,
        pytest.raises(ModelNotFoundError, match=listing),
    ):
        generator.generate(image)
    with pytest.raises(ValueError, match="model name"):
        SamClient(server.grpc_url, model="no spaces")
    # The server keeps serving.
    with SamClient(server.grpc_url, model=SAM1_NAME) as client:
        assert client.embed(image).original_size == (32, 32)


def test_cli_segment_and_automask_take_model(server: ServedTriton, tmp_path: Path) -> None:
    from PIL import Image
    from sam_triton.cli import build_parser

    image = np.random.default_rng(8).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    path = tmp_path / "in.png"
    Image.fromarray(image).save(path)
    for name in (SAM1_NAME, SAM2_NAME):
        out = tmp_path / f"{name}.json"
        args = build_parser().parse_args(["segment", str(path), "--url", server.grpc_url, "--model", name,
                                          "--point", "30,20", "--output", str(tmp_path / f"{name}.png"),
                                          "--json", str(out)])  # fmt: skip
        assert args.handler(args) == 0
        assert json.loads(out.read_text())["size"] == [40, 60]
    out = tmp_path / "automask"
    args = build_parser().parse_args(["automask", str(path), "--url", server.grpc_url, "--model", SAM1_NAME,
                                      "--points-per-side", "4", "--output", str(out),
                                      "--no-progress"])  # fmt: skip
    assert args.handler(args) == 0
    assert (out / "metadata.csv").is_file()


def test_serve_queue_overrides_reach_one_model_or_all(repository: dict[str, Any], tmp_path: Path) -> None:
    from sam_triton_server.launcher.queues import overlay_repository, parse_queue_overrides

    overrides = parse_queue_overrides([f"{SAM2_NAME}.sam_encoder=3", "sam_decoder=5"], named=True)
    served = overlay_repository(repository["path"], overrides, tmp_path / "overlay")

    def queue(model: str) -> str:
        text = (served / model / "config.pbtxt").read_text()
        return text.split("max_queue_size: ", 1)[1].split()[0]

    assert queue(f"{SAM2_NAME}.sam_encoder") == "3" and queue(f"{SAM1_NAME}.sam_encoder") == "32"
    assert queue(f"{SAM1_NAME}.sam_decoder") == queue(f"{SAM2_NAME}.sam_decoder") == "5"
    with pytest.raises(ValueError, match="has no model 'vit_h'"):
        overlay_repository(repository["path"], {"vit_h.sam_encoder": 3}, tmp_path / "other")
    with pytest.raises(ValueError, match="expected NAME=N"):
        parse_queue_overrides([f"{SAM2_NAME}.sam_encoder=3"])  # export --queue: one model's own


def _successes(server: ServedTriton, model: str) -> int:
    """Triton's own count of the successful requests ``model`` answered."""
    from urllib.request import urlopen

    with urlopen(f"http://127.0.0.1:{server.http_port}/v2/models/{model}/stats", timeout=30) as reply:
        stats = json.loads(reply.read())
    return int(stats["model_stats"][0]["inference_stats"]["success"]["count"])


def test_async_client_and_bench_take_model(
    server: ServedTriton, repository: dict[str, Any], tmp_path: Path
) -> None:
    import asyncio

    from sam_triton import AsyncSamClient
    from sam_triton.cli import main

    async def embed() -> str:
        async with AsyncSamClient(server.grpc_url, model=SAM2_NAME, server_embeddings=False) as client:
            return (await client.embed(np.zeros((20, 30, 3), np.uint8))).family

    assert asyncio.run(embed()) == "sam2"
    baselines = {
        SAM1_NAME: ["--baseline", "onnxruntime", "--repository", str(repository["path"])],
        SAM2_NAME: [],
    }
    for name, baseline in baselines.items():
        before = _successes(server, f"{name}.sam_session")
        out = tmp_path / name
        argv = ["bench", "--url", server.grpc_url, "--model", name, "--scenario", "click",
                "--concurrency", "1", "--duration", "1", "--warmup", "0", "--max-images", "1",
                "--no-progress", "--output", str(out)]  # fmt: skip
        assert main([*argv, *baseline]) == 0
        doc = json.loads((out / "results.json").read_text())
        served = doc["summary"]
        assert served["errors"] == 0 and served["ok"] > 0
        # The clicks reached that model's session, by the server's own count.
        assert _successes(server, f"{name}.sam_session") >= before + served["ok"]
        if baseline:  # the in-process baseline ran that model's own ONNX files
            assert doc["baselines"][0]["summary"]["ok"] > 0


def test_bench_perf_analyzer_data_names_the_chosen_model(tmp_path: Path) -> None:
    from sam_triton.cli import main

    out = tmp_path / "pa"
    assert main(["bench", "--perf-analyzer-data", str(out), "--model", SAM1_NAME, "--max-images", "1"]) == 0
    written = {path.name for path in out.glob("*.json")}
    assert written == {f"{SAM1_NAME}.{role}.json" for role in ("sam_encoder", "sam_decoder", "sam")}
    assert f"-m {SAM1_NAME}.sam_encoder" in (out / "README.txt").read_text()
