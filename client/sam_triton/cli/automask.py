"""``sam-triton automask``: every mask of an image, written like segment_anything's scripts/amg.py.

    sam-triton automask photo.jpg --url localhost:8001 --output out/ --crop-n-layers 1

writes ``out/0.png``, ``out/1.png``, ... (one 0/255 mask each, largest first, as the reference),
``out/metadata.csv`` with the reference script's columns, and ``out/overview.png`` with every
mask coloured over the image.
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .connection import add_connection_arguments, connection_options, report_error

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    from sam_triton_common.amg import MaskRecord

METADATA_HEADER = (
    "id,area,bbox_x0,bbox_y0,bbox_w,bbox_h,point_input_x,point_input_y,predicted_iou,"
    "stability_score,crop_box_x0,crop_box_y0,crop_box_w,crop_box_h"
)
"""The column line of scripts/amg.py's metadata.csv."""

OVERVIEW = "overview.png"
_OVERLAY_CHUNK = 32  # masks blended per pass: bounds memory at 32 full-size masks

_GENERATOR_OPTIONS: tuple[tuple[str, Callable[[str], float], float | None, str], ...] = (
    ("--points-per-side", int, 32, "point grid per side of the image"),
    ("--points-per-batch", int, 64, "points decoded per batch"),
    (
        "--pred-iou-thresh",
        float,
        None,
        "keep masks the model scores at least this (default: the model's generator's, 0.88 for SAM 1, "
        "0.8 for SAM 2)",
    ),
    ("--stability-score-thresh", float, 0.95, "keep masks at least this stable"),
    ("--stability-score-offset", float, 1.0, "logit offset of the stability score"),
    ("--box-nms-thresh", float, 0.7, "box IoU of duplicate masks"),
    ("--crop-n-layers", int, 0, "layers of image crops (layer i: 4^i crops)"),
    ("--crop-nms-thresh", float, 0.7, "box IoU of duplicates across crops"),
    ("--crop-overlap-ratio", float, 512 / 1500, "overlap of neighbouring crops"),
    ("--crop-n-points-downscale-factor", int, 1, "layer i's grid has points-per-side / factor^i per side"),
    ("--min-mask-region-area", int, 0, "remove holes and islands smaller than this many pixels (0: off)"),
)
"""SamAutomaticMaskGenerator's parameters and defaults: (flag, type, default, help). Against a SAM 2
model the masks are SAM2AutomaticMaskGenerator's, with its defaults."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "automask",
        help="generate every mask of an image on a running server (SamAutomaticMaskGenerator)",
        description="Run automatic mask generation on a sam-triton server and write one PNG per "
        "mask, metadata.csv (as segment_anything's scripts/amg.py) and an overview PNG.",
    )
    parser.add_argument("image", type=Path, help="image file (PNG, JPEG, ...; EXIF orientation applied)")
    parser.add_argument(
        "--url", default="localhost:8001", help="gRPC endpoint HOST:PORT (default %(default)s)"
    )
    parser.add_argument("--output", type=Path, required=True, help="folder for the masks, CSV and overview")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds (default %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress output on stderr")
    amg = parser.add_argument_group(
        "generator parameters", "SamAutomaticMaskGenerator's parameters, with its defaults"
    )
    for flag, kind, default, meaning in _GENERATOR_OPTIONS:
        amg.add_argument(flag, type=kind, default=default, help=meaning)
    add_connection_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: registering the subcommand must stay cheap for `sam-triton --help`.
    from ..automask import RemoteAutomaticMaskGenerator
    from ..errors import SamTritonError
    from ..images import load_image

    progress = not args.no_progress
    problem = check_output_folder(args.output)
    if problem is not None:  # before minutes of server work, not after
        print(f"sam-triton automask: {problem}", file=sys.stderr)
        return 2
    try:
        image = load_image(args.image)
        with (
            RemoteAutomaticMaskGenerator(
                args.url,
                points_per_side=args.points_per_side,
                points_per_batch=args.points_per_batch,
                pred_iou_thresh=args.pred_iou_thresh,
                stability_score_thresh=args.stability_score_thresh,
                stability_score_offset=args.stability_score_offset,
                box_nms_thresh=args.box_nms_thresh,
                crop_n_layers=args.crop_n_layers,
                crop_nms_thresh=args.crop_nms_thresh,
                crop_overlap_ratio=args.crop_overlap_ratio,
                crop_n_points_downscale_factor=args.crop_n_points_downscale_factor,
                min_mask_region_area=args.min_mask_region_area,
                # RLE, decoded one mask at a time while writing: hundreds of full-size masks of a
                # large photo would not fit in memory at once.
                output_mode="uncompressed_rle",
                timeout=args.timeout,
                **connection_options(args),
            ) as generator,
            _waiting(f"generating masks on {args.url} ({_workload(args)})", progress),
        ):
            output = generator.run(image)
    except SamTritonError as exc:
        return report_error("automask", exc, args)
    except KeyboardInterrupt:
        # Leaving closes the channel: the server sees the request cancelled and drops the job.
        print(
            "\nsam-triton automask: interrupted; nothing written. The server stops the job at its "
            "next batch.",
            file=sys.stderr,
        )
        return 130
    print(
        f"{len(output.records)} masks from {output.crops} crop(s), {output.prompts} prompts; server "
        f"{output.server_seconds:.1f}s, {output.response_bytes / 1024:.0f} KiB received"
    )
    removed = remove_earlier_masks(args.output)
    if removed:
        print(f"removed {removed} mask PNGs of an earlier run from {args.output}")
    write_outputs(args.output, image, output.records, progress)
    print(f"wrote {len(output.records)} mask PNGs, metadata.csv and {OVERVIEW} to {args.output}")
    if not output.records:
        print(
            f"no mask passed the filters (--pred-iou-thresh {output.params.pred_iou_thresh:g}, "
            f"--stability-score-thresh {args.stability_score_thresh:g}): try lower ones, e.g. "
            "--pred-iou-thresh 0.5 --stability-score-thresh 0.8. A server exporting random weights "
            "(its start-up banner says so) yields no real masks at all.",
            file=sys.stderr,
        )
    return 0


def _workload(args: argparse.Namespace) -> str:
    """What the server will run, known before it starts: crops, prompts, decoder batches (the
    single call reports no progress of its own, so this and the clock are what can be shown)."""
    from ..amg import AmgParams

    try:
        params = AmgParams(
            points_per_side=args.points_per_side,
            points_per_batch=args.points_per_batch,
            crop_n_layers=args.crop_n_layers,
            crop_n_points_downscale_factor=args.crop_n_points_downscale_factor,
        )
    except ValueError:  # the generator refuses these parameters with its own message
        return "?"
    sizes = params.layer_grid_sizes()
    crops = sum(4**layer for layer in range(len(sizes)))
    prompts = sum(size * 4**layer for layer, size in enumerate(sizes))
    batches = sum(-(-size // params.points_per_batch) * 4**layer for layer, size in enumerate(sizes))
    return f"{crops} crop(s), {prompts} prompts in {batches} batch{'es' if batches != 1 else ''}"


_MASK_FILE = re.compile(r"\d+\.png")


def check_output_folder(folder: Path) -> str | None:
    """Why masks cannot go to ``folder``, or None. Missing parents are not created (a typo
    would make a new folder tree), and numbered PNGs that no earlier run of this command
    wrote (no metadata.csv beside them) are not ours to replace."""
    if folder.exists() and not folder.is_dir():
        return f"--output {folder} is a file; give a folder"
    if not folder.parent.is_dir():
        return f"--output {folder}: folder {folder.parent} does not exist (create it first)"
    if folder.is_dir() and not (folder / "metadata.csv").exists():
        foreign = [p.name for p in folder.iterdir() if _MASK_FILE.fullmatch(p.name)]
        if foreign:
            return (
                f"--output {folder} already holds {len(foreign)} numbered PNGs (e.g. {foreign[0]}) "
                "that this command did not write; give an empty or new folder"
            )
    return None


def remove_earlier_masks(folder: Path) -> int:
    """Delete an earlier run's ``<i>.png`` files, so the folder holds one run's masks only."""
    if not (folder / "metadata.csv").exists():
        return 0
    earlier = [p for p in folder.iterdir() if _MASK_FILE.fullmatch(p.name)]
    for path in earlier:
        path.unlink()
    return len(earlier)


@contextmanager
def _waiting(label: str, enabled: bool) -> Iterator[None]:
    """An elapsed-time line that keeps ticking while the server works (one blocking call)."""
    from tqdm import tqdm

    bar = tqdm(total=None, desc=label, bar_format="{desc}: {elapsed}", disable=not enabled, file=sys.stderr)
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(0.25):
            bar.refresh()

    ticker = threading.Thread(target=tick, name="automask-progress", daemon=True)
    ticker.start()
    try:
        yield
    finally:
        stop.set()
        ticker.join()
        bar.close()


def write_outputs(
    folder: Path, image: npt.NDArray[np.uint8], records: list[MaskRecord], progress: bool = True
) -> None:
    """``<i>.png`` (0/255) and metadata.csv in the generator's order, as scripts/amg.py, then
    the overview with the largest masks drawn first so small ones stay visible on top."""
    import numpy as np
    from PIL import Image
    from tqdm import tqdm

    folder.mkdir(parents=True, exist_ok=True)
    lines = [METADATA_HEADER]
    for i, record in enumerate(tqdm(records, desc="writing masks", unit="mask", disable=not progress)):
        Image.fromarray(_mask(record).view(np.uint8) * 255).save(folder / f"{i}.png")
        ((px, py),) = record["point_coords"]
        row = (i, record["area"], *record["bbox"], px, py, record["predicted_iou"], record["stability_score"])
        lines.append(",".join(str(v) for v in (*row, *record["crop_box"])))
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")
    Image.fromarray(overview(image, records)).save(folder / OVERVIEW)


def overview(image: npt.NDArray[np.uint8], records: list[MaskRecord]) -> npt.NDArray[np.uint8]:
    """Every mask coloured over the image, blended a chunk at a time (bounded memory)."""
    import numpy as np

    from ..render import PALETTE, overlay

    ordered = sorted(records, key=lambda r: int(r["area"]), reverse=True)
    picture = image
    for first in range(0, len(ordered), _OVERLAY_CHUNK):
        masks = np.stack([_mask(r) for r in ordered[first : first + _OVERLAY_CHUNK]])
        colors = [PALETTE[(first + k) % len(PALETTE)] for k in range(len(masks))]  # one cycle overall
        picture = np.asarray(overlay(picture, masks, colors=colors))
    return picture


def _mask(record: MaskRecord) -> npt.NDArray[np.bool_]:
    import numpy as np
    from sam_triton_common.rle import rle_to_mask

    seg = record["segmentation"]
    return seg if isinstance(seg, np.ndarray) else rle_to_mask(seg)
