"""SAM 2 video tracking: the exported graphs against sam2's modules, and the tracker against
``SAM2VideoPredictor``.

One model for the module: the ``sam2.1-tiny-test`` configuration at a 256-pixel input (16x16
features). At sam2's 1024 the tiny Hiera's memory attention still attends 4096 queries to
4096 keys per remembered frame (seconds per frame on this CPU); 256 keeps every graph and
every step of the tracker and costs milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sam_triton_export.family_sam2 import save_random_checkpoint
from sam_triton_export.family_sam2_video import (
    build_sam2_video_model,
    export_video_graphs,
    rotary_real,
    rotary_tables,
    verify_video_graphs,
)
from sam_triton_server.backend.video_tracking import (
    FrameFeatures,
    FrameResult,
    TrackerError,
    TrackerGraphs,
    VideoTrackerState,
    from_bfloat16_bits,
    to_bfloat16_bits,
)

MODEL_TYPE = "sam2.1-tiny-test"
SMALL_INPUT = ("++model.image_size=256",)
# Seeded weights whose first masks cover 30-60% of the frames (seed 4), with the object-score
# head's bias raised by 1 so the objects are visible (random weights score them about 0).
SEED = 4
SCORE_HEAD_BIAS = "sam_mask_decoder.pred_obj_score_head.layers.2.bias"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread: these models are small, and on a shared CPU torch's threads mostly
    wait for each other (the parity ran 3-4x slower with two here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = save_random_checkpoint(MODEL_TYPE, tmp_path_factory.mktemp("video") / "sam2_video.pt", SEED)
    saved = torch.load(path, weights_only=True)
    saved["model"][SCORE_HEAD_BIAS] += 1.0
    torch.save(saved, path)
    return path


@pytest.fixture(scope="module")
def model(checkpoint: Path) -> Any:
    return build_sam2_video_model(MODEL_TYPE, checkpoint, extra_overrides=SMALL_INPUT)


@pytest.fixture(scope="module")
def graphs_dir(model: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("video_graphs")
    export_video_graphs(model, directory)
    return directory


def test_rotary_real_equals_sam2_complex_rotation() -> None:
    """The real-valued rotation is sam2's complex one: queries (one table) and keys of three
    memories (the table repeated), several heads."""
    from sam2.modeling.position_encoding import apply_rotary_enc, compute_axial_cis

    dim, side = 32, 8
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, side * side, dim, generator=gen)
    k = torch.randn(1, 2, 3 * side * side, dim, generator=gen)
    ref_q, ref_k = apply_rotary_enc(q, k, compute_axial_cis(dim, side, side), repeat_freqs_k=True)
    cos, sin = rotary_tables(dim, side, side)
    torch.testing.assert_close(rotary_real(q, cos, sin), ref_q, rtol=0, atol=1e-6)
    torch.testing.assert_close(rotary_real(k, cos, sin), ref_k, rtol=0, atol=1e-6)
    # not the identity: the rotation moves every pair
    assert (rotary_real(q, cos, sin) - q).abs().max() > 0.1


def test_video_graphs_match_sam2_modules(model: Any, graphs_dir: Path) -> None:
    """The graphs on ONNX Runtime against ``_forward_sam_heads``,
    ``_prepare_memory_conditioned_features``, ``_encode_new_memory`` and ``add_new_mask`` +
    ``_use_mask_as_output``."""
    report = verify_video_graphs(graphs_dir, model)
    assert report.selections_agree
    assert set(report.max_abs) == {
        "video_decoder object_score_logits",
        "video_decoder mask_logits",
        "video_decoder iou_predictions",
        "video_decoder object_pointer",
        "memory_attention features",
        "memory_encoder features",
        "mask_prompt low_res_mask",
        "mask_prompt object_pointer",
        "mask_prompt object_score_logits",
    }
    assert report.passed(), report.lines()
    assert report.max_abs["memory_attention features"] < 1e-4, report.lines()


def test_cli_verify_video_refuses_what_has_no_video_graphs(tmp_path: Path, model: Any, capsys: Any) -> None:
    """``sam-triton verify --video``: a SAM 1 type is refused before anything runs; a directory
    without the graphs says which are missing."""
    from sam_triton.cli import main

    args = [
        "verify",
        "--model-type",
        "tiny-test",
        "--random-weights",
        "--repository",
        str(tmp_path),
        "--video",
    ]
    assert main(args) == 2
    assert "video tracking is for SAM 2 models, not tiny-test" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="no video tracking graphs in .* memory_attention.onnx"):
        verify_video_graphs(tmp_path, model)


# ----------------------------------------------------------------------------- the tracker

FRAMES, HEIGHT, WIDTH = 8, 96, 128


def write_clip(directory: Path) -> Path:
    """A JPEG folder as SAM2VideoPredictor reads one: a red disc moving right and a blue
    square moving down on a noisy grey background."""
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    for i in range(FRAMES):
        frame = (rng.integers(0, 40, (HEIGHT, WIDTH, 3)) + 100).astype(np.uint8)
        frame[(yy - 40) ** 2 + (xx - 30 - 6 * i) ** 2 < 15**2] = (220, 40, 40)
        frame[(abs(yy - 20 - 5 * i) < 10) & (abs(xx - 95) < 12)] = (40, 40, 220)
        Image.fromarray(frame).save(directory / f"{i:05d}.jpg", quality=95)
    return directory


def frame_features(model: Any, images: Any) -> list[FrameFeatures]:
    """Each frame's features as the SAM 2 sam_encoder returns them (no_mem_embed added), from
    the reference's own loaded frames."""
    out = []
    with torch.no_grad():
        for image in images:
            fpn = model.forward_image(image.float()[None])["backbone_fpn"]
            embedding = fpn[2] + model.no_mem_embed.reshape(1, -1, 1, 1)
            out.append(FrameFeatures(embedding.numpy(), fpn[0].numpy(), fpn[1].numpy()))
    return out


class Reference:
    """``SAM2VideoPredictor`` as the parity runs it on a CPU: holes filled by a CPU
    connected-components function (as on a GPU), its bfloat16 memories read as fp32 by memory
    attention, and each frame's backbone computed once (the predictor recomputes it per call;
    the result is the same)."""

    def __init__(self, model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        import sam2.utils.misc

        from tests.test_sam2 import CpuConnectedComponents

        monkeypatch.setattr(sam2.utils.misc, "get_connected_components", CpuConnectedComponents())
        attend = model.memory_attention.forward
        # What each memory attention call read: memory, its positions, the pointer tokens.
        self.reads: list[tuple[Any, Any, int]] = []

        def fp32_memory(
            curr: Any, memory: Any, curr_pos: Any, memory_pos: Any, num_obj_ptr_tokens: int
        ) -> Any:
            self.reads.append((memory.float(), memory_pos.float(), num_obj_ptr_tokens))
            return attend(
                curr=curr,
                memory=memory.float(),
                curr_pos=curr_pos,
                memory_pos=memory_pos.float(),
                num_obj_ptr_tokens=num_obj_ptr_tokens,
            )

        monkeypatch.setattr(model.memory_attention, "forward", fp32_memory)
        backbone = model.forward_image
        cache: dict[bytes, Any] = {}

        def cached_backbone(image: Any) -> Any:
            key = image.numpy().tobytes()
            if key not in cache:
                cache[key] = backbone(image)
            return {name: list(levels) for name, levels in cache[key].items()}

        monkeypatch.setattr(model, "forward_image", cached_backbone)
        self.model = model


class RecordingSession:
    """A graph session that keeps every feed it ran."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.feeds: list[dict[str, Any]] = []

    def run(self, output_names: Any, input_feed: Any) -> Any:
        self.feeds.append(dict(input_feed))
        return self.session.run(output_names, input_feed)

    def get_providers(self) -> list[str]:
        providers: list[str] = self.session.get_providers()
        return providers


def assert_same_memory_reads(
    model: Any, reads: list[tuple[Any, Any, int]], feeds: list[dict[str, Any]]
) -> None:
    """Call by call, the tracker's memory attention read what the reference's did: the same
    frames' memory features (bfloat16 values) with the same temporal rows, the same object
    pointers at the same positions."""
    from sam2.modeling.sam2_utils import get_1d_sine_pe
    from sam_triton_common.video_contract import (
        MEMORY_FEATURES,
        MEMORY_TPOS,
        OBJECT_POINTER_POSITIONS,
        OBJECT_POINTERS,
    )

    assert len(reads) == len(feeds) > 10
    h = model.image_size // model.backbone_stride
    mem_pos = model.memory_encoder.position_encoding(torch.zeros(1, model.mem_dim, h, h))
    mem_pos = mem_pos.flatten(2).permute(2, 0, 1)  # [h*w, 1, mem_dim]
    split = model.hidden_dim // model.mem_dim
    with torch.no_grad():
        for (memory, memory_pos, ptr_tokens), feed in zip(reads, feeds, strict=True):
            memories = torch.from_numpy(feed[MEMORY_FEATURES])
            pointers = torch.from_numpy(feed[OBJECT_POINTERS])
            spatial = memories.shape[0] * h * h
            assert (memory.shape[0] - ptr_tokens, ptr_tokens) == (spatial, pointers.shape[0] * split)
            ours_memory = memories.flatten(2).permute(0, 2, 1).reshape(-1, 1, model.mem_dim)
            torch.testing.assert_close(ours_memory, memory[:spatial], rtol=0.02, atol=1e-3)
            rows = torch.from_numpy(feed[MEMORY_TPOS])
            ours_pos = torch.cat([mem_pos + model.maskmem_tpos_enc[r] for r in rows])
            torch.testing.assert_close(ours_pos, memory_pos[:spatial])
            torch.testing.assert_close(
                pointers.reshape(-1, 1, model.mem_dim), memory[spatial:], atol=1e-4, rtol=1e-4
            )
            positions = torch.from_numpy(feed[OBJECT_POINTER_POSITIONS])
            ptr_pos = model.obj_ptr_tpos_proj(get_1d_sine_pe(positions, dim=model.hidden_dim))
            torch.testing.assert_close(ptr_pos.repeat_interleave(split, dim=0)[:, None], memory_pos[spatial:])


def logits_diff(reference: Any, ours: FrameResult) -> float:
    """Largest |difference| of the video-resolution logits where either side sees the object
    (absent objects are -1024 on both sides)."""
    ref = reference[:, 0].numpy()
    got = ours.video_logits()
    seen = (ref > -100) | (got > -100)
    return float(np.abs(ref - got)[seen].max()) if seen.any() else 0.0


def mask_ious(reference: Any, ours: FrameResult) -> list[float]:
    ref = (reference[:, 0] > 0).numpy()
    got = ours.masks()
    assert got.shape == ref.shape
    ious = []
    for r, o in zip(ref, got, strict=True):
        union = np.logical_or(r, o).sum()
        ious.append(1.0 if union == 0 else float(np.logical_and(r, o).sum() / union))
    return ious


@pytest.fixture(scope="module")
def graphs(graphs_dir: Path) -> TrackerGraphs:
    return TrackerGraphs.load(graphs_dir)


def test_tracker_matches_sam2_video_predictor(
    model: Any, graphs: TrackerGraphs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's parity: two objects, the second added mid-video by a box, a corrective
    click on a tracked frame, propagated forward; a third object from a mask prompt, all three
    propagated in reverse; then a frame's prompts cleared and an object removed. Every frame's
    every object: IoU >= 0.99, mean >= 0.995."""
    reference = Reference(model, monkeypatch)
    ref = reference.model
    state = ref.init_state(str(write_clip(tmp_path / "clip")))
    features = frame_features(ref, state["images"])
    attention = RecordingSession(graphs.memory_attention)
    recorded = TrackerGraphs(
        graphs.decoder, attention, graphs.memory_encoder, graphs.mask_prompt, graphs.config
    )
    ours = VideoTrackerState(recorded, (HEIGHT, WIDTH), num_frames=FRAMES)
    ious: list[float] = []
    areas: list[int] = []
    diffs: list[float] = []

    def check(answer: tuple[int, list[int], Any], result: FrameResult) -> None:
        frame_idx, obj_ids, masks = answer
        assert (result.frame_idx, result.obj_ids) == (frame_idx, tuple(obj_ids))
        ious.extend(mask_ious(masks, result))
        diffs.append(logits_diff(masks, result))
        areas.extend(int(a) for a in (masks > 0).sum(dim=(1, 2, 3)))

    def propagate(**kwargs: Any) -> None:
        reverse = kwargs.get("reverse", False)
        for answer in ref.propagate_in_video(state, **kwargs):
            check(answer, ours.track_frame(answer[0], features[answer[0]], reverse=reverse))

    with torch.no_grad():
        check(
            ref.add_new_points_or_box(state, 0, 1, points=[[35, 40]], labels=[1]),
            ours.add_points(0, 1, [[35, 40]], [1], features[0]),
        )
        propagate()
        assert ours.start_frame() == 0
        check(
            ref.add_new_points_or_box(state, 3, 2, box=[80, 25, 110, 50]),
            ours.add_box(3, 2, [80, 25, 110, 50], features[3]),
        )
        check(
            ref.add_new_points_or_box(state, 5, 1, points=[[60, 40]], labels=[0], clear_old_points=False),
            ours.add_points(5, 1, [[60, 40]], [0], features[5], clear_old_points=False),
        )
        propagate()
        yy, xx = np.mgrid[:HEIGHT, :WIDTH]
        square = (abs(yy - 50) < 10) & (abs(xx - 95) < 12)  # where the blue square is on frame 6
        check(ref.add_new_mask(state, 6, 3, square), ours.add_mask(6, 3, square, features[6]))
        propagate(reverse=True, start_frame_idx=FRAMES - 1)
        check(ref.clear_all_prompts_in_frame(state, 3, 2), ours.clear_prompts_in_frame(3, 2))
        ref_ids, ref_updated = ref.remove_object(state, 1)
        updated = ours.remove_object(1)
    assert ours.obj_ids == tuple(ref_ids) == (2, 3)
    assert [r.frame_idx for r in updated] == [f for f, _ in ref_updated]
    for (_, masks), result in zip(ref_updated, updated, strict=True):
        ious.extend(mask_ious(masks, result))
    # 1 + 2 + 2 + 3 prompted, 8 + 16 + 24 propagated, 3 cleared, 2 x 2 answered after the removal
    assert len(ious) == 8 + 48 + 3 + 4
    # the masks are neither empty nor the whole frame: the comparison means something
    assert sum(0.2 * HEIGHT * WIDTH < a < 0.8 * HEIGHT * WIDTH for a in areas) > 0.8 * len(areas)
    assert min(ious) >= 0.99 and float(np.mean(ious)) >= 0.995, (min(ious), float(np.mean(ious)))
    assert max(diffs) < 1e-3, max(diffs)
    assert_same_memory_reads(ref, reference.reads, attention.feeds)


def test_bfloat16_bits_round_as_torch() -> None:
    """Memories are stored as torch stores them: float32 -> bfloat16 rounds to nearest even."""
    values = torch.randn(10_000, generator=torch.Generator().manual_seed(1)) * 100
    ties = torch.tensor([1.0 + 2**-8, 1.0 + 3 * 2**-8, -(1.0 + 2**-8), 0.0, -0.0])  # exactly half-way
    x = torch.cat([values, ties])
    ref = x.to(torch.bfloat16)
    bits = to_bfloat16_bits(x.numpy())
    assert np.array_equal(bits, ref.view(torch.int16).numpy().view(np.uint16))
    assert np.array_equal(from_bfloat16_bits(bits), ref.float().numpy())


def test_tracker_memory_is_bounded_on_a_long_stream(graphs: TrackerGraphs, model: Any) -> None:
    """A live stream (no length): after max_obj_ptrs_in_encoder frames the state's bytes stay
    flat; it holds bfloat16 memory features and masks of the last frames and pointers of the
    last max_obj_ptrs_in_encoder - 1, nothing more."""
    cfg = graphs.config
    image = torch.rand(3, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(2))
    (features,) = frame_features(model, [image])
    state = VideoTrackerState(graphs, (HEIGHT, WIDTH))
    state.add_points(0, 7, [[30, 30]], [1], features)
    sizes = []
    for frame_idx in range(cfg.max_obj_ptrs_in_encoder + 6):
        result = state.track_frame(frame_idx, features)
        assert result.obj_ids == (7,) and result.low_res_logits.shape == (
            1,
            cfg.low_res_size,
            cfg.low_res_size,
        )
        sizes.append(state.nbytes)
    assert state.frames_tracked == cfg.max_obj_ptrs_in_encoder + 6
    assert len(set(sizes[cfg.max_obj_ptrs_in_encoder :])) == 1, sizes
    assert sizes[cfg.num_maskmem] > sizes[1]
    h = cfg.feature_size
    memory = cfg.mem_dim * h * h * 2  # bfloat16
    mask = cfg.low_res_size**2 * 4
    pointer = cfg.hidden_dim * 4
    # the conditioning frame and the num_maskmem frames within reach of the next frame's
    # memory attention (either way), then pointers only up to max_obj_ptrs_in_encoder - 1 back
    full = cfg.num_maskmem + 1
    expected = full * (memory + mask + pointer) + (cfg.max_obj_ptrs_in_encoder - cfg.num_maskmem) * pointer
    assert expected <= sizes[-1] <= expected + 1024, (sizes[-1], expected)


def test_tracker_refuses_bad_requests_and_keeps_its_state(graphs: TrackerGraphs, model: Any) -> None:
    cfg = graphs.config
    h = cfg.feature_size
    zeros = FrameFeatures(
        np.zeros((1, cfg.hidden_dim, h, h), np.float32),
        np.zeros((1, cfg.hidden_dim // 8, 4 * h, 4 * h), np.float32),
        np.zeros((1, cfg.hidden_dim // 4, 2 * h, 2 * h), np.float32),
    )
    state = VideoTrackerState(graphs, (HEIGHT, WIDTH), num_frames=FRAMES)
    with pytest.raises(TrackerError, match="no prompts"):
        state.track_frame(0, zeros)
    state.add_points(1, 3, [[10, 10]], [1], zeros)
    before = (state.obj_ids, state.nbytes)
    wrong_size = FrameFeatures(
        zeros.image_embeddings[:, :, :-1], zeros.high_res_feats_0, zeros.high_res_feats_1
    )
    bad_calls: dict[str, Callable[[], object]] = {
        "unknown object id 9": lambda: state.remove_object(9),
        "unknown object id 8": lambda: state.clear_prompts_in_frame(1, 8),
        "image_embeddings have shape": lambda: state.track_frame(2, wrong_size),
        "out of range": lambda: state.track_frame(FRAMES, zeros),
        "labels must be 1": lambda: state.add_points(1, 3, [[5, 5]], [4], zeros),
        "points and labels": lambda: state.add_points(1, 3, [[5, 5]], None, zeros),
        "clear_old_points=True": lambda: state.add_points(
            1, 3, None, None, zeros, box=[0, 0, 5, 5], clear_old_points=False
        ),
        "with N labels": lambda: state.add_points(1, 3, [[5, 5], [6, 6]], [1], zeros),
        "must be \\(H, W\\)": lambda: state.add_mask(1, 3, np.ones((2, 3, 4), bool), zeros),
    }
    for message, call in bad_calls.items():
        with pytest.raises(TrackerError, match=message):
            call()
    assert (state.obj_ids, state.nbytes) == before
    assert state.track_frame(2, zeros).obj_ids == (3,)
    # an object whose only prompt was cleared cannot be tracked, as the reference says
    state.add_points(4, 5, [[10, 10]], [1], zeros)
    state.clear_prompts_in_frame(4, 5)
    with pytest.raises(TrackerError, match="no prompts for object id 5"):
        state.track_frame(3, zeros)
