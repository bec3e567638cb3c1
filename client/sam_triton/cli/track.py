"""``sam-triton track``: track objects through a video on a running SAM 2 server, write an
overlay video and every frame's masks as JSON (COCO RLE).

    sam-triton track frames/ --point 0:210,350 --box 0:300,100,420,260 \\
        --output tracked.mp4 --json masks.json

``[OBJ@]FRAME:...``: a prompt for object OBJ (default 1) on frame FRAME; a point and a box of
one object on one frame form one prompt. Frames are tracked forward from the first prompted
frame to the end, then backward from it to frame 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .connection import add_connection_arguments, connection_options, report_error
from .segment import parse_box, parse_point

if TYPE_CHECKING:
    from ..video_predictor import RemoteInferenceState, RemoteSam2VideoPredictor

Where = tuple[int, int]  # (object, frame)


def _where(text: str, flag: str) -> tuple[Where, str]:
    head, sep, rest = text.partition(":")
    obj, at, frame = head.rpartition("@")
    try:
        return (int(obj) if at else 1, int(frame)), rest if sep else ""
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{flag} starts with [OBJ@]FRAME: (integers), got {text!r}"
        ) from None


def parse_video_point(text: str) -> tuple[Where, tuple[float, float, int]]:
    """``[OBJ@]FRAME:X,Y[,LABEL]``."""
    where, rest = _where(text, "--point")
    return where, parse_point(rest)


def parse_video_box(text: str) -> tuple[Where, tuple[float, float, float, float]]:
    """``[OBJ@]FRAME:X0,Y0,X1,Y1``."""
    where, rest = _where(text, "--box")
    return where, parse_box(rest)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "track",
        help="track objects through a video on a running SAM 2 server",
        description="Open a video tracking session on a sam-triton server serving a SAM 2 model "
        "(sam_video), prompt objects on frames, track them through the whole video and write an "
        "overlay video and/or every frame's masks as JSON (COCO RLE).",
    )
    parser.add_argument("video", type=Path, help="a folder of JPEG frames (00000.jpg, ...) or a video file")
    parser.add_argument("--url", default="localhost:8001", help="gRPC endpoint HOST:PORT")
    parser.add_argument(
        "--point",
        action="append",
        type=parse_video_point,
        default=[],
        metavar="[OBJ@]FRAME:X,Y[,LABEL]",
        help="a point in pixels on frame FRAME for object OBJ (default 1); LABEL 1 = object "
        "(default), 0 = background; repeatable",
    )
    parser.add_argument(
        "--box",
        action="append",
        type=parse_video_box,
        default=[],
        metavar="[OBJ@]FRAME:X0,Y0,X1,Y1",
        help="a box in pixels on frame FRAME for object OBJ (default 1); repeatable",
    )
    parser.add_argument("--output", type=Path, help="write the overlay video (.mp4; needs OpenCV)")
    parser.add_argument("--fps", type=float, default=25.0, help="frame rate of the overlay video")
    parser.add_argument("--json", type=Path, help="write every frame's masks as JSON (COCO RLE)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_connection_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import SamTritonError
    from ..video_predictor import RemoteSam2VideoPredictor

    prompts: dict[Where, dict[str, Any]] = defaultdict(lambda: {"points": [], "labels": [], "box": None})
    for where, (x, y, label) in args.point:
        prompts[where]["points"].append([x, y])
        prompts[where]["labels"].append(label)
    for where, box in args.box:
        if prompts[where]["box"] is not None:
            print(f"sam-triton track: two boxes for object {where[0]} on frame {where[1]}", file=sys.stderr)
            return 2
        prompts[where]["box"] = list(box)
    if not prompts:
        print("sam-triton track: give at least one --point or --box", file=sys.stderr)
        return 2
    if args.output is None and args.json is None:
        print("sam-triton track: nothing to write: give --output tracked.mp4 and/or --json", file=sys.stderr)
        return 2
    if args.output is not None and not _has_opencv():
        print("sam-triton track: --output needs OpenCV: pip install 'sam-triton[video]'", file=sys.stderr)
        return 2
    for path in (args.output, args.json):
        if path is not None and not path.parent.is_dir():
            print(f"sam-triton track: folder {path.parent} does not exist (create it first)", file=sys.stderr)
            return 2
    try:
        with RemoteSam2VideoPredictor(
            args.url, timeout=args.timeout, **connection_options(args)
        ) as predictor:
            state = predictor.init_state(args.video)
            masks = _track(predictor, state, prompts, quiet=args.quiet)
            predictor.close_state(state)
    except SamTritonError as exc:
        return report_error("track", exc, args)
    if args.json is not None:
        _write_json(args, state, masks)
    if args.output is not None:
        _write_video(args, state, masks, prompts)
    return 0


def _has_opencv() -> bool:
    import importlib.util

    return importlib.util.find_spec("cv2") is not None


def _track(
    predictor: RemoteSam2VideoPredictor,
    state: RemoteInferenceState,
    prompts: dict[Where, dict[str, Any]],
    *,
    quiet: bool,
) -> dict[int, tuple[list[int], Any]]:
    """Every frame's (object ids, (K, H, W) bool masks)."""
    from tqdm import tqdm

    for (obj, frame), prompt in sorted(prompts.items(), key=lambda item: item[0][::-1]):
        points = prompt["points"] or None
        predictor.add_new_points_or_box(
            state, frame, obj, points=points, labels=prompt["labels"] or None, box=prompt["box"]
        )
    first = min(frame for _, frame in prompts)
    out: dict[int, tuple[list[int], Any]] = {}
    with tqdm(
        total=state["num_frames"], desc="tracking", unit="frame", disable=quiet, file=sys.stderr
    ) as bar:
        passes = [False, True] if first > 0 else [False]
        for reverse in passes:
            for frame_idx, obj_ids, frame_masks in predictor.propagate_in_video(
                state, start_frame_idx=first, reverse=reverse
            ):
                if frame_idx not in out:
                    bar.update(1)
                out[frame_idx] = (obj_ids, frame_masks[:, 0] > 0)
    return out


def _write_json(
    args: argparse.Namespace, state: RemoteInferenceState, masks: dict[int, tuple[list[int], Any]]
) -> None:
    from sam_triton_common.rle import area_from_rle, mask_to_box_xywh, mask_to_rle, rle_to_coco

    frames = []
    for frame_idx in sorted(masks):
        obj_ids, frame_masks = masks[frame_idx]
        objects = []
        for obj_id, mask in zip(obj_ids, frame_masks, strict=True):
            rle = mask_to_rle(mask)
            objects.append(
                {
                    "obj_id": obj_id,
                    "area": area_from_rle(rle),
                    "bbox": mask_to_box_xywh(mask),
                    "segmentation": rle_to_coco(rle),
                }
            )
        frames.append({"frame": frame_idx, "objects": objects})
    document = {
        "video": str(args.video),
        "size": [state["video_height"], state["video_width"]],
        "num_frames": state["num_frames"],
        "frames": frames,
    }
    args.json.write_text(json.dumps(document))
    print(f"json: {args.json} ({len(frames)} frames)")


def _write_video(
    args: argparse.Namespace,
    state: RemoteInferenceState,
    masks: dict[int, tuple[list[int], Any]],
    prompts: dict[Where, dict[str, Any]],
) -> None:
    import cv2
    import numpy as np

    from ..images import load_image
    from ..render import overlay

    height, width = state["video_height"], state["video_width"]
    writer = cv2.VideoWriter(str(args.output), cv2.VideoWriter.fourcc(*"mp4v"), args.fps, (width, height))
    try:
        for frame_idx in range(state["num_frames"]):
            source = state.frame(frame_idx)
            image = source if isinstance(source, np.ndarray) else load_image(source)
            shown = masks.get(frame_idx, ([], np.zeros((0, height, width), np.bool_)))[1]
            on_frame = [p for (_, frame), p in prompts.items() if frame == frame_idx]
            points = [pt for p in on_frame for pt in p["points"]]
            labels = [lb for p in on_frame for lb in p["labels"]]
            picture = overlay(image, shown, point_coords=points or None, point_labels=labels or None)
            writer.write(np.ascontiguousarray(np.asarray(picture)[:, :, ::-1]))
    finally:
        writer.release()
    print(f"overlay: {args.output} ({state['num_frames']} frames)")
