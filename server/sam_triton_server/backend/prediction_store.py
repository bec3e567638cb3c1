"""The low-res logits of recent clicks, kept so a follow-up click can refine one of their masks
by naming it (``refine_from``) instead of uploading its 256 KiB of logits.

Each prompt of a kept prediction gets a random id (128 bits: ids from replicas that a session
moved between can never name another prediction by accident). What is kept is bounded by
bytes, least recently used first out, like the embedding cache; a refinement that names an id
no longer (or never) held is refused, never answered with another mask.

A prediction belongs to its session and to the image that session held when it was made: a
caller-named session rebound to another image cannot refine the old image's masks (its
entry in the embedding cache is another object). A content id names the pixels themselves, so
its predictions stay valid after that image was evicted and embedded again.
"""

from __future__ import annotations

import secrets
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sam_triton_common.contract import CONTENT_ID_PREFIX, PREDICTION_NOT_FOUND, PREDICTION_NOT_HELD

Logits = npt.NDArray[np.float32]


class PredictionNotFound(LookupError):
    """The id names no held prediction of this session and image; the message says why."""


@dataclass(frozen=True)
class _Kept:
    session_id: str
    image: weakref.ref[object]  # the session's cache entry when the prediction was made
    logits: Logits  # (M, 256, 256)


class PredictionStore:
    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = max_bytes
        self._kept: OrderedDict[str, _Kept] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._kept)

    def keep(self, session_id: str, image: object, logits: Logits) -> list[str]:
        """Keep each prompt's (M, 256, 256) logits of a (P, M, 256, 256) prediction; their ids.

        A prediction larger than the whole budget gets ids that name nothing (refining it is
        refused like refining an evicted one)."""
        ids = [secrets.token_hex(16) for _ in range(logits.shape[0])]
        ref = weakref.ref(image)
        with self._lock:
            for pid, prompt_logits in zip(ids, logits, strict=True):
                kept = _Kept(session_id, ref, np.array(prompt_logits, dtype=np.float32, order="C"))
                if kept.logits.nbytes > self.max_bytes:
                    continue
                self._kept[pid] = kept
                self._bytes += kept.logits.nbytes
            while self._bytes > self.max_bytes:
                _, oldest = self._kept.popitem(last=False)
                self._bytes -= oldest.logits.nbytes
        return ids

    def mask(self, session_id: str, image: object, prediction_id: str, index: int) -> Logits:
        """The (256, 256) logits of mask ``index`` of the kept prompt ``prediction_id``."""
        with self._lock:
            kept = self._kept.get(prediction_id)
            if kept is not None:
                self._kept.move_to_end(prediction_id)
        if kept is None:
            raise PredictionNotFound(
                f"{PREDICTION_NOT_FOUND}: {prediction_id[:40]!r} {PREDICTION_NOT_HELD} (never made, or "
                f"dropped: the server keeps the last {self.max_bytes >> 20} MiB of logits); "
                "refine with the mask's logits instead"
            )
        same_image = session_id.startswith(CONTENT_ID_PREFIX) or kept.image() is image
        if kept.session_id != session_id or not same_image:
            raise PredictionNotFound(
                f"{PREDICTION_NOT_FOUND}: {prediction_id[:40]!r} was made on another image than the one "
                f"session {session_id[:80]!r} holds now"
            )
        if not 0 <= index < kept.logits.shape[0]:
            raise IndexError(
                f"refine_mask {index} is out of range: prediction {prediction_id[:40]!r} has "
                f"{kept.logits.shape[0]} masks"
            )
        mask: Logits = kept.logits[index]
        return mask
