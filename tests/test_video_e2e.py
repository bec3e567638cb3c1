"""SAM 2 video tracking served by a real tritonserver (``sam_video``, the small test
configuration, one server for this module): live streams through the SDK's VideoTracker
(sync and asyncio), the RemoteSam2VideoPredictor drop-in, deadlines, metrics and bad input.

The expected masks come from the tracker core run in this process on the same graphs, fed as
the server feeds it (each frame resized as SAM2VideoPredictor loads it, encoded by the same
encoder graph): the transport must add nothing, so every mask is compared bit for bit. How
closely the core follows SAM2VideoPredictor itself is the tracker's own tests' business.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sam_triton import (
    AsyncVideoTracker,
    InvalidInputError,
    RemoteSam2VideoPredictor,
    SamClient,
    TrackedFrame,
    VideoSessionNotFoundError,
    VideoTracker,
)
from sam_triton._core import run_sync
from sam_triton._video_core import VideoSession, VideoSessionReprimedWarning, close_op, track_op
from sam_triton.video import _Stream
from sam_triton_common import contract

from tests.conftest import ServedTriton
from tests.test_metrics_e2e import scrape, value

SIZE = (48, 64)  # (H, W): a small video keeps the masks cheap; the encoder sees 1024x1024 anyway
FRAMES = 4
MASK_PROMPT = np.zeros(SIZE, np.bool_)
MASK_PROMPT[30:44, 40:60] = True


def clip(count: int = FRAMES, seed: int = 0) -> list[np.ndarray]:
    """A bright square drifting right over a textured background."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 80, (*SIZE, 3), dtype=np.uint8)
    frames = []
    for i in range(count):
        frame = background.copy()
        frame[14:30, 8 + 4 * i : 24 + 4 * i] = (230, 200, 40)
        frames.append(frame)
    return frames


class LocalTracker:
    """The tracker core in this process, fed the way ``sam_video`` feeds it."""

    def __init__(self, repository: Path, num_frames: int | None = None) -> None:
        import onnxruntime
        from sam_triton_server.backend.video_tracking import TrackerGraphs, VideoTrackerState

        version = Path(contract.MODEL_VERSION)
        self.graphs = TrackerGraphs.load(repository / contract.VIDEO_MODEL / version)
        encoder = repository / contract.ENCODER_MODEL / version / contract.MODEL_FILE
        self.encoder = onnxruntime.InferenceSession(str(encoder), providers=["CPUExecutionProvider"])
        self.state = VideoTrackerState(self.graphs, SIZE, num_frames=num_frames)

    def features(self, rgb: np.ndarray) -> Any:
        from sam_triton_server.backend.video_tracking import FrameFeatures

        side = self.graphs.config.image_size
        square = np.asarray(Image.fromarray(rgb).resize((side, side)), np.uint8)
        names = list(contract.SAM2.encoder_outputs)
        outputs = self.encoder.run(names, {contract.IMAGE: square[None]})
        return FrameFeatures.from_outputs(dict(zip(names, outputs, strict=True)))


@pytest.fixture(scope="module")
def live_expected(sam2_export: Any) -> list[np.ndarray]:
    """Masks of the live scenario below, by the core in this process: object 1 clicked on
    frame 0, object 2 boxed on frame 2 (after tracking started), frames 1-3 tracked."""
    local = LocalTracker(sam2_export.repository)
    frames = clip()
    out = [local.state.add_points(0, 1, [[16, 22]], [1], local.features(frames[0])).masks()]
    for i in range(1, FRAMES):
        features = local.features(frames[i])
        out.append(local.state.track_frame(i, features).masks())
        if i == 2:
            out.append(local.state.add_box(2, 2, [28, 10, 50, 34], features).masks())
    out.append(local.state.add_mask(FRAMES - 1, 3, MASK_PROMPT, features).masks())
    return out


def run_live(tracker: VideoTracker) -> list[TrackedFrame]:
    frames = clip()
    answers = [tracker.track(frames[0])]
    answers.append(tracker.add_points(0, 1, [[16, 22]], [1]))  # on the frame just tracked: no upload
    for i in range(1, FRAMES):
        answers.append(tracker.track(frames[i]))
        if i == 2:
            answers.append(tracker.add_box(2, 2, [28, 10, 50, 34]))
    answers.append(tracker.add_mask(FRAMES - 1, 3, MASK_PROMPT))  # a third object, from a mask
    return answers


def test_live_stream_answers_each_frame_in_order_with_the_cores_masks(
    sam2_server: ServedTriton, live_expected: list[np.ndarray]
) -> None:
    sent: list[tuple[str, int]] = []
    client = SamClient(
        sam2_server.grpc_url, timeout=120, rpc_observer=lambda m, up, down: sent.append((m, up))
    )
    model = {"model": contract.VIDEO_MODEL}
    # The server is the run's (tests/conftest.py): other modules' sessions may be open in it.
    before = scrape(sam2_server.metrics_port)
    with client, VideoTracker(client) as tracker:
        answers = run_live(tracker)
        metrics = scrape(sam2_server.metrics_port)
    assert [a.frame_idx for a in answers] == [0, 0, 1, 2, 2, 3, 3]
    assert answers[0].obj_ids == () and answers[0].masks.shape == (0, *SIZE)
    assert [a.obj_ids for a in answers[1:]] == [(1,)] * 3 + [(1, 2)] * 2 + [(1, 2, 3)]
    for answer, expected in zip(answers[1:], live_expected, strict=True):
        assert not answer.dropped
        np.testing.assert_array_equal(answer.masks, expected)
    assert all(
        0 < a.masks[0].sum() < SIZE[0] * SIZE[1] for a in answers[1:]
    )  # a real object, not all or none
    # Frames travel once; a prompt on the frame just tracked carries no image at all.
    carried_a_frame = [up > 2048 for _, up in sent]  # open, f0, click, f1, f2, box, f3, mask, close
    assert carried_a_frame == [False, True, False, True, True, False, True, False, False]

    def grown(samples: Any, name: str) -> float:
        return value(samples, name, **model) - value(before, name, **model)

    assert grown(metrics, "sam_video_sessions") == 1
    assert grown(metrics, "sam_video_objects") == 3
    assert grown(metrics, "sam_video_frame_duration_seconds_count") >= FRAMES - 1
    assert 16 << 20 < grown(metrics, "sam_video_bytes") < 64 << 20
    after = scrape(sam2_server.metrics_port)
    assert grown(after, "sam_video_sessions") == 0  # closed with the tracker
    assert value(after, "sam_video_session_ends_total", reason="closed", **model) >= 1


def test_two_asyncio_streams_at_once_are_each_answered_in_order(
    sam2_server: ServedTriton, live_expected: list[np.ndarray]
) -> None:
    async def stream(seed_frames: list[np.ndarray]) -> list[TrackedFrame]:
        async with AsyncVideoTracker(sam2_server.grpc_url, timeout=120) as tracker:
            answers = [await tracker.track(seed_frames[0])]
            answers.append(await tracker.add_points(0, 1, [[16, 22]], [1]))
            answers.append(await tracker.track(seed_frames[1]))
            return answers

    async def both() -> list[list[TrackedFrame]]:
        return list(await asyncio.gather(stream(clip()), stream(clip())))

    for answers in asyncio.run(both()):
        assert [a.frame_idx for a in answers] == [0, 0, 1]
        for answer, expected in zip(answers[1:], live_expected[:2], strict=True):
            np.testing.assert_array_equal(answer.masks, expected)


def test_late_frames_are_dropped_bad_input_is_a_typed_error_and_the_session_keeps_working(
    sam2_server: ServedTriton,
) -> None:
    model = {"model": contract.VIDEO_MODEL}
    dropped_before = value(scrape(sam2_server.metrics_port), "sam_video_frames_dropped_total", **model)
    frames = clip()
    with VideoTracker(sam2_server.grpc_url, timeout=120) as tracker:
        tracker.track(frames[0])
        tracker.add_points(0, 1, [[16, 22]], [1])
        tracker.frame_deadline = 1e-6  # no frame can start within a microsecond of arriving
        dropped = tracker.track(frames[1])
        assert dropped.dropped and dropped.frame_idx == 1 and dropped.masks.shape == (0, *SIZE)
        tracker.frame_deadline = None
        with pytest.raises(InvalidInputError, match="48x64"):  # another size, refused before sending
            tracker.track(np.zeros((32, 32, 3), np.uint8))
        with pytest.raises(InvalidInputError, match="out of order"):
            tracker.track(frames[0], frame_idx=1)  # frame 1 came (and was dropped) already
        with pytest.raises(InvalidInputError, match="unknown object id 7"):
            tracker.remove_object(7)
        with pytest.raises(InvalidInputError, match="not the frame this session encoded last"):
            tracker.add_points(1, 1, [[16, 22]], [1])  # frame 1 was dropped: the server never had it
        with pytest.raises(InvalidInputError, match="labels"):
            tracker.add_points(2, 1, [[16, 22]], [5])
        assert tracker.track(frames[2]).masks.shape == (1, *SIZE)  # the stream goes on after a drop
        with pytest.raises(InvalidInputError, match="cannot decode"):
            tracker.track(b"\x89PNG broken")
        closed = tracker.session_id
    dropped_after = value(scrape(sam2_server.metrics_port), "sam_video_frames_dropped_total", **model)
    assert dropped_after == dropped_before + 1
    with pytest.raises(VideoSessionNotFoundError, match="closed"):
        tracker.track(frames[3])  # a closed tracker says so, and opens nothing
    # The server's side: requests for a session it does not hold (closed, or never opened here).
    with SamClient(sam2_server.grpc_url, timeout=60) as client:
        for session_id, why in ((closed, "closed"), ("video-never-opened", "never opened")):
            session = VideoSession(client.config, session_id=session_id, size=SIZE)
            stream = _Stream(client, session.metadata)
            with pytest.raises(VideoSessionNotFoundError, match=why):
                run_sync(track_op(session, frames[3], 3), stream.execute)
            stream.close()
    with SamClient(sam2_server.grpc_url) as client:
        assert client.model_ready(contract.VIDEO_MODEL)


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("frames")
    for i, frame in enumerate(clip(3, seed=3)):
        Image.fromarray(frame).save(folder / f"{i:05d}.jpg", quality=90)
    return folder


def test_remote_video_predictor_tracks_a_jpeg_folder_as_the_core_does(
    sam2_server: ServedTriton, sam2_export: Any, jpeg_folder: Path
) -> None:
    """The reference's flow: a click on frame 0, propagate, a second object added on frame 2
    with a corrective click, propagate in reverse from there (each pass one frame past its
    prompted frame: every step of the tracker costs seconds at the test model's 1024 input)."""
    from sam_triton_common.images import decode_image

    frames = [decode_image((jpeg_folder / f"{i:05d}.jpg").read_bytes()) for i in range(3)]
    local = LocalTracker(sam2_export.repository, num_frames=3)
    features = [local.features(f) for f in frames]
    sent: list[int] = []
    with RemoteSam2VideoPredictor(
        sam2_server.grpc_url, timeout=120, rpc_observer=lambda m, up, down: sent.append(up)
    ) as predictor:
        state = predictor.init_state(video_path=str(jpeg_folder))
        assert (state["num_frames"], state["video_height"], state["video_width"]) == (3, *SIZE)
        idx, ids, masks = predictor.add_new_points_or_box(state, 0, 1, points=[[16, 22]], labels=[1])
        ref = local.state.add_points(0, 1, [[16, 22]], [1], features[0])
        assert (idx, ids, masks.shape, masks.dtype) == (0, [1], (1, 1, *SIZE), np.float32)
        np.testing.assert_array_equal(masks[:, 0] > 0, ref.masks())
        forward = list(predictor.propagate_in_video(state, max_frame_num_to_track=1))
        assert [f[0] for f in forward] == [0, 1]
        for i, (_, _, got) in enumerate(forward):
            np.testing.assert_array_equal(got[:, 0] > 0, local.state.track_frame(i, features[i]).masks())
        predictor.add_new_points_or_box(state, 2, 2, box=[28, 10, 50, 34])
        local.state.add_box(2, 2, [28, 10, 50, 34], features[2])
        _, ids, masks = predictor.add_new_points_or_box(
            state, 2, 2, points=[[40, 20]], labels=[0], clear_old_points=False
        )
        ref = local.state.add_points(2, 2, [[40, 20]], [0], features[2], clear_old_points=False)
        assert ids == [1, 2]
        np.testing.assert_array_equal(masks[:, 0] > 0, ref.masks())
        backward = list(
            predictor.propagate_in_video(state, start_frame_idx=2, max_frame_num_to_track=1, reverse=True)
        )
        assert [f[0] for f in backward] == [2, 1]
        for idx, ids, got in backward:
            assert ids == [1, 2]
            expected = local.state.track_frame(idx, features[idx], reverse=True).masks()
            np.testing.assert_array_equal(got[:, 0] > 0, expected)
        obj_ids, updated = predictor.remove_object(state, 1)
        assert obj_ids == [2] and [f for f, _ in updated] == [0]  # object 1's prompted frame, without it
        assert predictor.remove_object(state, 99) == ([2], [])  # strict=False: nothing to remove
        predictor.reset_state(state)
    # Frames travel as their JPEG files (each a few KiB), never as raw pixels.
    jpeg_sizes = {(jpeg_folder / f"{i:05d}.jpg").stat().st_size for i in range(3)}
    assert max(sent) < max(jpeg_sizes) + 1024 < SIZE[0] * SIZE[1] * 3


def test_remote_video_predictor_refuses_a_folder_without_frames_and_an_undecodable_video(
    sam2_server: ServedTriton, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video" * 100)
    with RemoteSam2VideoPredictor(sam2_server.grpc_url, timeout=60) as predictor:
        with pytest.raises(InvalidInputError, match="no JPEG frames"):
            predictor.init_state(str(tmp_path / "empty"))
        with pytest.raises(InvalidInputError, match="not a video"):
            predictor.init_state(str(broken))
        state = predictor.init_state(str(_video_file(tmp_path)))
        assert state["num_frames"] == 3
        with pytest.raises(InvalidInputError, match="no prompts"):
            next(iter(predictor.propagate_in_video(state)))


def _video_file(folder: Path) -> Path:
    import cv2

    path = folder / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 5, (SIZE[1], SIZE[0]))
    for frame in clip(3):
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    writer.release()
    return path


def test_cli_track_writes_an_overlay_video_and_every_frames_masks(
    sam2_server: ServedTriton, jpeg_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Prompts on frame 1 (object 1 a point, object 2 a box): tracked forward to the end and
    back to frame 0, so every frame of the video has both objects."""
    import cv2
    from sam_triton.cli import main
    from sam_triton_common.rle import coco_to_rle, rle_to_mask

    video, masks = tmp_path / "tracked.mp4", tmp_path / "masks.json"
    argv = [
        "track", str(jpeg_folder), "--url", sam2_server.grpc_url, "--point", "1:20,22",
        "--box", "2@1:28,10,50,34", "--output", str(video), "--json", str(masks),
    ]  # fmt: skip
    assert main(argv) == 0
    document = json.loads(masks.read_text())
    assert document["size"] == list(SIZE) and document["num_frames"] == 3
    assert [f["frame"] for f in document["frames"]] == [0, 1, 2]
    for frame in document["frames"]:
        assert [o["obj_id"] for o in frame["objects"]] == [1, 2]
        for obj in frame["objects"]:
            mask = rle_to_mask(coco_to_rle(obj["segmentation"]))
            assert mask.shape == SIZE and int(mask.sum()) == obj["area"]
    capture = cv2.VideoCapture(str(video))
    shapes = []
    while (read := capture.read())[0]:
        shapes.append(read[1].shape)
    capture.release()
    assert shapes == [(*SIZE, 3)] * 3
    assert "tracking" in capsys.readouterr().err  # the progress bar
    assert main(["track", str(jpeg_folder), "--url", sam2_server.grpc_url, "--json", str(masks)]) == 2


def test_bench_video_scenario_accounts_for_every_frame_sent(
    sam2_server: ServedTriton, tmp_path: Path
) -> None:
    """``sam-triton bench --scenario video``: two paced streams whose frames outrun the server;
    every frame sent is answered or dropped, the drops are the server's own count, and the
    results (latency, memory per stream from sam_video_bytes) are written. Counts, not timings."""
    from sam_triton.cli import main

    model = {"model": contract.VIDEO_MODEL}
    before = scrape(sam2_server.metrics_port)
    dropped_before = value(before, "sam_video_frames_dropped_total", **model)
    out = tmp_path / "bench"
    argv = [
        "bench", "--scenario", "video", "--url", sam2_server.grpc_url, "--concurrency", "2",
        "--fps", "4", "--duration", "0.75", "--frame-deadline", "0.2", "--video-size", "96x128",
        "--metrics-url", f"http://127.0.0.1:{sam2_server.metrics_port}/metrics",
        "--max-images", "1", "--no-progress", "--timeout", "120", "--output", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    document = json.loads((out / "results.json").read_text())
    video = document["video"]
    assert video["options"]["streams"] == 2 and video["options"]["frames_per_stream"] == 3
    assert video["frames_sent"] == 6 and video["frames_failed"] == 0
    assert video["frames_answered"] + video["frames_dropped"] == 6
    assert video["answered_in_order"]
    dropped_after = value(scrape(sam2_server.metrics_port), "sam_video_frames_dropped_total", **model)
    assert dropped_after - dropped_before == video["frames_dropped"]
    assert [s["sent"] for s in video["streams"]] == [3, 3]
    assert video["memory"]["bytes_per_stream"] > 0  # the sessions' state, read before they closed
    assert document["summary"]["requests"] == 6 and sorted(document["files"]["plots"]) == [
        "latency_histogram.png",
        "latency_over_time.png",
    ]
    sessions = value(scrape(sam2_server.metrics_port), "sam_video_sessions", **model)
    assert sessions == value(before, "sam_video_sessions", **model)  # the bench closed its own


def _lose_on_server(url: str, session_id: str) -> None:
    """The server forgets the session, as a restarted replica would: closed by another client."""
    with SamClient(url, timeout=60) as client:
        session = VideoSession(client.config, session_id=session_id, size=SIZE)
        stream = _Stream(client, session.metadata)
        run_sync(close_op(session), stream.execute)
        stream.close()


def test_a_tracker_whose_session_was_lost_reprimes_from_its_prompts_and_says_so(
    sam2_server: ServedTriton, sam2_export: Any
) -> None:
    frames = clip()
    with VideoTracker(sam2_server.grpc_url, timeout=120) as tracker:
        tracker.track(frames[0])
        clicked = tracker.add_points(0, 1, [[16, 22]], [1])  # on the frame just tracked: not sent again
        assert not clicked.reprimed
        _lose_on_server(sam2_server.grpc_url, tracker.session_id)
        with pytest.warns(VideoSessionReprimedWarning, match="re-primed from the 1 prompt"):
            after = tracker.track(frames[2], frame_idx=2)
        assert (after.frame_idx, after.obj_ids, after.reprimed) == (2, (1,), True)
    # The new session holds frame 0's click (sent again with frame 0) and nothing tracked since.
    local = LocalTracker(sam2_export.repository)
    local.state.add_points(0, 1, [[16, 22]], [1], local.features(frames[0]))
    np.testing.assert_array_equal(after.masks, local.state.track_frame(2, local.features(frames[2])).masks())
    with VideoTracker(sam2_server.grpc_url, timeout=120, reprime=False) as strict:
        strict.track(frames[0])
        _lose_on_server(sam2_server.grpc_url, strict.session_id)
        with pytest.raises(VideoSessionNotFoundError, match="closed"):
            strict.add_points(0, 1, [[16, 22]], [1])
