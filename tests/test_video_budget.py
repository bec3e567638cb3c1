"""sam_video keeps its sessions within ``max_bytes`` whatever made them grow: a prompt adds a
conditioning frame's memory as a tracked frame adds a recent one.

A server of only sam_encoder and sam_video (the session's SAM 2 export, linked; sam_video's
config given room for one prompted session and a half) gets two sessions with one click each
and no frame tracked: the second click must evict the first. Seen failing with the budget
checked after tracked frames only (both sessions stayed: 2 sessions, 0 evictions).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sam_triton import SamClient, VideoTracker
from sam_triton_common import contract

from tests.conftest import ServedTriton, start_triton
from tests.test_metrics_e2e import scrape, value
from tests.test_video_e2e import SIZE, LocalTracker, clip

CLICK = ([[16, 22]], [1])


def one_prompted_session_bytes(repository: Path) -> int:
    """What a session holds after one click on its first frame (the core sam_video runs)."""
    local = LocalTracker(repository)
    local.state.add_points(0, 1, *CLICK, local.features(clip(1)[0]))
    return int(local.state.nbytes)


@pytest.fixture(scope="module")
def tight_server(sam2_export: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedTriton]:
    source = sam2_export.repository
    repository = tmp_path_factory.mktemp("video-budget") / "repo"
    repository.mkdir(parents=True)
    (repository / contract.ENCODER_MODEL).symlink_to(source / contract.ENCODER_MODEL)
    video = repository / contract.VIDEO_MODEL
    video.mkdir()
    (video / contract.MODEL_VERSION).symlink_to(source / contract.VIDEO_MODEL / contract.MODEL_VERSION)
    budget = one_prompted_session_bytes(source) * 3 // 2
    config = (source / contract.VIDEO_MODEL / "config.pbtxt").read_text()
    config, count = re.subn(
        r'(key: "max_bytes"\s*value \{\s*string_value: ")\d+(")', rf"\g<1>{budget}\g<2>", config
    )
    assert count == 1
    (video / "config.pbtxt").write_text(config)
    served = start_triton(repository)
    try:
        yield served
    finally:
        served.process.stop()


def test_a_prompt_that_outgrows_the_budget_evicts_the_least_recently_used_session(
    tight_server: ServedTriton,
) -> None:
    frame = clip(1)[0]
    assert frame.shape[:2] == SIZE
    with SamClient(tight_server.grpc_url, timeout=120) as client:
        first, second = VideoTracker(client), VideoTracker(client)
        with first, second:
            answer = first.add_points(0, 1, *CLICK, frame=frame)
            assert answer.obj_ids == (1,)
            before = scrape(tight_server.metrics_port)
            assert value(before, "sam_video_sessions") == 1
            second.add_points(0, 1, *CLICK, frame=frame)
            after = scrape(tight_server.metrics_port)
    assert value(after, "sam_video_sessions") == 1
    evicted = value(after, "sam_video_session_ends_total", reason="evicted")
    assert evicted - value(before, "sam_video_session_ends_total", reason="evicted") == 1
