"""``RemoteSam2VideoPredictor``: ``sam2.sam2_video_predictor.SAM2VideoPredictor``'s interface,
tracked by a server (``sam_video``), for moving SAM 2 video code off the local GPU.

Replace ``build_sam2_video_predictor(...)`` with ``RemoteSam2VideoPredictor("host:8001")``:
``init_state``, ``add_new_points_or_box``, ``add_new_mask``, ``propagate_in_video``,
``clear_all_prompts_in_frame``, ``remove_object`` and ``reset_state`` take the reference's
arguments and return its values as numpy: masks of shape (objects, 1, H, W) at the video's size,
float32 1 for the object and 0 elsewhere (``> 0`` gives the reference's masks).

Nothing of the video is loaded up front: a JPEG folder's frames are read when they are sent,
and travel as their own files; the server keeps only each object's bounded memory, never the
frames. A video file needs OpenCV (``pip install sam-triton[video]``) and is decoded once, into
uint8 frames held here (the reference holds float32 ones).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from . import _video_core, errors
from ._core import Op, run_sync
from ._video_core import TrackedFrame, VideoSession
from .client import SamClient
from .predictor import ClientOwner
from .video import _Stream

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .config import ClientOptions

JPEG_SUFFIXES = (".jpg", ".jpeg", ".JPG", ".JPEG")
Masks = npt.NDArray[np.float32]
FrameOutput = tuple[int, list[int], Masks]


def jpeg_frames(folder: Path) -> list[Path]:
    """The folder's JPEG frames in the reference's order: by the integer each file name is."""
    names = [p for p in os.listdir(folder) if os.path.splitext(p)[-1] in JPEG_SUFFIXES]
    if not names:
        raise errors.InvalidInputError(f"no JPEG frames (*.jpg, *.jpeg) in {str(folder)!r}")
    try:
        names.sort(key=lambda p: int(os.path.splitext(p)[0]))
    except ValueError:
        raise errors.InvalidInputError(
            f"the frames in {str(folder)!r} must be named by their index (00000.jpg, 00001.jpg, ...)"
        ) from None
    return [folder / name for name in names]


def video_file_frames(path: Path) -> list[npt.NDArray[np.uint8]]:
    """Every frame of a video file, RGB."""
    try:
        import cv2
    except ImportError:
        raise errors.InvalidInputError(
            "reading a video file needs OpenCV: pip install 'sam-triton[video]' "
            "(or pass a folder of JPEG frames)"
        ) from None
    capture = cv2.VideoCapture(str(path))
    frames = []
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            frames.append(np.ascontiguousarray(bgr[:, :, ::-1]))
    finally:
        capture.release()
    if not frames:
        raise errors.InvalidInputError(f"{str(path)!r} is not a video OpenCV can decode (no frame read)")
    return frames


class RemoteInferenceState(dict[str, Any]):
    """What :meth:`RemoteSam2VideoPredictor.init_state` returns, in place of the reference's
    ``inference_state``: its ``num_frames``, ``video_height`` and ``video_width`` keys, and the
    server session the other methods use."""

    def __init__(self, session: VideoSession, frames: Sequence[Path | npt.NDArray[np.uint8]]) -> None:
        assert session.size is not None
        super().__init__(num_frames=len(frames), video_height=session.size[0], video_width=session.size[1])
        self.session = session
        self.frames = frames
        self.obj_ids: list[int] = []

    def frame(self, frame_idx: int) -> Path | npt.NDArray[np.uint8]:
        if not 0 <= frame_idx < len(self.frames):
            raise errors.InvalidInputError(
                f"frame_idx {frame_idx} is outside the video's {len(self.frames)} frames"
            )
        return self.frames[frame_idx]


def _masks(tracked: TrackedFrame) -> Masks:
    return tracked.masks[:, None].astype(np.float32)


class RemoteSam2VideoPredictor(ClientOwner):
    """Drop-in remote ``SAM2VideoPredictor`` (one stream per predictor; one video at a time
    per ``inference_state``, several states may be open).

    Args:
        client: ``"host:port"`` of the server, or a :class:`~sam_triton.SamClient` to share.
        **options: :class:`~sam_triton.SamClient` options when ``client`` is a URL.
    """

    def __init__(self, client: str | SamClient = "localhost:8001", **options: Unpack[ClientOptions]) -> None:
        super().__init__(client, options)
        self._streams: dict[str, _Stream] = {}

    def _run(self, state: RemoteInferenceState, op: Op[Any]) -> Any:
        if not isinstance(state, RemoteInferenceState):
            raise errors.InvalidInputError(
                "inference_state must be what this predictor's init_state returned"
            )
        stream = self._streams.get(state.session.session_id)
        if stream is None:
            stream = self._streams[state.session.session_id] = _Stream(self.client, state.session.metadata)
        return run_sync(op, stream.execute)

    def _output(self, state: RemoteInferenceState, tracked: TrackedFrame) -> FrameOutput:
        state.obj_ids = list(tracked.obj_ids)
        return tracked.frame_idx, list(tracked.obj_ids), _masks(tracked)

    # -- SAM2VideoPredictor API ----------------------------------------------------------------

    def init_state(
        self,
        video_path: str | os.PathLike[str],
        offload_video_to_cpu: bool = False,
        offload_state_to_cpu: bool = False,
        async_loading_frames: bool = False,
    ) -> RemoteInferenceState:
        """Open a server session for a video: a folder of JPEG frames or a video file (the
        offload and async options are accepted and mean nothing here: frames stay on disk)."""
        path = Path(video_path)
        if path.is_dir():
            frames: Sequence[Path | npt.NDArray[np.uint8]] = jpeg_frames(path)
        elif path.is_file():
            frames = video_file_frames(path)
        else:
            raise errors.InvalidInputError(
                f"video_path {str(path)!r} is neither a folder of JPEG frames nor a file"
            )
        session = VideoSession(self.client.config, num_frames=len(frames))
        session.size = _video_core.frame_size(session, frames[0])
        state = RemoteInferenceState(session, frames)
        self._run(state, _video_core.open_op(session, session.size, len(frames)))
        return state

    def add_new_points_or_box(
        self,
        inference_state: RemoteInferenceState,
        frame_idx: int,
        obj_id: int,
        points: npt.ArrayLike | None = None,
        labels: npt.ArrayLike | None = None,
        clear_old_points: bool = True,
        normalize_coords: bool = True,
        box: npt.ArrayLike | None = None,
    ) -> FrameOutput:
        state = inference_state
        if not normalize_coords:  # the reference's [0, 1] coordinates, in pixels for the server
            scale = np.array([state["video_width"], state["video_height"]], np.float32)
            points = None if points is None else np.asarray(points, np.float32) * scale
            box = None if box is None else (np.asarray(box, np.float32).reshape(-1, 2) * scale).reshape(-1)
        if points is not None and labels is None:
            raise errors.InvalidInputError("points and labels must be given together")
        op = _video_core.add_points_op(
            state.session,
            frame_idx,
            obj_id,
            points,
            labels,
            box,
            clear_old_points=clear_old_points,
            frame=state.frame(frame_idx),
        )
        return self._output(state, self._run(state, op))

    def add_new_mask(
        self, inference_state: RemoteInferenceState, frame_idx: int, obj_id: int, mask: npt.ArrayLike
    ) -> FrameOutput:
        state = inference_state
        op = _video_core.add_mask_op(state.session, frame_idx, obj_id, mask, frame=state.frame(frame_idx))
        return self._output(state, self._run(state, op))

    def propagate_in_video(
        self,
        inference_state: RemoteInferenceState,
        start_frame_idx: int | None = None,
        max_frame_num_to_track: int | None = None,
        reverse: bool = False,
    ) -> Iterator[FrameOutput]:
        """Each frame's masks in the reference's order: from ``start_frame_idx`` (default the
        first frame with prompts) for at most ``max_frame_num_to_track`` frames, backwards with
        ``reverse``."""
        state = inference_state
        num_frames = state["num_frames"]
        start = state.session.first_prompted_frame() if start_frame_idx is None else start_frame_idx
        budget = num_frames if max_frame_num_to_track is None else max_frame_num_to_track
        if reverse:
            order = range(start, max(start - budget, 0) - 1, -1) if start > 0 else range(0)
        else:
            order = range(start, min(start + budget, num_frames - 1) + 1)
        for position, frame_idx in enumerate(order):
            op = _video_core.track_op(
                state.session,
                state.frame(frame_idx),
                frame_idx,
                live=False,
                reverse=reverse,
                start=position == 0,
            )
            yield self._output(state, self._run(state, op))

    def clear_all_prompts_in_frame(
        self, inference_state: RemoteInferenceState, frame_idx: int, obj_id: int, need_output: bool = True
    ) -> FrameOutput | None:
        state = inference_state
        output = self._output(
            state, self._run(state, _video_core.clear_frame_op(state.session, frame_idx, obj_id))
        )
        return output if need_output else None

    def remove_object(
        self,
        inference_state: RemoteInferenceState,
        obj_id: int,
        strict: bool = False,
        need_output: bool = True,
    ) -> tuple[list[int], list[tuple[int, Masks]]]:
        state = inference_state
        if obj_id not in state.obj_ids:
            if strict:
                raise errors.InvalidInputError(
                    f"Cannot remove object id {obj_id} as it doesn't exist. All existing object ids: "
                    f"{state.obj_ids}."
                )
            return list(state.obj_ids), []
        frames: list[TrackedFrame] = self._run(state, _video_core.remove_object_op(state.session, obj_id))
        state.obj_ids = [i for i in state.obj_ids if i != obj_id]
        updated = [(f.frame_idx, _masks(f)) for f in frames] if need_output else []
        return list(state.obj_ids), updated

    def reset_state(self, inference_state: RemoteInferenceState) -> None:
        state = inference_state
        self._run(state, _video_core.reset_op(state.session))
        state.obj_ids = []

    def close_state(self, inference_state: RemoteInferenceState) -> None:
        """Beyond the reference: end the video's server session now (else its idle time-out does)."""
        state = inference_state
        try:
            self._run(state, _video_core.close_op(state.session))
        finally:
            stream = self._streams.pop(state.session.session_id, None)
            if stream is not None:
                stream.close()

    def close(self) -> None:
        for stream in self._streams.values():
            stream.close()
        self._streams.clear()
        super().close()
