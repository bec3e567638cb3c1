"""SAM 2 video tracking on the exported graphs: ``SAM2VideoPredictor``'s semantics, numpy and
ONNX Runtime sessions, no torch.

:class:`VideoTrackerState` is one video's state, for one caller at a time: prompts
(:meth:`~VideoTrackerState.add_points`, ``add_box``, ``remove_object``, ...) each answer with
their frame's masks, as ``add_new_points_or_box`` does; :meth:`~VideoTrackerState.track_frame`
is one step of ``propagate_in_video`` (its preflight, which turns new prompts into memories,
runs first when prompts are pending). The caller encodes frames (the image family's
``sam_encoder``) and hands in each frame's :class:`FrameFeatures`; the state keeps no frame,
only the embedding of frames whose prompts are not yet remembered.

What the state remembers per object is what the tracker reads, bounded whatever the video's
length: every conditioning frame (frames with prompts); of the other frames, the memory
features and masks of those within ``num_maskmem - 1`` frames of the frame just tracked, and
the object pointers of those within ``max_obj_ptrs_in_encoder - 1``. Memory features are kept in
bfloat16 as the reference keeps them (half the bytes) and read back as float32. Within a pass
this is exactly what the reference reads; a later pass re-reading frames tracked long before
(the reference keeps every frame) sees them as untracked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sam_triton_common.amg import connected_components
from sam_triton_common.contract import HIGH_RES_FEATS, IMAGE_EMBEDDINGS
from sam_triton_common.transforms import _interp_matrix
from sam_triton_common.video_contract import (
    MASK_PROMPT_FILE,
    MASK_PROMPT_INPUTS,
    MEMORY_ATTENTION_FILE,
    MEMORY_ATTENTION_INPUTS,
    MEMORY_ENCODER_FILE,
    MEMORY_ENCODER_INPUTS,
    NO_OBJ_SCORE,
    TRACKER_CONFIG_FILE,
    VIDEO_DECODER_FILE,
    VIDEO_DECODER_INPUTS,
    TrackerConfig,
)

from sam_triton_server.backend.ort import Session

Array = npt.NDArray[Any]
Float32Array = npt.NDArray[np.float32]

# sam2's clamp of a previous prediction before it is a click's mask prompt.
_PREV_MASK_CLAMP = 32.0
# fill_holes_in_mask_scores: a filled hole's logit.
_HOLE_FILL = np.float32(0.1)


class TrackerError(ValueError):
    """A request the tracker cannot do (unknown object, no prompts, wrong shapes or sizes);
    the state is unchanged by it."""


# ----------------------------------------------------------------------------- inputs, outputs


@dataclass(frozen=True)
class FrameFeatures:
    """One frame's ``sam_encoder`` outputs (batch 1, float32): the embedding with
    ``no_mem_embed`` added, as the encoder returns it, and both high-resolution maps."""

    image_embeddings: Float32Array
    high_res_feats_0: Float32Array
    high_res_feats_1: Float32Array

    @classmethod
    def from_outputs(cls, outputs: Mapping[str, Array]) -> FrameFeatures:
        """From the encoder's outputs by name (``SAM2.encoder_outputs``)."""
        try:
            arrays = [
                np.ascontiguousarray(outputs[name], dtype=np.float32)
                for name in (IMAGE_EMBEDDINGS, *HIGH_RES_FEATS)
            ]
        except KeyError as e:
            raise TrackerError(f"frame features lack {e.args[0]!r}") from e
        return cls(*arrays)


@dataclass(frozen=True)
class FrameResult:
    """Every object's mask on one frame: ``low_res_logits`` [N, s, s] (s = 256 for the served
    models), ``NO_OBJ_SCORE`` where an object is absent or has no output on this frame, and
    ``object_scores`` [N] (> 0: visible; the occlusion score)."""

    frame_idx: int
    obj_ids: tuple[int, ...]
    low_res_logits: Float32Array
    object_scores: Float32Array
    video_size: tuple[int, int]

    def video_logits(self) -> Float32Array:
        """[N, H, W] logits at the video's size: bilinear, as ``_get_orig_video_res_output``."""
        return upscale_logits(self.low_res_logits, self.video_size)

    def masks(self) -> npt.NDArray[np.bool_]:
        """[N, H, W]: the objects' masks at the video's size."""
        mask: npt.NDArray[np.bool_] = self.video_logits() > 0
        return mask


def upscale_logits(low: Float32Array, size: tuple[int, int]) -> Float32Array:
    """``F.interpolate(low, size, mode="bilinear", align_corners=False)`` on [N, s, s]."""
    rows = _interp_matrix(low.shape[-2], size[0]).astype(np.float32)
    cols = _interp_matrix(low.shape[-1], size[1]).astype(np.float32)
    out: Float32Array = rows @ low.astype(np.float32) @ cols.T
    return out


# ----------------------------------------------------------------------------- graphs


class TrackerGraphs:
    """The tracking graphs of one exported model and its :class:`TrackerConfig`."""

    def __init__(
        self,
        decoder: Session,
        memory_attention: Session,
        memory_encoder: Session,
        mask_prompt: Session,
        config: TrackerConfig,
    ) -> None:
        self.decoder = decoder
        self.memory_attention = memory_attention
        self.memory_encoder = memory_encoder
        self.mask_prompt = mask_prompt
        self.config = config

    @classmethod
    def load(cls, directory: Path, make_session: Callable[[Path], Session] | None = None) -> TrackerGraphs:
        """The graphs in ``directory`` (what ``export_video_graphs`` wrote); ``make_session``
        opens one file (default: ONNX Runtime on the CPU)."""
        config_path = directory / TRACKER_CONFIG_FILE
        if not config_path.is_file():
            raise FileNotFoundError(f"no {TRACKER_CONFIG_FILE} in {directory}: not a video model directory")
        config = TrackerConfig.from_json(config_path.read_text())
        make = make_session or _cpu_session
        return cls(
            make(directory / VIDEO_DECODER_FILE),
            make(directory / MEMORY_ATTENTION_FILE),
            make(directory / MEMORY_ENCODER_FILE),
            make(directory / MASK_PROMPT_FILE),
            config,
        )


def _cpu_session(path: Path) -> Session:
    import onnxruntime as ort

    session: Session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session


# ----------------------------------------------------------------------------- bfloat16


def to_bfloat16_bits(x: Float32Array) -> npt.NDArray[np.uint16]:
    """float32 -> bfloat16 bits, rounding to nearest even as ``tensor.to(torch.bfloat16)``."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
    out: npt.NDArray[np.uint16] = (rounded >> np.uint32(16)).astype(np.uint16)
    return out


def from_bfloat16_bits(bits: npt.NDArray[np.uint16]) -> Float32Array:
    out: Float32Array = (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)
    return out


# ----------------------------------------------------------------------------- state


@dataclass
class _Output:
    """One object's result on one frame (sam2's compact ``current_out``)."""

    pred_masks: Float32Array  # [1, 1, s, s] low-res logits, holes filled
    obj_ptr: Float32Array  # [1, C]
    object_score: Float32Array  # [1, 1]
    memory: npt.NDArray[np.uint16] | None = None  # [1, mem_dim, h, w] bfloat16 bits

    @property
    def nbytes(self) -> int:
        held = (self.pred_masks, self.obj_ptr, self.object_score, self.memory)
        return sum(a.nbytes for a in held if a is not None)


@dataclass
class _Prompt:
    coords: Float32Array  # [1, N, 2] in the model's input pixels
    labels: Float32Array  # [1, N]


@dataclass
class _Object:
    obj_id: int
    points: dict[int, _Prompt] = field(default_factory=dict)
    mask_frames: set[int] = field(default_factory=set)  # frames with a mask prompt
    cond: dict[int, _Output] = field(default_factory=dict)
    non_cond: dict[int, _Output] = field(default_factory=dict)
    # Pointers of frames tracked too far back for their memory features to be read again.
    far_pointers: dict[int, Float32Array] = field(default_factory=dict)
    # Prompt results not yet remembered, by whether they condition ("cond") or correct.
    temp: dict[bool, dict[int, _Output]] = field(default_factory=lambda: {True: {}, False: {}})
    # Frames this object was tracked on, and in which direction (frames_tracked_per_obj).
    tracked: dict[int, bool] = field(default_factory=dict)

    def output(self, frame_idx: int, is_cond: bool) -> _Output | None:
        return self.temp[is_cond].get(frame_idx) or self.cond.get(frame_idx) or self.non_cond.get(frame_idx)

    @property
    def nbytes(self) -> int:
        outputs = [
            *self.cond.values(),
            *self.non_cond.values(),
            *self.temp[True].values(),
            *self.temp[False].values(),
        ]
        prompts = sum(p.coords.nbytes + p.labels.nbytes for p in self.points.values())
        pointers = sum(p.nbytes for p in self.far_pointers.values())
        return sum(o.nbytes for o in outputs) + prompts + pointers + 16 * len(self.tracked)


class VideoTrackerState:
    """One video's tracking state (see the module's docstring).

    ``num_frames`` is the whole video's length when known (the reference bounds the pointers
    by it); None for a live stream.
    """

    def __init__(
        self, graphs: TrackerGraphs, video_size: tuple[int, int], num_frames: int | None = None
    ) -> None:
        height, width = (int(v) for v in video_size)
        if height <= 0 or width <= 0:
            raise TrackerError(f"video size must be positive, got {video_size}")
        if num_frames is not None and num_frames <= 0:
            raise TrackerError(f"num_frames must be positive, got {num_frames}")
        self.graphs = graphs
        self.config = graphs.config
        self.video_size = (height, width)
        self.num_frames = num_frames
        self._objects: dict[int, _Object] = {}
        # Embeddings of frames holding prompt results not yet remembered (preflight needs them).
        self._pending: dict[int, Float32Array] = {}
        self.frames_tracked = 0

    # ------------------------------------------------------------------ queries

    @property
    def obj_ids(self) -> tuple[int, ...]:
        return tuple(self._objects)

    @property
    def nbytes(self) -> int:
        return sum(o.nbytes for o in self._objects.values()) + sum(e.nbytes for e in self._pending.values())

    def start_frame(self) -> int:
        """``propagate_in_video``'s default start: the first conditioning frame of any object."""
        frames = [t for obj in self._objects.values() for t in (*obj.cond, *obj.temp[True])]
        if not frames:
            raise TrackerError("no prompts: add points, a box or a mask first")
        return min(frames)

    # ------------------------------------------------------------------ prompts

    def add_points(
        self,
        frame_idx: int,
        obj_id: int,
        points: npt.ArrayLike | None,
        labels: npt.ArrayLike | None,
        features: FrameFeatures,
        *,
        clear_old_points: bool = True,
        box: npt.ArrayLike | None = None,
        normalize_coords: bool = True,
    ) -> FrameResult:
        """``add_new_points_or_box``: points (x, y) in the video's pixels (with
        ``normalize_coords=False``: as fractions of its width and height), labels 1/0; a box
        (x0, y0, x1, y1) goes in first as two corner points. ``clear_old_points=False`` adds
        to the object's points on this frame."""
        self._check_frame(frame_idx, features)
        coords, point_labels = self._prompt_arrays(points, labels, box, clear_old_points, normalize_coords)
        obj = self._objects.get(obj_id) or self._new_object(obj_id)
        obj.mask_frames.discard(frame_idx)
        old = obj.points.get(frame_idx) if not clear_old_points else None
        if old is not None:
            coords = np.concatenate([old.coords, coords], axis=1)
            point_labels = np.concatenate([old.labels, point_labels], axis=1)
        obj.points[frame_idx] = _Prompt(coords, point_labels)
        is_init_cond_frame = frame_idx not in obj.tracked
        reverse = False if is_init_cond_frame else obj.tracked[frame_idx]
        # A click on a frame already tracked corrects it (add_all_frames_to_correct_as_cond off).
        is_cond = is_init_cond_frame
        prev = obj.output(frame_idx, is_cond)
        prev_mask = None if prev is None else np.clip(prev.pred_masks, -_PREV_MASK_CLAMP, _PREV_MASK_CLAMP)
        out, _ = self._infer(
            obj, frame_idx, features, is_init_cond_frame, obj.points[frame_idx], prev_mask, reverse
        )
        obj.temp[is_cond][frame_idx] = out
        self._pending[frame_idx] = features.image_embeddings
        return self._consolidate(frame_idx, is_cond)

    def add_box(
        self,
        frame_idx: int,
        obj_id: int,
        box: npt.ArrayLike,
        features: FrameFeatures,
        *,
        points: npt.ArrayLike | None = None,
        labels: npt.ArrayLike | None = None,
    ) -> FrameResult:
        """A box (x0, y0, x1, y1) in the video's pixels, optionally with points; replaces the
        object's earlier prompts on this frame (the reference allows a box only so)."""
        return self.add_points(frame_idx, obj_id, points, labels, features, box=box)

    def add_mask(
        self, frame_idx: int, obj_id: int, mask: npt.ArrayLike, features: FrameFeatures
    ) -> FrameResult:
        """``add_new_mask``: a (H, W) mask (nonzero inside the object) becomes the object's
        output on this frame as it is (``use_mask_as_output_without_sam``), resized to the
        model's input; it replaces the object's points on this frame."""
        self._check_frame(frame_idx, features)
        plane = np.asarray(mask)
        if plane.ndim != 2 or plane.size == 0:
            raise TrackerError(f"a mask prompt must be (H, W), got shape {plane.shape}")
        obj = self._objects.get(obj_id) or self._new_object(obj_id)
        obj.points.pop(frame_idx, None)
        obj.mask_frames.add(frame_idx)
        is_cond = frame_idx not in obj.tracked
        feed = dict(
            zip(MASK_PROMPT_INPUTS, (features.image_embeddings, (plane != 0).astype(np.float32)), strict=True)
        )
        low_res, pointer, score = self.graphs.mask_prompt.run(None, feed)
        pred_masks = (
            fill_holes(low_res, self.config.fill_hole_area) if self.config.fill_hole_area > 0 else low_res
        )
        obj.temp[is_cond][frame_idx] = _Output(pred_masks, pointer, score)
        self._pending[frame_idx] = features.image_embeddings
        return self._consolidate(frame_idx, is_cond)

    def clear_prompts_in_frame(self, frame_idx: int, obj_id: int) -> FrameResult:
        """``clear_all_prompts_in_frame``: the object's prompts on ``frame_idx`` are gone; a
        conditioning output there becomes an ordinary tracked frame's."""
        obj = self._object(obj_id)
        self._clear(obj, frame_idx)
        is_cond = any(frame_idx in o.temp[True] for o in self._objects.values())
        return self._consolidate(frame_idx, is_cond)

    def remove_object(self, obj_id: int) -> list[FrameResult]:
        """``remove_object``: the object and everything remembered of it; the frames it had
        prompts on, answered again without it."""
        obj = self._object(obj_id)
        if len(self._objects) == 1:
            self.reset()
            return []
        frames = sorted({*obj.points, *obj.mask_frames})
        for frame_idx in frames:
            self._clear(obj, frame_idx)
        del self._objects[obj_id]
        self._drop_unused_pending()
        results = []
        for frame_idx in frames:
            is_cond = any(frame_idx in o.temp[True] for o in self._objects.values())
            results.append(self._consolidate(frame_idx, is_cond))
        return results

    def reset(self) -> None:
        """``reset_state``: no objects, prompts or memories."""
        self._objects.clear()
        self._pending.clear()

    # ------------------------------------------------------------------ tracking

    def track_frame(self, frame_idx: int, features: FrameFeatures, *, reverse: bool = False) -> FrameResult:
        """One frame of ``propagate_in_video`` for every object: a conditioning frame answers
        with its stored output, any other is tracked from memory and remembered."""
        self._check_frame(frame_idx, features)
        self._preflight()
        masks, scores = [], []
        for obj in self._objects.values():
            out = obj.cond.get(frame_idx)
            if out is None:
                out, _ = self._infer(obj, frame_idx, features, False, None, None, reverse, remember=True)
                obj.non_cond[frame_idx] = out
                obj.far_pointers.pop(frame_idx, None)
            obj.tracked[frame_idx] = reverse
            masks.append(out.pred_masks[0])
            scores.append(out.object_score.reshape(()))
            self._forget_far(obj, frame_idx)
        self.frames_tracked += 1
        return FrameResult(
            frame_idx,
            self.obj_ids,
            np.concatenate(masks).astype(np.float32),
            np.array(scores, np.float32),
            self.video_size,
        )

    # ------------------------------------------------------------------ internals

    def _new_object(self, obj_id: int) -> _Object:
        obj = _Object(int(obj_id))
        self._objects[obj.obj_id] = obj
        return obj

    def _object(self, obj_id: int) -> _Object:
        obj = self._objects.get(obj_id)
        if obj is None:
            raise TrackerError(f"unknown object id {obj_id}; the objects are {list(self._objects)}")
        return obj

    def _check_frame(self, frame_idx: int, features: FrameFeatures) -> None:
        if frame_idx < 0 or (self.num_frames is not None and frame_idx >= self.num_frames):
            limit = f" of {self.num_frames}" if self.num_frames is not None else ""
            raise TrackerError(f"frame index {frame_idx} is out of range{limit}")
        h, c = self.config.feature_size, self.config.hidden_dim
        arrays = (features.image_embeddings, features.high_res_feats_0, features.high_res_feats_1)
        shapes = ((1, c, h, h), (1, c // 8, 4 * h, 4 * h), (1, c // 4, 2 * h, 2 * h))
        for name, array, shape in zip((IMAGE_EMBEDDINGS, *HIGH_RES_FEATS), arrays, shapes, strict=True):
            if array.shape != shape:
                raise TrackerError(f"frame features {name} have shape {array.shape}, expected {shape}")

    def _prompt_arrays(
        self,
        points: npt.ArrayLike | None,
        labels: npt.ArrayLike | None,
        box: npt.ArrayLike | None,
        clear_old_points: bool,
        normalize_coords: bool,
    ) -> tuple[Float32Array, Float32Array]:
        if (points is None) != (labels is None):
            raise TrackerError("points and labels must be provided together")
        if points is None and box is None:
            raise TrackerError("at least one of points or box must be provided")
        coords = np.zeros((0, 2), np.float32) if points is None else np.asarray(points, np.float32)
        point_labels = np.zeros(0, np.float32) if labels is None else np.asarray(labels, np.float32)
        if coords.ndim != 2 or coords.shape[1] != 2 or point_labels.shape != (coords.shape[0],):
            raise TrackerError(
                f"points must be (N, 2) with N labels, got {coords.shape} and {point_labels.shape}"
            )
        if not np.isin(point_labels, (0, 1)).all():
            raise TrackerError("point labels must be 1 (foreground) or 0 (background)")
        if box is not None:
            if not clear_old_points:
                raise TrackerError("a box replaces the frame's earlier prompts: use clear_old_points=True")
            corners = np.asarray(box, np.float32)
            if corners.size != 4:
                raise TrackerError(f"box must be (x0, y0, x1, y1), got shape {corners.shape}")
            coords = np.concatenate([corners.reshape(2, 2), coords])
            point_labels = np.concatenate([np.array([2, 3], np.float32), point_labels])
        if normalize_coords:
            height, width = self.video_size
            coords = coords / np.array([width, height], np.float32)
        coords = coords * np.float32(self.config.image_size)
        return coords[None].astype(np.float32), point_labels[None]

    def _clear(self, obj: _Object, frame_idx: int) -> None:
        obj.points.pop(frame_idx, None)
        obj.mask_frames.discard(frame_idx)
        obj.temp[True].pop(frame_idx, None)
        obj.temp[False].pop(frame_idx, None)
        out = obj.cond.pop(frame_idx, None)
        if out is not None:
            obj.non_cond[frame_idx] = out
            obj.tracked.pop(frame_idx, None)
        self._drop_unused_pending()

    def _drop_unused_pending(self) -> None:
        used = {t for o in self._objects.values() for temp in o.temp.values() for t in temp}
        for frame_idx in set(self._pending) - used:
            del self._pending[frame_idx]

    def _consolidate(self, frame_idx: int, is_cond: bool) -> FrameResult:
        """``_consolidate_temp_output_across_obj``: each object's latest output on the frame."""
        s = self.config.low_res_size
        masks = np.full((len(self._objects), s, s), NO_OBJ_SCORE, np.float32)
        scores = np.full(len(self._objects), NO_OBJ_SCORE, np.float32)
        for i, obj in enumerate(self._objects.values()):
            out = obj.output(frame_idx, is_cond)
            if out is not None:
                masks[i] = out.pred_masks[0, 0]
                scores[i] = out.object_score.reshape(())
        return FrameResult(frame_idx, self.obj_ids, masks, scores, self.video_size)

    def _preflight(self) -> None:
        """``propagate_in_video_preflight``: prompt results become memories."""
        if not self._objects:
            raise TrackerError("no prompts: add points, a box or a mask first")
        for obj in self._objects.values():
            for is_cond in (False, True):
                for frame_idx, out in obj.temp[is_cond].items():
                    if out.memory is None:
                        out.memory = self._encode_memory(
                            self._pending[frame_idx], out.pred_masks, out.object_score, True
                        )
                    (obj.cond if is_cond else obj.non_cond)[frame_idx] = out
                    obj.far_pointers.pop(frame_idx, None)
                obj.temp[is_cond].clear()
            if not obj.cond:
                raise TrackerError(f"no prompts for object id {obj.obj_id}: add some or remove it")
            for frame_idx in obj.cond:
                obj.non_cond.pop(frame_idx, None)
        self._pending.clear()

    def _infer(
        self,
        obj: _Object,
        frame_idx: int,
        features: FrameFeatures,
        is_init_cond_frame: bool,
        prompt: _Prompt | None,
        prev_mask: Float32Array | None,
        reverse: bool,
        *,
        remember: bool = False,
    ) -> tuple[_Output, Float32Array]:
        """``_run_single_frame_inference`` (``track_step``) for one object."""
        cfg = self.config
        if is_init_cond_frame:
            pix_feat = features.image_embeddings  # directly_add_no_mem_embed: the encoder added it
        else:
            pix_feat = self._condition(obj, frame_idx, features.image_embeddings, reverse)
        num_points = 0 if prompt is None else prompt.labels.shape[1]
        multimask = (
            cfg.multimask_output_in_sam
            and (is_init_cond_frame or cfg.multimask_output_for_tracking)
            and cfg.multimask_min_pt_num <= num_points <= cfg.multimask_max_pt_num
        )
        if prompt is None:
            prompt = _Prompt(np.zeros((1, 1, 2), np.float32), -np.ones((1, 1), np.float32))
        s = cfg.low_res_size
        feed = dict(
            zip(
                VIDEO_DECODER_INPUTS,
                (
                    pix_feat,
                    features.high_res_feats_0,
                    features.high_res_feats_1,
                    prompt.coords,
                    prompt.labels,
                    prev_mask if prev_mask is not None else np.zeros((1, 1, s, s), np.float32),
                    np.array([0.0 if prev_mask is None else 1.0], np.float32),
                ),
                strict=True,
            )
        )
        all_masks, all_ious, all_ptrs, score = self.graphs.decoder.run(None, feed)
        low_res, ptr = self._select(all_masks, all_ious, all_ptrs, multimask)
        low_res = np.where(score.reshape(1, 1, 1, 1) > 0, low_res, np.float32(NO_OBJ_SCORE)).astype(
            np.float32
        )
        memory = None
        if remember:
            # Encoded from the prediction before its holes are filled, as track_step does.
            memory = self._encode_memory(features.image_embeddings, low_res, score, from_prompt=False)
        pred_masks = fill_holes(low_res, cfg.fill_hole_area) if cfg.fill_hole_area > 0 else low_res
        return _Output(pred_masks, ptr.astype(np.float32), score.astype(np.float32), memory), pred_masks

    def _select(
        self, masks: Float32Array, ious: Float32Array, ptrs: Float32Array, multimask: bool
    ) -> tuple[Float32Array, Float32Array]:
        """``MaskDecoder.forward``'s and ``_forward_sam_heads``' choice of mask and pointer."""
        cfg = self.config
        best = 1 + int(np.argmax(ious[0, 1:]))
        if multimask:
            ptr = ptrs[:, best] if cfg.use_multimask_token_for_obj_ptr else ptrs[:, 0]
            return masks[:, best : best + 1], ptr
        single = masks[:, 0:1]
        if cfg.dynamic_multimask_via_stability and not _stable(single, cfg):
            return masks[:, best : best + 1], ptrs[:, 0]
        return single, ptrs[:, 0]

    def _encode_memory(
        self, embedding: Float32Array, low_res: Float32Array, score: Float32Array, from_prompt: bool
    ) -> npt.NDArray[np.uint16]:
        binarize = self.config.binarize_mask_from_pts_for_mem_enc and from_prompt
        feed = dict(
            zip(
                MEMORY_ENCODER_INPUTS,
                (embedding, low_res.astype(np.float32), score.astype(np.float32), np.array([binarize])),
                strict=True,
            )
        )
        (features,) = self.graphs.memory_encoder.run(None, feed)
        return to_bfloat16_bits(features)

    def _condition(
        self, obj: _Object, frame_idx: int, embedding: Float32Array, reverse: bool
    ) -> Float32Array:
        """``_prepare_memory_conditioned_features`` for a frame that does not start the object."""
        cfg = self.config
        if not obj.cond:
            raise TrackerError(f"object id {obj.obj_id} has no remembered prompt to track from")
        step = -1 if reverse else 1
        memories: list[tuple[int, _Output]] = [(cfg.num_maskmem - 1, out) for out in obj.cond.values()]
        for t_pos in range(1, cfg.num_maskmem):
            t_rel = cfg.num_maskmem - t_pos  # frames before this one, in tracking order
            prev = obj.non_cond.get(frame_idx - step * t_rel)
            if prev is not None and prev.memory is not None:
                memories.append((cfg.num_maskmem - t_pos - 1, prev))
        max_ptrs = cfg.max_obj_ptrs_in_encoder
        if self.num_frames is not None:
            max_ptrs = min(self.num_frames, max_ptrs)
        pointers: list[tuple[int, Float32Array]] = []
        for t, out in obj.cond.items():
            if cfg.only_obj_ptrs_in_the_past_for_eval and (t < frame_idx if reverse else t > frame_idx):
                continue
            pos = (frame_idx - t) * step if cfg.use_signed_tpos_enc_to_obj_ptrs else abs(frame_idx - t)
            pointers.append((pos, out.obj_ptr))
        for t_diff in range(1, max_ptrs):
            t = frame_idx - step * t_diff
            if t < 0 or (self.num_frames is not None and t >= self.num_frames):
                break
            prev = obj.non_cond.get(t)
            pointer = prev.obj_ptr if prev is not None else obj.far_pointers.get(t)
            if pointer is not None:
                pointers.append((t_diff, pointer))
        t_diff_max = np.float32(max(max_ptrs - 1, 1))
        feed = dict(
            zip(
                MEMORY_ATTENTION_INPUTS,
                (
                    embedding,
                    np.concatenate(
                        [from_bfloat16_bits(out.memory) for _, out in memories if out.memory is not None]
                    ),
                    np.array([row for row, out in memories if out.memory is not None], np.int64),
                    np.concatenate([p for _, p in pointers])
                    if pointers
                    else np.zeros((0, cfg.hidden_dim), np.float32),
                    np.array([pos for pos, _ in pointers], np.float32) / t_diff_max,
                ),
                strict=True,
            )
        )
        (conditioned,) = self.graphs.memory_attention.run(None, feed)
        result: Float32Array = conditioned
        return result

    def _forget_far(self, obj: _Object, frame_idx: int) -> None:
        """Bound the memory: of the frames without prompts, the next frames' memory attention
        reads the memory features of the last ``num_maskmem - 1`` and the pointers of the last
        ``max_obj_ptrs_in_encoder - 1``; anything farther from this frame is dropped."""
        mem_reach = self.config.num_maskmem - 1
        ptr_reach = self.config.max_obj_ptrs_in_encoder - 1
        for t in [t for t in obj.non_cond if abs(t - frame_idx) > mem_reach]:
            obj.far_pointers[t] = obj.non_cond.pop(t).obj_ptr
        for t in [t for t in obj.far_pointers if abs(t - frame_idx) > ptr_reach]:
            del obj.far_pointers[t]
        for t in [t for t in obj.tracked if abs(t - frame_idx) > ptr_reach and t not in obj.cond]:
            del obj.tracked[t]


def _stable(single: Float32Array, cfg: TrackerConfig) -> bool:
    """``MaskDecoder._get_stability_scores`` >= the threshold for the single-mask output."""
    delta = np.float32(cfg.dynamic_multimask_stability_delta)
    area_i = np.float32(np.count_nonzero(single > delta))
    area_u = np.float32(np.count_nonzero(single > -delta))
    stability = area_i / area_u if area_u > 0 else np.float32(1.0)
    return bool(stability >= np.float32(cfg.dynamic_multimask_stability_thresh))


def fill_holes(logits: Float32Array, max_area: int) -> Float32Array:
    """``fill_holes_in_mask_scores`` on [N, 1, s, s]: background components (8-connected,
    logits <= 0) of at most ``max_area`` pixels become 0.1."""
    out = logits.copy()
    for i in range(out.shape[0]):
        background = out[i, 0] <= 0
        comps = connected_components(background)
        small = np.nonzero(comps.sizes <= max_area)[0]
        if small.size:
            out[i, 0][comps.paint(small)] = _HOLE_FILL
    return out
