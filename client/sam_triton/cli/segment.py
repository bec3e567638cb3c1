"""``sam-triton segment``: prompt a served SAM on one image, write an overlay, JSON and a cut-out.

    sam-triton segment photo.jpg --url localhost:8001 --point 500,375 --point 620,400,0 \\
        --output overlay.png --json masks.json --cutout object.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .connection import add_connection_arguments, connection_options, report_error

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    from PIL import Image

    from ..prompts import Prompt
    from ..results import Prediction


def _floats(text: str, counts: tuple[int, ...], what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in counts:
        raise argparse.ArgumentTypeError(f"{what} must be {' or '.join(_FORMS[what])}, got {text!r}")
    return values


_FORMS = {"--point": ("X,Y", "X,Y,LABEL"), "--box": ("X1,Y1,X2,Y2",)}


def parse_point(text: str) -> tuple[float, float, int]:
    """``X,Y`` (foreground) or ``X,Y,LABEL`` with LABEL 1 (foreground) or 0 (background)."""
    values = _floats(text, (2, 3), "--point")
    label = values[2] if len(values) == 3 else 1.0
    if label not in (0.0, 1.0):
        raise argparse.ArgumentTypeError(
            f"point label must be 1 (foreground) or 0 (background), got {text!r}"
        )
    return values[0], values[1], int(label)


def parse_box(text: str) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = _floats(text, (4,), "--box")
    return x1, y1, x2, y2


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "segment",
        help="segment one image with point/box prompts on a running server",
        description="Send an image and point/box prompts to a sam-triton server (one round trip "
        "through the `sam` ensemble) and write an overlay PNG, optionally masks as JSON "
        "(COCO RLE) and an RGBA cut-out of the best mask.",
    )
    parser.add_argument("image", type=Path, help="image file (PNG, JPEG, ...; EXIF orientation applied)")
    parser.add_argument(
        "--url", default="localhost:8001", help="gRPC endpoint HOST:PORT (default %(default)s)"
    )
    parser.add_argument(
        "--point",
        action="append",
        type=parse_point,
        default=[],
        metavar="X,Y[,LABEL]",
        help="a point prompt in pixels; LABEL 1 = object (default), 0 = background; repeatable",
    )
    parser.add_argument("--box", type=parse_box, metavar="X1,Y1,X2,Y2", help="a box prompt in pixels")
    parser.add_argument(
        "--multimask",
        action="store_true",
        help="ask for three candidate masks (best for a single ambiguous click); the best is selected",
    )
    parser.add_argument(
        "--output", type=Path, help="write the overlay; the suffix picks the format (.png, .jpg, .webp, ...)"
    )
    parser.add_argument("--json", type=Path, help="write all masks as JSON (COCO RLE, score, area, bbox)")
    parser.add_argument(
        "--cutout", type=Path, help="write the selected object with transparency (.png, .webp)"
    )
    parser.add_argument(
        "--all-masks", action="store_true", help="draw every returned mask, not only the best"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds (default %(default)s)")
    add_connection_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: registering the subcommand must stay cheap for `sam-triton --help`.
    from ..client import SamClient
    from ..errors import SamTritonError
    from ..images import load_image
    from ..prompts import Prompt

    if not args.point and args.box is None:
        print("sam-triton segment: give at least one --point or a --box", file=sys.stderr)
        return 2
    problem = check_outputs(args)
    if problem is not None:  # before the round trip, not after it
        print(f"sam-triton segment: {problem}", file=sys.stderr)
        return 2
    try:
        image = load_image(args.image)
        coords = [[x, y] for x, y, _ in args.point] if args.point else None
        labels = [label for _, _, label in args.point] if args.point else None
        prompt = Prompt(point_coords=coords, point_labels=labels, box=args.box)
        with SamClient(args.url, timeout=args.timeout, **connection_options(args)) as client:
            pred = client.segment(image, prompt, multimask_output=args.multimask)
    except SamTritonError as exc:
        return report_error("segment", exc, args)
    if isinstance(pred, list):  # one prompt in, one prediction out; narrows the type
        pred = pred[0]
    write_outputs(args, image, prompt, pred)
    return 0


_ALPHA_FORMATS = ("PNG", "WEBP", "TIFF")
"""Formats that keep the cut-out's transparency (JPEG would drop it)."""


def _image_format(path: Path) -> str | None:
    """Pillow's format for the file's suffix (``.jpg`` -> JPEG), None when it has none."""
    from PIL import Image

    return Image.registered_extensions().get(path.suffix.lower())


def check_outputs(args: argparse.Namespace) -> str | None:
    """Why the requested files cannot be written, or None. Missing folders are not created:
    a typo would otherwise make a new folder tree (as root, anywhere)."""
    named = [(flag, getattr(args, flag[2:])) for flag in ("--output", "--cutout", "--json")]
    named = [(flag, path) for flag, path in named if path is not None]
    if not named:
        return "nothing to write: give --output overlay.png, --json masks.json and/or --cutout object.png"
    for flag, path in named:
        folder = path.parent
        if not folder.is_dir():
            return f"{flag} {path}: folder {folder} does not exist (create it first)"
        if flag == "--json":
            continue
        kind = _image_format(path)
        if kind is None:
            suffix = path.suffix or "(no suffix)"
            return f"{flag} {path}: unknown image type {suffix}; use .png, .jpg or .webp"
        if flag == "--cutout" and kind not in _ALPHA_FORMATS:
            return f"--cutout {path}: {kind} has no transparency; use .png or .webp"
    return None


def write_outputs(
    args: argparse.Namespace, image: npt.NDArray[np.uint8], prompt: Prompt, pred: Prediction
) -> None:
    from sam_triton_common.rle import area_from_rle, mask_to_box_xywh, mask_to_rle, rle_to_coco

    from ..render import cutout, overlay

    best = pred.best()
    shown = pred.masks if args.all_masks else pred.masks[best : best + 1]
    selected = f"mask {best}, score {float(pred.scores[best]):.3f}"
    if args.output is not None:
        picture = overlay(
            image, shown, point_coords=prompt.point_coords, point_labels=prompt.point_labels, box=prompt.box
        )
        _save(picture, args.output)
        print(f"overlay: {args.output} ({selected})")
    else:
        print(f"selected {selected}")
    if args.cutout is not None:
        _save(cutout(image, pred.masks[best]), args.cutout)
        print(f"cutout: {args.cutout}")
    if args.json is not None:
        records = []
        for k, mask in enumerate(pred.masks):
            rle = mask_to_rle(mask)
            records.append(
                {
                    "index": k,
                    "selected": k == best,
                    "score": float(pred.scores[k]),
                    "area": area_from_rle(rle),
                    "bbox": mask_to_box_xywh(mask),
                    "segmentation": rle_to_coco(rle),
                }
            )
        document = {
            "image": str(args.image),
            "size": [int(image.shape[0]), int(image.shape[1])],
            "prompt": {
                "point_coords": None if prompt.point_coords is None else prompt.point_coords.tolist(),
                "point_labels": None if prompt.point_labels is None else prompt.point_labels.tolist(),
                "box": None if prompt.box is None else prompt.box.tolist(),
            },
            "multimask_output": bool(args.multimask),
            "masks": records,
        }
        args.json.write_text(json.dumps(document, indent=1))
        print(f"json: {args.json} ({len(records)} masks)")


def _save(picture: Image.Image, path: Path) -> None:
    kind = _image_format(path)
    if kind not in _ALPHA_FORMATS:
        picture = picture.convert("RGB")
    picture.save(path, format=kind)
